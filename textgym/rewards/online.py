"""Rewards that learn beside the policy: the protocol a trainer drives, and how to find them.

A reward such as :class:`~textgym.rewards.discriminator.DiscriminatorReward` changes while the
policy trains: it learns from the policy's own completions. A trainer finds such rewards inside
the env's reward (itself, or the terms of a weighted sum) with :func:`online_rewards`, calls
:meth:`OnlineReward.observe` after each rollout and :meth:`OnlineReward.evaluate` at each
evaluation, logs what they return, and keeps :meth:`OnlineReward.state_dict` in its
checkpoints so that a resumed run equals an unbroken one.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from textgym.rewards.base import reward_name


@runtime_checkable
class OnlineReward(Protocol):
    """A reward that learns beside the policy from (prompt, completion, references) batches.

    A trainer calls :meth:`observe` after each rollout and :meth:`evaluate` on its held-out
    greedy completions, logs what they return (``{"disc_loss": 0.6}`` as ``train/disc_loss``
    and ``eval/disc_loss``) and keeps :meth:`state_dict` in its checkpoints. ``online`` False
    means fixed: the reward does not learn and a trainer leaves it alone.
    """

    online: bool

    def observe(
        self, prompts: list[str], completions: list[str], references: list[list[str]]
    ) -> dict[str, float]:
        """Learn from one rollout; return metrics (an empty dict when nothing was learnt)."""
        ...

    def evaluate(
        self, prompts: list[str], completions: list[str], references: list[list[str]]
    ) -> dict[str, float]:
        """Held-out metrics on completions it never learnt from; changes no state."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs: weights, optimizer, buffers, counters and RNG."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


def online_rewards(fn: Any) -> list[tuple[str, OnlineReward]]:
    """``(label, reward)`` for the rewards inside ``fn`` (itself, or the terms of weighted sums,
    labelled as their reward components are) that learn online.

    >>> from textgym.rewards import make_reward
    >>> online_rewards(make_reward({"length": 1.0, "rouge_l": 2.0}))
    []
    """
    terms = getattr(fn, "terms", None)
    if terms is None:
        return [(reward_name(fn), fn)] if isinstance(fn, OnlineReward) and fn.online else []
    found: list[tuple[str, OnlineReward]] = []
    for label, term, _ in terms:
        # A term that is itself online is reported under its component label.
        found += [(label if inner is term else name, inner) for name, inner in online_rewards(term)]
    return found
