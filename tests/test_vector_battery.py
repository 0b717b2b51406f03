"""Gymnasium's own ``tests/vector`` checks, rewritten for TextGen-v0 and run for the native env
(``vectorization_mode="vector_entry_point"``) and ``SyncVectorEnv`` (``"sync"``).

Each test names the Gymnasium test it follows (Gymnasium ``tests/vector/test_vector_env.py``,
``test_autoreset_mode.py``, ``test_vector_env_info.py``, ``test_vector_wrapper.py``,
``tests/envs/registration/test_make_vec.py`` and ``tests/wrappers/vector/test_vector_wrappers.py``).
Where the two differ by design (seeding: one generator per batch, as Gymnasium's native
CartPoleVectorEnv), the test says so.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import wrappers
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorWrapper

from textgym.tasks.base import Sample, Task
from textgym.vector import TextGenVectorEnv

P, N, B = 16, 3, 3
MODES = ["vector_entry_point", "sync"]


def one_prompt_task() -> Task:
    """One sample: both implementations draw the same prompt whatever their generators."""
    return Task(
        "one",
        {"train": [Sample("Name a colour.", ("red",))]},
        default_reward={"rouge_l": 1.0, "tests.conftest:char_count": 0.1},
    )


def make(tokenizer, vectorization_mode: str, mode=AutoresetMode.NEXT_STEP, **kwargs: Any):
    kw = dict(task=one_prompt_task(), tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N)
    if vectorization_mode == "sync":
        vector = {"vector_kwargs": {"autoreset_mode": mode}}
    else:
        vector = {"autoreset_mode": mode}
    return gym.make_vec(
        "TextGen-v0", num_envs=B, vectorization_mode=vectorization_mode, **vector, **kw, **kwargs
    )


def same(a: Any, b: Any) -> bool:
    return data_equivalence(a, b, exact=True)


# -- test_vector_env.py::test_vector_env_equal (async vs sync there; native vs sync here) -----
@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_native_equals_sync_step_by_step_info_included(tokenizer, mode):
    native, sync = make(tokenizer, "vector_entry_point", mode), make(tokenizer, "sync", mode)
    assert isinstance(native.unwrapped, TextGenVectorEnv) and isinstance(sync, SyncVectorEnv)
    for name in ("observation_space", "single_observation_space", "action_space"):
        assert getattr(native, name) == getattr(sync, name)
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"] == mode
    assert same(native.reset(seed=0), sync.reset(seed=0))
    rng = np.random.default_rng(0)
    eos = native.unwrapped.eos_token_id
    seen: set[str] = set()
    for _ in range(30):
        actions = np.where(rng.random(B) < 0.3, eos, rng.integers(200, 3000, size=B))
        if mode == AutoresetMode.DISABLED and not native.unwrapped.active.all():
            done = ~native.unwrapped.active
            assert same(
                native.reset(options={"reset_mask": done}),
                sync.reset(options={"reset_mask": done}),
            )
        step_native, step_sync = native.step(actions), sync.step(actions)
        for a, b in zip(step_native, step_sync, strict=True):
            assert same(a, b), (a, b)
        assert native.observation_space.contains(step_native[0])
        seen |= set(step_native[4])
    # Every kind of info occurred: finished rows, restarted rows, the nested reward parts.
    expected = {"completion", "reward_components", "prompt_tokens"}
    if mode == AutoresetMode.SAME_STEP:
        expected = {"final_info", "final_obs", "prompt_tokens"}
    elif mode == AutoresetMode.DISABLED:
        expected -= {"prompt_tokens"}  # restarts happen in reset(), compared above
    assert expected <= seen


# -- test_autoreset_mode.py::test_autoreset_next_step / _within_step / _disabled --------------
@pytest.mark.parametrize("vectorization_mode", MODES)
def test_autoreset_next_step(tokenizer, vectorization_mode):
    envs = make(tokenizer, vectorization_mode, AutoresetMode.NEXT_STEP)
    eos = tokenizer.eos_token_id
    _, info = envs.reset(seed=0)
    assert set(info) == {"prompt", "_prompt", "index", "_index", "prompt_tokens", "_prompt_tokens"}
    envs.step(np.array([300, 300, 300]))
    _, rewards, terminated, truncated, info = envs.step(np.array([eos, 300, 300]))
    assert terminated.tolist() == [True, False, False] and not truncated.any()
    assert info["_completion"].tolist() == [True, False, False] and "_index" not in info
    obs, rewards, terminated, _, info = envs.step(np.array([300, 300, 300]))
    # Row 0 restarts (reward 0, reset info); rows 1, 2 reach the cap.
    assert terminated.tolist() == [False, True, True] and rewards[0] == 0.0
    assert info["_index"].tolist() == [True, False, False]
    assert info["_completion"].tolist() == [False, True, True]
    assert info["_prompt"].tolist() == [True, True, True]  # both kinds, as SyncVectorEnv gives
    assert obs["attention_mask"][0, P:].sum() == 0


@pytest.mark.parametrize("vectorization_mode", MODES)
def test_autoreset_within_step(tokenizer, vectorization_mode):
    envs = make(tokenizer, vectorization_mode, AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    envs.step(np.array([300, 300, 300]))
    envs.step(np.array([300, 300, 300]))
    obs, _, terminated, _, info = envs.step(np.array([300, 300, 300]))
    assert terminated.all() and (obs["attention_mask"][:, P:] == 0).all()  # already reset
    final = info["final_info"]
    assert info["_final_info"].all() and info["_final_obs"].all()
    assert (final["num_tokens"] == N).all() and "completion" not in info  # terminal info: nested
    assert info["_index"].all()  # the top level holds the reset info of the restarted rows
    for row in info["final_obs"]:  # test_same_step_final_obs
        assert row in envs.single_observation_space and row["attention_mask"][P:].all()


@pytest.mark.parametrize("vectorization_mode", MODES)
def test_autoreset_disabled_and_partial_reset(tokenizer, vectorization_mode):
    envs = make(tokenizer, vectorization_mode, AutoresetMode.DISABLED)
    first, _ = envs.reset(seed=0)
    envs.step(np.array([300, 300, 300]))
    stepped, *_ = envs.step(np.array([301, 301, 301]))
    mask = np.array([True, False, True])
    obs, info = envs.reset(options={"reset_mask": mask})
    for key in obs:  # test_partial_reset: reset rows start afresh, the others are untouched
        np.testing.assert_array_equal(obs[key][mask], first[key][mask])
        np.testing.assert_array_equal(obs[key][~mask], stepped[key][~mask])
    assert info["_prompt"].tolist() == mask.tolist()


# -- test_vector_env.py::test_partial_reset_failure and test_action_count_compatibility ------
@pytest.mark.parametrize("vectorization_mode", MODES)
def test_partial_reset_failure_and_action_count(tokenizer, vectorization_mode):
    envs = make(tokenizer, vectorization_mode, AutoresetMode.DISABLED)
    envs.reset(options={"reset_mask": np.array([True, True, True])})
    for bad in (np.array([True]), np.array([[True, True, True]]), np.array([1, 1, 0])):
        with pytest.raises((ValueError, TypeError), match="reset_mask"):
            envs.reset(options={"reset_mask": bad})
    none = np.zeros(B, dtype=bool)
    message = "at least one True" if vectorization_mode == "sync" else "no True entry"
    with pytest.raises(ValueError, match=message):
        envs.reset(options={"reset_mask": none})
    _, rewards, *_ = envs.step(np.array([300, 300, 300]))
    assert rewards.shape == (B,)
    with pytest.raises((ValueError, TypeError)):  # too few, too many
        envs.step(np.array([300, 300]))
    with pytest.raises((ValueError, TypeError)):
        envs.step(np.array([300, 300, 300, 300]))
    with pytest.raises(TypeError):  # a scalar is no batch of actions
        envs.step(0)


# -- test_vector_env.py::test_random_seeding_basics (the native convention differs) ----------
def test_seeding_native_one_generator_sync_one_per_sub_env(tokenizer):
    native, sync = make(tokenizer, "vector_entry_point"), make(tokenizer, "sync")
    native.reset(seed=42)
    sync.reset(seed=42)
    assert sync.np_random_seed == (42, 43, 44)  # sub-env i gets seed + i
    assert native.np_random_seed == 42  # one generator for the batch, as CartPoleVectorEnv
    native.reset(seed=None)  # seed=None keeps the generator going
    assert native.np_random_seed == 42
    with pytest.raises(TypeError, match=re.escape("use vectorization_mode='sync'")):
        native.reset(seed=[0, 1, 2])


# -- test_autoreset_mode.py::test_autoreset_metadata and test_make_vec_autoreset --------------
@pytest.mark.parametrize("mode", list(AutoresetMode))
@pytest.mark.parametrize("vectorization_mode", MODES)
def test_autoreset_metadata(tokenizer, mode, vectorization_mode):
    for given in (mode, mode.value):
        envs = make(tokenizer, vectorization_mode, given)
        assert envs.metadata["autoreset_mode"] == mode
        envs.close()


# -- tests/envs/registration/test_make_vec.py ------------------------------------------------
@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("vectorization_mode", [*MODES, "async"])
def test_make_vec_num_envs_and_recreation_from_spec(tokenizer, num_envs, vectorization_mode):
    kwargs = dict(task="keywords", max_prompt_tokens=P, max_new_tokens=N)
    envs = gym.make_vec("TextGen-v0", num_envs, vectorization_mode, **kwargs)
    assert envs.num_envs == num_envs and envs.spec is not None
    again = gym.make_vec(envs.spec)  # test_make_vec_with_spec
    assert type(again) is type(envs) and again.spec == envs.spec
    for name in ("observation_space", "single_observation_space", "action_space"):
        assert getattr(again, name) == getattr(envs, name)
    assert envs.render_mode == again.render_mode
    envs.close()
    again.close()


def test_make_vec_render_mode_and_wrappers(tokenizer):
    kw = dict(task=one_prompt_task(), tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N)
    envs = gym.make_vec("TextGen-v0", 2, render_mode="ansi", **kw)
    envs.reset(seed=0)
    assert envs.render_mode == "ansi" and envs.render()[0].endswith("[]")
    with pytest.warns(UserWarning, match="cannot render render_mode='rgb_array'"):
        envs = gym.make_vec("TextGen-v0", 2, render_mode="rgb_array", **kw)
    assert envs.render_mode is None and envs.render() is None
    envs = gym.make_vec(
        "TextGen-v0", 2, "sync", wrappers=[lambda env: wrappers.ClipReward(env, 0, 1)], **kw
    )
    assert all(isinstance(env, wrappers.ClipReward) for env in envs.envs)


# -- tests/vector/test_vector_wrapper.py -----------------------------------------------------
class CountResets(VectorWrapper):
    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.counter = 0

    def reset(self, **kwargs: Any):
        self.counter += 1
        return super().reset(**kwargs)


@pytest.mark.parametrize("vectorization_mode", MODES)
def test_vector_wrapper_forwards_reset_attributes_and_metadata(tokenizer, vectorization_mode):
    envs = make(tokenizer, vectorization_mode)
    wrapped = CountResets(envs)
    wrapped.reset(seed=0)
    assert wrapped.counter == 1 and wrapped.metadata == envs.metadata
    assert wrapped.num_envs == B and wrapped.single_action_space == envs.single_action_space
    assert wrapped.unwrapped is envs.unwrapped


# -- tests/wrappers/vector/test_vector_wrappers.py::test_vector_wrapper_equivalence ----------
# Gymnasium's vector observation wrappers refuse SAME_STEP themselves; ClipReward takes both.
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("FilterObservation", {"filter_keys": ["input_ids"]}),
        ("FlattenObservation", {}),
        ("ClipReward", {"min_reward": 0.0, "max_reward": 0.5}),
    ],
)
def test_vector_wrapper_on_native_equals_single_wrapper_in_sync(tokenizer, mode, name, kwargs):
    """The vector wrapper over the native env gives what the single-env wrapper gives in sync."""
    kw = dict(task=one_prompt_task(), tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N)
    vector_wrapped = getattr(wrappers.vector, name)(
        gym.make_vec("TextGen-v0", B, autoreset_mode=mode, **kw), **kwargs
    )
    single = getattr(wrappers, name)
    sync_wrapped = gym.make_vec(
        "TextGen-v0",
        B,
        "sync",
        vector_kwargs={"autoreset_mode": mode},
        wrappers=(lambda env: single(env, **kwargs),),
        **kw,
    )
    assert vector_wrapped.observation_space == sync_wrapped.observation_space
    assert vector_wrapped.single_observation_space == sync_wrapped.single_observation_space
    assert same(vector_wrapped.reset(seed=1), sync_wrapped.reset(seed=1))
    rng = np.random.default_rng(1)
    eos = vector_wrapped.unwrapped.eos_token_id
    for _ in range(12):
        actions = np.where(rng.random(B) < 0.3, eos, rng.integers(200, 3000, size=B))
        ours, theirs = vector_wrapped.step(actions), sync_wrapped.step(actions)
        for a, b in zip(ours[:4], theirs[:4], strict=True):
            assert same(a, b)
        if mode == AutoresetMode.NEXT_STEP:  # Gymnasium's vector wrappers leave final_obs be
            assert same(ours[4], theirs[4])
