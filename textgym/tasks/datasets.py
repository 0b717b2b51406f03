"""Real data sets as tasks: local files (JSONL / JSON lists) or the Hugging Face hub.

Every loader returns a :class:`~textgym.tasks.base.Task` whose prompts are chat messages
(a user turn with the instruction and the source text, or a dialogue history ending with the
user turn to answer) and whose references are the human summaries or gold next turns.

Where the files come from (``source="local"``, the default):

1. ``path=``: a data root holding the data set's folder (``<path>/dialogsum``) or the folder
   itself (``<path>`` with ``train.jsonl`` ...);
2. else the environment variable ``TEXTGYM_DATA`` (a data root);
3. else ``../shared/data`` relative to the current directory, then relative to the repository.

``source="hub"`` calls ``datasets.load_dataset`` with the data set's hub id (``pip install
datasets``; the package is optional and not a dependency of textgym).

Splits. ``split={"train": "train.jsonl", ...}`` maps textgym split names to file names or glob
patterns inside the folder (local) or to hub split names such as ``"train[:1000]"`` (hub).
When the data has a train split but no validation or test split, the missing ones are held out
of train deterministically: a record goes to ``test`` when ``crc32(record id) / 2**32`` is below
``holdout``, to ``validation`` when it lies in ``[holdout, 2 * holdout)``, else it stays in
train. The choice depends only on the record's id (or its source text when it has none), not
on file order or ``max_samples``, so the hold-out never changes under a cap and dialogue
loaders never split one conversation across splits. ``holdout=0`` disables it.

Samples keep file order, which is the fixed evaluation order. ``max_samples`` caps each split
(reading stops once every split fed by a file is full).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from textgym.tasks.base import SPLITS, ChatMessages, Sample, Task

PathLike = Union[str, "os.PathLike[str]"]
Row = Mapping[str, Any]
Convert = Callable[[Row, str], list[Sample]]

DATA_ENV = "TEXTGYM_DATA"
"""Environment variable naming the data root (the folder holding ``dialogsum/``, ...)."""

SOURCES = ("local", "hub")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class DataFormatError(ValueError):
    """A data file does not have the expected schema; the message names file, line and field."""


def default_data_dir() -> Path:
    """The data root: ``$TEXTGYM_DATA``, else ``../shared/data`` from the cwd or the repository.

    Raises:
        FileNotFoundError: naming every folder tried and how to provide the data.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser()
        if root.is_dir():
            return root
        raise FileNotFoundError(
            f"{DATA_ENV}={env!r} is not a folder; point it at the folder holding the data sets "
            "(dialogsum/, samsum/, ...), or pass path= to the task"
        )
    tried = [Path.cwd().parent / "shared" / "data", _REPO_ROOT.parent / "shared" / "data"]
    for root in tried:
        if root.is_dir():
            return root.resolve()
    raise FileNotFoundError(
        f"no data folder found; tried {', '.join(str(p) for p in tried)}. Pass path= to the task, "
        f"set {DATA_ENV} to the folder holding the data sets, or use source='hub'"
    )


def _dataset_dir(name: str, subdir: str, path: PathLike | None) -> Path:
    """The folder of one data set: ``<root>/<subdir>``, or ``path`` itself when it holds it."""
    if path is None:
        root = default_data_dir()
        folder = root / subdir
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{name}: folder {folder} not found in the data root {root}; pass path= to the "
                f"folder with the {name} files, or use source='hub'"
            )
        return folder
    given = Path(path).expanduser()
    # Accept the data root, the data set folder, or any folder in between.
    parts = Path(subdir).parts
    for i in range(len(parts) + 1):
        candidate = given.joinpath(*parts[i:])
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"{name}: path {given} is not a folder (tried {given / subdir} and {given}); pass the "
        f"data root or the folder with the {name} files"
    )


# ---------------------------------------------------------------- reading records with locations


def _read_records(file: Path) -> Iterator[tuple[str, Row]]:
    """Yield ``(location, record)``: ``"<file> line N"`` for JSONL, ``"<file> item N"`` for JSON."""
    if file.suffix == ".jsonl":
        with open(file, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{file} line {lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise DataFormatError(
                        f"{where}: expected a JSON object, got {type(row).__name__}"
                    )
                yield where, row
    elif file.suffix == ".json":
        with open(file, encoding="utf-8") as f:
            try:
                items = json.load(f)
            except json.JSONDecodeError as exc:
                raise DataFormatError(
                    f"{file}: invalid JSON ({exc.msg} at line {exc.lineno})"
                ) from None
        if not isinstance(items, list):
            raise DataFormatError(
                f"{file}: expected a JSON list of records, got {type(items).__name__}"
            )
        for i, row in enumerate(items):
            where = f"{file} item {i}"
            if not isinstance(row, dict):
                raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row
    else:
        raise DataFormatError(f"{file}: unsupported file type {file.suffix!r}; use .jsonl or .json")


def _get(row: Row, key: str, where: str) -> Any:
    if key not in row:
        raise DataFormatError(
            f"{where}: missing field {key!r} (fields present: {', '.join(sorted(map(str, row)))})"
        )
    return row[key]


def _text(row: Row, key: str, where: str) -> str:
    """A required non-empty string field."""
    value = _get(row, key, where)
    if not isinstance(value, str):
        raise DataFormatError(
            f"{where}: field {key!r} must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise DataFormatError(f"{where}: field {key!r} is empty; a prompt or reference needs text")
    return value


def _text_list(row: Row, key: str, where: str) -> list[str]:
    """A required list of strings with at least one non-empty entry (a bare string counts)."""
    value = _get(row, key, where)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{where}: field {key!r} must be a list of strings")
    texts = [v for v in value if v.strip()]
    if not texts:
        raise DataFormatError(f"{where}: field {key!r} is empty; a prompt or reference needs text")
    return texts


def _record_key(row: Row, *fields: str) -> str:
    """The hold-out key: the first id field present, else the whole record."""
    for f in fields:
        value = row.get(f)
        if value not in (None, ""):
            return str(value)
    return json.dumps(row, sort_keys=True, default=str)


def _unit_hash(key: str) -> float:
    """A stable number in [0, 1) from a string (crc32, the same on every platform and run)."""
    return zlib.crc32(key.encode("utf-8")) / 2**32


def truncate_words(text: str, max_words: int | None) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``, inner spacing kept.

    >>> truncate_words("one two\\nthree four", 3)
    'one two\\nthree'
    >>> truncate_words("short", None)
    'short'
    """
    if max_words is None:
        return text
    for i, match in enumerate(re.finditer(r"\S+", text)):
        if i + 1 == max_words:
            return text[: match.end()]
    return text


def _user(instruction: str, text: str) -> ChatMessages:
    return [{"role": "user", "content": f"{instruction}\n\n{text}" if instruction else text}]


# ---------------------------------------------------------------- split assembly


def _check_options(name: str, source: str, max_samples: int | None, holdout: float) -> None:
    if source not in SOURCES:
        raise ValueError(f"{name}: source={source!r} is not supported; use one of {list(SOURCES)}")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"{name}: max_samples={max_samples!r} must be a positive int or None")
    if not 0.0 <= holdout < 0.5:
        raise ValueError(f"{name}: holdout={holdout!r} must be in [0, 0.5)")


def _check_split_names(name: str, split: Mapping[str, str]) -> None:
    unknown = set(split) - set(SPLITS)
    if unknown:
        raise ValueError(
            f"{name}: split mapping has unknown split(s) {sorted(unknown)}; allowed: {list(SPLITS)}"
        )


def _local_sources(
    name: str,
    folder: Path,
    split: Mapping[str, str] | None,
    default_files: Mapping[str, Sequence[str]],
) -> dict[str, Callable[[], Iterable[tuple[str, Row]]]]:
    """Split name -> record iterator over the matching files in ``folder``."""
    found: dict[str, list[Path]] = {}
    if split is not None:
        _check_split_names(name, split)
        for s, pattern in split.items():
            files = (
                sorted(folder.glob(pattern)) if not Path(pattern).is_absolute() else [Path(pattern)]
            )
            files = [f for f in files if f.is_file()]
            if not files:
                raise FileNotFoundError(
                    f"{name}: split {s!r}: no file matches {pattern!r} in {folder}"
                )
            found[s] = files
    else:
        for s, patterns in default_files.items():
            for pattern in patterns:
                files = sorted(f for f in folder.glob(pattern) if f.is_file())
                if files:
                    found[s] = files
                    break
    if not found:
        wanted = "; ".join(f"{s}: {' or '.join(p)}" for s, p in default_files.items())
        raise FileNotFoundError(
            f"{name}: no data files in {folder} (expected {wanted}); pass path= to the folder with "
            f"the files, set {DATA_ENV}, map files with split=..., or use source='hub'"
        )

    def reader(files: list[Path]) -> Callable[[], Iterator[tuple[str, Row]]]:
        def read() -> Iterator[tuple[str, Row]]:
            for file in files:
                yield from _read_records(file)

        return read

    return {s: reader(files) for s, files in found.items()}


def _hub_sources(
    name: str,
    hub_id: str,
    config: str | None,
    split: Mapping[str, str] | None,
    default_splits: Mapping[str, str],
) -> dict[str, Callable[[], Iterable[tuple[str, Row]]]]:
    """Split name -> record iterator over ``datasets.load_dataset(hub_id, config, split=...)``."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(
            f"{name}: source='hub' needs the Hugging Face `datasets` package: pip install datasets "
            "(or use local files with source='local')"
        ) from exc
    if split is not None:
        _check_split_names(name, split)
    mapping = dict(split if split is not None else default_splits)

    def reader(hub_split: str) -> Callable[[], Iterator[tuple[str, Row]]]:
        def read() -> Iterator[tuple[str, Row]]:
            args = (hub_id, config) if config else (hub_id,)
            ds = datasets.load_dataset(*args, split=hub_split)
            for i, row in enumerate(ds):
                yield f"hub {hub_id} split {hub_split!r} row {i}", row

        return read

    return {s: reader(hub_split) for s, hub_split in mapping.items()}


def _assemble(
    name: str,
    sources: Mapping[str, Callable[[], Iterable[tuple[str, Row]]]],
    convert: Convert,
    key: Callable[[Row], str],
    max_samples: int | None,
    holdout: float,
) -> dict[str, list[Sample]]:
    """Convert records to samples per split, holding validation/test out of train if missing."""
    derived = [s for s in ("test", "validation") if s not in sources]
    if "train" not in sources or holdout == 0.0:
        derived = []
    out: dict[str, list[Sample]] = {s: [] for s in (*sources, *derived)}

    def full(s: str) -> bool:
        return max_samples is not None and len(out[s]) >= max_samples

    for split, read in sources.items():
        targets = [split, *derived] if split == "train" else [split]
        for where, row in read():
            if all(full(t) for t in targets):
                break
            dest = split
            if split == "train" and derived:
                slot = int(_unit_hash(key(row)) // holdout)  # 0 -> test, 1 -> validation
                if slot < len(derived):
                    dest = derived[slot]
            if full(dest):
                continue
            samples = convert(row, where)
            room = len(samples) if max_samples is None else max_samples - len(out[dest])
            out[dest].extend(samples[:room])
    if not any(out.values()):
        raise ValueError(f"{name}: the data produced no samples (sources: {sorted(sources)})")
    return {s: out[s] for s in SPLITS if out.get(s)}


def _load(
    name: str,
    *,
    subdir: str,
    path: PathLike | None,
    source: str,
    split: Mapping[str, str] | None,
    max_samples: int | None,
    holdout: float,
    default_files: Mapping[str, Sequence[str]],
    hub_id: str | None,
    hub_config: str | None,
    hub_splits: Mapping[str, str],
    convert: Convert,
    key: Callable[[Row], str],
) -> dict[str, list[Sample]]:
    _check_options(name, source, max_samples, holdout)
    if source == "hub":
        if hub_id is None:
            raise ValueError(f"{name}: no Hugging Face hub id is known; use source='local'")
        sources = _hub_sources(name, hub_id, hub_config, split, hub_splits)
    else:
        folder = _dataset_dir(name, subdir, path)
        sources = _local_sources(name, folder, split, default_files)
    return _assemble(name, sources, convert, key, max_samples, holdout)


_STD_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.jsonl", "train.json"),
    "validation": ("validation.jsonl", "dev.jsonl", "val.jsonl", "validation.json", "dev.json"),
    "test": ("test.jsonl", "test.json"),
}
_STD_HUB = {"train": "train", "validation": "validation", "test": "test"}


# ---------------------------------------------------------------- summarization


def _summarization_task(
    name: str,
    *,
    subdir: str,
    text_field: str,
    summary_field: str,
    id_fields: tuple[str, ...],
    meta_fields: tuple[str, ...],
    instruction: str,
    description: str,
    hub_id: str | None,
    hub_config: str | None,
    hub_splits: Mapping[str, str],
    path: PathLike | None,
    source: str,
    split: Mapping[str, str] | None,
    max_samples: int | None,
    max_source_words: int | None,
    holdout: float,
    clean: Callable[[str], str] = str.strip,
) -> Task:
    def convert(row: Row, where: str) -> list[Sample]:
        text = clean(truncate_words(_text(row, text_field, where), max_source_words))
        refs = tuple(r.strip() for r in _text_list(row, summary_field, where))
        meta = {f: str(row.get(f, "")) for f in meta_fields}
        meta["id"] = next((str(row[f]) for f in id_fields if row.get(f) not in (None, "")), "")
        return [Sample(_user(instruction, text), refs, meta)]

    splits = _load(
        name,
        subdir=subdir,
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        holdout=holdout,
        default_files=_STD_FILES,
        hub_id=hub_id,
        hub_config=hub_config,
        hub_splits=hub_splits,
        convert=convert,
        key=lambda row: _record_key(row, *id_fields, text_field),
    )
    return Task(name, splits, default_reward="rouge_l", description=description)


DIALOGSUM_INSTRUCTION = "Summarize the following dialogue in one sentence."


def dialogsum(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = DIALOGSUM_INSTRUCTION,
    max_source_words: int | None = None,
    holdout: float = 0.04,
    hub_id: str = "knkarthick/dialogsum",
) -> Task:
    """DialogSum: summarize an everyday two-person dialogue (``#Person1#: ...`` lines).

    Local files ``dialogsum/train.jsonl`` and ``dev.jsonl`` (fields ``fname, dialogue, summary,
    topic``) give train and validation; test is held out of train (4%, by ``fname``) unless a
    ``test.jsonl`` is present. ``meta = {"topic", "id"}``. Default reward: ``"rouge_l"``.
    """
    return _summarization_task(
        "dialogsum",
        subdir="dialogsum",
        text_field="dialogue",
        summary_field="summary",
        id_fields=("fname", "id"),
        meta_fields=("topic",),
        instruction=instruction,
        description="Summarize a two-person dialogue in one sentence (DialogSum, CC BY-NC-SA 4.0).",
        hub_id=hub_id,
        hub_config=None,
        hub_splits=_STD_HUB,
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        max_source_words=max_source_words,
        holdout=holdout,
    )


SAMSUM_INSTRUCTION = "Summarize the following chat conversation in one or two sentences."


def samsum(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = SAMSUM_INSTRUCTION,
    max_source_words: int | None = None,
    holdout: float = 0.05,
    hub_id: str = "samsum",
) -> Task:
    """SAMSum: summarize a messenger conversation (``Name: text`` turns split by ``\\r\\n``).

    The shared copy has only ``validation.jsonl`` (fields ``id, dialogue, summary``), so the
    local task has only a validation split; ``split={"train": "validation.jsonl"}`` trains on
    it (validation and test are then held out of it). Turns are normalised to ``\\n``.
    """
    return _summarization_task(
        "samsum",
        subdir="samsum",
        text_field="dialogue",
        summary_field="summary",
        id_fields=("id",),
        meta_fields=(),
        instruction=instruction,
        description="Summarize a messenger chat (SAMSum, CC BY-NC-ND 4.0).",
        hub_id=hub_id,
        hub_config=None,
        hub_splits=_STD_HUB,
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        max_source_words=max_source_words,
        holdout=holdout,
        clean=lambda t: "\n".join(line.strip() for line in t.splitlines() if line.strip()),
    )


SCITLDR_INSTRUCTION = "Write a one-sentence TL;DR of this scientific abstract."


def scitldr(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = SCITLDR_INSTRUCTION,
    max_source_words: int | None = None,
    holdout: float = 0.05,
    hub_id: str = "allenai/scitldr",
) -> Task:
    """SciTLDR-A: a scientific abstract to a one-line TL;DR.

    Fields ``source`` (list of sentences, joined with single spaces; stray line breaks inside
    sentences removed) and ``target`` (list of references: one in train, up to four in dev).
    Local ``scitldr_a/train.jsonl`` and ``dev.jsonl``; test held out of train (5%, by
    ``paper_id``) unless ``test.jsonl`` exists. Hub: ``allenai/scitldr``, config ``"Abstract"``.
    """

    def convert(row: Row, where: str) -> list[Sample]:
        sentences = _text_list(row, "source", where)
        text = truncate_words(" ".join(" ".join(s.split()) for s in sentences), max_source_words)
        refs = tuple(" ".join(r.split()) for r in _text_list(row, "target", where))
        return [Sample(_user(instruction, text), refs, {"id": str(row.get("paper_id", ""))})]

    splits = _load(
        "scitldr",
        subdir="scitldr_a",
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        holdout=holdout,
        default_files=_STD_FILES,
        hub_id=hub_id,
        hub_config="Abstract",
        hub_splits=_STD_HUB,
        convert=convert,
        key=lambda row: _record_key(row, "paper_id"),
    )
    return Task(
        "scitldr",
        splits,
        default_reward="rouge_l",
        description="One-line TL;DR of a scientific abstract (SciTLDR-A, Apache-2.0).",
    )


CNN_INSTRUCTION = "Summarize this news article in two or three sentences."


def cnn_dailymail(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = CNN_INSTRUCTION,
    max_source_words: int | None = None,
    holdout: float = 0.05,
    hub_id: str = "abisee/cnn_dailymail",
) -> Task:
    """CNN/DailyMail 3.0.0: a news article to its highlights.

    Local JSONL ``cnn_dailymail/{train,validation,test}.jsonl`` with fields ``article``,
    ``highlights`` (and optionally ``id``). Articles are long: ``max_source_words`` truncates
    them to fit the env's prompt length.
    """
    return _summarization_task(
        "cnn_dailymail",
        subdir="cnn_dailymail",
        text_field="article",
        summary_field="highlights",
        id_fields=("id",),
        meta_fields=(),
        instruction=instruction,
        description="News article to highlights (CNN/DailyMail 3.0.0, Apache-2.0).",
        hub_id=hub_id,
        hub_config="3.0.0",
        hub_splits=_STD_HUB,
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        max_source_words=max_source_words,
        holdout=holdout,
    )


XSUM_INSTRUCTION = "Summarize this article in one sentence."


def xsum(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = XSUM_INSTRUCTION,
    max_source_words: int | None = None,
    holdout: float = 0.05,
    hub_id: str = "EdinburghNLP/xsum",
) -> Task:
    """XSum: a BBC article to a one-sentence summary.

    Local JSONL ``xsum/{train,validation,test}.jsonl`` with fields ``document``, ``summary``
    (and optionally ``id``).
    """
    return _summarization_task(
        "xsum",
        subdir="xsum",
        text_field="document",
        summary_field="summary",
        id_fields=("id",),
        meta_fields=(),
        instruction=instruction,
        description="Extreme one-sentence summary of a BBC article (XSum).",
        hub_id=hub_id,
        hub_config=None,
        hub_splits=_STD_HUB,
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        max_source_words=max_source_words,
        holdout=holdout,
    )


# ---------------------------------------------------------------- next-turn dialogue


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
            lines.append(f"[API call {g['api_call']}: {g.get('request', '{}')}]")
        if "api_response" in g:
            lines.append(f"[API result {g['api_response']}: {g.get('response', '{}')}]")
    return lines


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
    system = instruction + (_API_NOTE if api == "inline" and instruction else "")

    def convert(row: Row, where: str) -> list[Sample]:
        conv_id = str(row.get("conversation_id", ""))
        utterances = _get(row, "utterances", where)
        if not isinstance(utterances, list):
            raise DataFormatError(f"{where}: field 'utterances' must be a list")
        turns: list[dict[str, str]] = []
        samples = []
        for j, u in enumerate(utterances):
            uwhere = f"{where} utterance {j}"
            if not isinstance(u, dict):
                raise DataFormatError(f"{uwhere}: expected a JSON object")
            speaker = _get(u, "speaker", uwhere)
            if speaker not in ("user", "assistant"):
                raise DataFormatError(f"{uwhere}: speaker {speaker!r} is not 'user' or 'assistant'")
            text = _text(u, "text", uwhere).strip()
            context = _merge_turns(turns)
            if speaker == "assistant" and context and context[-1]["role"] == "user":
                if max_context_turns is not None:
                    context = context[-max_context_turns:]
                head = [{"role": "system", "content": system}] if system else []
                samples.append(Sample(head + context, (text,), {"id": conv_id, "turn": j}))
            if api == "inline" and speaker == "user":
                text = "\n".join([text, *_api_lines(u.get("annotations", []), uwhere)])
            turns.append({"role": speaker, "content": text})
        return samples

    splits = _load(
        "taskmaster4",
        subdir="taskmaster4/data",
        path=path,
        source="local",
        split=split,
        max_samples=max_samples,
        holdout=holdout,
        default_files={"train": ("data_*.json",)},
        hub_id=None,
        hub_config=None,
        hub_splits={},
        convert=convert,
        key=lambda row: _record_key(row, "conversation_id"),
    )
    return Task(
        "taskmaster4",
        splits,
        default_reward={"rouge_l": 0.5, "chrf": 0.5},
        description="Next barista turn in a coffee-ordering dialogue (Taskmaster-4, CC BY 4.0).",
    )


DAILYDIALOG_INSTRUCTION = "You are chatting with a friend. Reply with your next message only."

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
    hub_id: str = "li2017dailydialog/daily_dialog",
) -> Task:
    """DailyDialog: the next turn of an everyday conversation.

    Records have ``dialog: list[str]`` (the hub schema; also ``act`` and ``emotion``, unused).
    Every turn after the first becomes a sample: the turns before it (at most
    ``max_context_turns``) are the context with roles alternating so that the last one is
    ``user``; the turn itself is the reference. Spaced punctuation is undone (:func:`detokenize`).
    Local ``dailydialog/{train,validation,test}.jsonl``.
    """
    if max_context_turns is not None and max_context_turns < 1:
        raise ValueError(
            f"dailydialog: max_context_turns={max_context_turns!r} must be >= 1 or None"
        )
    head = [{"role": "system", "content": instruction}] if instruction else []

    def convert(row: Row, where: str) -> list[Sample]:
        dialog = [detokenize(t) for t in _text_list(row, "dialog", where)]
        samples = []
        for i in range(1, len(dialog)):
            lo = 0 if max_context_turns is None else max(0, i - max_context_turns)
            context = [
                {"role": "user" if (i - k) % 2 == 1 else "assistant", "content": dialog[k]}
                for k in range(lo, i)
            ]
            samples.append(Sample(head + context, (dialog[i],), {"turn": i}))
        return samples

    splits = _load(
        "dailydialog",
        subdir="dailydialog",
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        holdout=holdout,
        default_files=_STD_FILES,
        hub_id=hub_id,
        hub_config=None,
        hub_splits=_STD_HUB,
        convert=convert,
        key=lambda row: _record_key(row, "id", "dialog"),
    )
    return Task(
        "dailydialog",
        splits,
        default_reward={"rouge_l": 0.5, "chrf": 0.5},
        description="Next turn of an everyday conversation (DailyDialog, CC BY-NC-SA 4.0).",
    )


# ---------------------------------------------------------------- continuation


IMDB_INSTRUCTION = "Continue this movie review. Write only the continuation."
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def imdb(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = IMDB_INSTRUCTION,
    prompt_words: int = 20,
    max_reference_words: int | None = None,
    label: int | None = None,
    holdout: float = 0.05,
    hub_id: str = "stanfordnlp/imdb",
) -> Task:
    """IMDB: continue a movie review from its first ``prompt_words`` words.

    Records have ``text`` and ``label`` (0 negative, 1 positive). ``<br />`` tags become spaces.
    The reference is the rest of the review (at most ``max_reference_words`` words); reviews
    with no words after the prompt are skipped. ``label=1`` keeps only positive reviews (the
    positive-continuation flavour; pair it with a sentiment reward). ``meta = {"label",
    "sentiment"}``. The hub and the usual local copy have train and test; validation is held
    out of train. Local ``imdb/{train,test}.jsonl``.
    """
    if prompt_words < 1:
        raise ValueError(f"imdb: prompt_words={prompt_words!r} must be >= 1")
    if label not in (None, 0, 1):
        raise ValueError(f"imdb: label={label!r} must be 0 (negative), 1 (positive) or None (both)")

    def convert(row: Row, where: str) -> list[Sample]:
        words = " ".join(_BR.sub(" ", _text(row, "text", where)).split()).split(" ")
        y = _get(row, "label", where)
        if y not in (0, 1):
            raise DataFormatError(f"{where}: field 'label' must be 0 or 1, got {y!r}")
        if (label is not None and y != label) or len(words) <= prompt_words:
            return []
        rest = words[prompt_words:]
        if max_reference_words is not None:
            rest = rest[:max_reference_words]
        prompt = _user(instruction, " ".join(words[:prompt_words]))
        meta = {"label": int(y), "sentiment": "positive" if y == 1 else "negative"}
        return [Sample(prompt, (" ".join(rest),), meta)]

    splits = _load(
        "imdb",
        subdir="imdb",
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        holdout=holdout,
        default_files=_STD_FILES,
        hub_id=hub_id,
        hub_config=None,
        hub_splits={"train": "train", "test": "test"},
        convert=convert,
        key=lambda row: _record_key(row, "id", "text"),
    )
    return Task(
        "imdb",
        splits,
        default_reward="rouge_l",
        description="Continue a movie review from its first words (IMDB).",
    )


LOADERS: dict[str, Callable[..., Task]] = {
    "dialogsum": dialogsum,
    "samsum": samsum,
    "scitldr": scitldr,
    "taskmaster4": taskmaster4,
    "dailydialog": dailydialog,
    "cnn_dailymail": cnn_dailymail,
    "xsum": xsum,
    "imdb": imdb,
}
"""Task name -> loader, registered by :mod:`textgym.tasks`."""
