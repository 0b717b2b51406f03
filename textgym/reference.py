"""A frozen reference LM that answers next-token questions for several env slots at once.

The reference-LM wrappers (:mod:`textgym.wrappers`) ask a :class:`ReferenceLM`, which never
recomputes a prefix: it keeps a KV cache per env slot (:class:`textgym.lm.PrefixCache`) keyed by
the observed prefix, so an ordinary step costs one incremental forward of one token. Wrappers
that share one :class:`ReferenceLM` (say one per env of a ``DummyVecEnv``) are served together:
the first wrapper that needs an answer runs ONE batched forward for every env whose prefix
changed. Its logits come from the model's own forward (:func:`textgym.lm.forward`), so they
match the policy's and the trainers' on models that scale or soft-cap their logits.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

from textgym.lm import PrefixCache, check_vocab

ModelSpec = str | os.PathLike[str] | nn.Module
"""A causal LM module, or a name/path/alias for :func:`textgym.models.load_model`."""


def load_reference(model: ModelSpec, device: str | torch.device | None = None) -> nn.Module:
    """A frozen causal LM in eval mode: a loaded module as is, or a name/path via ``load_model``."""
    if isinstance(model, (str, os.PathLike)):
        from textgym.models import load_model

        model = load_model(model, device=device)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"reference must be a model name/path, an nn.Module or a ReferenceLM, got {type(model).__name__}"
        )
    model.eval().requires_grad_(False)
    return model


class ReferenceLM:
    """A frozen causal LM that answers next-token questions for several env slots at once.

    Each wrapper :meth:`attach`-es one slot and reports its current observation with
    :meth:`observe`. When any slot asks for :meth:`logprobs`, every slot whose prefix changed is
    answered by ONE batched forward through a :class:`PrefixCache` (one token per row in the
    usual case), so wrappers of a ``DummyVecEnv`` that share a ReferenceLM cost one batched
    step per vector step.

    Args:
        model: a causal LM module, or a name/path/alias for :func:`textgym.models.load_model`.
        device: where the model runs (default: where its weights are; ``"cpu"`` for a name).

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> ref = ReferenceLM(tiny_model(shared_tokenizer("smollm2-135m")))
    >>> a, b = ref.attach(vocab_size=49152), ref.attach(vocab_size=49152)
    >>> ref.observe(a, {"input_ids": np.array([5, 6, 0]), "attention_mask": np.array([1, 1, 0])})
    >>> ref.observe(b, {"input_ids": np.array([0, 7, 0]), "attention_mask": np.array([0, 1, 0])})
    >>> ref.logprobs(a).shape, ref.batched_calls
    (torch.Size([49152]), 1)
    >>> _ = ref.logprobs(b); ref.batched_calls  # answered by the same batched forward
    1
    """

    def __init__(self, model: ModelSpec, device: str | torch.device | None = None) -> None:
        self.model = load_reference(model, device)
        self.device = next(self.model.parameters()).device
        self.batched_calls = 0
        self._cache: PrefixCache | None = None
        self._obs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._rows: dict[int, int] = {}  # slot -> row of the last answer
        self._fresh: set[int] = set()
        self._logprobs: torch.Tensor | None = None
        self._hidden: torch.Tensor | None = None
        self._vocab_size: int | None = None
        self._num_slots = 0

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @functools.cached_property
    def unit_embeddings(self) -> torch.Tensor:
        """(V, E) the input embeddings scaled to unit length, built once and shared by wrappers."""
        weight = self.model.get_input_embeddings().weight.detach()
        return nn.functional.normalize(weight.float(), dim=-1)

    def attach(self, vocab_size: int) -> int:
        """A new slot for an env with ``vocab_size`` actions."""
        check_vocab(self.model, vocab_size)
        if self._vocab_size is not None and self._vocab_size != vocab_size:
            raise ValueError(
                f"this ReferenceLM serves envs with {self._vocab_size} actions, got {vocab_size}: "
                "use one ReferenceLM per vocabulary"
            )
        self._vocab_size = vocab_size
        self._num_slots += 1
        return self._num_slots - 1

    def observe(self, slot: int, observation: dict[str, np.ndarray]) -> None:
        """Record ``slot``'s current observation (its answer is computed when first asked)."""
        ids = torch.as_tensor(observation["input_ids"], device=self.device)
        others = [seen.shape for s, (seen, _) in self._obs.items() if s != slot]
        if others and others[0] != ids.shape:
            raise ValueError(
                f"slot {slot} observes {tuple(ids.shape)} token ids but the other slots of this "
                f"ReferenceLM observe {tuple(others[0])}: share a ReferenceLM only between envs "
                "with the same max_prompt_tokens + max_new_tokens"
            )
        self._obs[slot] = (ids, torch.as_tensor(observation["attention_mask"], device=self.device))
        self._fresh.discard(slot)

    def logprobs(self, slot: int) -> torch.Tensor:
        """Log-probabilities (V,) of the next token after ``slot``'s current observation."""
        self._answer(slot)
        return self._logprobs[self._rows[slot]]  # type: ignore[index]

    def hidden(self, slot: int) -> torch.Tensor:
        """Last-layer hidden state (H,) at ``slot``'s last token."""
        self._answer(slot)
        return self._hidden[self._rows[slot]]  # type: ignore[index]

    def _answer(self, slot: int) -> None:
        if slot not in self._obs:
            raise RuntimeError(f"slot {slot} has no observation yet; call observe() after reset")
        if slot in self._fresh:
            return
        assert self._vocab_size is not None
        if self._cache is None:
            self._cache = PrefixCache(self.model, self._vocab_size)
        slots = sorted(self._obs)
        ids = torch.stack([self._obs[s][0] for s in slots])  # (B, L)
        mask = torch.stack([self._obs[s][1] for s in slots])
        logits, hidden = self._cache(ids, mask)
        self._logprobs = torch.log_softmax(logits.float(), -1)  # (B, V)
        self._hidden = hidden.float()  # (B, H)
        self._rows = {s: i for i, s in enumerate(slots)}
        self._fresh = set(slots)
        self.batched_calls += 1


__all__ = ["ModelSpec", "ReferenceLM", "load_reference"]
