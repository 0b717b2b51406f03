"""Next-turn dialogue data sets: the chat so far is the prompt, the next turn the reference.

``taskmaster4`` (a barista's next turn in a coffee order, with optional API-call lines) and
``dailydialog`` (the next turn of an everyday conversation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from textgym.tasks.base import ChatMessages, Sample, Task
from textgym.tasks.datasets.loading import DataSource, PathLike
from textgym.tasks.datasets.prompts import system_turn
from textgym.tasks.datasets.records import (
    DataFormatError,
    Row,
    require_field,
    require_text,
    require_texts,
)


def _merge_turns(turns: list[dict[str, str]]) -> ChatMessages:
    """Join consecutive messages of the same role (chat templates expect alternation)."""
    merged: ChatMessages = []
    for turn in turns:
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1] = {
                "role": turn["role"],
                "content": merged[-1]["content"] + "\n" + turn["content"],
            }
        else:
            merged.append(dict(turn))
    return merged


TASKMASTER4_INSTRUCTION = (
    "You take drink orders at a coffee bar. Reply to the customer with your next message only."
)
_API_NOTE = " Lines in [brackets] show the ordering system's API calls and their results."
TASKMASTER4_API = ("drop", "inline")
TASKMASTER4_DATA = DataSource(
    "taskmaster4",
    "taskmaster4/data",
    files={"train": ("data_*.json",)},
    key_fields=("conversation_id",),
)
"""Taskmaster-4 is read from local JSON lists only; hold-out by conversation."""


def _api_lines(annotations: Any, where: str) -> list[str]:
    """``[API call name: request]`` / ``[API result name: response]`` lines from annotations."""
    if not isinstance(annotations, list):
        raise DataFormatError(f"{where}: field 'annotations' must be a list")
    groups: dict[str, dict[str, str]] = {}
    for a in annotations:
        if not isinstance(a, dict) or not {"name", "value"} <= set(a):
            raise DataFormatError(f"{where}: an annotation lacks 'name' or 'value'")
        groups.setdefault(str(a.get("context", "")), {})[str(a["name"])] = str(a["value"])
    lines = []
    for g in groups.values():
        if "api_call" in g:
            lines.append(api_call_line(g["api_call"], g.get("request", "{}")))
        if "api_response" in g:
            lines.append(api_result_line(g["api_response"], g.get("response", "{}")))
    return lines


def api_call_line(name: str, request: str) -> str:
    """How ``api="inline"`` shows an API call in a user message.

    >>> api_call_line("get_menu_items", '{"query": "latte"}')
    '[API call get_menu_items: {"query": "latte"}]'
    """
    return f"[API call {name}: {request}]"


def api_result_line(name: str, response: str) -> str:
    """How ``api="inline"`` shows an API call's result in a user message."""
    return f"[API result {name}: {response}]"


def taskmaster4_system(instruction: str = TASKMASTER4_INSTRUCTION, api: str = "drop") -> str:
    """The system message of a Taskmaster-4 prompt: ``instruction``, plus a note on the
    ``[API ...]`` lines when ``api="inline"`` ("" for no system message)."""
    return instruction + (_API_NOTE if api == "inline" and instruction else "")


def taskmaster4(
    path: PathLike | None = None,
    *,
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = TASKMASTER4_INSTRUCTION,
    api: str = "drop",
    max_context_turns: int | None = None,
    holdout: float = 0.05,
) -> Task:
    """Taskmaster-4: the agent's next turn in a coffee-ordering conversation (local files only).

    Reads ``taskmaster4/data/data_*.json`` (JSON lists of conversations with ``conversation_id``
    and ``utterances``: ``{index, speaker: "user"|"assistant", text, annotations}``). One sample
    per assistant utterance: the earlier turns are the chat context (``user`` / ``assistant``
    roles, consecutive same-speaker turns merged), the utterance is the reference.

    API calls are not separate turns in these files: they are annotations of the user turn that
    triggered them (``api_call`` + ``request``, ``api_response`` + ``response``). No target is
    ever an API call. ``api="drop"`` (default) leaves them out of the context; ``api="inline"``
    appends them to that user message as ``[API call name: {...}]`` / ``[API result name:
    {...}]`` lines (and says so in the system message), for agents that should ground their
    reply in the order system's answers. Validation and test are held out by conversation id.

    ``instruction`` is the system message ("" for none); ``max_context_turns`` keeps the last
    turns only. Default reward: ``{"rouge_l": 0.5, "chrf": 0.5}``.
    """
    if api not in TASKMASTER4_API:
        raise ValueError(
            f"taskmaster4: api={api!r} is not supported; use one of {list(TASKMASTER4_API)}"
        )
    if max_context_turns is not None and max_context_turns < 1:
        raise ValueError(
            f"taskmaster4: max_context_turns={max_context_turns!r} must be >= 1 or None"
        )
    system = taskmaster4_system(instruction, api)

    def convert(row: Row, where: str) -> list[Sample]:
        conv_id = str(row.get("conversation_id", ""))
        utterances = require_field(row, "utterances", where)
        if not isinstance(utterances, list):
            raise DataFormatError(f"{where}: field 'utterances' must be a list")
        turns: list[dict[str, str]] = []
        samples = []
        for j, u in enumerate(utterances):
            uwhere = f"{where} utterance {j}"
            if not isinstance(u, dict):
                raise DataFormatError(f"{uwhere}: expected a JSON object")
            speaker = require_field(u, "speaker", uwhere)
            if speaker not in ("user", "assistant"):
                raise DataFormatError(f"{uwhere}: speaker {speaker!r} is not 'user' or 'assistant'")
            text = require_text(u, "text", uwhere).strip()
            context = _merge_turns(turns)
            if speaker == "assistant" and context and context[-1]["role"] == "user":
                if max_context_turns is not None:
                    context = context[-max_context_turns:]
                samples.append(
                    Sample(system_turn(system) + context, (text,), {"id": conv_id, "turn": j})
                )
            if api == "inline" and speaker == "user":
                text = "\n".join([text, *_api_lines(u.get("annotations", []), uwhere)])
            turns.append({"role": speaker, "content": text})
        return samples

    splits = TASKMASTER4_DATA.load(
        convert,
        path=path,
        source="local",
        split=split,
        max_samples=max_samples,
        holdout=holdout,
    )
    return Task(
        "taskmaster4",
        splits,
        default_reward={"rouge_l": 0.5, "chrf": 0.5},
        description="Next barista turn in a coffee-ordering dialogue (Taskmaster-4, CC BY 4.0).",
    )


def taskmaster4_rlhf(
    path: PathLike | None = None,
    *,
    reward: Any = "taskmaster4_rm",
    api: str = "inline",
    **options: Any,
) -> Task:
    """RLHF on Taskmaster-4: :func:`taskmaster4` prompts, rewarded by a reward model of the
    data set's human labels (the trainers add the KL to the reference).

    The default reward, ``"taskmaster4_rm"``, is the probability that a person labels the reply
    good, from the model ``textgym feedback train-rm --data taskmaster4`` trains on
    ``taskmaster4/reward/`` (:mod:`textgym.feedback.recipes`). Those labels judge replies
    against the order system's answers, so the prompts show the API calls and results
    (``api="inline"``) and the reward model is trained on prompts written the same way.
    ``options`` go to :func:`taskmaster4` (``split``, ``max_samples``, ``max_context_turns``,
    ``holdout``, ``instruction``).
    """
    task = taskmaster4(path, api=api, **options)
    return Task(
        "taskmaster4_rlhf",
        task.splits,
        default_reward=reward,
        description="Next barista turn (Taskmaster-4), rewarded by a reward model of the "
        "data set's human labels.",
    )


DAILYDIALOG_INSTRUCTION = "You are chatting with a friend. Reply with your next message only."
DAILYDIALOG_DATA = DataSource(
    "dailydialog",
    "dailydialog",
    hub_id="li2017dailydialog/daily_dialog",
    key_fields=("id", "dialog"),
)

_SPACE_BEFORE = re.compile(r"\s+([,.!?;:%)])")
_SPACE_AROUND_APOS = re.compile(r"\s*([’'])\s*(?=(s|t|m|d|re|ve|ll)\b)")


def detokenize(text: str) -> str:
    """Undo DailyDialog's spaced punctuation: ``"I ’ m fine , thanks ."`` -> ``"I’m fine, thanks."``.

    >>> detokenize("Say , Jim , how about it ? I ' ll pay .")
    "Say, Jim, how about it? I'll pay."
    """
    text = _SPACE_BEFORE.sub(r"\1", " ".join(text.split()))
    return _SPACE_AROUND_APOS.sub(r"\1", text)


def dailydialog(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = DAILYDIALOG_INSTRUCTION,
    max_context_turns: int | None = 6,
    holdout: float = 0.05,
    hub_id: str | None = None,
) -> Task:
    """DailyDialog: the next turn of an everyday conversation.

    Records have ``dialog: list[str]`` (the hub schema; also ``act`` and ``emotion``, unused).
    Every turn after the first becomes a sample: the turns before it (at most
    ``max_context_turns``) are the context with roles alternating so that the last one is
    ``user``; the turn itself is the reference. Spaced punctuation is undone (:func:`detokenize`).
    Local ``dailydialog/{train,validation,test}.jsonl``; ``hub_id`` replaces the hub id of
    :data:`DAILYDIALOG_DATA`.
    """
    if max_context_turns is not None and max_context_turns < 1:
        raise ValueError(
            f"dailydialog: max_context_turns={max_context_turns!r} must be >= 1 or None"
        )
    head = system_turn(instruction)

    def convert(row: Row, where: str) -> list[Sample]:
        dialog = [detokenize(t) for t in require_texts(row, "dialog", where)]
        samples = []
        for i in range(1, len(dialog)):
            lo = 0 if max_context_turns is None else max(0, i - max_context_turns)
            context = [
                {"role": "user" if (i - k) % 2 == 1 else "assistant", "content": dialog[k]}
                for k in range(lo, i)
            ]
            samples.append(Sample(head + context, (dialog[i],), {"turn": i}))
        return samples

    splits = DAILYDIALOG_DATA.load(
        convert,
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        holdout=holdout,
        hub_id=hub_id,
    )
    return Task(
        "dailydialog",
        splits,
        default_reward={"rouge_l": 0.5, "chrf": 0.5},
        description="Next turn of an everyday conversation (DailyDialog, CC BY-NC-SA 4.0).",
    )
