"""The transformer policy: sampling, KV-cache rollout through the vector env, reference model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import policy as policy_module
from agents.policy import TransformerPolicy, evaluate_tokens, rollout
from textgym.lm import Sampling, positions, sample_tokens, token_logprobs
from textgym.models import load_tokenizer, tiny_model
from textgym.tasks.base import Sample, Task
from textgym.vector import TextGenVectorEnv

# Prompts of different lengths, so rows are left-padded differently.
PROMPTS = [
    "Write one sentence that uses the words: dog, ball.",
    "Hi.",
    "Describe a long afternoon in a small town by the sea, with boats and gulls.",
    "Name a colour.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def make_task() -> Task:
    samples = [Sample(p, meta={"keywords": ["dog"]}) for p in PROMPTS]
    return Task("prompts", {"train": samples}, default_reward="keyword_coverage_soft")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_envs(tokenizer, num_envs: int = 4, max_new_tokens: int = 6, **kw) -> TextGenVectorEnv:
    return TextGenVectorEnv(
        num_envs=num_envs,
        task=make_task(),
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
        autoreset_mode="disabled",
        copy=False,
        **kw,
    )


def test_sampling_matches_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    draws = sample_tokens(logits, Sampling(temperature=1.0), g)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    expected = logits[0].softmax(-1)
    # Binomial std at n=20000 is at most 0.0036; 0.012 is over 3 sigma.
    assert torch.allclose(freq, expected, atol=0.012), (freq, expected)
    hot = sample_tokens(logits, Sampling(temperature=0.5), g)
    hot_freq = torch.bincount(hot, minlength=4).float() / len(hot)
    assert torch.allclose(hot_freq, (logits[0] / 0.5).softmax(-1), atol=0.012)


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[3.0, 2.9, 0.0, -1.0, 2.8]]).repeat(5000, 1)
    g = torch.Generator().manual_seed(1)
    assert set(sample_tokens(logits, Sampling(top_k=2), g).tolist()) == {0, 1}
    # softmax mass: 0.33, 0.30, 0.27, ...: top_p=0.5 keeps the first two tokens only.
    assert set(sample_tokens(logits, Sampling(top_p=0.5), g).tolist()) == {0, 1}
    assert set(sample_tokens(logits, Sampling(top_k=3, top_p=0.5), g).tolist()) == {0, 1}
    assert sample_tokens(logits[:2], Sampling(temperature=0)).tolist() == [0, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -1}, "temperature must be a number >= 0"),
        ({"top_k": -2}, "top_k must be an int >= 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ],
)
def test_sampling_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sampling(**kwargs)


def test_left_padded_rows_give_the_same_logits_as_alone(tokenizer):
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None)
    short = torch.tensor([[5, 6, 7]])
    padded = torch.tensor([[0, 0, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2]]
    alone, _ = policy(short, torch.ones_like(short))
    batched, _ = policy(padded, mask)
    torch.testing.assert_close(batched[:, 2:], alone, atol=1e-5, rtol=1e-5)


def test_kv_cache_rollout_logprobs_equal_a_full_forward(tokenizer):
    """Rollout log-probs and values (KV cache, one token per step) equal a no-cache forward over
    the same tokens to 1e-5 in float32; the reference log-probs (the trainer's no-cache
    ``evaluate_tokens(reference=True)``) equal the reference model's own forward."""
    torch.manual_seed(0)
    policy = TransformerPolicy(tiny_model(tokenizer), reference="copy")
    with torch.no_grad():  # make policy and reference differ, and the value head non-zero
        for p in policy.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
        policy.value_head.weight.normal_()
    envs = make_envs(tokenizer)
    g = torch.Generator().manual_seed(0)
    batch = rollout(policy, envs, Sampling(temperature=0.8, top_k=30), g, seed=0)
    assert batch.tokens.shape == (4, 6) and batch.mask.sum() == 24
    assert len(set(batch.prompt_mask.sum(-1).tolist())) > 1  # rows really are padded differently
    with torch.no_grad():
        logprobs, values, _ = evaluate_tokens(
            policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, 0.8
        )
        ref_logprobs, _, _ = evaluate_tokens(
            policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, 0.8, reference=True
        )
    torch.testing.assert_close(logprobs, batch.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(values, batch.values, atol=1e-5, rtol=0)
    assert batch.ref_logprobs is None  # the rollout runs the policy only
    ids = torch.cat([batch.prompt_ids, batch.tokens], 1)
    mask = torch.cat([batch.prompt_mask, torch.ones_like(batch.tokens)], 1)
    with torch.no_grad():  # logits at the positions that predict each completion token
        own = policy.reference(input_ids=ids, attention_mask=mask, position_ids=positions(mask))
    own = own.logits[:, -batch.tokens.shape[1] - 1 : -1]
    torch.testing.assert_close(
        ref_logprobs, token_logprobs(own, batch.tokens, 0.8), atol=1e-5, rtol=0
    )
    assert (batch.logprobs - ref_logprobs).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("share_prefix", "index"),
    [(True, [0, 1, 2, 3]), (False, [0, 1, 2, 3]), (True, [2, 2, 0, 0]), (False, [3, 1, 3, 1])],
)
def test_rollout_with_ended_rows_dropped_equals_a_full_forward(
    tokenizer, monkeypatch, share_prefix, index
):
    """Each distinct prompt is prefilled once (groups share it), the prompts' shared opening
    once, and rows that end leave the batch and the KV cache; the log-probs and values of every
    row still equal a no-cache forward (1e-5, float32)."""
    if not share_prefix:
        monkeypatch.setattr(policy_module, "MIN_SHARED_PREFIX", 10**6)
    torch.manual_seed(0)
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None)
    with torch.no_grad():
        policy.value_head.weight.normal_()
    sampling, options = Sampling(temperature=0.8, top_k=30), {"index": index}
    probe = rollout(
        policy, make_envs(tokenizer, max_new_tokens=8), sampling, seeded(0), options=options
    )
    # Row 0's third token made the stop token: row 0 ends by step 3, the others run on.
    envs = make_envs(tokenizer, max_new_tokens=8, eos_token_id=int(probe.tokens[0, 2]))
    batch = rollout(policy, envs, sampling, seeded(0), options=options)
    assert len(set(batch.lengths.tolist())) > 1  # rows really end at different steps
    ids, mask = batch.prompt_ids, batch.prompt_mask
    assert policy_module.shared_prefix_length(ids, mask) >= 8  # a chat template's opening
    with torch.no_grad():
        logprobs, values, _ = evaluate_tokens(policy, ids, mask, batch.tokens, 0.8)
    live = batch.mask.bool()
    torch.testing.assert_close(logprobs[live], batch.logprobs[live], atol=1e-5, rtol=0)
    torch.testing.assert_close(values[live], batch.values[live], atol=1e-5, rtol=0)
    assert batch.logprobs[~live].abs().sum() == 0
    assert (batch.tokens[~live] == envs.pad_token_id).all()


def test_shared_prefix_leaves_every_row_a_token_of_its_own():
    ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9], [0, 5, 6, 7, 8]])
    mask = (ids > 0).long()
    assert policy_module.shared_prefix_length(ids, mask) == 2  # row 0 is all prefix: keep one
    assert policy_module.shared_prefix_length(ids[1:], mask[1:]) == 3
    different = torch.tensor([[1, 2, 3], [4, 2, 3]])
    assert policy_module.shared_prefix_length(different, torch.ones_like(different)) == 0


def test_rollout_stops_rows_at_eos_and_reads_the_env_reward(tokenizer):
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None)
    envs = make_envs(tokenizer)
    greedy = rollout(policy, envs, Sampling(temperature=0), seed=0)
    # Declare row 0's first greedy token the stop token: row 0 now ends after one step.
    stop = int(greedy.tokens[0, 0])
    envs = make_envs(tokenizer, eos_token_id=stop)
    batch = rollout(policy, envs, Sampling(temperature=0), seed=0)
    assert batch.mask[0].tolist() == [1, 0, 0, 0, 0, 0]
    assert batch.finish_reasons[0] == "eos" and batch.completions[0] == ""
    assert batch.lengths.tolist() == [
        1 if stop in row[:1] else (row.index(stop) + 1 if stop in row else 6)
        for row in batch.tokens.tolist()
    ]
    # The scores are the env's rewards: keyword "dog" coverage of each completion.
    reward = envs.reward_fn(batch.prompts, batch.completions, None, keywords=[["dog"]] * 4)
    np.testing.assert_allclose(batch.scores.numpy(), reward, atol=1e-6)
    assert set(batch.components) == {"keyword_coverage_soft"}


def test_rollout_needs_lockstep_envs(tokenizer):
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None)
    envs = TextGenVectorEnv(num_envs=2, task=make_task(), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="needs autoreset_mode='disabled', got next_step"):
        rollout(policy, envs, Sampling())


def test_rollout_is_reproducible_with_the_same_seeds(tokenizer):
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None)
    runs = [
        rollout(policy, make_envs(tokenizer), Sampling(), torch.Generator().manual_seed(3), seed=3)
        for _ in range(2)
    ]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    assert runs[0].completions == runs[1].completions


def test_lora_reference_is_the_base_model_with_adapters_off(tokenizer):
    from peft import LoraConfig, get_peft_model

    base = tiny_model(tokenizer)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        base_logits = base(ids).logits
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))
    policy = TransformerPolicy(model, reference="adapters")
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_()
        policy_logits, _ = policy(ids, torch.ones_like(ids))
        with policy.reference_mode_on() as ref:
            ref_logits, _, _ = policy.lm_forward(ref, ids, torch.ones_like(ids))
    torch.testing.assert_close(ref_logits, base_logits, atol=1e-5, rtol=1e-5)
    assert (policy_logits - base_logits).abs().max() > 1e-2
    assert not any(
        p.requires_grad
        for n, p in policy.named_parameters()
        if "lora" not in n and "value_head" not in n
    )


def test_reference_adapters_needs_a_peft_model(tokenizer):
    with pytest.raises(ValueError, match="needs a peft model"):
        TransformerPolicy(tiny_model(tokenizer), reference="adapters")
    with pytest.raises(ValueError, match="reference must be 'copy', 'adapters' or None"):
        TransformerPolicy(tiny_model(tokenizer), reference="frozen")


def test_prompt_shared_forward_equals_a_plain_one(tokenizer):
    """Rows sharing a prompt (groups of 2 here) run it once: the logits and hidden states of
    every completion position equal a plain forward over each row's whole sequence (1e-5)."""
    torch.manual_seed(0)
    policy = TransformerPolicy(tiny_model(tokenizer), reference="copy")
    envs = make_envs(tokenizer, max_new_tokens=5)
    batch = rollout(policy, envs, Sampling(), seeded(1), options={"index": [1, 2, 1, 2]})
    assert torch.equal(batch.prompt_ids[0], batch.prompt_ids[2])  # really shared
    N, P = batch.tokens.shape[1], batch.prompt_ids.shape[1]
    ids = torch.cat([batch.prompt_ids, batch.tokens], 1)[:, :-1]
    attention = torch.cat([batch.prompt_mask, torch.ones_like(batch.tokens)], 1)[:, :-1]
    model = policy.reference
    with torch.no_grad():
        plain = policy.lm_forward(model, ids, attention, keep=N, hidden=True)
        logits, hidden = policy_module.prompt_shared_forward(
            policy, model, ids, attention, P, hidden=True
        )
    assert logits.shape == plain.logits.shape == (4, N, plain.logits.shape[-1])
    torch.testing.assert_close(logits, plain.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden, plain.hidden, atol=1e-5, rtol=1e-5)
