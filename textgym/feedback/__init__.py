"""Human feedback: the feedback store, the labeling web app, the human reward, reward models.

- :class:`FeedbackStore` (SQLite, WAL): samples, ratings, rankings, edits, demonstrations,
  binary labels, and the labeling queue; JSONL import and export.
- ``textgym feedback serve --db FILE``: the labeling web page (:mod:`textgym.feedback.server`).
- :class:`HumanReward`: a TextGen-v0 reward that asks people (web page or console) and waits.
- :mod:`textgym.feedback.reward_model`: train a reward model from preferences, ratings or binary
  labels (``textgym feedback train-rm``) and use it, or any HF sequence classifier, as a reward.
- :mod:`textgym.feedback.aggregate`: several raters per item, per-rater normalisation and
  Krippendorff's alpha.
"""

from __future__ import annotations

import importlib
from typing import Any

# Attribute -> its module, imported on first access (PEP 562): the store needs sqlite3, which
# ``import textgym`` does not pay for.
_LAZY: dict[str, str] = {
    name: "textgym.feedback.store"
    for name in (
        "BinaryLabel",
        "Demonstration",
        "Edit",
        "FeedbackStore",
        "LabelTask",
        "PreferencePair",
        "Ranking",
        "Rating",
        "Sample",
        "SchemaError",
    )
}


def __getattr__(name: str) -> Any:
    """Import the feedback store the first time one of its names is read from this package."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later reads skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY.keys())


__all__ = sorted(_LAZY)  # the lazy names are the public API
