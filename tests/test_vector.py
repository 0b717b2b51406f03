"""TextGenVectorEnv: equivalence with Gymnasium's SyncVectorEnv in every autoreset mode,
one batched reward call per step, lockstep (DISABLED) batches and bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from textgym.env import TextGenEnv
from textgym.tasks.base import Sample, Task
from textgym.vector import TextGenVectorEnv

from .conftest import char_count, make_small_task

P, N, B = 24, 5, 4


def one_prompt_task() -> Task:
    # With a single sample, every autoreset draws the same prompt in both implementations.
    return Task("one", {"train": [Sample("Name a colour.", ("red",))]}, default_reward=char_count)


def random_actions(rng: np.random.Generator, eos: int) -> np.ndarray:
    actions = rng.integers(200, 30000, size=B)
    return np.where(rng.random(B) < 0.25, eos, actions)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_matches_sync_vector_env(tokenizer, mode):
    kwargs = dict(
        task=one_prompt_task(), tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N
    )
    ours = TextGenVectorEnv(num_envs=B, autoreset_mode=mode, **kwargs)
    reference = SyncVectorEnv([lambda: TextGenEnv(**kwargs)] * B, autoreset_mode=mode)
    assert ours.single_observation_space == reference.single_observation_space
    assert ours.observation_space == reference.observation_space
    assert ours.action_space == reference.action_space
    o1, _ = ours.reset(seed=0)
    o2, _ = reference.reset(seed=0)
    rng = np.random.default_rng(0)
    eos = ours.eos_token_id
    for _ in range(40):
        actions = random_actions(rng, eos)
        if mode == AutoresetMode.DISABLED:
            done = ~ours.active
            if done.all():
                o1, _ = ours.reset(options={"reset_mask": done})
                o2, _ = reference.reset(options={"reset_mask": done})
                continue
            if done.any():  # Gymnasium leaves stepping a finished sub-env undefined: reset it
                o1, _ = ours.reset(options={"reset_mask": done})
                o2, _ = reference.reset(options={"reset_mask": done})
        r1 = ours.step(actions)
        r2 = reference.step(actions)
        for a, b in zip(r1[:4], r2[:4], strict=True):
            assert data_equivalence(a, b), (a, b)
        assert ours.observation_space.contains(r1[0])
        if "_completion" in r1[4]:
            ended = r1[4]["_completion"]
            np.testing.assert_array_equal(ended, r1[2])
            if mode == AutoresetMode.SAME_STEP:
                for i in np.flatnonzero(ended):
                    assert data_equivalence(r1[4]["final_obs"][i], r2[4]["final_obs"][i])


def test_one_batched_reward_call_per_step(tokenizer):
    calls = []

    def recording(prompts, completions, references, **meta):
        calls.append(list(completions))
        return np.arange(len(completions), dtype=np.float32)

    envs = TextGenVectorEnv(
        num_envs=B,
        task=make_small_task(),
        tokenizer=tokenizer,
        reward=recording,
        max_prompt_tokens=P,
        max_new_tokens=N,
        autoreset_mode="disabled",
    )
    envs.reset(seed=0, options={"index": [0, 1, 2, 3]})
    eos = envs.eos_token_id
    hello = tokenizer.encode("hello", add_special_tokens=False)[0]
    _, rewards, terminated, _, info = envs.step(np.array([hello, eos, hello, eos]))
    assert calls == [["", ""]] and rewards.tolist() == [0, 0, 0, 1]
    assert terminated.tolist() == [False, True, False, True]
    assert info["references"][1] == ["item 1 is here"] and info["_references"].tolist() == [
        False,
        True,
        False,
        True,
    ]
    assert info["finish_reason"][3] == "eos"
    _, rewards, terminated, _, info = envs.step(np.array([eos, 7, eos, 7]))  # rows 1, 3 idle
    assert calls[-1] == ["hello", "hello"] and terminated.tolist() == [True, False, True, False]
    assert rewards.tolist() == [0, 0, 1, 0] and info["reward_components"]["recording"].tolist() == [
        0,
        0,
        1,
        0,
    ]
    assert not envs.active.any()


def test_lockstep_rows_append_at_the_same_column(tokenizer):
    envs = TextGenVectorEnv(
        num_envs=B,
        task=make_small_task(),
        tokenizer=tokenizer,
        max_prompt_tokens=P,
        max_new_tokens=N,
        autoreset_mode="disabled",
    )
    obs, _ = envs.reset(seed=3)
    for t in range(3):
        obs, *_ = envs.step(np.full(B, 500 + t))
        assert (obs["attention_mask"][:, P : P + t + 1] == 1).all()
        assert (obs["attention_mask"][:, P + t + 1 :] == 0).all()
        assert (obs["input_ids"][:, P + t] == 500 + t).all()


def test_length_cap_terminates_every_row_with_info(tokenizer):
    envs = TextGenVectorEnv(
        num_envs=B,
        task=make_small_task(),
        tokenizer=tokenizer,
        max_prompt_tokens=P,
        max_new_tokens=N,
    )
    envs.reset(seed=0)
    for _ in range(N):
        _, rewards, terminated, truncated, info = envs.step(np.full(B, 300))
        assert not truncated.any()
    assert (
        terminated.all()
        and (info["num_tokens"] == N).all()
        and (info["finish_reason"] == "length").all()
    )
    assert (rewards == len(tokenizer.decode([300] * N))).all()


def test_make_vec_returns_the_native_vector_env():
    envs = gym.make_vec("TextGen-v0", num_envs=3, max_new_tokens=2)
    assert isinstance(envs.unwrapped, TextGenVectorEnv) and envs.num_envs == 3


def test_seeded_resets_are_reproducible(tokenizer):
    def prompts(seed):
        envs = TextGenVectorEnv(
            num_envs=8, task=make_small_task(50), tokenizer=tokenizer, max_prompt_tokens=P
        )
        return list(envs.reset(seed=seed)[1]["prompt"])

    assert prompts(1) == prompts(1) and prompts(1) != prompts(2)


def test_bad_input(tokenizer):
    envs = TextGenVectorEnv(
        num_envs=B, task=make_small_task(), tokenizer=tokenizer, max_prompt_tokens=P
    )
    with pytest.raises(RuntimeError, match=r"step\(\) called before reset\(\)"):
        envs.step(np.zeros(B, dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(
        TypeError, match=r"actions must be an int array of shape \(4,\), got float64 \(4,\)"
    ):
        envs.step(np.zeros(B))
    with pytest.raises(TypeError, match=r"shape \(4,\), got int64 \(3,\)"):
        envs.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(
        ValueError, match=r"action 60000 is outside the tokenizer's vocabulary \[0, 49152\)"
    ):
        envs.step(np.array([1, 2, 60000, 3]))
    with pytest.raises(ValueError, match=r"reset_mask must be a bool array of shape \(4,\)"):
        envs.reset(options={"reset_mask": [1, 0, 1, 0]})
    with pytest.raises(ValueError, match="unknown reset option"):
        envs.reset(options={"seed": 3})
    # Issue 17: an all-False mask, a non-dict options and a bool index are clear errors.
    with pytest.raises(ValueError, match="reset_mask has no True entry"):
        envs.reset(options={"reset_mask": np.zeros(B, dtype=bool)})
    for bad in ([], "index", 5):
        with pytest.raises(TypeError, match="reset options must be a dict or None"):
            envs.reset(options=bad)
    with pytest.raises(ValueError, match="index True must be an int"):
        envs.reset(options={"index": True})
    with pytest.raises(ValueError, match="needs one entry per reset sub-env"):
        envs.reset(options={"index": [0, 1]})
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        TextGenVectorEnv(
            num_envs=2, task=make_small_task(), tokenizer=tokenizer, autoreset_mode="sometimes"
        )
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        TextGenVectorEnv(num_envs=0, task=make_small_task(), tokenizer=tokenizer)
