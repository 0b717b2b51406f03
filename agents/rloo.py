"""RLOO: k completions per prompt, each baselined by the mean reward of the other k - 1.

The sequence reward is ``score - beta * sum_t kl_t`` (KL in the reward, as in Ahmadian et al.
2024 and TRL); the advantage ``R_i - mean_{j != i} R_j`` is applied to every token of
completion i with PPO's clipped ratio (a plain policy gradient when ``num_epochs`` = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.algorithm import KLController, LossAndStats
from agents.config import OnPolicyConfig, check_real
from agents.policy import Rollout
from agents.ppo import clipped_policy_loss
from agents.runtime import Runtime, whiten


@dataclass
class RLOOConfig(OnPolicyConfig):
    """RLOO settings (REINFORCE Leave-One-Out)."""

    algo: ClassVar[str] = "rloo"

    completions_per_prompt: int = 4
    """k: completions sampled for each prompt (the batch holds batch_size / k prompts)."""
    clip_range: float = 0.2
    """Ratio clip epsilon (matters only when a batch is reused: num_epochs or minibatches > 1)."""
    normalize_advantages: bool = False
    """Also whiten the advantages over the batch."""

    @property
    def group_size(self) -> int:
        return self.completions_per_prompt

    def __post_init__(self) -> None:
        if not isinstance(self.completions_per_prompt, int) or self.completions_per_prompt < 2:
            raise ValueError(
                f"completions_per_prompt must be an int >= 2 (a group baseline needs others), got {self.completions_per_prompt!r}"
            )
        super().__post_init__()
        check_real(self, "clip_range", 0, open_low=True)


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """``R_i - mean of the other k - 1 rewards of its group``; groups are consecutive rows.

    >>> leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 3.0, 3.0, 3.0]), 3).tolist()
    [1.0, -0.5, -0.5, 0.0, 0.0, 0.0]
    """
    grouped = rewards.view(-1, k)  # (B/k, k)
    others = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - others).view(-1)


def sequence_loss(
    logprobs: torch.Tensor,
    old: dict[str, torch.Tensor],
    clip_range: float,
    denom: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate with one advantage per sequence broadcast to its tokens."""
    mask = old["mask"]
    advantages = old["advantages"][:, None].expand_as(mask)
    loss, stats = clipped_policy_loss(
        logprobs, old["logprobs"], advantages, mask, clip_range, denom
    )
    stats["loss/policy"] = loss.detach() * denom
    return loss, stats


class RLOO:
    """Leave-one-out advantages per sequence and the clipped surrogate on their tokens."""

    uses_value_head = False

    def __init__(self, config: RLOOConfig) -> None:
        self.config = config

    def kl_controller(self) -> KLController:
        return KLController(self.config.kl_coef)

    def targets(
        self, batch: Rollout, kl_coef: float, runtime: Runtime
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        rewards = batch.scores
        if batch.ref_logprobs is not None:
            rewards = rewards - kl_coef * ((batch.logprobs - batch.ref_logprobs) * batch.mask).sum(
                -1
            )
        advantages = leave_one_out_advantages(rewards, self.config.completions_per_prompt)
        if self.config.normalize_advantages:
            advantages = whiten(advantages, torch.ones_like(advantages), runtime)
        return {"advantages": advantages}, {"train/rlhf_reward": float(rewards.mean())}

    def loss(
        self,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        old: dict[str, torch.Tensor],
        denom: float,
    ) -> LossAndStats:
        return sequence_loss(logprobs, old, self.config.clip_range, denom)
