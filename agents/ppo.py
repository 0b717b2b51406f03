"""PPO for language models: token-level rewards, GAE, clipped policy and value losses.

Per token t of a completion: ``r_t = -beta * (log pi(a_t|s_t) - log ref(a_t|s_t))``, plus the
task score on the last token. Advantages come from GAE (gamma = 1 by default: the episode is
short and the score is only known at its end) and are whitened over the batch's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from agents.algorithm import KLController, LossAndStats
from agents.config import OnPolicyConfig, check_ints, check_real
from agents.policy import Rollout
from agents.runtime import Runtime, masked_mean, whiten


@dataclass
class PPOConfig(OnPolicyConfig):
    """PPO settings (Ziegler et al. 2019 / Ouyang et al. 2022 style, per-token KL penalty)."""

    algo: ClassVar[str] = "ppo"

    num_epochs: int = 2
    """Passes over each rollout batch."""
    num_minibatches: int = 2
    """Optimizer steps per epoch."""
    gamma: float = 1.0
    """Discount; 1 because the score arrives at the end of a short episode."""
    gae_lambda: float = 0.95
    """GAE lambda: bias-variance trade-off of the advantage estimate (1 = Monte Carlo). The
    critic starts at 0, so a reward paid at the last token reaches token t as lambda^(T - t) of
    it until the critic learns: on DialogSum's 48-token summaries 0.95 did not learn and 1 did
    (docs/results.md)."""
    clip_range: float = 0.2
    """PPO ratio clip epsilon."""
    clip_range_value: float = 0.2
    """Clip of the value update around the rollout's values (0 = no clipping)."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean, unit variance over the batch's tokens."""
    adaptive_kl: bool = False
    """Adapt the KL coefficient towards ``kl_target`` (Ziegler et al.); off = fixed ``kl_coef``."""
    kl_target: float = 6.0
    """Target sequence KL (nats) for the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon (episodes) of the adaptive controller."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("gamma", "gae_lambda"):
            check_real(self, name, 0, 1)
        check_real(self, "clip_range", 0, open_low=True)
        for name in ("clip_range_value", "vf_coef"):
            check_real(self, name, 0)
        check_real(self, "kl_target", 0, open_low=True)
        check_ints(self, ("kl_horizon",), 1)


def kl_penalised_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level rewards ``(B, N)``: ``-kl_coef * kl_t`` plus the score on the last token.

    Returns ``(rewards, kl)`` with ``kl_t = logprob - ref_logprob`` (0 without a reference).

    >>> r, _ = kl_penalised_rewards(torch.tensor([1.0]), torch.zeros(1, 3), None,
    ...                             torch.tensor([[1.0, 1.0, 0.0]]), 0.1)
    >>> (r + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0
    [[0.0, 1.0, 0.0]]
    """
    kl = (logprobs - ref_logprobs) * mask if ref_logprobs is not None else torch.zeros_like(mask)
    rewards = -kl_coef * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)  # (B,) index of each row's final token
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (B, N) token sequences that end where ``mask`` ends.

    The state after a row's last valid token is terminal (value 0): the length cap is part of
    the task, so nothing is bootstrapped past it. Returns ``(advantages, returns)``, both
    (B, N) and 0 on invalid positions; ``returns = advantages + values``.

    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
    >>> adv.tolist(), ret.tolist()
    ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    B, N = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(B, device=rewards.device)
    next_adv = torch.zeros(B, device=rewards.device)
    for t in reversed(range(N)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = adv * m
        # An invalid position passes nothing back; a valid one hands on its value and advantage.
        next_value = torch.where(m > 0, values[:, t], torch.zeros_like(next_value))
        next_adv = advantages[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None,
    denom: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, summed over valid tokens and divided by ``denom``.

    ``clip_range=None`` is the plain policy gradient ``-A * ratio`` (equal to ``-A * logprob``
    in gradient at ratio 1). Stats are sums over tokens (divide by the token count).
    """
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    loss = -advantages * ratio
    if clip_range is not None:
        clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
        loss = torch.maximum(loss, clipped)
        clipfrac = ((ratio - 1).abs() > clip_range).float()
    else:
        clipfrac = torch.zeros_like(ratio)
    with torch.no_grad():
        stats = {
            "clipfrac": (clipfrac * mask).sum(),
            "approx_kl": (((ratio - 1) - log_ratio) * mask).sum(),  # k3 estimator, >= 0
        }
    return (loss * mask).sum() / denom, stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    denom: float,
) -> torch.Tensor:
    """``0.5 * max((v - R)^2, (v_clipped - R)^2)`` summed over valid tokens / ``denom``."""
    loss = (values - returns) ** 2
    if clip_range > 0:
        clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return 0.5 * (loss * mask).sum() / denom


class PPO:
    """Advantage targets and loss of PPO; the trainer owns the rollout and the update loop."""

    uses_value_head = True

    def __init__(self, config: PPOConfig) -> None:
        self.config = config

    def kl_controller(self) -> KLController:
        """Fixed ``kl_coef``, or adapted towards ``kl_target`` with ``adaptive_kl``."""
        c = self.config
        target = c.kl_target if c.adaptive_kl else None
        return KLController(c.kl_coef, target=target, horizon=c.kl_horizon)

    def targets(
        self, batch: Rollout, kl_coef: float, runtime: Runtime
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        assert batch.values is not None
        rewards, kl = kl_penalised_rewards(
            batch.scores, batch.logprobs, batch.ref_logprobs, batch.mask, kl_coef
        )
        advantages, returns = gae(
            rewards, batch.values, batch.mask, self.config.gamma, self.config.gae_lambda
        )
        if self.config.whiten_advantages:
            advantages = whiten(advantages, batch.mask, runtime)
        stats = {
            "train/returns": float(masked_mean(returns, batch.mask, runtime)),
            "train/values": float(masked_mean(batch.values, batch.mask, runtime)),
        }
        return {"advantages": advantages, "returns": returns}, stats

    def loss(
        self,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        old: dict[str, torch.Tensor],
        denom: float,
    ) -> LossAndStats:
        """Loss of one micro-batch; ``old`` holds the rollout's tensors and targets for its rows."""
        mask = old["mask"]
        pg, stats = clipped_policy_loss(
            logprobs, old["logprobs"], old["advantages"], mask, self.config.clip_range, denom
        )
        assert values is not None
        vf = clipped_value_loss(
            values, old["values"], old["returns"], mask, self.config.clip_range_value, denom
        )
        stats["loss/policy"] = pg.detach() * denom
        stats["loss/value"] = vf.detach() * denom
        return pg + self.config.vf_coef * vf, stats
