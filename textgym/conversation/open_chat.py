"""Open chat (``open_chat``): everyday two-person dialogues, replayed, with a per-turn reward.

The user is the dialogue's first speaker, replayed from the log; the agent takes the second
speaker's place. Each agent turn is scored against the reply the second speaker logged at that
point (chrF by default; any reward, e.g. a judge or a reward model, can replace it as
``turn_reward``). The task has no final reward of its own (``reward="..."`` adds one).
Data: DialogSum (local ``dialogsum/``, default) or DailyDialog (local ``dailydialog/`` or the hub).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from textgym.tasks.base import Sample
from textgym.tasks.datasets.dialogue import DAILYDIALOG_DATA, detokenize
from textgym.tasks.datasets.loading import DataSource, PathLike
from textgym.tasks.datasets.records import DataFormatError, Row, require_text, require_texts

OPEN_CHAT_INSTRUCTION = "You are chatting with a friend. Reply with your next message only."
DIALOGSUM_CHAT_DATA = DataSource(
    "open_chat",
    "dialogsum",
    files={"train": ("train.jsonl",), "validation": ("dev.jsonl",)},
    key_fields=("fname",),
)
_SPEAKER = re.compile(r"^\s*#?(Person\d+)#?\s*:\s*", re.IGNORECASE)
OPEN_CHAT_SOURCES = ("dialogsum", "dailydialog")


def _dialogsum_turns(row: Row, where: str) -> list[str]:
    """Turns of a DialogSum record (``#Person1#: ...`` lines), consecutive lines of one
    speaker joined; the first speaker's turns are the even ones."""
    turns: list[tuple[str, str]] = []
    for line in require_text(row, "dialogue", where).splitlines():
        match = _SPEAKER.match(line)
        if not match:
            if not turns:
                raise DataFormatError(f"{where}: a dialogue line has no '#PersonN#:' speaker")
            turns[-1] = (turns[-1][0], turns[-1][1] + " " + line.strip())
            continue
        speaker, text = match.group(1).lower(), detokenize(line[match.end() :])
        if turns and turns[-1][0] == speaker:
            turns[-1] = (speaker, turns[-1][1] + " " + text)
        else:
            turns.append((speaker, text))
    return [text for _, text in turns]


def logged_reply_chrf(
    prompts: list[str], completions: list[str], references: Any, **meta: Any
) -> np.ndarray:
    """chrF of each agent turn against the reply logged at the same turn (0 past the log).

    >>> messages = [[{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello there."}]]
    >>> logged_reply_chrf(["user: Hi!"], ["Hello there."], None, messages=messages,
    ...                   replies=[["Hello there."]]).tolist()
    [1.0]
    """
    from textgym.rewards.metrics import Chrf

    turns = [sum(m["role"] == "assistant" for m in ms) for ms in meta["messages"]]
    logged = [
        r[t - 1] if 0 < t <= len(r) else None for r, t in zip(meta["replies"], turns, strict=True)
    ]
    out = np.zeros(len(completions), dtype=np.float32)
    rows = [k for k, reply in enumerate(logged) if reply is not None]
    if rows:
        scores = Chrf()(
            [prompts[k] for k in rows], [completions[k] for k in rows], [[logged[k]] for k in rows]
        )
        out[rows] = scores
    return out


logged_reply_chrf.name = "logged_reply_chrf"  # type: ignore[attr-defined]


def no_final_reward(
    prompts: list[str], completions: list[str], references: Any, **meta: Any
) -> np.ndarray:
    """0 for every dialogue: the task's signal is per turn."""
    return np.zeros(len(completions), dtype=np.float32)


no_final_reward.name = "none"  # type: ignore[attr-defined]


def open_chat(
    path: PathLike | None = None,
    *,
    source_set: str = "dialogsum",
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = OPEN_CHAT_INSTRUCTION,
    min_turns: int = 4,
    holdout: float = 0.05,
) -> Any:
    """Everyday dialogues with at least ``min_turns`` turns as chats to hold.

    The opening is ``instruction`` (system) and the first speaker's first turn; ``meta`` holds
    ``goal`` (the first speaker's side of the logged dialogue, for LM or human users),
    ``user_turns`` (the first speaker's later turns, for the replay user) and ``replies`` (the
    second speaker's logged turns, the per-turn reward's references). Default user: replay.
    """
    from textgym.conversation.tasks import ConversationTask

    if source_set not in OPEN_CHAT_SOURCES:
        raise ValueError(
            f"open_chat: source_set={source_set!r}; use one of {list(OPEN_CHAT_SOURCES)}"
        )
    if not isinstance(min_turns, int) or min_turns < 2:
        raise ValueError(f"open_chat: min_turns={min_turns!r} must be an int >= 2")

    def convert(row: Row, where: str) -> list[Sample]:
        if source_set == "dialogsum":
            turns = _dialogsum_turns(row, where)
        else:
            turns = [detokenize(t) for t in require_texts(row, "dialog", where)]
        if len(turns) < min_turns:
            return []
        users, replies = turns[0::2], turns[1::2]
        opening = ([{"role": "system", "content": instruction}] if instruction else []) + [
            {"role": "user", "content": users[0]}
        ]
        goal = "say these things, one per message: " + " / ".join(users)
        meta = {"goal": goal, "user_turns": users[1:], "replies": replies}
        return [Sample(opening, (), meta)]

    data = DIALOGSUM_CHAT_DATA if source_set == "dialogsum" else DAILYDIALOG_DATA
    splits = data.load(
        convert, path=path, source=source, split=split, max_samples=max_samples, holdout=holdout
    )
    return ConversationTask(
        "open_chat",
        splits,
        default_reward=no_final_reward,
        default_user="replay",
        turn_reward=logged_reply_chrf,
        description=f"Everyday chat, replayed, chrF per turn against the logged reply ({source_set}).",
    )
