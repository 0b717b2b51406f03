"""Direct preference optimisation (DPO) and its IPO variant, from pairwise preferences.

For a prompt x with a chosen completion y_w and a rejected one y_l, let

    h = [log pi(y_w|x) - log ref(y_w|x)] - [log pi(y_l|x) - log ref(y_l|x)]

(sums over completion tokens; ``ref`` is the frozen starting model). DPO (Rafailov et al.
2023) minimises ``-log sigmoid(beta * h)``; IPO (Azar et al. 2023) minimises
``(h - 1 / (2 beta))^2``, which stops pushing once the margin reaches its target instead of
driving it to infinity on deterministic preferences. beta is the same KL coefficient as PPO's
``kl_coef``: DPO solves the KL-regularised objective ``E[r] - beta KL(pi || ref)`` in closed
form, so the two are compared at the same setting.

Pairs come from a feedback store (human or AI labels; rankings give every ordered pair, as
:meth:`FeedbackStore.preference_pairs` derives them). A fixed fraction of the prompts (by a
hash of the prompt text, so the split never depends on order) is held out to measure the
margin and accuracy on pairs the policy never trained on.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from agents.algorithm import LossAndStats
from agents.config import OfflineConfig, check_real
from agents.offline import OfflineTrainer, open_store
from agents.policy import evaluate_tokens
from agents.trainer import TrainerOptions
from textgym.feedback.store import PreferencePair
from textgym.tasks.base import Prompt, prompt_text

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; annotations only (3.10 runs this file too)

LOSS_TYPES = ("sigmoid", "ipo")


@dataclass
class DPOConfig(OfflineConfig):
    """DPO / IPO settings; evaluation is greedy."""

    algo: ClassVar[str] = "dpo"

    kl_coef: float = 0.1
    """beta: strength of the implicit KL constraint to the frozen reference (DPO's beta; IPO's target margin is 1 / (2 beta))."""
    loss_type: str = "sigmoid"
    """"sigmoid" (DPO) or "ipo"."""
    eval_fraction: float = 0.1
    """Fraction of prompts whose pairs are held out for eval/margin and eval/accuracy."""
    batch_size: int = 8
    """Preference pairs per optimizer step."""
    learning_rate: float = 1e-6
    """AdamW learning rate."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_coef <= 0:
            raise ValueError(
                f"dpo needs kl_coef (beta) > 0, got {self.kl_coef!r}; 0.1 is a common choice"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {self.loss_type!r}")
        check_real(self, "eval_fraction", 0, 1, open_high=True)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair losses (P,) and log-ratio margins h (P,) from sequence log-probs (P,) each.

    >>> loss, h = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
    ...                    torch.tensor([-2.0]), beta=0.5)
    >>> h.item(), round(loss.item(), 4)  # h = (-1 + 2) - (-3 + 2) = 2; -log sigmoid(1)
    (2.0, 0.3133)
    >>> dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
    ...          torch.tensor([-2.0]), beta=0.5, loss_type="ipo")[0].item()  # (2 - 1)^2
    1.0
    """
    h = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * h), h
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2, h
    raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")


def held_out(prompt: Prompt, fraction: float) -> bool:
    """True for prompts in the held-out part: ``crc32(prompt text) / 2**32 < fraction``."""
    return zlib.crc32(prompt_text(prompt).encode()) / 2**32 < fraction


class DPO:
    """The DPO / IPO loss of :func:`dpo_loss` with the config's beta and loss type."""

    uses_value_head = False
    uses_reference = True

    def __init__(self, config: DPOConfig) -> None:
        self.config = config

    def loss(
        self,
        logps: tuple[torch.Tensor, torch.Tensor],
        ref_logps: tuple[torch.Tensor, torch.Tensor],
        denom: float,
    ) -> LossAndStats:
        """Mean-over-``denom`` loss and stat sums for sequence log-probs (chosen, rejected)."""
        beta = self.config.kl_coef
        losses, h = dpo_loss(*logps, *ref_logps, beta, self.config.loss_type)
        with torch.no_grad():
            stats = {
                "loss": losses.sum(),
                "margin": (beta * h).sum(),
                "accuracy": (h > 0).float().sum(),
                "chosen_logratio": (logps[0] - ref_logps[0]).sum(),
                "rejected_logratio": (logps[1] - ref_logps[1]).sum(),
            }
        return losses.sum() / denom, stats


Triple = tuple[np.ndarray, np.ndarray, np.ndarray]  # prompt, chosen, rejected token ids


class DPOTrainer(OfflineTrainer):
    """DPO / IPO on preference pairs, against the frozen starting model as reference.

    Args:
        config: a :class:`DPOConfig`.
        pairs: train and hold out from these instead of loading ``config.data``.
        options: ``model``, ``tokenizer``, ``reward``, ``resume`` as for
            :class:`~agents.trainer.BaseTrainer`.

    Metrics (training and held-out pairs): ``loss``, ``margin`` (beta * h, the difference of
    the implicit rewards), ``accuracy`` (h > 0), ``chosen_logratio`` and ``rejected_logratio``;
    held-out ones are ``eval/pair_*``. Plus the task's greedy evaluation (``eval/reward``).
    """

    config: DPOConfig

    def __init__(
        self,
        config: DPOConfig,
        pairs: Sequence[PreferencePair] | None = None,
        **options: Unpack[TrainerOptions],
    ) -> None:
        if pairs is None:
            if not config.data:
                raise ValueError(
                    "dpo needs preference pairs: set data to a feedback store (SQLite file or "
                    "JSONL export), or pass pairs="
                )
            pairs = open_store(config.data).preference_pairs()
        train = [p for p in pairs if not held_out(p.prompt, config.eval_fraction)]
        test = [p for p in pairs if held_out(p.prompt, config.eval_fraction)]
        if not train:
            raise ValueError(
                f"no preference pairs to train on ({len(pairs)} pairs, {len(test)} held out with "
                f"eval_fraction={config.eval_fraction}); add pairs or lower eval_fraction"
            )
        super().__init__(config, **options)
        self.items = [self.encode(p) for p in train]
        self.eval_items = [self.encode(p) for p in test]

    def encode(self, pair: PreferencePair) -> Triple:
        prompt = self.encoder.prompts.encode(pair.prompt)
        return prompt, self.encoder.completion(pair.chosen), self.encoder.completion(pair.rejected)

    def weight(self, item: Triple) -> float:
        return 1.0

    def sequence_logps(
        self, items: Sequence[Triple], reference: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs of (chosen (P,), rejected (P,)) in one forward."""
        completions = [c for _, c, _ in items] + [r for _, _, r in items]
        prompts = [p for p, _, _ in items] * 2
        R, P = len(completions), max(len(p) for p in prompts)
        N = max(len(c) for c in completions)
        prompt_ids = np.full((R, P), self.pad_token_id, dtype=np.int64)  # left-padded
        prompt_mask = np.zeros((R, P), dtype=np.int64)
        tokens = np.full((R, N), self.pad_token_id, dtype=np.int64)  # right-padded
        mask = np.zeros((R, N), dtype=np.float32)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            prompt_ids[i, P - len(p) :], prompt_mask[i, P - len(p) :] = p, 1
            tokens[i, : len(c)], mask[i, : len(c)] = c, 1
        device = self.runtime.device
        logps, _, _ = evaluate_tokens(
            self.policy,
            torch.as_tensor(prompt_ids, device=device),
            torch.as_tensor(prompt_mask, device=device),
            torch.as_tensor(tokens, device=device),
            scale=1.0,
            reference=reference,
        )  # (R, N)
        seq = (logps * torch.as_tensor(mask, device=device)).sum(-1)  # (R,)
        return seq[: len(items)], seq[len(items) :]

    def batch_loss(self, items: Sequence[Triple], denom: float) -> LossAndStats:
        with torch.no_grad():
            ref = self.sequence_logps(items, reference=True)
        return self.algorithm.loss(self.sequence_logps(items, reference=False), ref, denom)

    @torch.no_grad()
    def eval_metrics(self) -> dict[str, float]:
        if not self.eval_items:
            return {}
        sums: dict[str, float] = {}
        B = self.config.batch_size
        for i in range(0, len(self.eval_items), B):
            with self.runtime.autocast():
                _, stats = self.batch_loss(self.eval_items[i : i + B], 1.0)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        return {f"eval/pair_{k}": v / len(self.eval_items) for k, v in sums.items()}


__all__ = [
    "DPO",
    "DPOConfig",
    "DPOTrainer",
    "dpo_loss",
    "held_out",
]
