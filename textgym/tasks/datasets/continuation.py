"""Continuation data sets: the prompt is the start of a text, the reference its rest (``imdb``,
``sst2_sentiment``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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


SST2_INSTRUCTION = "Continue this sentence from a movie review. Write only the continuation."
SST2_DATA = DataSource(
    "sst2_sentiment",
    "sst2",
    files={"train": ("train.tsv",), "validation": ("dev.tsv", "validation.tsv")},
    key_fields=("sentence", "content"),
)
"""SST-2 from GLUE's TSV files: ``label<TAB>sentence`` (train) and ``label<TAB>content`` (dev)."""
SST2_TEXT_FIELDS = ("sentence", "content")
_PTB_BRACKETS = {"-lrb-": "(", "-rrb-": ")"}
_PTB_QUOTES = ((re.compile(r"``\s*"), '"'), (re.compile(r"\s*''"), '"'))  # open, close
_PTB_CLITIC = re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)
_PTB_BEFORE = re.compile(r" ([,.!?;:)%]|\.\.\.)(?= |$)")
_PTB_AFTER = re.compile(r"(\() ")


def detokenize_sst2(text: str) -> str:
    """Undo SST-2's Penn-Treebank tokenization, so prompts read as ordinary text.

    >>> print(detokenize_sst2("it does n't work -lrb- really -rrb- , and it 's `` fun '' ."))
    it doesn't work (really), and it's "fun".
    """
    words = [_PTB_BRACKETS.get(w.lower(), w) for w in text.split()]
    text = _PTB_CLITIC.sub(r"\1", " ".join(words))
    for pattern, quote in _PTB_QUOTES:
        text = pattern.sub(quote, text)
    return _PTB_AFTER.sub(r"\1", _PTB_BEFORE.sub(r"\1", text))


def sst2_sentiment(
    path: PathLike | None = None,
    *,
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = SST2_INSTRUCTION,
    prompt_words: int = 5,
    min_continuation_words: int = 3,
    reward: Any = "sst2_sentiment",
    holdout: float = 0.0,
) -> Task:
    """Sentiment control (RL4LMs' IMDB task on SST-2): continue a sentence from its opening.

    The prompt is the first ``prompt_words`` (default 5) words of an SST-2 sentence, after the
    instruction; the reference is the rest. The data set's tokenization is undone
    (:func:`detokenize_sst2`: ``does n't`` -> ``doesn't``). Sentences with fewer than ``min_continuation_words``
    words after the opening are skipped (SST-2's train file also holds short phrases), and so
    is an opening already seen in the split (train repeats sub-phrases of one sentence). Train
    prompts come from ``sst2/train.tsv``, validation prompts from ``sst2/dev.tsv``: the
    held-out evaluation. ``meta = {"opening", "label", "sentiment"}`` (the label of the whole
    sentence; the policy should steer away from it when it is negative).

    The default reward, ``"sst2_sentiment"``, is the probability that the opening plus the
    continuation is positive under the reward model that ``textgym feedback train-rm --data
    sst2`` trains on SST-2 train (:mod:`textgym.feedback.recipes`); its positive rate is the
    share of completions scored above 0.5. Local files only.
    """
    if prompt_words < 1:
        raise ValueError(f"sst2_sentiment: prompt_words={prompt_words!r} must be >= 1")
    if min_continuation_words < 1:
        raise ValueError(
            f"sst2_sentiment: min_continuation_words={min_continuation_words!r} must be >= 1"
        )
    seen: set[tuple[str, str]] = set()

    def convert(row: Row, where: str) -> list[Sample]:
        words = detokenize_sst2(sst2_text(row, where)).split()
        y = require_field(row, "label", where)
        if str(y) not in ("0", "1"):
            raise DataFormatError(f"{where}: field 'label' must be 0 or 1, got {y!r}")
        if len(words) < prompt_words + min_continuation_words:
            return []
        opening = " ".join(words[:prompt_words])
        key = (where.rsplit(" line ", 1)[0], opening)  # unique per file: train and dev apart
        if key in seen:
            return []
        seen.add(key)
        meta = {
            "opening": opening,
            "label": int(y),
            "sentiment": "positive" if str(y) == "1" else "negative",
        }
        return [Sample(user_turn(instruction, opening), (" ".join(words[prompt_words:]),), meta)]

    splits = SST2_DATA.load(
        convert,
        path=path,
        source="local",
        split=split,
        max_samples=max_samples,
        holdout=holdout,
    )
    return Task(
        "sst2_sentiment",
        splits,
        default_reward=reward,
        description="Continue the opening words of an SST-2 sentence; reward: P(positive) "
        "from a sentiment reward model trained on SST-2 train.",
    )


def sst2_text(row: Row, where: str) -> str:
    """The sentence of an SST-2 row: GLUE names its column ``sentence`` in train and
    ``content`` in some dev copies."""
    for name in SST2_TEXT_FIELDS:
        if name in row:
            return require_text(row, name, where)
    raise DataFormatError(
        f"{where}: no sentence column (tried {', '.join(SST2_TEXT_FIELDS)}; columns present: "
        f"{', '.join(sorted(map(str, row)))})"
    )
