"""ReferenceMaskedLM: an NLPO policy evaluated as it acts, under the reference's top-k mask."""

from __future__ import annotations

import math

import pytest
import torch

from agents.evaluation import evaluate
from agents.masked_lm import MASKED_LOGIT, ReferenceMaskedLM
from agents.policy import TransformerPolicy, rollout
from textgym.lm import Sampling, positions, top_set
from textgym.models import load_tokenizer, tiny_model
from textgym.tasks.base import Sample, Task
from textgym.vector import TextGenVectorEnv

TOP_K = 3


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def envs(tokenizer, prompts: list[str]) -> TextGenVectorEnv:
    task = Task("prompts", {"train": [Sample(p) for p in prompts]}, default_reward="length")
    return TextGenVectorEnv(num_envs=len(prompts), task=task, tokenizer=tokenizer,
                            max_new_tokens=6, autoreset_mode="disabled", copy=False)  # fmt: skip


def different_lms(tokenizer) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A policy and a reference far enough apart that the bare policy leaves the reference's top 3."""
    torch.manual_seed(0)
    policy = tiny_model(tokenizer)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return policy, tiny_model(tokenizer)


def full_logits(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, V) logits of a no-cache forward at the positions predicting each completion token."""
    ids = torch.cat([batch.prompt_ids, batch.tokens], 1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.tokens)], 1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
    return out.logits[:, -batch.tokens.shape[1] - 1 : -1], batch.mask.bool()


@pytest.mark.parametrize("sampling", [Sampling(temperature=0), Sampling(temperature=1.0)])
def test_every_token_is_among_the_references_top_k(tokenizer, sampling):
    policy, reference = different_lms(tokenizer)
    prompts = ["Name a colour.", "Write about the sea and the boats in the harbour at dawn."]
    generator = torch.Generator().manual_seed(0)
    masked = rollout(TransformerPolicy(ReferenceMaskedLM(policy, reference, top_k=TOP_K)),
                     envs(tokenizer, prompts), sampling, generator, seed=0, record_values=False)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    bare = rollout(TransformerPolicy(policy), envs(tokenizer, prompts), sampling, generator, seed=0,
                   record_values=False)  # fmt: skip
    for batch, expected in ((masked, True), (bare, False)):
        ref_logits, taken = full_logits(reference, batch)
        allowed = top_set(torch.log_softmax(ref_logits, -1), TOP_K, None)  # (B, N, V)
        inside = allowed.gather(-1, batch.tokens[..., None]).squeeze(-1)[taken]
        assert bool(inside.all()) is expected
        if expected and sampling.greedy:  # the cached decode picks what a no-cache forward would
            logits, _ = full_logits(policy, batch)
            best = logits.masked_fill(~allowed, MASKED_LOGIT).argmax(-1)  # (B, N)
            assert torch.equal(best[taken], batch.tokens[taken])


def test_evaluation_scores_the_masked_policy(tokenizer):
    policy, reference = different_lms(tokenizer)
    settings = {"reference": reference, "num_prompts": 2, "max_new_tokens": 4}
    masked = evaluate(ReferenceMaskedLM(policy, reference, top_k=TOP_K), tokenizer, "summarize",
                      **settings)  # fmt: skip
    bare = evaluate(policy, tokenizer, "summarize", **settings)
    assert [s["completion"] for s in masked.samples] != [s["completion"] for s in bare.samples]
    # The masked policy puts no mass outside the mask: its KL stays finite (no 0 * -inf), and
    # the reference finds its tokens (always among its top 3) likelier than the bare policy's.
    assert math.isfinite(masked.metrics["eval/kl"]) and masked.metrics["eval/kl"] > 0
    assert masked.metrics["eval/ppl_ref"] < bare.metrics["eval/ppl_ref"]


def test_bad_masks_are_refused_with_the_reason(tokenizer):
    policy, reference = tiny_model(tokenizer), tiny_model(tokenizer, seed=1)
    with pytest.raises(ValueError, match=r"top_k must be an int in \[1, 49152\], got 0"):
        ReferenceMaskedLM(policy, reference, top_k=0)
    with pytest.raises(ValueError, match="give top_k, top_p or both"):
        ReferenceMaskedLM(policy, reference, top_k=None)
    reference.resize_token_embeddings(49160)
    with pytest.raises(ValueError, match=r"reference's vocabulary \(49160\) differs"):
        ReferenceMaskedLM(policy, reference)
    masked = ReferenceMaskedLM(policy, tiny_model(tokenizer, seed=1))
    ids = torch.tensor([[5, 6]])
    with pytest.raises(ValueError, match="no hidden states"):
        masked(ids, torch.ones_like(ids), output_hidden_states=True)
    assert list(masked.parameters()) == list(policy.parameters())  # the reference is not trained
