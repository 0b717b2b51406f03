"""Records and their fields: reading JSONL / JSON files record by record, each with its
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
    if file.suffix not in (".jsonl", ".json"):
        raise DataFormatError(f"{file}: unsupported file type {file.suffix!r}; use .jsonl or .json")
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
