"""A causal LM under the reference's top-k action mask: an NLPO policy as it acts.

sb3-contrib's MaskablePPO with :class:`textgym.wrappers.ReferenceActionMask` (NLPO) learns the
*masked* distribution: each step it may only emit one of the reference LM's top-k tokens, and a
masked token's logit gets no gradient. The bare LM it leaves behind can therefore prefer a token
it never could emit in training (on sentiment, the end-of-sequence token as the first token:
never in the reference's top 16 there). Evaluating that policy as it was trained needs the same
mask at test time, as RL4LMs evaluates NLPO; :class:`ReferenceMaskedLM` is that policy as one
module that every evaluation path (:func:`textgym.lm.forward`, the rollout's KV cache) runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from textgym import lm

MASKED_LOGIT = -1e8
"""The logit of a masked token (sb3-contrib's value): exp() is exactly 0, and no -inf makes a
KL or an entropy NaN."""


class PairCache:
    """The policy's and the reference's KV caches, reordered together."""

    def __init__(self, policy: Any, reference: Any) -> None:
        self.policy, self.reference = policy, reference

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.policy.batch_repeat_interleave(repeats)
        self.reference.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.policy.batch_select_indices(indices)
        self.reference.batch_select_indices(indices)


class ReferenceMaskedLM(nn.Module):
    """``model``'s logits with every token outside the reference's top-k set to MASKED_LOGIT.

    The allowed set is :class:`~textgym.wrappers.ReferenceActionMask`'s: the reference's
    ``top_k`` likeliest next tokens, narrowed to the ``top_p`` nucleus when given. Greedy
    decoding, sampling, the KL to the reference and the reference perplexity then all describe
    the masked policy. Each forward runs both LMs (each with its own KV cache, held together in
    a :class:`PairCache`), so decoding costs about twice the bare LM's.

    Args:
        model: the trained causal LM.
        reference: the frozen reference LM that chose the masks in training (same tokenizer).
        top_k: size of the allowed set (the run's ``top_k``, 16 by default).
        top_p: nucleus probability, or None.

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> tok = shared_tokenizer("smollm2-135m")
    >>> masked = ReferenceMaskedLM(tiny_model(tok), tiny_model(tok, seed=1), top_k=4)
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> logits = lm.forward(masked, ids, torch.ones_like(ids), keep=1).logits  # (1, 1, V)
    >>> int((logits > MASKED_LOGIT).sum())
    4
    """

    def __init__(
        self,
        model: nn.Module,
        reference: nn.Module,
        top_k: int | None = 16,
        top_p: float | None = None,
    ) -> None:
        super().__init__()
        width = model.get_output_embeddings().weight.shape[0]
        ref_width = reference.get_output_embeddings().weight.shape[0]
        if ref_width != width:
            raise ValueError(
                f"the reference's vocabulary ({ref_width}) differs from the model's ({width}): "
                "the masks need one tokenizer for both"
            )
        lm.check_top_set(top_k, top_p, width)
        self.model, self.top_k, self.top_p = model, top_k, top_p
        self._reference = [reference]  # outside the module tree: parameters() are the model's

    def _apply(self, fn: Any, recurse: bool = True) -> ReferenceMaskedLM:  # .to() moves both LMs
        super()._apply(fn, recurse)
        self._reference[:] = [ref._apply(fn, recurse) for ref in self._reference]
        return self

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def reference(self) -> nn.Module:
        return self._reference[0]

    def get_output_embeddings(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: PairCache | None = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        output_hidden_states: bool = False,
    ) -> CausalLMOutputWithPast:
        if output_hidden_states:  # lm.forward would slice kept positions twice; no caller needs it
            raise ValueError(
                "ReferenceMaskedLM evaluates a policy: it has no hidden states to give"
            )

        def run(model: nn.Module, own_cache: Any) -> lm.LMOutput:
            return lm.forward(model, input_ids, attention_mask, position_ids, own_cache,
                              keep=logits_to_keep, use_cache=use_cache)  # fmt: skip

        out = run(self.model, None if cache is None else cache.policy)
        ref = run(self.reference, None if cache is None else cache.reference)
        allowed = lm.top_set(torch.log_softmax(ref.logits.float(), -1), self.top_k, self.top_p)
        return CausalLMOutputWithPast(
            logits=out.logits.masked_fill(~allowed, MASKED_LOGIT),  # (B, T, V)
            cache=PairCache(out.cache, ref.cache) if use_cache else None,
        )


__all__ = ["MASKED_LOGIT", "PairCache", "ReferenceMaskedLM"]
