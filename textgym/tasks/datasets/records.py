"""Records and their fields: reading JSONL / JSON files record by record, each with its
location (``"<file> line N"``, ``"<file> item N"``), and required-field accessors whose errors
(:class:`DataFormatError`) name that location and the field.

Shared by the data-set recipes and the embedded tasks (:mod:`textgym.tasks.embedded`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]
"""One record of a data file: a JSON object."""


class DataFormatError(ValueError):
    """A data file does not have the expected schema; the message names file, line and field."""


def read_records(file: Path) -> Iterator[tuple[str, Row]]:
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
