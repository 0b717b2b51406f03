"""textgym.lm: one forward path, so models that scale or soft-cap their logits agree everywhere.

Gemma-2 soft-caps its logits (``final_logit_softcapping``) and Cohere scales them
(``logit_scale``), both inside their own ``forward``. Decoder + output embeddings would skip that;
these tests show the policy (rollout with the KV cache, and ``evaluate_tokens``), the reference
(``ReferenceLM`` through ``KLPenalty``) and SFT's target log-probs all equal the model's own full
forward to 1e-5.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from transformers import CohereConfig, CohereForCausalLM, Gemma2Config, Gemma2ForCausalLM

import textgym  # noqa: F401  (registers TextGen-v0)
from agents.policy import TransformerPolicy, evaluate_tokens, rollout
from agents.sft import collate, target_logprobs
from textgym.lm import (
    Sampling,
    forward,
    positions,
    sample_tokens,
    sequence_logprobs,
    token_logprobs,
    top_filter,
    top_set,
)
from textgym.reference import ReferenceLM
from textgym.tasks.base import Sample, Task
from textgym.vector import TextGenVectorEnv
from textgym.wrappers import KLPenalty

PROMPTS = ["Write one sentence about a dog.", "Hi.", "Describe the sea at dawn, with boats."]
TEMPERATURE = 0.8


def scaled_model(kind: str, tokenizer, seed: int = 0) -> nn.Module:
    """A tiny random LM whose own forward soft-caps (gemma2) or scales (cohere) the logits."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if kind == "gemma2":
        config = Gemma2Config(
            **common,
            num_key_value_heads=2,
            head_dim=8,
            final_logit_softcapping=0.25,  # tight: random-init logits reach about 0.5
            attn_logit_softcapping=None,
            sliding_window=64,
        )
        return Gemma2ForCausalLM(config).eval()
    return CohereForCausalLM(CohereConfig(**common, num_key_value_heads=4, logit_scale=0.3)).eval()


@pytest.fixture(scope="module", params=["gemma2", "cohere"])
def kind(request) -> str:
    return request.param


def own_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits of the model's own full forward of left-padded rows."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits


def make_envs(tokenizer, num_envs: int = 3) -> TextGenVectorEnv:
    task = Task(
        "prompts",
        {"train": [Sample(p, meta={"keywords": ["dog"]}) for p in PROMPTS]},
        default_reward="keyword_coverage_soft",
    )
    return TextGenVectorEnv(
        num_envs=num_envs,
        task=task,
        tokenizer=tokenizer,
        max_new_tokens=5,
        autoreset_mode="disabled",
        copy=False,
    )


def test_the_models_really_post_process_their_logits(kind, tokenizer):
    """Decoder + output embeddings differ from the model's own logits: the tests below bite.
    The hidden state :func:`forward` hands the value head is the decoder's final one."""
    model = scaled_model(kind, tokenizer)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        last = model.get_decoder()(input_ids=ids).last_hidden_state  # (1, 4, H)
        raw = model.get_output_embeddings()(last)
        out = forward(model, ids, torch.ones_like(ids), keep=2, hidden=True)
    assert (own_logits(model, ids, torch.ones_like(ids)) - raw).abs().max() > 0.05
    torch.testing.assert_close(out.hidden, last[:, -2:], atol=1e-6, rtol=0)


def test_policy_rollout_and_evaluate_tokens_equal_the_models_own_forward(kind, tokenizer):
    """Rollout log-probs (KV cache, one token a step) and values equal the no-cache
    ``evaluate_tokens``; both, and the reference's, equal the model's own full forward."""
    policy = TransformerPolicy(scaled_model(kind, tokenizer), reference="copy")
    with torch.no_grad():  # policy and reference differ; the value head is non-zero
        for p in policy.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        policy.value_head.weight.normal_()
    batch = rollout(
        policy,
        make_envs(tokenizer),
        Sampling(TEMPERATURE),
        torch.Generator().manual_seed(0),
        seed=0,
    )
    assert len(set(batch.prompt_mask.sum(-1).tolist())) > 1  # rows padded differently
    with torch.no_grad():
        logprobs, values, _ = evaluate_tokens(
            policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, TEMPERATURE
        )
        ref_logprobs, _, _ = evaluate_tokens(
            policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, TEMPERATURE, reference=True
        )
    # KV cache vs no cache, on a model that post-processes its logits.
    torch.testing.assert_close(batch.logprobs, logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.values, values, atol=1e-5, rtol=0)
    ids = torch.cat([batch.prompt_ids, batch.tokens], 1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.tokens)], 1)
    N = batch.tokens.shape[1]
    for model, got in ((policy.model, logprobs), (policy.reference, ref_logprobs)):
        own = own_logits(model, ids, mask)[:, -N - 1 : -1]  # the positions predicting tokens
        torch.testing.assert_close(
            got, token_logprobs(own, batch.tokens, TEMPERATURE), atol=1e-5, rtol=0
        )
    assert (logprobs - ref_logprobs).abs().max() > 1e-3


def test_reference_lm_and_kl_penalty_equal_the_models_own_forward(kind, tokenizer, small_task):
    """``info["ref_logprob"]`` of every step, and the ReferenceLM's whole next-token
    distribution, equal the model's own forward of the observation; the prefix cache steps
    one token at a time where the model's cache allows it (Cohere; Gemma-2's sliding-window
    layers run the full prefix)."""
    model = scaled_model(kind, tokenizer, seed=1)
    reference = ReferenceLM(model)
    env = KLPenalty(
        gym.make("TextGen-v0", task=small_task, tokenizer=tokenizer, max_new_tokens=4),
        reference,
        beta=0.1,
    )
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(4):
        ids = torch.as_tensor(obs["input_ids"])[None]
        mask = torch.as_tensor(obs["attention_mask"])[None]
        end = int(mask[0].nonzero().max()) + 1
        expected = torch.log_softmax(
            own_logits(model, ids[:, :end], mask[:, :end])[0, -1].float(), -1
        )
        torch.testing.assert_close(reference.logprobs(env.slot), expected, atol=1e-5, rtol=0)
        action = int(rng.integers(100, 1000))
        obs, _, terminated, truncated, info = env.step(action)
        assert info["ref_logprob"] == pytest.approx(float(expected[action]), abs=1e-5)
        if terminated or truncated:
            break
    cache = reference._cache
    assert cache is not None and (cache.incremental_rows > 0) == (kind == "cohere")


def test_sft_target_logprobs_equal_the_models_own_forward(kind, tokenizer):
    """Packed SFT rows (two examples in one row, block-diagonal attention) score each target
    token exactly as the model's own forward of that example alone."""
    policy = TransformerPolicy(scaled_model(kind, tokenizer), reference=None)
    examples = [
        (np.array([5, 6, 7]), np.array([8, 9])),
        (np.array([10, 11]), np.array([12, 13, 14])),
        (np.array([15]), np.array([16, 17])),
    ]
    batch = collate([[examples[0], examples[1]], [examples[2]]], tokenizer.pad_token_id)
    with torch.no_grad():
        got = target_logprobs(policy, batch)
    expected = []
    for prompt, completion in examples:
        ids = torch.as_tensor(np.concatenate([prompt, completion]))[None]
        logits = own_logits(policy.model, ids, torch.ones_like(ids))[0]
        n = len(completion)
        expected.append(token_logprobs(logits[-n - 1 : -1], ids[0, -n:]))
    assert got.shape == (7,) == (batch.num_targets,)
    torch.testing.assert_close(got, torch.cat(expected), atol=1e-5, rtol=0)


def test_sequence_logprobs_runs_the_head_only_where_a_target_is_predicted(tokenizer):
    """Rows with targets in different columns; an all-prompt batch scores nothing."""
    model = scaled_model("cohere", tokenizer)
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    targets = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.bool)
    got = sequence_logprobs(model, ids, torch.ones_like(ids), targets)
    logits = own_logits(model, ids, torch.ones_like(ids))
    expected = token_logprobs(logits[:, :-1][targets[:, 1:]], ids[targets])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    none = sequence_logprobs(model, ids, torch.ones_like(ids), torch.zeros_like(targets))
    assert none.shape == (0,)


def test_top_filter_is_the_one_truncation_of_sampler_and_action_mask():
    """The sampler's support is exactly :func:`top_set`'s mask (top-k, then top-p of the
    renormalised top-k mass), and masked (-inf) logits are never drawn."""
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    for top_k, top_p in ((5, None), (None, 0.5), (10, 0.6)):
        allowed = top_set(logits, top_k, top_p)
        draws = sample_tokens(
            logits.repeat(200, 1), Sampling(top_k=top_k or 0, top_p=top_p or 1.0)
        ).view(200, 4)
        assert allowed.gather(1, draws.T).all()  # every draw is allowed
        seen = torch.zeros_like(allowed).scatter(1, draws.T, True)
        assert torch.equal(seen | allowed, allowed) and seen.sum() >= 4
    values, index = top_filter(logits, 10, 0.6)
    assert index.shape == (4, 10) and torch.equal(index, logits.topk(10).indices)
    probs = logits.gather(1, index).softmax(-1)  # the top-10 distribution, best first
    for row, kept in zip(probs, values.isfinite().sum(-1).tolist(), strict=True):
        assert values.isfinite()[0, :1].all()  # the best token always stays
        # The smallest nucleus: it holds top_p of the top-k mass, one token fewer would not.
        assert row[:kept].sum() >= 0.6 > row[: kept - 1].sum()
    masked = torch.tensor([[0.0, -1e8, 0.0, float("-inf")]]).repeat(2000, 1)
    assert set(sample_tokens(masked, Sampling()).tolist()) == {0, 2}


def test_forward_passes_and_reads_the_cache_under_the_models_own_name(kind, tokenizer, caplog):
    """A cached forward continues exactly, without the deprecated-name warning of newer
    transformers (it names the cache ``cache`` where the model's forward does)."""
    from transformers.utils import logging as hf_logging

    model = scaled_model(kind, tokenizer)
    ids = torch.randint(3, len(tokenizer), (2, 6))
    mask = torch.ones_like(ids)
    hf_logging.get_logger("transformers").warning_once.cache_clear()  # warned at most once
    hf_logging.enable_propagation()
    try:
        with torch.no_grad(), caplog.at_level("WARNING"):
            head = forward(model, ids[:, :5], mask[:, :5], keep=1, use_cache=True)
            step = forward(model, ids[:, 5:], mask, keep=1, use_cache=True, cache=head.cache)
    finally:
        hf_logging.disable_propagation()
    assert torch.allclose(step.logits[:, -1], own_logits(model, ids, mask)[:, -1], atol=1e-5)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
