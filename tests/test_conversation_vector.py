"""The native vector env of TextGen-Conversation-v0: equal to SyncVectorEnv row by row, one
batched simulator call per step, autoreset modes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import textgym  # noqa: F401 - registers the env ids
from textgym.conversation import ConversationTask, hidden_item_task
from textgym.conversation.vector import ConversationVectorEnv

B = 3


def one_sample_task() -> ConversationTask:
    """One dialogue: both implementations play the same sample whatever their generators."""
    base = hidden_item_task()
    return ConversationTask(
        "one",
        {"train": base.split("train")[:1]},
        base.default_reward,
        script=base.script,
        turn_cost=0.1,
    )


def make(tokenizer, vectorization_mode: str, mode=AutoresetMode.NEXT_STEP, **kwargs: Any):
    kw = dict(
        task=one_sample_task(),
        tokenizer=tokenizer,
        max_context_tokens=120,
        max_turn_tokens=4,
        max_turns=3,
    )
    kw.update(kwargs)
    if vectorization_mode == "sync":
        vector = {"vector_kwargs": {"autoreset_mode": mode}}
    else:
        vector = {"autoreset_mode": mode}
    return gym.make_vec(
        "TextGen-Conversation-v0",
        num_envs=B,
        vectorization_mode=vectorization_mode,
        **vector,
        **kw,
    )


def same(a: Any, b: Any) -> bool:
    return data_equivalence(a, b, exact=True)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_native_equals_sync_step_by_step_info_included(tokenizer, mode):
    native, sync = make(tokenizer, "vector_entry_point", mode), make(tokenizer, "sync", mode)
    assert isinstance(native.unwrapped, ConversationVectorEnv) and isinstance(sync, SyncVectorEnv)
    for name in ("observation_space", "single_observation_space", "action_space"):
        assert getattr(native, name) == getattr(sync, name)
    assert same(native.reset(seed=0), sync.reset(seed=0))
    words = [tokenizer.encode(w)[0] for w in (" cat", " dog", " cow", " fly", " fur", " it")]
    eot = native.unwrapped.end_of_turn_token_id
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for _ in range(40):
        actions = np.where(rng.random(B) < 0.35, eot, rng.choice(words, size=B))
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
        seen |= set(step_native[4].get("final_info", {}))
    # Turns ended, users answered, dialogues ended (and restarted, outside DISABLED).
    assert {"turn_reward_components", "user_message", "reward_components"} <= seen
    if mode != AutoresetMode.DISABLED:
        assert "prompt_tokens" in seen


def test_one_batched_simulator_call_per_step(tokenizer):
    batches: list[int] = []

    def user(conversations, goals, **meta):
        batches.append(len(conversations))
        assert len(goals) == len(conversations) and len(meta["goal"]) == len(conversations)
        return [f"Reply {len(c)}." for c in conversations]

    envs = gym.make_vec(
        "TextGen-Conversation-v0",
        num_envs=4,
        user=user,
        tokenizer=tokenizer,
        max_context_tokens=160,
    )
    envs.reset(seed=0)
    eot, word = envs.unwrapped.end_of_turn_token_id, tokenizer.encode(" Hi")[0]
    _, rewards, _, _, info = envs.step(np.array([eot, word, eot, eot]))
    assert batches == [3] and info["_user_message"].tolist() == [True, False, True, True]
    assert info["inserted_tokens"][1] == 0 and (info["inserted_tokens"][[0, 2, 3]] > 0).all()
    np.testing.assert_allclose(rewards, [-0.1, 0.0, -0.1, -0.1])
    envs.step(np.array([word, eot, word, word]))
    assert batches == [3, 1] and envs.unwrapped.dialogues.user_calls == 2
    # Rows whose state grew by inserted tokens: each ends with the next assistant header.
    obs, *_ = envs.step(np.array([word] * 4))
    C = envs.unwrapped.max_context_tokens
    header = tokenizer.encode("<|im_start|>assistant\n")
    assert all(obs["input_ids"][i, C - len(header) : C].tolist() == header for i in range(4))


def test_disabled_autoreset_idles_finished_rows(tokenizer):
    envs = make(tokenizer, "vector_entry_point", AutoresetMode.DISABLED, max_turns=1)
    envs.reset(seed=0)
    eot = envs.unwrapped.end_of_turn_token_id
    _, _, terminated, _, info = envs.step(np.array([eot, 300, 300]))
    assert terminated.tolist() == [True, False, False]
    assert info["finish_reason"][0] == "max_turns" and envs.unwrapped.active.tolist() == [
        False,
        True,
        True,
    ]
    before = envs.unwrapped.dialogues.ids[0].copy()
    _, rewards, terminated, _, info = envs.step(np.array([300, eot, eot]))
    assert (
        rewards[0] == 0.0
        and not terminated[0]
        and (envs.unwrapped.dialogues.ids[0] == before).all()
    )
    obs, info = envs.reset(options={"reset_mask": np.array([True, True, True])})
    assert info["_prompt"].all() and envs.unwrapped.active.all()


def test_bad_vector_input(tokenizer):
    envs = make(tokenizer, "vector_entry_point")
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="unknown reset option"):
        envs.reset(options={"prompt": "hi"})
    with pytest.raises(ValueError, match="one entry per reset sub-env"):
        envs.reset(options={"index": [0, 0]})
    with pytest.raises(TypeError, match="actions must be an int array"):
        envs.step(np.array([1, 2]))
    with pytest.raises(ValueError, match="num_envs must be a positive int"):
        ConversationVectorEnv(num_envs=0)
