"""GRPO: k completions per prompt, advantages standardised within each group.

Advantage of completion i: ``(R_i - mean_group) / (std_group + eps)`` (Shao et al. 2024), on
every token; the KL to the reference is a loss term (the k3 estimator
``exp(ref - logp) - (ref - logp) - 1`` per token, weighted by ``kl_coef``) rather than part of
the reward. ``kl_coef`` = 0 drops the reference model entirely, as TRL's default does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.algorithm import KLController, LossAndStats
from agents.config import OnPolicyConfig, check_real
from agents.policy import Rollout
from agents.rloo import sequence_loss
from agents.runtime import Runtime


@dataclass
class GRPOConfig(OnPolicyConfig):
    """GRPO settings (Group Relative Policy Optimization)."""

    algo: ClassVar[str] = "grpo"

    completions_per_prompt: int = 4
    """k: completions sampled for each prompt (the batch holds batch_size / k prompts)."""
    kl_coef: float = 0.04
    """Weight of the per-token k3 KL loss term (0 = no reference model)."""
    clip_range: float = 0.2
    """Ratio clip epsilon (matters only when a batch is reused)."""
    scale_rewards: bool = True
    """Divide by the group's reward std (False: only subtract the group mean, as in Dr. GRPO)."""

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


def group_advantages(rewards: torch.Tensor, k: int, scale: bool = True) -> torch.Tensor:
    """Rewards minus their group's mean, over the group's std (+1e-4) when ``scale``.

    >>> [round(a, 3) for a in group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), 2).tolist()]
    [0.707, -0.707, 0.0, 0.0]
    """
    grouped = rewards.view(-1, k)  # (B/k, k)
    centred = grouped - grouped.mean(-1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(-1, keepdim=True) + 1e-4)
    return centred.view(-1)


class GRPO:
    """Group-standardised advantages, the clipped surrogate and a k3 KL loss term."""

    uses_value_head = False

    def __init__(self, config: GRPOConfig) -> None:
        self.config = config
        self.kl_coef = config.kl_coef

    def kl_controller(self) -> KLController:
        return KLController(self.config.kl_coef)

    def targets(
        self, batch: Rollout, kl_coef: float, runtime: Runtime
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        self.kl_coef = kl_coef
        advantages = group_advantages(
            batch.scores, self.config.completions_per_prompt, self.config.scale_rewards
        )
        out = {"advantages": advantages}
        if batch.ref_logprobs is not None:
            out["ref_logprobs"] = batch.ref_logprobs
        return out, {}

    def loss(
        self,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        old: dict[str, torch.Tensor],
        denom: float,
    ) -> LossAndStats:
        loss, stats = sequence_loss(logprobs, old, self.config.clip_range, denom)
        if "ref_logprobs" in old and self.kl_coef > 0:
            diff = old["ref_logprobs"] - logprobs
            k3 = (diff.exp() - diff - 1) * old["mask"]
            kl_loss = k3.sum() / denom
            stats["loss/kl"] = kl_loss.detach() * denom
            loss = loss + self.kl_coef * kl_loss
        return loss, stats
