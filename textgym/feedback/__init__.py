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

from textgym.feedback.store import (
    BinaryLabel,
    Demonstration,
    Edit,
    FeedbackStore,
    LabelTask,
    PreferencePair,
    Ranking,
    Rating,
    Sample,
    SchemaError,
)

__all__ = [
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
]
