"""JSON and JSON Lines files read safely: one line naming the file, the line and the field for
every problem, never a traceback.

Files are UTF-8 (a byte-order mark is allowed); UTF-16/UTF-32, NUL bytes and other encodings
are named as such. ``NaN``/``Infinity`` literals (and numbers that overflow to infinity), which
JSON does not have, are refused with the field that holds them, and so is JSON nested too deeply
to parse. Used by the data-set loaders (:mod:`textgym.tasks.datasets.records`) and the feedback
importers (:mod:`textgym.feedback.formats`).

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


LAYOUTS = ("auto", "lines", "array")


def read_records(path: str | os.PathLike[str], layout: str = "auto") -> Iterator[tuple[int, Any]]:
    """``(line, value)`` for each record of a JSON Lines file or a JSON array file.

    ``layout="auto"``: a file whose first character is ``[`` is one JSON array (each item's
    line is where it starts), otherwise each non-blank line is one value; ``"lines"`` and
    ``"array"`` insist on one of the two. Problems raise :class:`RecordError`.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    path = Path(path)
    text = read_text(path)
    stripped = text.lstrip()
    if layout == "array" and not stripped.startswith("["):
        raise RecordError(path, None, "is not a JSON array of records (it must start with '[')")
    if layout != "lines" and stripped.startswith("["):
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
