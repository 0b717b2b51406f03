"""Reading feedback records from files, and the field rules every way in shares.

Feedback reaches the store three ways: the labeling web app, ``textgym feedback import`` and the
Python API. They share one rule per field, so a value one of them refuses is refused by all:
:func:`check_score` is the 1-to-5 rating rule of the web app, the importers and
:meth:`~textgym.feedback.store.FeedbackStore.add_rating`.

:func:`read_records` (from :mod:`textgym.jsonfiles`) reads a JSON Lines file, or a JSON array of
objects (what Label Studio and Argilla export), and reports every problem as a
:class:`RecordError` whose message is one line naming the file, the line and the field.

>>> check_score(4), check_score(4.0)
(4, 4)
>>> try:
...     check_score(3.5)
... except ValueError as exc:
...     print(exc)
field 'score' must be a whole number from 1 to 5, got 3.5
"""

from __future__ import annotations

import math
from typing import Any

from textgym.jsonfiles import RecordError, read_records, read_text

__all__ = ["RecordError", "FieldError", "check_score", "read_records", "read_text"]


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
