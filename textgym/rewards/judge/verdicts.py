"""Reading a verdict out of a remote judge's free-text answer (:func:`parse_verdict`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_KEYS = ("score", "rating", "verdict", "winner", "answer", "label", "grade")


def _match_value(raw: Any, scale: Mapping[str, float]) -> float | None:
    """The scale value that ``raw`` names: a label (case-insensitive) or a number in range."""
    if isinstance(raw, bool) or raw is None:
        return None
    text = str(raw).strip().strip("\"'.*`").strip()
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


def _json_objects(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        found.append(obj)
    return found


def parse_verdict(text: str, scale: Mapping[str, float], key: str = "score") -> float | None:
    """Read a verdict from a judge's free-text answer; None when it names no single verdict.

    Tried in order: a JSON object (anywhere in the text, code fences allowed) with ``key`` or a
    usual synonym; ``key: value`` in prose; the whole answer being a label; exactly one distinct
    label occurring as a word. Numeric scales also accept in-range numbers such as ``7.5`` or
    ``8/10``.

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
    keys = (key, *[k for k in _KEYS if k != key])
    for obj in _json_objects(text):
        if isinstance(obj, dict):
            lowered = {str(k).casefold(): v for k, v in obj.items()}
            for k in keys:
                if k in lowered:
                    value = _match_value(lowered[k], scale)
                    if value is not None:
                        return value
    for k in keys:
        m = re.search(rf"(?i)\b{k}\b\W{{0,4}}([A-Za-z]+|-?\d+(?:\.\d+)?(?:/\d+)?)", text)
        if m:
            value = _match_value(m.group(1), scale)
            if value is not None:
                return value
    value = _match_value(text, scale)
    if value is not None:
        return value
    hits = {
        v
        for label, v in scale.items()
        # a label as a word; "8." ending a sentence counts, "8.5" and "v8" do not
        if re.search(rf"(?<![\w.]){re.escape(label)}(?!\w|\.\d)", text, re.IGNORECASE)
    }
    return hits.pop() if len(hits) == 1 else None
