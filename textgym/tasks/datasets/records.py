"""Records and their fields: reading JSONL / JSON / TSV files record by record, each with its
location (``"<file> line N"``, ``"<file> item N"``), and required-field accessors whose errors
(:class:`DataFormatError`) name that location and the field.

Shared by the data-set recipes and the embedded tasks (:mod:`textgym.tasks.embedded`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from textgym.jsonfiles import RecordError
from textgym.jsonfiles import read_records as read_json_records

Row = Mapping[str, Any]
"""One record of a data file: a JSON object."""


class DataFormatError(ValueError):
    """A data file does not have the expected schema; the message names file, line and field."""


def read_records(file: Path) -> Iterator[tuple[str, Row]]:
    """Yield ``(location, record)``: ``"<file> line N"`` for JSONL, ``"<file> item N"`` for JSON.

    Files are read by :func:`textgym.jsonfiles.read_records`: UTF-8 only, no NaN or Infinity;
    each problem is a :class:`DataFormatError` naming the file and line.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "bad.jsonl"
    >>> _ = path.write_bytes(b'{"a": "ok"}\\n{"a": "caf\\xe9"}\\n')
    >>> try:
    ...     list(read_records(path))
    ... except DataFormatError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    has byte 0xe9 at column 11, which is not UTF-8 (a Latin-1 or Windows-1252 file?); save it as UTF-8
    """
    if file.suffix == ".tsv":
        yield from read_tsv(file)
        return
    if file.suffix not in (".jsonl", ".json"):
        raise DataFormatError(
            f"{file}: unsupported file type {file.suffix!r}; use .jsonl, .json or .tsv"
        )
    layout = "lines" if file.suffix == ".jsonl" else "array"
    try:
        for i, (line, row) in enumerate(read_json_records(file, layout)):
            where = f"{file} line {line}" if file.suffix == ".jsonl" else f"{file} item {i}"
            if not isinstance(row, dict):
                raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row
    except RecordError as exc:  # the same words, located like the field errors below
        where = f"{file} line {exc.line}" if exc.line is not None else str(file)
        what = f"field {exc.field!r} {exc.problem}" if exc.field else exc.problem
        raise DataFormatError(f"{where}: {what}") from None


def read_tsv(file: Path) -> Iterator[tuple[str, Row]]:
    """Yield ``("<file> line N", record)`` from a tab-separated file whose first row names the
    fields (as GLUE's SST-2 files do). Values are strings; no quoting, so a ``"`` is text.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "dev.tsv"
    >>> _ = path.write_text('label\\tsentence\\n1\\ta "fine" film\\n0\\n')
    >>> rows = read_tsv(path)
    >>> next(rows)[1]
    {'label': '1', 'sentence': 'a "fine" film'}
    >>> try:
    ...     next(rows)
    ... except DataFormatError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    has 1 tab-separated value(s) where the header names 2 (label, sentence)
    """
    try:
        with open(file, encoding="utf-8-sig", newline="") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            if not all(header):
                raise DataFormatError(f"{file} line 1: the header row must name every column")
            for n, line in enumerate(f, 2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                values = line.split("\t")
                if len(values) != len(header):
                    raise DataFormatError(
                        f"{file} line {n}: has {len(values)} tab-separated value(s) where the "
                        f"header names {len(header)} ({', '.join(header)})"
                    )
                yield f"{file} line {n}", dict(zip(header, values, strict=True))
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{file}: not UTF-8 ({exc.reason}); save it as UTF-8") from None


def require_field(row: Row, key: str, where: str) -> Any:
    """A required field of any type.

    >>> require_field({"a": 1}, "b", "f.jsonl line 3")
    Traceback (most recent call last):
    ...
    textgym.tasks.datasets.records.DataFormatError: f.jsonl line 3: missing field 'b' (fields present: a)
    """
    if key not in row:
        raise DataFormatError(
            f"{where}: missing field {key!r} (fields present: {', '.join(sorted(map(str, row)))})"
        )
    return row[key]


def require_text(row: Row, key: str, where: str) -> str:
    """A required non-empty string field."""
    value = require_field(row, key, where)
    if not isinstance(value, str):
        raise DataFormatError(
            f"{where}: field {key!r} must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise DataFormatError(f"{where}: field {key!r} is empty; a prompt or reference needs text")
    return value


def require_texts(row: Row, key: str, where: str) -> list[str]:
    """A required list of strings with at least one non-empty entry (a bare string counts).

    >>> require_texts({"refs": ["A.", " ", "B."]}, "refs", "here"), require_texts({"r": "C."}, "r", "")
    (['A.', 'B.'], ['C.'])
    """
    value = require_field(row, key, where)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{where}: field {key!r} must be a list of strings")
    texts = [v for v in value if v.strip()]
    if not texts:
        raise DataFormatError(f"{where}: field {key!r} is empty; a prompt or reference needs text")
    return texts
