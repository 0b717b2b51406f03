"""Reading feedback records from files, and the field rules every way in shares.

Feedback reaches the store three ways: the labeling web app, ``textgym feedback import`` and the
Python API. They share one rule per field, so a value one of them refuses is refused by all:
:func:`check_score` is the 1-to-5 rating rule of the web app, the importers and
:meth:`~textgym.feedback.store.FeedbackStore.add_rating`.

:func:`read_records` reads a JSON Lines file, or a JSON array of objects (what Label Studio and
Argilla export), and reports every problem as a :class:`RecordError` whose message is one line
naming the file, the line and, where there is one, the field: files that are not UTF-8 (Latin-1,
UTF-16), lines that are not JSON or are nested too deeply to parse, and ``NaN``/``Infinity``
literals, which JSON does not have.

>>> check_score(4), check_score(4.0)
(4, 4)
>>> try:
...     check_score(3.5)
... except ValueError as exc:
...     print(exc)
field 'score' must be a whole number from 1 to 5, got 3.5
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.jsonl"
>>> _ = path.write_text('{"score": 4}\\n\\n{"score": NaN}\\n')
>>> try:
...     records = list(read_records(path))
... except RecordError as exc:
...     print(exc.line, exc.field, exc.problem)
3 score is NaN, not a finite number (JSON has no NaN or Infinity); write a number or null
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A bad record in a feedback file: one line naming the file, the line and the field."""

    def __init__(
        self, path: str | os.PathLike[str], line: int | None, problem: str, field: str = ""
    ) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        what = f"field {field!r} {problem}" if field else problem
        super().__init__(f"{where}: {what}")
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem


class FieldError(ValueError):
    """A field of one record breaks its rule; ``field`` is its path (``a.b[2]``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")
        self.field = field
        self.problem = problem


# ----------------------------------------------------------------------------- field rules

SCORE_MIN, SCORE_MAX = 1, 5


def check_score(value: Any, field: str = "score") -> int:
    """The rating rule: a whole number from 1 to 5 (``4`` or ``4.0``); return it as an int.

    ``3.5`` or ``3.9`` is refused, not rounded; so are booleans, strings and NaN.
    """
    whole = isinstance(value, int) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )
    if isinstance(value, bool) or not whole or not SCORE_MIN <= value <= SCORE_MAX:
        raise FieldError(
            field, f"must be a whole number from {SCORE_MIN} to {SCORE_MAX}, got {value!r}"
        )
    return int(value)


def type_name(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string"}
    names.update({list: "array", dict: "object"})
    return names.get(type(value), type(value).__name__)


def get_text(
    record: dict[str, Any], key: str, *, path: str = "", default: str | None = None
) -> str:
    """``record[key]`` as a string; missing (without ``default``) or not a string is refused."""
    field = f"{path}.{key}" if path else key
    if key not in record:
        if default is not None:
            return default
        raise FieldError(field, "is missing")
    value = record[key]
    if not isinstance(value, str):
        raise FieldError(field, f"must be a string, got {type_name(value)}")
    return value


def get_object(record: dict[str, Any], key: str, *, path: str = "") -> dict[str, Any]:
    """``record[key]``, which must be a JSON object."""
    field = f"{path}.{key}" if path else key
    if key not in record:
        raise FieldError(field, "is missing")
    value = record[key]
    if not isinstance(value, dict):
        raise FieldError(field, f"must be an object, got {type_name(value)}")
    return value


def get_list(record: dict[str, Any], key: str, *, path: str = "") -> list[Any]:
    """``record[key]``, which must be a JSON array."""
    field = f"{path}.{key}" if path else key
    if key not in record:
        raise FieldError(field, "is missing")
    value = record[key]
    if not isinstance(value, list):
        raise FieldError(field, f"must be an array, got {type_name(value)}")
    return value


def get_int(record: dict[str, Any], key: str, *, path: str = "") -> int:
    """``record[key]``, which must be a whole JSON number (not a boolean)."""
    field = f"{path}.{key}" if path else key
    if key not in record:
        raise FieldError(field, "is missing")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(field, f"must be an integer, got {value!r}")
    return value


def get_time(record: dict[str, Any], key: str = "created") -> float | None:
    """``record[key]``, a finite number of seconds, or None when absent or null."""
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(key, f"must be a number of seconds, got {type_name(value)}")
    return float(value)


# ----------------------------------------------------------------------------- files


class _NonFinite:
    """Stands in for a NaN or infinite number while parsing, so that its field can be named."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)  # 1e999 overflows to inf


def _non_finite_field(value: Any) -> tuple[str, str] | None:
    """The path and literal of the first NaN/Infinity in ``value`` (an iterative walk: values
    can be as deep as the parser allows)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, _NonFinite):
            return path or "(the line)", item.literal
        if isinstance(item, dict):
            stack.extend(
                (f"{path}.{k}" if path else str(k), v) for k, v in reversed(list(item.items()))
            )
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item))))
    return None


_DECODER = json.JSONDecoder(parse_constant=_NonFinite, parse_float=_parse_float)


def _decode(path: Path, text: str, start: int, line: int, base: int) -> tuple[Any, int]:
    """The JSON value of ``text`` at ``start`` (the record on ``line``; ``text`` begins on line
    ``base``) and where it ends; RecordError for anything that is not JSON."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise RecordError(path, base + exc.lineno - 1, f"is not JSON ({exc.msg})") from None
    except RecursionError:
        raise RecordError(
            path, line, "is JSON nested too deeply to read; flatten the record"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise RecordError(path, line, f"is not JSON ({exc})") from None
    bad = _non_finite_field(value)
    if bad is not None:
        raise RecordError(
            path,
            line,
            f"is {bad[1]}, not a finite number (JSON has no NaN or Infinity); "
            "write a number or null",
            field=bad[0],
        )
    return value, end


def read_text(path: str | os.PathLike[str]) -> str:
    """The file as text: UTF-8 (a byte-order mark is allowed); any other encoding is refused with
    the line of the first offending byte."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecordError(path, None, f"cannot be read ({exc.strerror or exc})") from None
    boms = {
        b"\xff\xfe\x00\x00": "UTF-32",
        b"\x00\x00\xfe\xff": "UTF-32",
        b"\xff\xfe": "UTF-16",
        b"\xfe\xff": "UTF-16",
    }
    for bom, name in boms.items():
        if data.startswith(bom):
            raise RecordError(
                path, 1, f"is {name} (it starts with a {name} byte-order mark); save it as UTF-8"
            )
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise RecordError(path, line, "has a NUL byte (a UTF-16 file?); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecordError(
            path,
            line,
            f"has byte 0x{data[exc.start]:02x} at column {column}, which is not UTF-8 "
            "(a Latin-1 or Windows-1252 file?); save it as UTF-8",
        ) from None


def read_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line, value)`` for each record of a JSON Lines file or a JSON array file.

    A file whose first character is ``[`` is one JSON array (each item's line is where it
    starts); otherwise each non-blank line is one value. Problems raise :class:`RecordError`.
    """
    path = Path(path)
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _array_items(path, text, len(text) - len(stripped))
        return
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: JSON strings may hold U+2028
        if line.strip():
            value, end = _decode(path, line, len(line) - len(line.lstrip()), n, n)
            if line[end:].strip():
                raise RecordError(path, n, "has text after the JSON value; one record per line")
            yield n, value


def _array_items(path: Path, text: str, pos: int) -> Iterator[tuple[int, Any]]:
    """The items of the JSON array starting at ``text[pos]``, each with its line."""

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    pos = skip(pos + 1)
    first = True
    while True:
        if pos < len(text) and text[pos] == "]":
            if text[pos + 1 :].strip():
                raise RecordError(path, line_at(pos), "has text after the JSON array")
            return
        if not first:
            if pos >= len(text) or text[pos] != ",":
                raise RecordError(path, line_at(pos), "is not JSON (expected ',' or ']')")
            pos = skip(pos + 1)
        if pos >= len(text):
            raise RecordError(path, line_at(pos), "is not JSON (the array is not closed)")
        line = line_at(pos)
        value, end = _decode(path, text, pos, line, 1)
        yield line, value
        pos = skip(end)
        first = False
