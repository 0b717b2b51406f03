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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (write null, or a number in quotes)")


def _parse(text: str, where: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity and turns every failure into one line."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        at = f" at line {exc.lineno}" if exc.lineno > 1 else ""
        raise DataFormatError(f"{where}: invalid JSON ({exc.msg}{at})") from None
    except RecursionError:
        raise DataFormatError(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise DataFormatError(f"{where}: invalid JSON ({exc})") from None


def _decode(data: bytes, where: str, start: bool = True) -> str:
    """UTF-8 text; at the ``start`` of a file a byte-order mark is dropped and UTF-16 named."""
    if start and data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFormatError(
            f"{where}: the file is UTF-16; save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8)"
        )
    try:
        return data.decode("utf-8-sig" if start else "utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        at = f"column {column}" if line == 1 else f"line {line}, column {column}"
        raise DataFormatError(
            f"{where}: not UTF-8 (byte 0x{data[exc.start]:02x} at {at}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_records(file: Path) -> Iterator[tuple[str, Row]]:
    """Yield ``(location, record)``: ``"<file> line N"`` for JSONL, ``"<file> item N"`` for JSON.

    Files are UTF-8; NaN and Infinity literals are refused (they are not JSON).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "bad.jsonl"
    >>> _ = path.write_bytes(b'{"a": "ok"}\\n{"a": "caf\\xe9"}\\n')
    >>> try:
    ...     list(read_records(path))
    ... except DataFormatError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    not UTF-8 (byte 0xe9 at column 11); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)
    """
    if file.suffix == ".jsonl":
        with open(file, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{file} line {lineno}"
                line = _decode(raw, where, start=lineno == 1)
                if not line.strip():
                    continue
                row = _parse(line, where)
                if not isinstance(row, dict):
                    raise DataFormatError(
                        f"{where}: expected a JSON object, got {type(row).__name__}"
                    )
                yield where, row
    elif file.suffix == ".json":
        items = _parse(_decode(file.read_bytes(), str(file)), str(file))
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
