"""Embedded tasks: small, original, offline data sets shipped inside the package.

``keywords``  CommonGen-style constrained generation: one sentence using 2-4 given words.
``summarize`` one-sentence summaries of 40 short original passages (one or two references).
``dialogue``  the next reply in 40 short original everyday chats (one or two references).

All text in ``textgym/tasks/data`` was written for textgym. Splits are fixed: the same call
gives the same samples in the same order on every machine.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from textgym.tasks.base import Sample, Task
from textgym.tasks.datasets.prompts import system_turn, user_turn
from textgym.tasks.datasets.records import (
    DataFormatError,
    require_field,
    require_text,
    require_texts,
)

_DATA = resources.files("textgym.tasks") / "data"


@cache
def word_list(name: str) -> tuple[str, ...]:
    """The words of ``tasks/data/keyword_<name>.txt`` (``"nouns"`` or ``"verbs"``), in file order.

    >>> len(word_list("nouns")) > 100, word_list("verbs")[0]
    (True, 'bake')
    """
    text = (_DATA / f"keyword_{name}.txt").read_text(encoding="utf-8")
    return tuple(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


@cache
def _records(name: str) -> tuple[dict[str, Any], ...]:
    file = _DATA / name
    items = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise DataFormatError(f"{file}: expected a JSON list of records")
    return tuple(items)


def _split_of(index: int) -> str:
    """Fixed split of embedded record ``index``: 6 of every 8 train, then validation, test."""
    return {6: "validation", 7: "test"}.get(index % 8, "train")


KEYWORDS_TEMPLATE = "Write one sentence that uses the words: {keywords}."


def keywords(
    *,
    num_keywords: int | tuple[int, int] = 3,
    num_train: int = 3000,
    num_validation: int = 100,
    num_test: int = 100,
    seed: int = 0,
    template: str = KEYWORDS_TEMPLATE,
) -> Task:
    """Keyword-constrained generation: write one sentence that uses every given word.

    Each prompt has ``num_keywords`` words (an int, or an inclusive ``(low, high)`` range drawn
    per prompt): one verb and the rest nouns from the shipped word lists, in random order. The
    combinations are generated from ``seed`` and are all distinct (as sets); the first
    ``num_test`` go to test, the next ``num_validation`` to validation, the rest to train, so
    test and validation do not change when ``num_train`` does. References are empty;
    ``meta = {"keywords": [...]}``. Default reward ``"keyword_sentence"``
    (:class:`~textgym.rewards.fluency.KeywordSentence`): soft keyword coverage times the
    fluency of the completion under SmolLM2-135M-Instruct times its fraction of distinct word
    trigrams, so that a list of the keywords ("Duck, Lion, Cook") or a loop scores 0 where a
    sentence scores its coverage. ``reward="keyword_coverage_soft"`` is the coverage alone
    (partial character-level credit: a signal even for a tiny random policy, whose text no LM
    finds fluent).

    >>> task = keywords(num_train=10)
    >>> task
    Task('keywords', train=10, validation=100, test=100)
    >>> sample = task.split("test")[0]
    >>> sample.prompt[0]["content"] == KEYWORDS_TEMPLATE.format(
    ...     keywords=", ".join(sample.meta["keywords"]))
    True
    """
    low, high = (num_keywords, num_keywords) if isinstance(num_keywords, int) else num_keywords
    if not 1 <= low <= high <= 8:
        raise ValueError(
            f"keywords: num_keywords={num_keywords!r} must be an int or (low, high) within 1..8"
        )
    for label, n in (
        ("num_train", num_train),
        ("num_validation", num_validation),
        ("num_test", num_test),
    ):
        if n < 0:
            raise ValueError(f"keywords: {label}={n!r} must be >= 0")
    if "{keywords}" not in template:
        raise ValueError(f"keywords: template {template!r} must contain '{{keywords}}'")
    nouns, verbs = word_list("nouns"), word_list("verbs")
    total = num_train + num_validation + num_test
    # Rejection sampling below needs room: ask for at most half of the distinct word sets.
    capacity = sum(
        len(nouns) if k == 1 else len(verbs) * math.comb(len(nouns), k - 1)
        for k in range(low, high + 1)
    )
    if total > capacity // 2:
        raise ValueError(
            f"keywords: {total} distinct prompts requested but num_keywords={num_keywords!r} allows "
            f"about {capacity}; ask for at most {capacity // 2} or use more keywords"
        )

    rng = np.random.default_rng(seed)
    seen: set[frozenset[str]] = set()
    combos: list[list[str]] = []
    while len(combos) < total:
        k = int(rng.integers(low, high + 1))
        words = [verbs[int(rng.integers(len(verbs)))]] if k >= 2 else []
        words += [nouns[int(i)] for i in rng.choice(len(nouns), size=k - len(words), replace=False)]
        words = [words[int(i)] for i in rng.permutation(len(words))]
        key = frozenset(words)
        if len(key) < k or key in seen:  # "watch" and "water" are both noun and verb
            continue
        seen.add(key)
        combos.append(words)

    def sample(words: list[str]) -> Sample:
        content = template.format(keywords=", ".join(words))
        return Sample([{"role": "user", "content": content}], (), {"keywords": words})

    samples = [sample(w) for w in combos]
    test, val = samples[:num_test], samples[num_test : num_test + num_validation]
    return Task(
        "keywords",
        {"train": samples[num_test + num_validation :], "validation": val, "test": test},
        default_reward="keyword_sentence",
        description="Write one sentence that uses all the given words (CommonGen-style).",
    )


SUMMARIZE_INSTRUCTION = "Summarize this passage in one sentence."


def summarize(*, instruction: str = SUMMARIZE_INSTRUCTION) -> Task:
    """One-sentence summaries of 40 short original passages on varied topics.

    Records 6 and 7 of every 8 (by file order) are validation and test: 30 / 5 / 5.
    ``meta = {"id", "topic"}``. Default reward ``"rouge_l"``.

    >>> task = summarize()
    >>> task
    Task('summarize', train=30, validation=5, test=5)
    >>> task.split("train")[0].prompt[0]["content"].splitlines()[0]
    'Summarize this passage in one sentence.'
    """
    splits: dict[str, list[Sample]] = {"train": [], "validation": [], "test": []}
    for i, row in enumerate(_records("summarize.json")):
        where = f"summarize.json item {i}"
        passage = require_text(row, "passage", where)
        refs = tuple(require_texts(row, "summaries", where))
        meta = {
            "id": str(require_field(row, "id", where)),
            "topic": str(require_field(row, "topic", where)),
        }
        splits[_split_of(i)].append(Sample(user_turn(instruction, passage), refs, meta))
    return Task(
        "summarize",
        splits,
        default_reward="rouge_l",
        description="One-sentence summary of a short passage (original text, embedded).",
    )


DIALOGUE_INSTRUCTION = "Reply to the last message in one or two friendly sentences."


def dialogue(*, instruction: str = DIALOGUE_INSTRUCTION) -> Task:
    """The next reply in 40 short original everyday conversations (chat messages).

    ``instruction`` becomes a system message ("" for none). Splits as in :func:`summarize`
    (30 / 5 / 5). ``meta = {"id"}``. Default reward ``{"rouge_l": 0.5, "chrf": 0.5}``.

    >>> task = dialogue()
    >>> [m["role"] for m in task.split("test")[0].prompt]
    ['system', 'user', 'assistant', 'user']
    """
    head = system_turn(instruction)
    splits: dict[str, list[Sample]] = {"train": [], "validation": [], "test": []}
    for i, row in enumerate(_records("dialogue.json")):
        where = f"dialogue.json item {i}"
        messages = require_field(row, "messages", where)
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
            raise DataFormatError(
                f"{where}: 'messages' must be a non-empty list ending with a user turn"
            )
        chat = [
            {"role": require_text(m, "role", where), "content": require_text(m, "content", where)}
            for m in messages
        ]
        refs = tuple(require_texts(row, "references", where))
        splits[_split_of(i)].append(
            Sample(head + chat, refs, {"id": str(require_field(row, "id", where))})
        )
    return Task(
        "dialogue",
        splits,
        default_reward={"rouge_l": 0.5, "chrf": 0.5},
        description="Next reply in a short everyday chat (original text, embedded).",
    )


BUILDERS = {"keywords": keywords, "summarize": summarize, "dialogue": dialogue}
"""Task name -> builder, registered by :mod:`textgym.tasks`."""
