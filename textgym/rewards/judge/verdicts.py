"""Reading a verdict out of a remote judge's free-text answer (:func:`parse_verdict`)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

_KEYS = ("score", "rating", "verdict", "winner", "answer", "label", "grade")


_WINDOW = 1024
"""Characters first given to one JSON decoding attempt; grown while the object runs past it."""
_TRUNCATED = 16
"""A decoding error this close to a window's end may be the window's fault: grow and retry."""


def _match_value(raw: Any, scale: Mapping[str, float]) -> float | None:
    """The scale value that ``raw`` names: a label (case-insensitive) or a number in range."""
    if isinstance(raw, bool) or raw is None:
        return None
    text = str(raw).strip().strip("\"'.*`").strip()
    if len(text) > max(64, *map(len, scale)):  # neither a label nor a number
        return None
    for label, value in scale.items():
        if text.casefold() == label.casefold():
            return value
    try:
        number = float(text.split("/")[0])
    except ValueError:
        return None
    lo, hi = min(scale.values()), max(scale.values())
    numeric = all(re.fullmatch(r"-?\d+(\.\d+)?", lab) for lab in scale)
    return number if numeric and lo <= number <= hi else None


def _decode_at(text: str, start: int) -> tuple[Any, int, int]:
    """``(object, end, cost)`` for the JSON value starting at ``text[start]``, or ``(None,
    -1, cost)`` when there is none; ``cost`` is the characters the attempt handled.

    Decoding works on a window of the text, grown only while the value runs past it: a failed
    :meth:`json.JSONDecoder.raw_decode` on the whole text would cost time proportional to
    ``start`` (its error message counts the lines before the failure), which made the search
    quadratic in the text length.
    """
    decoder = json.JSONDecoder()
    size = _WINDOW
    cost = 0
    while True:
        window = text[start : start + size]
        whole = start + size >= len(text)
        cost += len(window)
        try:
            obj, end = decoder.raw_decode(window)
        except json.JSONDecodeError as exc:
            cut = exc.pos >= len(window) - _TRUNCATED or exc.msg.startswith("Unterminated")
            if whole or not cut:
                return None, -1, cost
        except RecursionError:  # nested deeper than Python's stack: not a verdict
            return None, -1, cost
        else:
            return obj, start + end, cost
        size *= 4


def _dicts_within(obj: Any) -> Iterator[dict]:
    """``obj`` and every dict nested in it, in document order (iteratively: the nesting may
    be as deep as the decoder allows)."""
    stack = [iter([obj])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, dict):
                yield item
                stack.append(iter(item.values()))
                break
            if isinstance(item, list):
                stack.append(iter(item))
                break
        else:
            stack.pop()


def _json_objects(text: str) -> Iterator[dict]:
    """The JSON objects in ``text``, outer before inner, in order of their opening brace.

    Linear in ``len(text)``: a decoded object is skipped as a whole (its nested objects come
    from walking it), and all decoding attempts together handle at most a fixed multiple of
    the text; an adversarial text exhausts that budget and simply yields no more objects.
    """
    budget = 4 * len(text) + 64 * _WINDOW
    start = text.find("{")
    while start >= 0 and budget > 0:
        obj, end, cost = _decode_at(text, start)
        budget -= cost
        if isinstance(obj, dict):
            yield from _dicts_within(obj)
            start = text.find("{", end)
        else:
            start = text.find("{", start + 1)


def parse_verdict(text: str, scale: Mapping[str, float], key: str = "score") -> float | None:
    """Read a verdict from a judge's free-text answer; None when it names no single verdict.

    Tried in order: a JSON object (anywhere in the text, code fences allowed) with ``key`` or a
    usual synonym; ``key: value`` in prose; the whole answer being a label; exactly one distinct
    label occurring as a word. Numeric scales also accept in-range numbers such as ``7.5`` or
    ``8/10``.

    Time is linear in ``len(text)`` (a few regular-expression passes, and a JSON search whose
    decoding work is capped at a multiple of the text), so a huge or hostile answer costs
    about 0.2 s per MiB instead of hanging the caller.

    >>> scale = {str(i): float(i) for i in range(1, 11)}
    >>> parse_verdict('```json\\n{"score": 8, "reason": "clear"}\\n```', scale)
    8.0
    >>> parse_verdict("Score: 7/10. Mostly right.", scale)
    7.0
    >>> parse_verdict("Yes.", {"No": 0.0, "Yes": 1.0})
    1.0
    >>> parse_verdict("I cannot decide.", scale) is None
    True
    """
    keys = tuple(dict.fromkeys(k.casefold() for k in (key, *_KEYS)))
    for obj in _json_objects(text):
        lowered = {str(k).casefold(): v for k, v in obj.items()}
        for k in keys:
            if k in lowered:
                value = _match_value(lowered[k], scale)
                if value is not None:
                    return value
    # One pass per rule, whatever the number of keys and labels: the first "key: value" of
    # each key (the value in a lookahead, so that "score: rating 5" still finds the rating).
    first: dict[str, str] = {}
    for m in _key_pattern(keys).finditer(text):
        first.setdefault(m.group(1).casefold(), m.group(2))
        if keys[0] in first:
            break
    for k in keys:
        if k in first:
            value = _match_value(first[k], scale)
            if value is not None:
                return value
    value = _match_value(text, scale)
    if value is not None:
        return value
    m = _label_pattern(tuple(scale)).search(text)
    if m is None:
        return None
    value = next(v for label, v in scale.items() if label.casefold() == m.group(0).casefold())
    others = tuple(label for label, v in scale.items() if v != value)
    # a single verdict: no label of another value occurs anywhere
    return None if others and _label_pattern(others).search(text) else value


@functools.lru_cache(maxsize=64)
def _key_pattern(keys: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(re.escape(k) for k in keys)
    return re.compile(rf"(?i)\b({names})\b(?=\W{{0,4}}([A-Za-z]+|-?\d+(?:\.\d+)?(?:/\d+)?))")


@functools.lru_cache(maxsize=64)
def _label_pattern(labels: tuple[str, ...]) -> re.Pattern[str]:
    # a label as a word; "8." ending a sentence counts, "8.5" and "v8" do not. Longest first,
    # so that "10" is not read as "1".
    names = "|".join(re.escape(lab) for lab in sorted(labels, key=len, reverse=True))
    return re.compile(rf"(?<![\w.])(?:{names})(?!\w|\.\d)", re.IGNORECASE)
