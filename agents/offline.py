"""The offline trainer: SFT and DPO learn from a fixed data set instead of rollouts.

Examples are encoded exactly as the env presents them (:class:`ExampleEncoder`), so a policy
fine-tuned here sees at rollout time what it saw in training. The data order is a function of
the iteration (a fresh permutation of the items per pass, seeded by ``(seed, pass)``), so a
resumed run continues exactly. Everything else is :class:`~agents.trainer.BaseTrainer`'s.
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from agents.algorithm import LossAndStats, OfflineAlgorithm
from agents.config import OfflineConfig
from agents.trainer import BaseTrainer
from textgym.episode import PromptEncoder
from textgym.feedback.store import FeedbackStore


def open_store(path: str | os.PathLike[str]) -> FeedbackStore:
    """A :class:`~textgym.feedback.store.FeedbackStore`: an SQLite file, or a JSONL export
    imported into an in-memory store."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"feedback store {path} not found; give the SQLite file of a store or a JSONL export"
        )
    if path.suffix == ".jsonl":
        store = FeedbackStore(":memory:")
        store.import_jsonl(path)
        return store
    return FeedbackStore(path)


class ExampleEncoder:
    """``(prompt_ids, completion_ids)`` of an example, as the env would present and end it.

    The prompt goes through the env's :class:`~textgym.episode.PromptEncoder` (chat template
    with the generation prompt, the last ``max_prompt_tokens`` tokens); the completion gets the
    EOS id appended (an episode ends at EOS) and is cut to ``max_new_tokens`` tokens, EOS
    included, like an episode capped at N tokens.

    >>> from agents.sft import Example
    >>> from textgym.models import load_tokenizer
    >>> enc = ExampleEncoder(load_tokenizer(), max_prompt_tokens=64, max_new_tokens=4)
    >>> p, c = enc(Example("Say hi.", "Hi there, friend!"))
    >>> enc.tokenizer.decode(p[-4:]), enc.tokenizer.decode(c)  # cut at N = 4 tokens
    ('<|im_start|>assistant\\n', 'Hi there, friend')
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_tokens: int,
        max_new_tokens: int,
        chat_template: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompts = PromptEncoder(tokenizer, max_prompt_tokens, chat_template)
        self.max_new_tokens = max_new_tokens
        self.eos_token_id = int(tokenizer.eos_token_id)

    def completion(self, text: str) -> np.ndarray:
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.eos_token_id]
        return np.asarray(ids[: self.max_new_tokens], dtype=np.int64)

    def __call__(self, example: Any) -> tuple[np.ndarray, np.ndarray]:
        """Encode an :class:`agents.sft.Example` (anything with ``prompt`` and ``completion``)."""
        return self.prompts.encode(example.prompt), self.completion(example.completion)


class OfflineTrainer(BaseTrainer):
    """A trainer whose step is one optimizer step on ``batch_size`` items of a fixed data set.

    Subclasses set ``self.items`` (the training items) and implement :meth:`weight` (the
    item's share of the step's mean, e.g. its token count), :meth:`batch_loss` and
    :meth:`eval_metrics`. Runs in one process only.
    """

    config: OfflineConfig
    algorithm: OfflineAlgorithm
    items: list[Any]

    def _uses_reference(self) -> bool:
        return self.algorithm.uses_reference

    def _setup(self, seed: int) -> None:
        if self.runtime.num_processes > 1:
            # Packed rows bypass the data-parallel wrapper's forward and every process would
            # take the same items: the gradients would be wrong, so refuse rather than guess.
            raise NotImplementedError(
                f"{self.config.algo} runs in one process only, got {self.runtime.num_processes} "
                "(accelerate launch); run it without accelerate (one GPU or the CPU)"
            )
        cfg = self.config
        self.encoder = ExampleEncoder(
            self.tokenizer, cfg.max_prompt_tokens, cfg.max_new_tokens, cfg.chat_template
        )
        self.pad_token_id = int(self.tokenizer.pad_token_id)

    @abc.abstractmethod
    def weight(self, item: Any) -> float:
        """The item's share of the step's mean (its target-token count, or 1 per pair)."""

    @abc.abstractmethod
    def batch_loss(self, items: Sequence[Any], denom: float) -> LossAndStats:
        """Loss of a micro-batch (already divided by ``denom``) and stat sums over it."""

    @abc.abstractmethod
    def eval_metrics(self) -> dict[str, float]:
        """Metrics on held-out data, added to every evaluation."""

    def batch_items(self, iteration: int) -> list[Any]:
        """The ``batch_size`` items of optimizer step ``iteration`` (0-based)."""
        n, B = len(self.items), self.config.batch_size
        out = []
        for k in range(iteration * B, (iteration + 1) * B):
            epoch, i = divmod(k, n)
            order = np.random.default_rng((self.config.seed, epoch)).permutation(n)
            out.append(self.items[order[i]])
        return out

    def _micro_loss(self, items: Sequence[Any], denom: float) -> LossAndStats:
        with self.runtime.autocast():
            return self.batch_loss(items, denom)

    def step(self) -> dict[str, float]:
        cfg, rt = self.config, self.runtime
        start = time.perf_counter()
        items = self.batch_items(self.iteration)
        denom = float(rt.sum(torch.tensor(sum(self.weight(x) for x in items))).clamp(min=1))
        micro = cfg.batch_size // cfg.grad_accum_steps
        sums: dict[str, torch.Tensor] = {}
        parts = (items[a * micro : (a + 1) * micro] for a in range(cfg.grad_accum_steps))
        norm = self.optimizer_step(
            ((lambda part=part: self._micro_loss(part, denom)) for part in parts), sums
        )
        metrics = {f"train/{k}": float(rt.sum(v)) / denom for k, v in sums.items()}
        if norm is not None:
            metrics["train/grad_norm"] = norm
        self.scheduler.step()
        self.iteration += 1
        metrics["train/lr"] = self.scheduler.get_last_lr()[0]
        metrics["train/epoch"] = self.iteration * cfg.batch_size / len(self.items)
        metrics["time/step_s"] = time.perf_counter() - start
        return metrics

    def evaluate(self) -> tuple[dict[str, float], str]:
        """The task's greedy evaluation (``eval/reward`` and its components) plus
        :meth:`eval_metrics` on held-out data."""
        metrics, table = super().evaluate()
        metrics.update(self.eval_metrics())
        return metrics, table

    def _line(self, m: dict[str, float]) -> str:
        parts = [f"iter {self.iteration:4d}/{self.config.iterations}"]
        parts += [f"{k[6:]} {v:.3f}" for k, v in m.items() if k.startswith("train/loss")]
        parts += [f"{k} {m[k]:.3f}" for k in sorted(m) if k.startswith("eval/")]
        parts.append(f"{m['time/step_s']:.1f} s/step")
        return " | ".join(parts)


__all__ = ["ExampleEncoder", "OfflineTrainer", "open_store"]
