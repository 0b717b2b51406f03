"""Reference-LM wrappers: prefix KV cache, action masks, top-k actions, KL shaping."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.lm import PrefixCache, last_token_forward, top_set
from textgym.models import tiny_model
from textgym.reference import ReferenceLM
from textgym.wrappers import KLPenalty, ReferenceActionMask, TopKActions

V = 49152


@pytest.fixture(scope="module")
def reference_model(tokenizer):
    return tiny_model(tokenizer, seed=1)


def make_env(small_task, tokenizer, max_new_tokens: int = 4) -> gym.Env:
    return gym.make(
        "TextGen-v0",
        task=small_task,
        tokenizer=tokenizer,
        max_prompt_tokens=24,
        max_new_tokens=max_new_tokens,
    )


def full_logprobs(model, obs) -> torch.Tensor:
    """(V,) reference log-probabilities from a no-cache forward of the whole observation."""
    ids = torch.as_tensor(obs["input_ids"])[None]
    mask = torch.as_tensor(obs["attention_mask"])[None]
    with torch.no_grad():
        logits, _, _ = last_token_forward(model, ids, mask, V)
    return torch.log_softmax(logits[0].float(), -1)


def test_prefix_cache_equals_a_full_forward_through_steps_resets_and_repeats(
    tokenizer, reference_model, small_task
):
    """Three env slots step, restart and repeat out of phase; every answer of the cache equals
    a no-cache forward of the same observations, and ordinary steps cost one token per row."""
    envs = [make_env(small_task, tokenizer, max_new_tokens=3) for _ in range(3)]
    obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    cache = PrefixCache(reference_model, V)
    rng = np.random.default_rng(0)
    for t in range(10):
        ids = torch.as_tensor(np.stack([o["input_ids"] for o in obs]))  # (3, L)
        mask = torch.as_tensor(np.stack([o["attention_mask"] for o in obs]))
        logits, hidden = cache(ids, mask)
        with torch.no_grad():
            full_logits, full_hidden, _ = last_token_forward(reference_model, ids, mask, V)
        torch.testing.assert_close(logits, full_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(hidden, full_hidden, atol=1e-4, rtol=1e-4)
        for i, env in enumerate(envs):
            if (t + i) % 4 == 3:  # this slot repeats its observation
                continue
            obs[i], _, terminated, _, _ = env.step(int(rng.integers(300, 20000)))
            if terminated:
                obs[i] = env.reset()[0]
    assert cache.incremental_rows > cache.full_rows > 3


def test_prefix_cache_restarts_when_the_version_changes(tokenizer, small_task):
    model = tiny_model(tokenizer)
    env = make_env(small_task, tokenizer)
    obs, _ = env.reset(seed=0)
    ids = torch.as_tensor(obs["input_ids"])[None]
    mask = torch.as_tensor(obs["attention_mask"])[None]
    cache = PrefixCache(model, V)
    before, _ = cache(ids, mask, version=0)
    before = before.clone()
    with torch.no_grad():
        model.lm_head.weight.mul_(2.0)  # tied: the embeddings change too
    stale, _ = cache(ids, mask, version=0)
    fresh, _ = cache(ids, mask, version=1)
    torch.testing.assert_close(stale, before)  # same version: the stored answer
    assert (fresh - before).abs().max() > 1e-3


def test_action_mask_is_the_reference_top_k_and_top_p(tokenizer, reference_model, small_task):
    env = ReferenceActionMask(make_env(small_task, tokenizer), reference_model, top_k=16, top_p=0.9)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        mask = env.action_masks()
        logprobs = full_logprobs(reference_model, obs)
        expected = top_set(logprobs, 16, 0.9).numpy()
        assert mask.dtype == bool and mask.shape == (V,)
        np.testing.assert_array_equal(mask, expected)
        assert 1 <= mask.sum() <= 16
        # Every allowed token is at least as likely as every masked one.
        assert logprobs[mask].min() >= logprobs[~mask].max()
        obs, _, _, _, info = env.step(int(np.flatnonzero(mask)[-1]))
        assert "masked_action" not in info
    assert env.masked_actions_taken == 0


def test_a_masked_action_steps_but_is_counted_and_flagged(tokenizer, reference_model, small_task):
    env = ReferenceActionMask(make_env(small_task, tokenizer), reference_model, top_k=4)
    env.reset(seed=0)
    masked = int(np.flatnonzero(~env.action_masks())[0])
    _, _, _, _, info = env.step(masked)
    assert info["masked_action"] is True and env.masked_actions_taken == 1


def test_wrappers_sharing_a_reference_lm_run_one_forward_per_vector_step(
    tokenizer, reference_model, small_task
):
    reference = ReferenceLM(reference_model)
    venv = DummyVecEnv(
        [
            lambda: ReferenceActionMask(make_env(small_task, tokenizer), reference, top_k=8)
            for _ in range(4)
        ]
    )
    venv.reset()
    for _ in range(3):
        masks = np.stack(venv.env_method("action_masks"))  # (4, V)
        venv.step(np.array([int(np.flatnonzero(m)[0]) for m in masks]))
    assert reference.batched_calls == 3


def test_wrappers_record_their_arguments_without_copying_the_reference(
    tokenizer, reference_model, small_task
):
    # Gymnasium deep-copies recorded constructor arguments by default: that copied the
    # reference LM into every wrapper of every env (16 to 20 GB for 16 SmolLM2 envs).
    reference = ReferenceLM(reference_model)
    mask = ReferenceActionMask(make_env(small_task, tokenizer), reference, top_k=8)
    kl = KLPenalty(mask, reference, beta=0.1)
    topk = TopKActions(make_env(small_task, tokenizer), reference, k=4)
    for wrapper, args in ((mask, {"top_k": 8, "top_p": None}), (kl, {"beta": 0.1}),
                          (topk, {"k": 4, "include_hidden": True})):  # fmt: skip
        recorded = wrapper.spec.additional_wrappers[-1].kwargs  # this wrapper's, for env.spec
        assert recorded["reference"] is reference
        assert {k: recorded[k] for k in args} == args
    assert reference.model is reference_model


def test_kl_penalty_over_an_action_mask_shares_its_slot_and_forward(
    tokenizer, reference_model, small_task
):
    # NLPO: masks plus a KL penalty. Both wrappers on one env and one ReferenceLM ask the same
    # slot, so each vector step costs one reference forward, and the masks reach MaskablePPO
    # through the outer wrapper.
    reference = ReferenceLM(reference_model)

    def nlpo() -> gym.Env:
        masked = ReferenceActionMask(make_env(small_task, tokenizer), reference, top_k=8)
        return KLPenalty(masked, reference, beta=0.1)

    venv = DummyVecEnv([nlpo for _ in range(4)])
    assert venv.get_attr("slot") == [0, 1, 2, 3]
    obs = venv.reset()
    for step in range(3):
        masks = np.stack(venv.env_method("action_masks"))  # (4, V)
        expected = [
            full_logprobs(reference_model, {k: v[i] for k, v in obs.items()}) for i in range(4)
        ]
        np.testing.assert_array_equal(
            masks, np.stack([top_set(e, 8, None).numpy() for e in expected])
        )
        actions = [int(np.flatnonzero(m)[0]) for m in masks]
        obs, _, _, infos = venv.step(np.array(actions))
        for i, info in enumerate(infos):
            assert info["ref_logprob"] == pytest.approx(float(expected[i][actions[i]]), abs=1e-4)
        assert reference.batched_calls == step + 1
    # A different reference under the penalty gets its own slot.
    other = ReferenceLM(reference_model)
    inner = ReferenceActionMask(make_env(small_task, tokenizer), reference, top_k=8)
    assert KLPenalty(inner, other).slot == 0 and inner.slot == 4


def test_a_shared_reference_lm_needs_one_observation_length(tokenizer, reference_model, small_task):
    reference = ReferenceLM(reference_model)
    short = ReferenceActionMask(make_env(small_task, tokenizer, max_new_tokens=2), reference)
    long = ReferenceActionMask(make_env(small_task, tokenizer, max_new_tokens=5), reference)
    short.reset(seed=0)
    with pytest.raises(ValueError, match=r"observes \(29,\) token ids but .* observe \(26,\)"):
        long.reset(seed=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k": 0}, r"top_k must be an int in \[1, 49152\], got 0"),
        ({"top_k": None, "top_p": 1.5}, r"top_p must be a float in \(0, 1\], got 1.5"),
        ({"top_k": None, "top_p": None}, "give top_k, top_p or both"),
    ],
)
def test_action_mask_rejects_bad_settings(tokenizer, reference_model, small_task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReferenceActionMask(make_env(small_task, tokenizer), reference_model, **kwargs)


def test_reference_wrappers_need_a_textgen_env(reference_model):
    with pytest.raises(TypeError, match="wraps a TextGen env"):
        KLPenalty(gym.make("CartPole-v1"), reference_model)


def test_reference_lm_rejects_a_model_with_too_few_tokens(tokenizer, small_task):
    small_model = tiny_model(tokenizer)
    small_model.resize_token_embeddings(1000)
    with pytest.raises(ValueError, match="has 1000 output tokens but the env's action space"):
        ReferenceActionMask(make_env(small_task, tokenizer), small_model)


def test_top_k_actions_observation_and_token_choice(tokenizer, reference_model, small_task):
    env = TopKActions(make_env(small_task, tokenizer), reference_model, k=6)
    H = reference_model.config.hidden_size
    assert env.action_space == gym.spaces.Discrete(6)
    assert env.observation_space.shape == (3 * 6 + 1 + H,)
    obs, _ = env.reset(seed=0)
    plain = make_env(small_task, tokenizer)  # the same episode without the wrapper
    plain_obs, _ = plain.reset(seed=0)
    prompt = plain_obs["input_ids"][plain_obs["attention_mask"] > 0]
    top_lp, top_ids = full_logprobs(reference_model, plain_obs).topk(6)
    np.testing.assert_array_equal(env.candidates, top_ids.numpy())
    np.testing.assert_allclose(obs[:6], top_lp.numpy(), atol=1e-4)
    assert np.all(np.diff(obs[:6]) <= 0)  # best first
    assert np.all(obs[6:12] <= 1 + 1e-6) and np.all(obs[12:18] == 0) and obs[18] == 0.0
    # A candidate that occurs in the prompt has similarity 1 with it.
    for i, token in enumerate(env.candidates):
        if token in prompt:
            assert obs[6 + i] == pytest.approx(1.0, abs=1e-5)
    chosen = int(env.candidates[2])
    obs, _, terminated, _, info = env.step(2)
    assert info["token_id"] == chosen and not terminated
    plain_obs, *_ = plain.step(chosen)  # the wrapper emitted the chosen candidate
    np.testing.assert_allclose(
        obs[:6], full_logprobs(reference_model, plain_obs).topk(6).values.numpy(), atol=1e-4
    )
    assert obs[18] == pytest.approx(1 / 4)  # progress: 1 of 4 tokens
    used = obs[12:18] == 1
    assert used.sum() == int(chosen in env.candidates)
    with pytest.raises(ValueError, match=r"action must be an int in \[0, 6\), got 6"):
        env.step(6)


def test_top_k_actions_episode_ends_with_a_zero_observation(tokenizer, reference_model, small_task):
    env = TopKActions(make_env(small_task, tokenizer, max_new_tokens=2), reference_model, k=3)
    env.reset(seed=0)
    env.step(0)
    obs, reward, terminated, truncated, info = env.step(0)
    assert terminated and not truncated and "completion" in info
    assert not obs.any()


def test_kl_penalty_shapes_a_reported_step_and_reports_the_reference_always(
    tokenizer, reference_model, small_task
):
    env = KLPenalty(make_env(small_task, tokenizer), reference_model, beta=0.2)
    obs, _ = env.reset(seed=0)
    expected = full_logprobs(reference_model, obs)
    _, reward, _, _, info = env.step(321)  # no report: unshaped, reference log-prob in info
    assert reward == 0.0 and "kl" not in info
    assert info["ref_logprob"] == pytest.approx(float(expected[321]), abs=1e-4)
    env.report_logprob(-2.0)
    _, reward, _, _, info = env.step(654)
    assert info["kl"] == pytest.approx(-2.0 - info["ref_logprob"])
    assert reward == pytest.approx(-0.2 * info["kl"], abs=1e-5)
    with pytest.raises(ValueError, match="logprob must be a finite log-probability <= 0"):
        env.report_logprob(0.5)
    with pytest.raises(ValueError, match="beta must be a number >= 0, got -1"):
        KLPenalty(make_env(small_task, tokenizer), reference_model, beta=-1)


def test_kl_penalty_lets_the_env_reject_a_bad_action(tokenizer, reference_model, small_task):
    env = KLPenalty(make_env(small_task, tokenizer), reference_model)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        env.step(V + 5)


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*Box observation space m")  # the hidden state is unbounded
@pytest.mark.parametrize("wrapper", ["mask", "topk", "topk_no_hidden", "kl"])
def test_wrappers_pass_the_gymnasium_and_sb3_checkers(
    tokenizer, reference_model, small_task, wrapper
):
    def build() -> gym.Env:
        env = make_env(small_task, tokenizer, max_new_tokens=3)
        if wrapper == "mask":
            return ReferenceActionMask(env, reference_model, top_k=8)
        if wrapper.startswith("topk"):
            return TopKActions(env, reference_model, k=4, include_hidden=wrapper == "topk")
        return KLPenalty(env, reference_model, beta=0.1)

    gym_check_env(build(), skip_render_check=True)
    sb3_check_env(build(), warn=False)
