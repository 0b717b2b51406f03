"""Feedback data in and out: TRL datasets, Label Studio and Argilla records, textgym's own JSONL.

Every format goes both ways (:func:`export_feedback`, :func:`import_feedback`):

- ``jsonl``: everything in the store, as :meth:`FeedbackStore.export_jsonl` writes it;
- ``trl-preference``: ``{"prompt", "chosen", "rejected"}`` per line, one line per ordered pair of
  every ranking (TRL's preference format, read by its DPO and reward trainers);
- ``trl-sft``: ``{"messages": [user, assistant]}`` per line, from demonstrations and edits
  (TRL's conversational SFT format);
- ``label-studio``: a JSON list of Label Studio tasks for the pairwise template below, one per
  compared pair, each rater's choice an annotation;
- ``argilla``: a JSON list of Argilla records (as ``Record.to_dict`` writes them), fields
  ``prompt``, ``response_1``, ...; each rater's ranking a response to the question ``ranking``.

Imports accept a JSON array or JSON Lines. TRL files carry no rater, so their labels get the
``rater`` given to :func:`import_feedback` (default ``import:<file name>``). TRL imports accept
TRL's conversational form too (``prompt`` one user message, ``chosen``/``rejected`` or the
completion one assistant message); a conversation of several turns is refused. Label Studio
tasks use the data keys ``prompt``, ``answer1``, ``answer2`` and a ``Pairwise`` control whose
choice is ``{"selected": "left"}`` (answer1 better) or ``"right"``; a rater is the annotation's
``completed_by`` (an email, or ``label-studio:<id>``). Argilla rankings list the response fields
best first (Argilla 2's strings, or ``{"value", "rank"}`` items); an Argilla ``user_id`` maps back
to a textgym rater through the record's ``raters`` metadata, else it becomes ``argilla:<id>``;
draft and discarded responses are skipped. Every import is one transaction: a bad record adds
nothing and raises :class:`~textgym.feedback.records.RecordError` naming the file, line and
field. Every export is written atomically.

Label Studio labeling config for the exported tasks::

    <View>
      <Text name="prompt" value="$prompt"/>
      <Pairwise name="comparison" toName="answer1,answer2"/>
      <Text name="answer1" value="$answer1"/>
      <Text name="answer2" value="$answer2"/>
    </View>

>>> import tempfile, os
>>> from textgym.feedback.store import FeedbackStore
>>> folder = tempfile.mkdtemp()
>>> store = FeedbackStore(os.path.join(folder, "fb.sqlite"))
>>> good, bad = store.add_sample("Say hi.", "Hello!"), store.add_sample("Say hi.", "Go away.")
>>> _ = store.add_ranking([good, bad], rater="alice")
>>> export_feedback(store, os.path.join(folder, "prefs.jsonl"), "trl-preference")
1
>>> open(os.path.join(folder, "prefs.jsonl")).read()
'{"prompt": "Say hi.", "chosen": "Hello!", "rejected": "Go away."}\\n'
>>> copy = FeedbackStore(os.path.join(folder, "copy.sqlite"))
>>> import_feedback(copy, os.path.join(folder, "prefs.jsonl"), "trl-preference", rater="bob")
{'ranking': 1}
>>> copy.preference_pairs()
[PreferencePair(prompt='Say hi.', chosen='Hello!', rejected='Go away.', rater='bob')]
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textgym.feedback.records import (
    FieldError,
    RecordError,
    get_list,
    get_object,
    get_text,
    read_records,
    type_name,
)
from textgym.io import atomic_write

if TYPE_CHECKING:  # the CLI reads FORMATS without paying for sqlite3
    from textgym.feedback.store import FeedbackStore

FORMATS: tuple[str, ...] = ("jsonl", "trl-preference", "trl-sft", "label-studio", "argilla")
"""The formats :func:`export_feedback` writes and :func:`import_feedback` reads."""

# Label Studio task data keys and choices; Argilla field and question names.
LS_PROMPT, LS_LEFT, LS_RIGHT = "prompt", "answer1", "answer2"
LS_CONTROL = "comparison"
ARGILLA_PROMPT, ARGILLA_QUESTION, ARGILLA_RATERS = "prompt", "ranking", "raters"


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"feedback format must be one of {list(FORMATS)}, got {fmt!r}")


def export_feedback(store: FeedbackStore, path: str | os.PathLike[str], fmt: str = "jsonl") -> int:
    """Write the store's feedback to ``path`` in format ``fmt`` (atomically); return the number
    of records written (lines, or items of the JSON list)."""
    _check_format(fmt)
    if fmt == "jsonl":
        return store.export_jsonl(path)
    records = _EXPORTERS[fmt](store)
    if fmt in ("label-studio", "argilla"):  # both tools read a JSON list
        atomic_write(path, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    else:
        atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)


def import_feedback(
    store: FeedbackStore,
    path: str | os.PathLike[str],
    fmt: str = "jsonl",
    *,
    rater: str | None = None,
) -> dict[str, int]:
    """Add the feedback in ``path`` (format ``fmt``) to the store, in one transaction; return
    how many labels of each kind were added (``unlabelled``: records that held no label).

    ``rater`` names who gave labels the file does not attribute (default
    ``import:<file name>``; ``jsonl`` files name their raters). A bad file raises
    :class:`~textgym.feedback.records.RecordError`.
    """
    _check_format(fmt)
    if fmt == "jsonl":
        return store.import_jsonl(path)
    path = Path(path)
    importer = _IMPORTERS[fmt]
    counts: dict[str, int] = {}
    context = _Import(store, path, rater if rater is not None else f"import:{path.name}", counts)
    with store.batch():
        for line, record in read_records(path):
            with context.at(line):
                if not isinstance(record, dict):
                    raise RecordError(path, line, f"must be a JSON object, got {type_name(record)}")
                importer(context, record)
    return counts


class _Import:
    """What an importer needs: the store, the default rater, the counts, and errors that name
    the file and line."""

    def __init__(
        self, store: FeedbackStore, path: Path, rater: str, counts: dict[str, int]
    ) -> None:
        self.store = store
        self.path = path
        self.rater = rater
        self.counts = counts

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    @contextmanager
    def at(self, line: int) -> Iterator[None]:
        """Turn a problem with the record on ``line`` into one :class:`RecordError`."""
        try:
            yield
        except RecordError:
            raise
        except FieldError as exc:
            raise RecordError(self.path, line, exc.problem, exc.field) from None
        except RecursionError:
            raise RecordError(self.path, line, "is nested too deeply to store") from None
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            problem = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise RecordError(self.path, line, f"was refused ({problem})") from None


# ----------------------------------------------------------------------------- TRL


def _message_text(value: Any, field: str, role: str) -> str:
    """A plain string, or TRL's conversational form: a list holding one ``role`` message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == role:
            return get_text(value[0], "content", path=f"{field}[0]")
        raise FieldError(
            field,
            f"must be a string or a list of one {role!r} message; conversations of several "
            "turns are not supported",
        )
    raise FieldError(field, f"must be a string or a list of messages, got {type_name(value)}")


def _export_trl_preference(store: FeedbackStore) -> list[dict[str, Any]]:
    return [
        {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
        for p in store.preference_pairs()
    ]


def _import_trl_preference(imp: _Import, record: dict[str, Any]) -> None:
    for key in ("prompt", "chosen", "rejected"):
        if key not in record:
            raise FieldError(key, "is missing (TRL's explicit-prompt preference format)")
    prompt = _message_text(record["prompt"], "prompt", "user")
    chosen = _message_text(record["chosen"], "chosen", "assistant")
    rejected = _message_text(record["rejected"], "rejected", "assistant")
    if chosen == rejected:
        raise FieldError("rejected", "is the same text as 'chosen'; a preference needs two")
    ids = [imp.store.add_sample(prompt, chosen), imp.store.add_sample(prompt, rejected)]
    imp.store.add_ranking(ids, rater=imp.rater)
    imp.count("ranking")


def _export_trl_sft(store: FeedbackStore) -> list[dict[str, Any]]:
    pairs = [(d.prompt, d.text) for d in store.demonstrations()]
    edits = store.edits()
    prompts = {s.id: s.prompt for s in store.samples(ids=sorted({e.sample_id for e in edits}))}
    pairs += [(prompts[e.sample_id], e.text) for e in edits]
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": t}]}
        for p, t in pairs
    ]


def _import_trl_sft(imp: _Import, record: dict[str, Any]) -> None:
    if "messages" in record:
        messages = get_list(record, "messages")
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        if roles != ["user", "assistant"]:
            raise FieldError(
                "messages",
                f"must be one user and one assistant message, got roles {roles}; "
                "conversations of several turns are not supported",
            )
        prompt = get_text(messages[0], "content", path="messages[0]")
        text = get_text(messages[1], "content", path="messages[1]")
    elif "prompt" in record and "completion" in record:
        prompt = _message_text(record["prompt"], "prompt", "user")
        text = _message_text(record["completion"], "completion", "assistant")
    else:
        raise FieldError("messages", "is missing (or give 'prompt' and 'completion')")
    imp.store.add_demonstration(prompt, text, rater=imp.rater)
    imp.count("demonstration")


# ----------------------------------------------------------------------------- Label Studio


def _compared_pairs(store: FeedbackStore) -> dict[tuple[int, int], list[tuple[str, bool]]]:
    """Each pair of samples (lower id first) compared by a ranking or queued in a 'rank' task,
    with ``(rater, lower id won)`` for every ranking that orders it."""
    pairs: dict[tuple[int, int], list[tuple[str, bool]]] = {}
    for ranking in store.rankings():
        ids = ranking.sample_ids
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                key = (min(ids[i], ids[j]), max(ids[i], ids[j]))
                pairs.setdefault(key, []).append((ranking.rater, ids[i] < ids[j]))
    for task in _rank_tasks(store):
        ids = sorted(task)
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                pairs.setdefault((ids[i], ids[j]), [])
    return pairs


def _rank_tasks(store: FeedbackStore) -> list[tuple[int, ...]]:
    """The sample ids of every queued 'rank' task."""
    return [task.sample_ids for task in store.tasks(kind="rank")]


def _export_label_studio(store: FeedbackStore) -> list[dict[str, Any]]:
    pairs = _compared_pairs(store)
    samples = {s.id: s for s in store.samples(ids=sorted({i for p in pairs for i in p}))}
    tasks = []
    for (left, right), choices in pairs.items():
        annotations = [
            {
                "result": [
                    {
                        "from_name": LS_CONTROL,
                        "to_name": f"{LS_LEFT},{LS_RIGHT}",
                        "type": "pairwise",
                        "value": {"selected": "left" if left_won else "right"},
                    }
                ],
                # Label Studio ignores this key on import; textgym reads it back.
                "textgym_rater": rater,
            }
            for rater, left_won in choices
        ]
        tasks.append(
            {
                "data": {
                    LS_PROMPT: samples[left].prompt,
                    LS_LEFT: samples[left].completion,
                    LS_RIGHT: samples[right].completion,
                },
                "annotations": annotations,
            }
        )
    return tasks


def _label_studio_rater(annotation: dict[str, Any], field: str, default: str) -> str:
    if isinstance(annotation.get("textgym_rater"), str):
        return annotation["textgym_rater"]
    who = annotation.get("completed_by")
    if who is None:
        return default
    if isinstance(who, dict):
        return get_text(who, "email", path=f"{field}.completed_by")
    if isinstance(who, int) and not isinstance(who, bool):
        return f"label-studio:{who}"
    raise FieldError(f"{field}.completed_by", f"must be a user id or {{'email': ...}}, got {who!r}")


def _import_label_studio(imp: _Import, task: dict[str, Any]) -> None:
    data = get_object(task, "data")
    prompt = get_text(data, LS_PROMPT, path="data")
    answers = {
        "left": get_text(data, LS_LEFT, path="data"),
        "right": get_text(data, LS_RIGHT, path="data"),
    }
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        raise FieldError("annotations", f"must be an array, got {type_name(annotations)}")
    labelled = False
    for i, annotation in enumerate(annotations):
        field = f"annotations[{i}]"
        if not isinstance(annotation, dict):
            raise FieldError(field, f"must be an object, got {type_name(annotation)}")
        if annotation.get("was_cancelled"):
            continue
        results = get_list(annotation, "result", path=field)
        choices = [
            (j, r)
            for j, r in enumerate(results)
            if isinstance(r, dict) and r.get("type") == "pairwise"
        ]
        if not choices:
            continue
        if len(choices) > 1:
            raise FieldError(f"{field}.result", "holds more than one pairwise choice")
        j, result = choices[0]
        value = get_object(result, "value", path=f"{field}.result[{j}]")
        selected = value.get("selected")
        if selected not in answers:
            raise FieldError(
                f"{field}.result[{j}].value.selected",
                f"must be 'left' or 'right', got {selected!r}",
            )
        if answers["left"] == answers["right"]:
            raise FieldError(f"data.{LS_RIGHT}", f"is the same text as '{LS_LEFT}'")
        loser = "right" if selected == "left" else "left"
        ids = [
            imp.store.add_sample(prompt, answers[selected]),
            imp.store.add_sample(prompt, answers[loser]),
        ]
        imp.store.add_ranking(ids, rater=_label_studio_rater(annotation, field, imp.rater))
        imp.count("ranking")
        labelled = True
    if not labelled:
        imp.count("unlabelled")


# ----------------------------------------------------------------------------- Argilla


def _argilla_user_id(rater: str) -> str:
    """A stable UUID for a rater name (Argilla identifies users by UUID)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"textgym:rater:{rater}"))


def _export_argilla(store: FeedbackStore) -> list[dict[str, Any]]:
    # One record per compared set of samples; each rater's ranking of it one response.
    groups: dict[tuple[int, ...], list[tuple[str, tuple[int, ...]]]] = {}
    for ranking in store.rankings():
        groups.setdefault(tuple(sorted(ranking.sample_ids)), []).append(
            (ranking.rater, ranking.sample_ids)
        )
    for task in _rank_tasks(store):
        groups.setdefault(tuple(sorted(task)), [])
    samples = {s.id: s for s in store.samples(ids=sorted({i for g in groups for i in g}))}
    records = []
    for ids, rankings in groups.items():
        slot = {sid: f"response_{k}" for k, sid in enumerate(ids, 1)}
        raters = sorted({rater for rater, _ in rankings})
        records.append(
            {
                "id": "textgym-" + "-".join(map(str, ids)),
                "fields": {
                    ARGILLA_PROMPT: samples[ids[0]].prompt,
                    **{slot[sid]: samples[sid].completion for sid in ids},
                },
                "metadata": {ARGILLA_RATERS: raters} if raters else {},
                "suggestions": {},
                "responses": {
                    ARGILLA_QUESTION: [
                        {
                            "value": [slot[sid] for sid in order],
                            "user_id": _argilla_user_id(rater),
                            "status": "submitted",
                        }
                        for rater, order in rankings
                    ]
                }
                if rankings
                else {},
                "vectors": {},
            }
        )
    return records


def _argilla_order(value: list[Any], field: str) -> list[str]:
    """Response field names best first, from Argilla 2's strings or ``{"value", "rank"}``."""
    if all(isinstance(v, str) for v in value):
        return list(value)
    ranked = []
    for k, item in enumerate(value):
        if not isinstance(item, dict):
            raise FieldError(
                f"{field}[{k}]", f"must be a field name or {{'value', 'rank'}}, got {item!r}"
            )
        rank = item.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise FieldError(f"{field}[{k}].rank", f"must be an integer, got {rank!r}")
        ranked.append((rank, get_text(item, "value", path=f"{field}[{k}]")))
    ranks = [r for r, _ in ranked]
    if len(set(ranks)) != len(ranks):
        raise FieldError(field, f"has tied ranks {sorted(ranks)}; a ranking here has no ties")
    return [name for _, name in sorted(ranked)]


def _import_argilla(imp: _Import, record: dict[str, Any]) -> None:
    fields = get_object(record, "fields")
    prompt = get_text(fields, ARGILLA_PROMPT, path="fields")
    responses = record.get("responses") or {}
    if not isinstance(responses, dict):
        raise FieldError("responses", f"must be an object, got {type_name(responses)}")
    answers = responses.get(ARGILLA_QUESTION, [])
    if not isinstance(answers, list):
        raise FieldError(
            f"responses.{ARGILLA_QUESTION}", f"must be an array, got {type_name(answers)}"
        )
    metadata = record.get("metadata") or {}
    names = metadata.get(ARGILLA_RATERS, []) if isinstance(metadata, dict) else []
    known = {_argilla_user_id(n): n for n in names if isinstance(n, str)}
    labelled = False
    for j, answer in enumerate(answers):
        field = f"responses.{ARGILLA_QUESTION}[{j}]"
        if not isinstance(answer, dict):
            raise FieldError(field, f"must be an object, got {type_name(answer)}")
        if answer.get("status") in ("draft", "discarded"):
            continue
        order = _argilla_order(get_list(answer, "value", path=field), f"{field}.value")
        for name in order:
            if name == ARGILLA_PROMPT or not isinstance(fields.get(name), str):
                raise FieldError(
                    f"{field}.value", f"names {name!r}, which is not a text field of the record"
                )
        user = answer.get("user_id")
        rater = imp.rater if user is None else known.get(str(user), f"argilla:{user}")
        ids = [imp.store.add_sample(prompt, fields[name]) for name in order]
        imp.store.add_ranking(ids, rater=rater)
        imp.count("ranking")
        labelled = True
    if not labelled:
        imp.count("unlabelled")


_EXPORTERS: dict[str, Callable[[FeedbackStore], list[dict[str, Any]]]] = {
    "trl-preference": _export_trl_preference,
    "trl-sft": _export_trl_sft,
    "label-studio": _export_label_studio,
    "argilla": _export_argilla,
}
_IMPORTERS: dict[str, Callable[[_Import, dict[str, Any]], None]] = {
    "trl-preference": _import_trl_preference,
    "trl-sft": _import_trl_sft,
    "label-studio": _import_label_studio,
    "argilla": _import_argilla,
}
