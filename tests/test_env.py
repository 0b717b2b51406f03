"""TextGenEnv: the MDP contract of DESIGN.md, checkers, determinism and every bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import textgym
from textgym.env import TextGenEnv
from textgym.rewards import make_reward
from textgym.tasks.base import Sample, Task

from .conftest import char_count, make_small_task

P, N = 32, 6


@pytest.fixture
def env(tokenizer, small_task) -> TextGenEnv:
    return TextGenEnv(task=small_task, tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N)


def plain_tokens(env: TextGenEnv, text: str) -> list[int]:
    return env.tokenizer.encode(text, add_special_tokens=False)


def test_gymnasium_and_sb3_checkers_pass(tokenizer, small_task):
    kwargs = dict(task=small_task, tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N)
    check_env(
        gym.make("TextGen-v0", **kwargs).unwrapped
    )  # with a spec, render modes are checked too
    sb3_check_env(
        TextGenEnv(task=small_task, tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N)
    )


def test_make_with_no_arguments_works_offline():
    env = gym.make("TextGen-v0")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.action_space.n == 49152
    assert "Write" in info["prompt"] or info["prompt"]
    assert env.unwrapped.task.name == "keywords"


def test_observation_layout(env):
    obs, info = env.reset(seed=0, options={"index": 1})
    ids, mask = obs["input_ids"], obs["attention_mask"]
    assert ids.shape == mask.shape == (P + N,) and ids.dtype == np.int64 and mask.dtype == np.int8
    prompt_ids = env.encoder.encode(env.task.split("train")[1].prompt)
    n = prompt_ids.size
    assert info["prompt_tokens"] == n
    np.testing.assert_array_equal(ids[P - n : P], prompt_ids)  # left-padded prompt
    assert mask[: P - n].sum() == 0 and mask[P - n : P].all() and mask[P:].sum() == 0
    assert (ids[: P - n] == env.pad_token_id).all()
    obs, *_ = env.step(42)
    assert (
        obs["input_ids"][P] == 42
        and obs["attention_mask"][P] == 1
        and obs["attention_mask"][P + 1] == 0
    )


def test_reward_only_at_the_end_and_equals_the_reward_of_the_text(tokenizer, small_task):
    env = TextGenEnv(
        task=small_task,
        tokenizer=tokenizer,
        reward="rouge_l",
        max_prompt_tokens=P,
        max_new_tokens=N,
    )
    env.reset(options={"index": 3})
    tokens = plain_tokens(env, "item 3 is here")
    rewards = []
    for t in tokens:
        _, r, terminated, truncated, info = env.step(t)
        rewards.append(r)
        assert not terminated and not truncated and info == {}
    _, r, terminated, truncated, info = env.step(env.eos_token_id)
    assert rewards == [0.0] * len(tokens)
    assert terminated and not truncated
    assert info["completion"] == "item 3 is here" and info["finish_reason"] == "eos"
    expected = make_reward("rouge_l")([info["prompt"]], [info["completion"]], [["item 3 is here"]])
    assert r == pytest.approx(float(expected[0])) == pytest.approx(1.0)
    assert info["references"] == ["item 3 is here"] and info["num_tokens"] == len(tokens) + 1
    assert info["reward_components"] == {"rouge_l": pytest.approx(1.0)}


def test_termination_at_the_token_cap_is_terminated_not_truncated(env):
    env.reset(seed=1)
    for step in range(N):
        _, reward, terminated, truncated, info = env.step(100 + step)
        assert truncated is False
        assert terminated is (step == N - 1)
    assert info["finish_reason"] == "length" and info["num_tokens"] == N
    assert reward == len(info["completion"])  # char_count reward
    assert info["completion"] == env.tokenizer.decode(list(range(100, 100 + N)))


def test_same_seed_same_episodes(tokenizer, small_task):
    def episodes(seed: int) -> list:
        env = TextGenEnv(
            task=small_task, tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N
        )
        env.action_space.seed(seed)
        out = [env.reset(seed=seed)[1]["index"]]
        for _ in range(30):
            obs, r, term, _, _ = env.step(env.action_space.sample())
            out.append((obs["input_ids"].tobytes(), r))
            if term:
                out.append(env.reset()[1]["index"])
        return out

    assert episodes(7) == episodes(7)
    assert episodes(7) != episodes(8)


def test_reset_options_prompt_and_chat_messages(env):
    obs, info = env.reset(options={"prompt": "Tell me a joke."})
    assert info["prompt"] == "Tell me a joke." and info["index"] is None
    _, r, terminated, _, info = env.step(env.eos_token_id)
    assert terminated and info["references"] == [] and info["completion"] == ""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    obs, info = env.reset(options={"prompt": messages})
    text = env.tokenizer.decode(obs["input_ids"][obs["attention_mask"].astype(bool)])
    assert "Be brief." in text and text.rstrip().endswith("assistant")


def test_reward_mix_reports_each_component(tokenizer, small_task):
    env = TextGenEnv(
        task=small_task,
        tokenizer=tokenizer,
        reward={"rouge_l": 2.0, "tests.conftest:char_count": 0.5},
        max_prompt_tokens=P,
        max_new_tokens=N,
    )
    env.reset(options={"index": 0})
    for t in plain_tokens(env, "item 0 is"):
        *_, info = env.step(t)
    _, r, *_, info = env.step(env.eos_token_id)
    parts = info["reward_components"]
    assert set(parts) == {"rouge_l", "char_count"} and parts["char_count"] == len("item 0 is")
    assert r == pytest.approx(2.0 * parts["rouge_l"] + 0.5 * parts["char_count"])


def test_render_modes(tokenizer, small_task, capsys):
    env = TextGenEnv(task=small_task, tokenizer=tokenizer, max_prompt_tokens=P, render_mode="ansi")
    env.reset(options={"index": 2})
    env.step(plain_tokens(env, "hello")[0])
    text = env.render()
    assert "item number 2" in text and text.endswith("[hello]")
    env = TextGenEnv(task=small_task, tokenizer=tokenizer, max_prompt_tokens=P, render_mode="human")
    env.reset(options={"index": 2})
    assert env.render() is None and "item number 2" in capsys.readouterr().out
    # Issue 17: SB3's make_vec_env passes "rgb_array"; it warns and renders nothing.
    with pytest.warns(UserWarning, match="cannot render render_mode='rgb_array'"):
        env = TextGenEnv(task=small_task, tokenizer=tokenizer, render_mode="rgb_array")
    assert env.render_mode is None
    with pytest.raises(TypeError, match="render_mode must be a str or None"):
        TextGenEnv(task=small_task, tokenizer=tokenizer, render_mode=3)


def test_padded_model_vocabulary(tokenizer, small_task):
    env = TextGenEnv(task=small_task, tokenizer=tokenizer, vocab_size=49216, max_prompt_tokens=P)
    assert env.action_space.n == 49216 and env.observation_space["input_ids"].high.max() == 49215
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match=r"action 49200 is outside the tokenizer's vocabulary \[0, 49152\)"
    ):
        env.step(49200)
    with pytest.raises(ValueError, match="vocab_size=100 must be an int >= the tokenizer's 49152"):
        TextGenEnv(task=small_task, tokenizer=tokenizer, vocab_size=100)


# -- bad input --------------------------------------------------------------------------------


def test_action_outside_vocabulary_or_of_wrong_type(env):
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match=r"action -1 is outside the tokenizer's vocabulary \[0, 49152\)"
    ):
        env.step(-1)
    with pytest.raises(ValueError, match="action 49152 is outside"):
        env.step(49152)
    # Issue 17: step() takes what action_space.contains takes: True (=1) yes, shape (1,) no.
    for bad in (1.5, "7", None, np.array([1, 2]), np.array([5]), np.bool_(True), np.uint64(3)):
        assert not env.action_space.contains(bad)
        with pytest.raises(TypeError, match="action must be an int token id"):
            env.step(bad)
    for good in (np.int32(5), np.array(6), True):  # numpy ints, 0-d arrays, bools
        assert env.action_space.contains(good)
        env.step(good)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"index": True}, ValueError, r"options\['index'\]=True must be an int"),
        ([], TypeError, "reset options must be a dict or None, got list"),
        ("index", TypeError, "reset options must be a dict or None, got str"),
        (5, TypeError, "reset options must be a dict or None, got int"),
    ],
)
def test_bad_reset_options_are_clear_errors(env, options, error, message):
    with pytest.raises(error, match=message):
        env.reset(options=options)


def test_no_max_episode_steps_and_time_limits(tokenizer, small_task):
    """Issue 17, item 3: the decision documented under "Episode end" of TextGenEnv."""
    assert all(
        gym.spec(i).max_episode_steps is None for i in gym.registry if i.startswith("TextGen")
    )
    kw = dict(task=small_task, tokenizer=tokenizer, max_prompt_tokens=P, max_new_tokens=N)
    # Time wrappers work with an explicit horizon; the cap stays terminated (and scored).
    env = gym.wrappers.TimeAwareObservation(
        gym.make("TextGen-v0", max_episode_steps=N, **kw), flatten=False
    )
    env.reset(seed=0)
    for _ in range(N):
        obs, reward, terminated, truncated, info = env.step(300)
    assert terminated and truncated and info["finish_reason"] == "length" and reward > 0
    assert obs["time"].tolist() == [N]  # the elapsed steps, of a horizon of N
    # A shorter outer TimeLimit truncates unscored; max_new_tokens=k is the scored way.
    env = gym.make("TextGen-v0", max_episode_steps=2, **kw)
    env.reset(seed=0)
    env.step(300)
    _, reward, terminated, truncated, info = env.step(300)
    assert truncated and not terminated and reward == 0.0 and info == {}


def test_step_before_reset_and_after_the_end(env):
    with pytest.raises(
        RuntimeError, match=r"step\(\) called before reset\(\) or after the episode ended"
    ):
        env.step(1)
    env.reset(seed=0)
    env.step(env.eos_token_id)
    with pytest.raises(RuntimeError, match=r"call reset\(\) first"):
        env.step(1)


def test_empty_prompt(env):
    with pytest.raises(ValueError, match="empty"):
        env.reset(options={"prompt": "   "})
    with pytest.raises(ValueError, match="Sample.prompt is empty"):
        Sample("")


def test_long_prompt_truncates_left_or_raises(tokenizer):
    long_text = "one two three four five six seven eight nine ten " * 10
    task = Task("long", {"train": [Sample(long_text)]}, default_reward=char_count)
    env = TextGenEnv(task=task, tokenizer=tokenizer, max_prompt_tokens=16, chat_template=False)
    obs, info = env.reset(seed=0)
    full = tokenizer.encode(long_text)
    assert info["prompt_tokens"] == 16
    np.testing.assert_array_equal(obs["input_ids"][:16], full[-16:])  # the end is kept
    strict = TextGenEnv(task=task, tokenizer=tokenizer, max_prompt_tokens=16, truncation="error")
    with pytest.raises(
        ValueError,
        match=r"more than max_prompt_tokens=16; raise max_prompt_tokens or use truncation='left'",
    ):
        strict.reset(seed=0)
    with pytest.raises(ValueError, match="truncation must be 'left' or 'error'"):
        TextGenEnv(task=task, tokenizer=tokenizer, truncation="right")


def test_unknown_task_reward_and_options(tokenizer, small_task):
    with pytest.raises(ValueError, match="unknown task 'nope'; registered tasks: .*keywords"):
        TextGenEnv(task="nope", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="unknown reward 'nope'; registered rewards: .*rouge_l"):
        TextGenEnv(task=small_task, tokenizer=tokenizer, reward="nope")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, got 0"):
        TextGenEnv(task=small_task, tokenizer=tokenizer, max_new_tokens=0)
    with pytest.raises(
        KeyError, match="has no split 'test'; available: \\['train', 'validation'\\]"
    ):
        TextGenEnv(task=small_task, tokenizer=tokenizer, split="test")
    env = TextGenEnv(task=small_task, tokenizer=tokenizer, max_prompt_tokens=P)
    with pytest.raises(ValueError, match=r"options\['index'\]=9 must be an int in \[0, 5\)"):
        env.reset(options={"index": 9})
    with pytest.raises(ValueError, match="reset options take one of 'prompt' or 'index'"):
        env.reset(options={"seed": 1})


def test_reward_returning_nan_or_wrong_shape_names_the_reward(tokenizer):
    def nan_reward(prompts, completions, references, **meta):
        return np.full(len(completions), np.nan)

    def short_reward(prompts, completions, references, **meta):
        return np.zeros(len(completions) + 1)

    for fn, message in (
        (nan_reward, "reward 'nan_reward' returned NaN or inf"),
        (short_reward, r"reward 'short_reward' returned shape \(2,\)"),
    ):
        env = TextGenEnv(
            task=make_small_task(), tokenizer=tokenizer, reward=fn, max_prompt_tokens=P
        )
        env.reset(seed=0)
        with pytest.raises(ValueError, match=message):
            env.step(env.eos_token_id)


def test_registered_with_vector_entry_point():
    spec = gym.spec("TextGen-v0")
    assert spec.entry_point == "textgym.env:TextGenEnv"
    assert spec.vector_entry_point == "textgym.vector:TextGenVectorEnv"
    assert textgym.TextGenEnv is TextGenEnv


def test_task_variants_are_registered():
    env = gym.make("TextGen-Summarize-v0", max_new_tokens=3)
    assert env.unwrapped.task.name == "summarize"
    envs = gym.make_vec("TextGen-Dialogue-v0", num_envs=2, max_new_tokens=3)
    assert envs.unwrapped.task.name == "dialogue"


def test_examples_run():
    """The offline custom-reward example runs end to end (the quickstart needs SmolLM2 weights)."""
    import runpy
    from pathlib import Path

    runpy.run_path(
        str(Path(__file__).parents[1] / "examples" / "custom_reward.py"), run_name="__main__"
    )
