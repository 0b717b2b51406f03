"""A summarization reward a small model can climb: ROUGE-L, MiniLM similarity and length,
gated against copies and transcripts of the source.

ROUGE-L alone is sparse for a 135M model: most of its early summaries share few words in
order with the reference, so most completions of a batch score alike and the advantage is
mostly noise. The cosine similarity of MiniLM sentence embeddings
(:class:`~textgym.rewards.metrics.SemanticSimilarity`) gives graded credit for a summary
that says the right thing in other words, so better samples score higher even before they
copy the reference's wording. Neither term minds length much: ROUGE-L's F-measure only
dilutes, and an embedding of a rambling text that contains the summary stays close to it.
:class:`ReferenceLength` (1 at the reference's length, falling linearly to 0 at twice or at
none of it) keeps the policy from drifting to long or cut-off completions to win the other
two.

``"rouge_minilm"`` = ``(1.0 * rouge_l + 0.5 * semantic_similarity + 0.25 * reference_length)
* min(1, novelty / 0.5) * no_turns`` (the default reward of the ``dialogsum_rl`` task):
ROUGE-L, the metric the results report, keeps the largest weight; each term and gate is
logged as a component. Both gates (:class:`SummaryGate`) come from GRPO runs that won the
reward with text that is no summary:

* without gates, GRPO copied the dialogue: 97 of 100 held-out outputs began with
  ``#Person1#:``, and the copies scored 0.655 against the untrained model's 0.508, because
  a copy shares words in order with the reference (ROUGE-L) and is about the same things
  (MiniLM). ``novelty`` (:class:`~textgym.rewards.metrics.SourceNovelty`) is the fraction of
  the summary's word trigrams that are not in the prompt: DialogSum's references keep a
  median 90% of them new (99.8% of dev and 98.8% of train references at least half), so the
  ramp to 0.5 leaves a real summary whole and scores a verbatim copy 0;
* with the novelty gate alone, GRPO wrote new dialogue turns (``#Person1#: ...`` lines
  about the same things: novel trigrams, ROUGE and MiniLM credit); with a gate on the exact
  ``#Person1#:`` tags, it wrote ``Person1: ...`` turns instead. ``no_turns``
  (:class:`NoSpeakerTurns`) is 0 for a completion that writes a speaker of the prompt's
  dialogue before a colon, in any spelling. No DialogSum reference does (train, dev and
  test); 8% of the untrained model's outputs did, and 99%, 99% and 86% of the three GRPO
  runs'.

Measured on the first 100 DialogSum dev dialogues (references average 19.4 words; mean of
each term, then the total):

| completion | ROUGE-L | MiniLM | length | novelty | no_turns | total |
|---|---|---|---|---|---|---|
| the reference | 1.000 | 1.000 | 1.000 | 0.880 | 1.000 | 1.746 |
| another dialogue's reference | 0.152 | 0.323 | 0.584 | 1.000 | 1.000 | 0.459 |
| the dialogue's first 40 words | 0.221 | 0.644 | 0.184 | 0.000 | 0.000 | 0.000 |
| the dialogue's first 15 words | 0.231 | 0.624 | 0.677 | 0.000 | 0.000 | 0.000 |
| the reference + 25 dialogue words | 0.580 | 0.841 | 0.042 | 0.385 | 0.000 | 0.000 |

MiniLM ranks copying the dialogue above an unrelated summary (0.644 vs 0.323) and barely
minds padding (0.841 for the reference with 25 words appended); the length term makes padded
and long texts lose to short ones, and the gates make copies and transcripts lose to any
summary. On the held-out outputs of the two GRPO runs the gated reward is 0.006 and 0.007,
on the untrained model's 0.440.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from textgym.rewards.base import (
    ComponentReward,
    RewardFn,
    WeightedSum,
    make_reward,
    register_reward,
    score,
)
from textgym.rewards.metrics import SourceNovelty, check_prompt_per_completion

ROUGE_MINILM_WEIGHTS: dict[str, float] = {
    "rouge_l": 1.0,
    "semantic_similarity": 0.5,
    "reference_length": 0.25,
}
"""The terms and weights of ``"rouge_minilm"``."""


class ReferenceLength:
    """Closeness of the completion's length to the nearest reference's, in words, in [0, 1]:
    ``1 - min(1, |n - n_ref| / n_ref)``.

    >>> ReferenceLength()(["p"] * 3, ["a b c d", "a b", "a b c d e f g h i"],
    ...                   [["w x y z"], ["w x y z"], ["w x y z", "w x y z u v w x"]]).tolist()
    [1.0, 0.5, 0.875]
    """

    name = "reference_length"

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        if references is None or len(references) != len(completions):
            raise ValueError(
                f"reward {self.name!r} needs one list of references per completion; the task "
                "gives none (use a task with references, such as dialogsum)"
            )
        out = np.zeros(len(completions), dtype=np.float32)
        for i, (completion, refs) in enumerate(zip(completions, references, strict=True)):
            n = len(completion.split())
            closeness = [
                1.0 - min(1.0, abs(n - len(r.split())) / len(r.split())) for r in refs if r.split()
            ]
            out[i] = max(closeness, default=0.0)
        return out

    def __repr__(self) -> str:
        return "ReferenceLength()"


_SPEAKER = re.compile(r"^\s*([^\s:][^:\n]{0,40}?):\s", re.MULTILINE)
_LABEL = re.compile(r"(\S+)\s*:")  # a word right before a colon: "#Person1#:", "Amanda :"
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def _bare(text: str) -> str:
    """Lower-case letters and digits only: ``"#Person1#"``, ``"Person1"`` -> ``"person1"``."""
    return _NOT_ALNUM.sub("", text.lower())


def dialogue_speakers(prompt: str) -> set[str]:
    """The speakers of a prompt's dialogue, bare (:func:`_bare`): each line opening
    ``<name>:``, as a whole and its last word (``"Mr. Smith"`` -> ``"mrsmith"``, ``"smith"``).

    >>> sorted(dialogue_speakers("user: Sum up.\\n\\n#Person1#: Hi!\\nMr. Smith: Hello."))
    ['mrsmith', 'person1', 'smith', 'user']
    """
    names = _SPEAKER.findall(prompt)
    return ({_bare(n) for n in names} | {_bare(n.split()[-1]) for n in names}) - {""}


class NoSpeakerTurns:
    """1.0 where the completion writes no turn of the prompt's dialogue, else 0.0.

    A turn is a speaker of the prompt (:func:`dialogue_speakers`) right before a colon, in any
    spelling: ``#Person1#:``, ``Person1:``, ``"Person1":``. A completion with one is a
    transcript, copied or invented, not a summary. No DialogSum reference has one (train, dev
    and test).

    >>> turns = NoSpeakerTurns()
    >>> dialogue = "#Person1#: Hi, Lisa.\\n#Person2#: Hello!"
    >>> turns([dialogue] * 3, ["#Person1# greets Lisa.", "#Person1#: Hi.\\n#Person2#: Hi!",
    ...                        'Person1: "Hi."'], None).tolist()
    [1.0, 0.0, 0.0]
    """

    name = "no_turns"

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        check_prompt_per_completion(self.name, prompts, completions)
        speakers = {p: dialogue_speakers(p) for p in set(prompts)}  # a GRPO group shares one
        out = np.ones(len(completions), dtype=np.float32)
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            if any(_bare(label) in speakers[prompt] for label in _LABEL.findall(completion)):
                out[i] = 0.0
        return out

    def __repr__(self) -> str:
        return "NoSpeakerTurns()"


class SummaryGate(ComponentReward):
    """A reward that only a summary earns, not a copy or a transcript of its source:
    ``reward * min(1, novelty / min_novelty) * no_turns``.

    * ``novelty``: :class:`~textgym.rewards.metrics.SourceNovelty`, the fraction of the
      completion's word ``n``-grams not in the prompt; at least ``min_novelty`` keeps the whole
      reward, a verbatim copy earns 0;
    * ``no_turns``: :class:`NoSpeakerTurns` (with ``speaker_turns=True``), 0 for a completion
      that writes dialogue turns, copied or invented.

    Reports the wrapped reward's components and the gates'.

    >>> from textgym.rewards.metrics import LengthReward
    >>> gate = SummaryGate(LengthReward(target=3), min_novelty=0.5, n=1)
    >>> gate(["A: the cat sat"] * 4, ["a dog ran", "the dog ran", "the cat sat", "A: a dog"],
    ...      None).round(3).tolist()
    [1.0, 1.0, 0.0, 0.0]
    """

    name = "summary_gate"

    def __init__(
        self,
        reward: RewardFn,
        *,
        min_novelty: float = 0.5,
        n: int = 3,
        speaker_turns: bool = True,
    ) -> None:
        if not callable(reward):
            raise TypeError(f"SummaryGate needs a callable reward, got {reward!r}")
        if isinstance(min_novelty, bool) or not isinstance(min_novelty, int | float):
            raise ValueError(f"SummaryGate min_novelty must be a number, got {min_novelty!r}")
        if not 0 < min_novelty <= 1:
            raise ValueError(f"SummaryGate min_novelty must be in (0, 1], got {min_novelty!r}")
        self.reward = reward
        self.min_novelty = float(min_novelty)
        self.novelty = SourceNovelty(n=n)
        self.turns = NoSpeakerTurns() if speaker_turns else None

    def components(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> dict[str, np.ndarray]:
        _, parts = score(self.reward, prompts, completions, references, **meta)
        parts[self.novelty.name] = self.novelty(prompts, completions, references)
        if self.turns is not None:
            parts[self.turns.name] = self.turns(prompts, completions, references)
        return parts

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        gates = (self.novelty.name, NoSpeakerTurns.name)
        inner = {k: v for k, v in parts.items() if k not in gates}
        combine = getattr(self.reward, "combine", None)
        total = combine(inner) if callable(combine) else next(iter(inner.values()))
        gate = np.minimum(1.0, parts[self.novelty.name] / self.min_novelty)
        gate = gate * parts.get(NoSpeakerTurns.name, 1.0)
        return (total * gate).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"SummaryGate({self.reward!r}, min_novelty={self.min_novelty:g}, "
            f"n={self.novelty.n}, speaker_turns={self.turns is not None})"
        )


def rouge_minilm(
    *,
    rouge_l: float = ROUGE_MINILM_WEIGHTS["rouge_l"],
    semantic_similarity: float = ROUGE_MINILM_WEIGHTS["semantic_similarity"],
    reference_length: float = ROUGE_MINILM_WEIGHTS["reference_length"],
    min_novelty: float = 0.5,
    speaker_turns: bool = True,
    device: str | None = None,
) -> SummaryGate | WeightedSum:
    """``(rouge_l * ROUGE-L + semantic_similarity * MiniLM cosine + reference_length *
    ReferenceLength) * min(1, novelty / min_novelty) * no_turns``, the :class:`SummaryGate` on
    word trigrams; ``speaker_turns=False`` drops its ``no_turns`` factor, ``min_novelty=0`` the
    whole gate, a weight of 0 its term (0 for all is an error). ``device`` is the MiniLM
    encoder's.

    >>> rouge_minilm(semantic_similarity=0)
    SummaryGate(WeightedSum(rouge_l*1, reference_length*0.25), min_novelty=0.5, n=3, speaker_turns=True)
    >>> rouge_minilm(semantic_similarity=0, min_novelty=0)
    WeightedSum(rouge_l*1, reference_length*0.25)
    """
    weights = {
        "rouge_l": rouge_l,
        "semantic_similarity": semantic_similarity,
        "reference_length": reference_length,
    }
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
            raise ValueError(f"rouge_minilm: weight {name}={weight!r} must be a number >= 0")
    terms = {k: w for k, w in weights.items() if w > 0}
    if not terms:
        raise ValueError("rouge_minilm: every weight is 0; give at least one term a weight > 0")
    builders = {
        "rouge_l": lambda: make_reward("rouge_l"),
        "semantic_similarity": lambda: make_reward("semantic_similarity", device=device),
        "reference_length": ReferenceLength,
    }
    mix = WeightedSum([(builders[k](), w) for k, w in terms.items()], labels=list(terms))
    if not min_novelty:
        return mix
    return SummaryGate(mix, min_novelty=min_novelty, speaker_turns=speaker_turns)


register_reward("reference_length", ReferenceLength)
register_reward("rouge_minilm", rouge_minilm)
