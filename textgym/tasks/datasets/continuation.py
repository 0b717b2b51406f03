"""Continuation data sets: the prompt is the start of a text, the reference its rest (``imdb``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from textgym.tasks.base import Sample, Task
from textgym.tasks.datasets.loading import DataSource, PathLike
from textgym.tasks.datasets.prompts import user_turn
from textgym.tasks.datasets.records import DataFormatError, Row, require_field, require_text

IMDB_INSTRUCTION = "Continue this movie review. Write only the continuation."
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
IMDB_DATA = DataSource(
    "imdb",
    "imdb",
    hub_id="stanfordnlp/imdb",
    hub_splits={"train": "train", "test": "test"},
    key_fields=("id", "text"),
)


def imdb(
    path: PathLike | None = None,
    *,
    source: str = "local",
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = IMDB_INSTRUCTION,
    prompt_words: int = 20,
    max_reference_words: int | None = None,
    label: int | None = None,
    holdout: float = 0.05,
    hub_id: str | None = None,
) -> Task:
    """IMDB: continue a movie review from its first ``prompt_words`` words.

    Records have ``text`` and ``label`` (0 negative, 1 positive). ``<br />`` tags become spaces.
    The reference is the rest of the review (at most ``max_reference_words`` words); reviews
    with no words after the prompt are skipped. ``label=1`` keeps only positive reviews (the
    positive-continuation flavour; pair it with a sentiment reward). ``meta = {"label",
    "sentiment"}``. The hub and the usual local copy have train and test; validation is held
    out of train. Local ``imdb/{train,test}.jsonl``; ``hub_id`` replaces the hub id of
    :data:`IMDB_DATA`.
    """
    if prompt_words < 1:
        raise ValueError(f"imdb: prompt_words={prompt_words!r} must be >= 1")
    if label not in (None, 0, 1):
        raise ValueError(f"imdb: label={label!r} must be 0 (negative), 1 (positive) or None (both)")

    def convert(row: Row, where: str) -> list[Sample]:
        words = " ".join(_BR.sub(" ", require_text(row, "text", where)).split()).split(" ")
        y = require_field(row, "label", where)
        if y not in (0, 1):
            raise DataFormatError(f"{where}: field 'label' must be 0 or 1, got {y!r}")
        if (label is not None and y != label) or len(words) <= prompt_words:
            return []
        rest = words[prompt_words:]
        if max_reference_words is not None:
            rest = rest[:max_reference_words]
        prompt = user_turn(instruction, " ".join(words[:prompt_words]))
        meta = {"label": int(y), "sentiment": "positive" if y == 1 else "negative"}
        return [Sample(prompt, (" ".join(rest),), meta)]

    splits = IMDB_DATA.load(
        convert,
        path=path,
        source=source,
        split=split,
        max_samples=max_samples,
        holdout=holdout,
        hub_id=hub_id,
    )
    return Task(
        "imdb",
        splits,
        default_reward="rouge_l",
        description="Continue a movie review from its first words (IMDB).",
    )
