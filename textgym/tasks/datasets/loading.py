"""The loading engine: where a data set's files are, which file feeds which split, the
deterministic hold-out of missing splits, and the per-split sample caps.

A recipe describes its data set once (:class:`DataSource`: folder, default files, hub id, the
fields that identify a record) and converts records to samples; :meth:`DataSource.load` does
the rest. :mod:`textgym.tasks.datasets` explains the rules for users.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from textgym.tasks.base import SPLITS, Sample
from textgym.tasks.datasets.records import Row, read_records

PathLike = Union[str, "os.PathLike[str]"]
Convert = Callable[[Row, str], list[Sample]]
"""``convert(record, location) -> samples``: a recipe's reading of one record."""
Records = Callable[[], Iterable[tuple[str, Row]]]
"""A fresh iterator over ``(location, record)`` pairs of one split."""

DATA_ENV = "TEXTGYM_DATA"
"""Environment variable naming the data root (the folder holding ``dialogsum/``, ...)."""

SOURCES = ("local", "hub")
_REPO_ROOT = Path(__file__).resolve().parents[3]


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


def dataset_dir(name: str, subdir: str, path: PathLike | None) -> Path:
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
) -> dict[str, Records]:
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
                yield from read_records(file)

        return read

    return {s: reader(files) for s, files in found.items()}


def _hub_sources(
    name: str,
    hub_id: str,
    config: str | None,
    split: Mapping[str, str] | None,
    default_splits: Mapping[str, str],
) -> dict[str, Records]:
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
    sources: Mapping[str, Records],
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


STD_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.jsonl", "train.json"),
    "validation": ("validation.jsonl", "dev.jsonl", "val.jsonl", "validation.json", "dev.json"),
    "test": ("test.jsonl", "test.json"),
}
"""The usual file names of each split, tried in order."""
STD_HUB = {"train": "train", "validation": "validation", "test": "test"}
"""The usual hub split names."""


@dataclass(frozen=True)
class DataSource:
    """Where one data set's records come from, and what identifies a record.

    Attributes:
        name: the task name, which starts every error message.
        folder: the data set's folder under the data root (``"taskmaster4/data"``).
        files: split name -> file names or glob patterns tried in order, inside ``folder``.
        hub_id: the Hugging Face hub id (None: local files only).
        hub_config: the hub configuration name, if the data set has several.
        hub_splits: split name -> hub split name.
        key_fields: the fields whose first non-empty value decides a record's hold-out slot
            (the whole record when none is present).
    """

    name: str
    folder: str
    files: Mapping[str, Sequence[str]] = field(default_factory=lambda: STD_FILES)
    hub_id: str | None = None
    hub_config: str | None = None
    hub_splits: Mapping[str, str] = field(default_factory=lambda: STD_HUB)
    key_fields: tuple[str, ...] = ()

    def load(
        self,
        convert: Convert,
        *,
        path: PathLike | None,
        source: str,
        split: Mapping[str, str] | None,
        max_samples: int | None,
        holdout: float,
        hub_id: str | None = None,
    ) -> dict[str, list[Sample]]:
        """Split name -> samples: the records of each split through ``convert``, missing
        validation/test splits held out of train, each split capped at ``max_samples``.

        ``hub_id`` replaces :attr:`hub_id` (a mirror or a fork of the data set).
        """
        _check_options(self.name, source, max_samples, holdout)
        if source == "hub":
            hub_id = hub_id or self.hub_id
            if hub_id is None:
                raise ValueError(
                    f"{self.name}: no Hugging Face hub id is known; use source='local'"
                )
            sources = _hub_sources(self.name, hub_id, self.hub_config, split, self.hub_splits)
        else:
            folder = dataset_dir(self.name, self.folder, path)
            sources = _local_sources(self.name, folder, split, self.files)
        return _assemble(
            self.name,
            sources,
            convert,
            lambda row: _record_key(row, *self.key_fields),
            max_samples,
            holdout,
        )
