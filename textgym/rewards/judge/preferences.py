"""Pairwise AI preferences: one judgment of two completions (:class:`Preference`), merging its
two presentation orders (:func:`combine_orders`), and writing preferences to the feedback store
as rankings by rater ``"ai:<judge name>"`` (:func:`add_preferences_to_store`).

The store is only described here (:class:`PreferenceStore`), never imported, so this module
loads no database code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from textgym.rewards.judge.reward import JudgeReward


@dataclass(frozen=True)
class Preference:
    """A pairwise AI judgment of two completions of one prompt.

    Attributes:
        prompt, a, b: the prompt and the two completions.
        p_a: probability that ``a`` is better, averaged over both presentation orders.
        p_a_first: P(first shown is better) with ``a`` shown first.
        p_b_first: P(first shown is better) with ``b`` shown first.
        position_bias: how much the judge favours the first slot, ``(p_a_first + p_b_first)/2 -
            0.5``; it cancels out of ``p_a``.
        winner: ``"a"``, ``"b"`` or ``"tie"`` (``|p_a - 0.5| <= tie_margin``).
        consistent: both orders pick the same completion.
    """

    prompt: str
    a: str
    b: str
    p_a: float
    p_a_first: float
    p_b_first: float
    position_bias: float
    winner: str
    consistent: bool


def combine_orders(p_a_first: float, p_b_first: float, tie_margin: float = 0.05) -> dict[str, Any]:
    """Merge the two presentation orders of a pairwise judgment.

    >>> r = combine_orders(0.9, 0.7)  # a judge that prefers whatever comes first
    >>> round(r["p_a"], 3), round(r["position_bias"], 3), r["winner"], r["consistent"]
    (0.6, 0.3, 'a', False)
    """
    p_a = 0.5 * (p_a_first + (1.0 - p_b_first))
    winner = "tie" if abs(p_a - 0.5) <= tie_margin else ("a" if p_a > 0.5 else "b")
    return {
        "p_a": p_a,
        "p_a_first": p_a_first,
        "p_b_first": p_b_first,
        "position_bias": 0.5 * (p_a_first + p_b_first) - 0.5,
        "winner": winner,
        "consistent": (p_a_first > 0.5) == (p_b_first < 0.5),
    }


class PreferenceStore(Protocol):
    """The part of :class:`textgym.feedback.store.FeedbackStore` that records rankings."""

    def add_sample(
        self,
        prompt: str,
        completion: str,
        *,
        task: str = "",
        model: str = "",
        meta: dict | None = None,
    ) -> int: ...

    def add_ranking(self, sample_ids: Sequence[int], *, rater: str) -> int: ...


def add_preferences_to_store(
    store: PreferenceStore,
    preferences: Sequence[Preference],
    *,
    rater: str,
    task: str = "",
    model: str = "",
    include_ties: bool = False,
) -> list[int]:
    """Write pairwise AI preferences to a feedback store; return the new ranking ids.

    Each decided preference becomes a two-item ranking (winner first) by ``rater``, so
    ``store.preference_pairs(rater=rater)`` gives them back as ``(prompt, chosen, rejected)``
    pairs for the reward-model trainer, exactly like human rankings. ``rater`` must start with
    ``"ai:"`` (see :func:`judge_rater`) so that AI labels never pass for human ones. Ties are
    skipped unless ``include_ties`` (then ``a`` goes first: a ranking cannot express a tie);
    a pair of identical completions is always skipped. ``task`` and ``model`` (the policy that
    wrote the completions) tag the stored samples.
    """
    if not rater.startswith("ai:"):
        raise ValueError(
            f"AI preferences need a rater name starting with 'ai:' (e.g. 'ai:smollm2-135m'), "
            f"got {rater!r}"
        )
    ranking_ids = []
    for pref in preferences:
        if pref.a == pref.b or (pref.winner == "tie" and not include_ties):
            continue
        best, worst = (pref.b, pref.a) if pref.winner == "b" else (pref.a, pref.b)
        ids = [
            store.add_sample(pref.prompt, text, task=task, model=model) for text in (best, worst)
        ]
        ranking_ids.append(store.add_ranking(ids, rater=rater))
    return ranking_ids


def judge_rater(judge: JudgeReward) -> str:
    """The feedback-store rater name for a judge: ``"ai:<judge name>"``."""
    return f"ai:{judge.backend.name}"
