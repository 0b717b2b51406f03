"""What an algorithm is to its trainer: the typed Protocols, and the KL coefficient controller.

An algorithm is a small object built from its config (``Algorithm(config)``) that the trainer
asks for what differs between algorithms, so that no trainer code tests for a config class:

- every algorithm says whether it trains the policy's value head (``uses_value_head``);
- an on-policy algorithm (:class:`OnPolicyAlgorithm`) gives its KL coefficient controller
  (which also decides whether a frozen reference is needed at all), the advantage targets of a
  rollout batch and the loss of a micro-batch;
- an offline algorithm (:class:`OfflineAlgorithm`) says whether it compares against the frozen
  reference and gives the loss of a micro-batch of its trainer's data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from agents.policy import Rollout
    from agents.runtime import Runtime

LossAndStats = tuple["torch.Tensor", dict[str, "torch.Tensor"]]
"""A loss (already divided by the step's denominator) and stat sums over the micro-batch."""


class KLController:
    """The KL coefficient beta: fixed, or adapted (Ziegler et al. 2019) when ``target`` is set.

    Adaptive: ``beta *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon`` after each batch
    of n episodes with mean sequence KL ``kl``.

    >>> c = KLController(0.1, target=6.0, horizon=100)
    >>> c.update(kl=12.0, n=10); round(c.value, 4)
    0.102
    >>> KLController(0.0).active, KLController(0.0, target=6.0).active
    (False, True)
    """

    def __init__(self, value: float, target: float | None = None, horizon: int = 10000) -> None:
        self.value = float(value)
        self.target = target
        self.horizon = horizon

    @property
    def active(self) -> bool:
        """Whether the KL is ever weighted, i.e. whether a frozen reference model is needed."""
        return self.value != 0 or self.target is not None

    def update(self, kl: float, n: int) -> None:
        if self.target is None:
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class Algorithm(Protocol):
    """What every trainer asks of its algorithm."""

    uses_value_head: bool
    """Whether the loss trains the policy's value head (else its weights stay frozen)."""

    def __init__(self, config: Any) -> None: ...


class OnPolicyAlgorithm(Algorithm, Protocol):
    """The algorithm of :class:`agents.onpolicy.OnPolicyTrainer` (PPO, RLOO, GRPO, REINFORCE)."""

    def kl_controller(self) -> KLController:
        """The KL coefficient over training; an inactive one means no reference model."""
        ...

    def targets(
        self, batch: Rollout, kl_coef: float, runtime: Runtime
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Per-row training targets of a rollout batch (e.g. advantages) and batch metrics."""
        ...

    def loss(
        self,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        old: dict[str, torch.Tensor],
        denom: float,
    ) -> LossAndStats:
        """Loss of one micro-batch; ``old`` holds the rollout's tensors and targets for its rows."""
        ...


class OfflineAlgorithm(Algorithm, Protocol):
    """The algorithm of an :class:`agents.offline.OfflineTrainer` (SFT, DPO); its trainer
    subclass turns a micro-batch of data into the arguments of ``loss``."""

    uses_reference: bool
    """Whether the loss compares against the frozen starting model."""

    loss: Callable[..., LossAndStats]
    """Loss of one micro-batch (divided by the step's denominator) and its stat sums; the
    trainer subclass prepares its arguments (token batches for SFT, sequence log-probs for DPO)."""
