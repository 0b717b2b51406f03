"""REINFORCE with a learned baseline: returns-to-go minus the value head's V(s_t).

Same token rewards as PPO (score at the end, per-token KL penalty), Monte-Carlo returns
(GAE with lambda = 1), one unclipped policy-gradient step per batch, and an MSE value loss
that trains the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.algorithm import KLController, LossAndStats
from agents.config import OnPolicyConfig, check_real
from agents.policy import Rollout
from agents.ppo import PPO, clipped_policy_loss, clipped_value_loss, gae, kl_penalised_rewards
from agents.runtime import Runtime, masked_mean, whiten


@dataclass
class REINFORCEConfig(OnPolicyConfig):
    """REINFORCE settings (Williams 1992, with a state-value baseline)."""

    algo: ClassVar[str] = "reinforce"

    vf_coef: float = 0.1
    """Weight of the baseline's (value head's) MSE loss."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch's tokens."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_real(self, "vf_coef", 0)


class REINFORCE(PPO):
    """Advantages ``G_t - V(s_t)`` with ``G_t`` the undiscounted return-to-go."""

    def __init__(self, config: REINFORCEConfig) -> None:  # type: ignore[override]
        self.config = config  # type: ignore[assignment]

    def kl_controller(self) -> KLController:
        return KLController(self.config.kl_coef)

    def targets(
        self, batch: Rollout, kl_coef: float, runtime: Runtime
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        assert batch.values is not None
        rewards, _ = kl_penalised_rewards(
            batch.scores, batch.logprobs, batch.ref_logprobs, batch.mask, kl_coef
        )
        advantages, returns = gae(rewards, batch.values, batch.mask, gamma=1.0, lam=1.0)
        if self.config.whiten_advantages:
            advantages = whiten(advantages, batch.mask, runtime)
        stats = {"train/returns": float(masked_mean(returns, batch.mask, runtime))}
        return {"advantages": advantages, "returns": returns}, stats

    def loss(
        self,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        old: dict[str, torch.Tensor],
        denom: float,
    ) -> LossAndStats:
        mask = old["mask"]
        pg, stats = clipped_policy_loss(
            logprobs, old["logprobs"], old["advantages"], mask, None, denom
        )
        assert values is not None
        vf = clipped_value_loss(values, old["values"], old["returns"], mask, 0.0, denom)
        stats["loss/policy"] = pg.detach() * denom
        stats["loss/value"] = vf.detach() * denom
        return pg + self.config.vf_coef * vf, stats
