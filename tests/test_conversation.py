"""TextGen-Conversation-v0: insertion, rewards, caps, truncation, simulators and failures."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401 - registers the env ids
from textgym.conversation import ConversationTask, LMUser, ReplayUser, hidden_item_task, make_user
from textgym.conversation.env import ConversationEnv
from textgym.conversation.simulators import HumanUser, RemoteUser, parse_reply
from textgym.tasks.base import Sample

from .openai_server import OpenAIServer


def make_env(**kwargs) -> ConversationEnv:
    kwargs.setdefault("max_context_tokens", 160)
    return ConversationEnv(**kwargs)


def say(env, text: str, end: bool = True):
    """Step the tokens of ``text`` (and the end-of-turn token); the last step's result."""
    tokens = env.tokenizer.encode(text) + ([env.end_of_turn_token_id] if end else [])
    for token in tokens:
        result = env.step(token)
        if result[2]:
            break
    return result


def context_text(env, obs) -> str:
    C = env.max_context_tokens
    ids = obs["input_ids"][:C][obs["attention_mask"][:C].astype(bool)]
    return env.tokenizer.decode(ids)


def rendered(env, messages) -> str:
    return env.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def goal_of(env) -> dict:
    return env.sample.meta["goal"]


# -- the MDP ---------------------------------------------------------------------------------
def test_state_after_each_user_turn_is_the_chat_template_of_the_messages():
    env = make_env(max_context_tokens=400)
    obs, info = env.reset(seed=3)
    assert context_text(env, obs) == rendered(env, env.messages)
    assert info["prompt_tokens"] == int(obs["attention_mask"].sum())
    goal = goal_of(env)
    wrong = next(item for item in goal["items"] if item != goal["item"])
    for text in ("Does it have fur?", "Can it swim?", f"Is it a {wrong}?"):
        before = obs["input_ids"][obs["attention_mask"].astype(bool)]
        agent = env.tokenizer.encode(text) + [env.end_of_turn_token_id]
        obs, reward, terminated, truncated, info = say(env, text)
        assert not terminated and not truncated
        assert context_text(env, obs) == rendered(env, env.messages)
        # The agent's tokens stay verbatim; the env appended exactly inserted_tokens after them.
        now = obs["input_ids"][obs["attention_mask"].astype(bool)]
        assert now.tolist() == before.tolist() + agent + now[-info["inserted_tokens"] :].tolist()
        assert len(now) == len(before) + len(agent) + info["inserted_tokens"]
        assert env.messages[-1] == {"role": "user", "content": info["user_message"]}
        assert info["dropped_turns"] == 0 and info["turn_finish_reason"] == "eot"
    assert env.messages[-1]["content"] == f"No, it is not the {wrong}."
    assert info["turn"] == 3 and reward == pytest.approx(-0.1)
    assert info["turn_reward_components"] == {"turn_cost": pytest.approx(-0.1)}


def test_naming_the_item_ends_with_success_minus_turn_cost():
    env = make_env()
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = say(env, f"Is it the {goal_of(env)['item']}?")
    assert terminated and not truncated
    assert info["finish_reason"] == "user_ended" and info["num_turns"] == 1
    assert info["reward_components"] == {"success": 1.0, "user_failure": 0.0}
    assert reward == pytest.approx(1.0 - 0.1)
    assert info["messages"][-1]["role"] == "assistant" and info["inserted_tokens"] == 0
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)


def test_max_turns_ends_the_dialogue_without_asking_the_user():
    calls = []

    def user(conversations, goals, **meta):
        calls.append(len(conversations))
        return ["Go on."] * len(conversations)

    env = make_env(user=user, max_turns=2)
    env.reset(seed=0)
    assert not say(env, "Hello")[2]
    obs, reward, terminated, truncated, info = say(env, "Hello again")
    assert terminated and info["finish_reason"] == "max_turns" and calls == [1]
    assert info["reward_components"]["success"] == 0.0 and reward == pytest.approx(-0.1)


def test_turn_and_total_token_caps():
    env = make_env(max_turn_tokens=3, max_total_tokens=7, user=lambda c, g, **m: ["ok"] * len(c))
    env.reset(seed=0)
    token = env.tokenizer.encode(" a")[0]
    results = [env.step(token) for _ in range(3)]
    assert [r[2] for r in results] == [False] * 3 and results[-1][4][
        "turn_finish_reason"
    ] == "length"
    # A turn cut at the cap gets the end-of-turn text from the env; the state stays rendered.
    assert context_text(env, results[-1][0]) == rendered(env, env.messages)
    results = [env.step(token) for _ in range(4)]
    assert [r[2] for r in results] == [False, False, False, True]
    assert results[-1][4]["finish_reason"] == "max_total_tokens"
    assert results[-1][4]["num_tokens"] == 7


def test_per_turn_reward_components_and_one_final_call():
    def politeness(prompts, completions, references, **meta):
        assert all(m[-1]["role"] == "assistant" for m in meta["messages"])
        return np.array(["please" in c for c in completions], dtype=np.float32)

    env = make_env(turn_reward=politeness, turn_cost=0.25)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = say(env, "Can it fly, please?")
    assert info["turn_reward_components"] == {"politeness": 1.0, "turn_cost": -0.25}
    assert reward == pytest.approx(0.75)


def test_same_seed_same_dialogues():
    def run() -> list:
        env = make_env(max_turn_tokens=4, max_turns=3)
        env.reset(seed=7)
        env.action_space.seed(7)
        while True:
            *_, terminated, _, info = env.step(env.action_space.sample())
            if terminated:
                return info["messages"]

    assert run() == run()


def test_gymnasium_and_sb3_env_checkers_pass():
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = make_env(max_turn_tokens=4, max_turns=2)
    gym_check(env, skip_render_check=True)
    sb3_check(env, warn=True)


def test_render_shows_context_and_turn():
    env = make_env(render_mode="ansi")
    env.reset(seed=0)
    say(env, "Can it", end=False)
    text = env.render()
    assert text.endswith("<|im_start|>assistant\n[Can it]")


# -- the context budget ----------------------------------------------------------------------
def test_left_truncation_drops_whole_oldest_turns():
    long = "Tell me more about it, please, in many words. " * 3
    env = make_env(max_context_tokens=130, user=lambda c, g, **m: [long] * len(c))
    obs, _ = env.reset(seed=0)
    dropped = []
    for _ in range(4):
        obs, reward, terminated, truncated, info = say(env, "What else can you say?")
        dropped.append(info["dropped_turns"])
        assert int(obs["attention_mask"][:130].sum()) <= 130
    assert dropped[0] == 0 and sum(dropped) >= 2
    # The context is the template of the system prompt and the turns kept, from a user turn on.
    messages = env.messages
    kept = [m for m in messages if m["role"] == "system"] + messages[
        -(2 * (4 - sum(dropped)) + 1) :
    ]
    assert kept[len(kept) - 2 * (4 - sum(dropped)) - 1]["role"] == "user"
    assert context_text(env, obs) == rendered(env, kept)


def test_context_budget_smaller_than_one_turn_is_a_clear_error():
    with pytest.raises(ValueError, match="max_context_tokens=5 is smaller than one turn"):
        make_env(max_context_tokens=5)
    env = make_env(max_context_tokens=40)  # the opening alone needs more
    with pytest.raises(
        ValueError, match=r"max_context_tokens=40 is smaller than one turn.*opening"
    ):
        env.reset(seed=0)
    huge = "word " * 200
    env = make_env(max_context_tokens=160, user=lambda c, g, **m: [huge] * len(c))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="last user message"):
        say(env, "Hi")


# -- user simulators and their failures ------------------------------------------------------
def broken(conversations, goals, **meta):
    raise ConnectionError("the user went away")


@pytest.mark.parametrize(
    ("user", "why"),
    [
        (broken, "raised ConnectionError: the user went away"),
        (lambda c, g, **m: ["a", "b"], "returned 2 replies for 1 conversations"),
        (lambda c, g, **m: ["  "], "answered '  ', not a message or None"),
        (lambda c, g, **m: [3], "answered 3, not a message or None"),
    ],
)
def test_failing_user_ends_the_episode_with_a_flag(user, why):
    env = make_env(user=user)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = say(env, "Can it fly?")
    assert terminated and not truncated and info["finish_reason"] == "user_failure"
    assert info["reward_components"]["user_failure"] == 1.0
    assert why in info["user_error"] and reward == pytest.approx(-0.1)


def test_failing_user_raises_under_the_raise_policy():
    env = make_env(user=broken, on_user_failure="raise")
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="user simulator 'broken' failed.*ConnectionError"):
        say(env, "Can it fly?")


def test_stuck_user_times_out_instead_of_hanging():
    def stuck(conversations, goals, **meta):
        time.sleep(3)
        return ["late"] * len(conversations)

    env = make_env(user=stuck, user_timeout=0.2)
    env.reset(seed=0)
    start = time.perf_counter()
    *_, terminated, _, info = say(env, "Hi")
    assert time.perf_counter() - start < 2.0
    assert terminated and "no answer within user_timeout=0.2 s" in info["user_error"]


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="unknown user simulator 'robot'"):
        make_env(user="robot")
    with pytest.raises(ValueError, match="user='replay' needs the logged user turns"):
        make_env(user="replay")
    with pytest.raises(ValueError, match="on_user_failure must be one of"):
        make_env(on_user_failure="ignore")
    with pytest.raises(ValueError, match="max_turns must be a positive int, got 0"):
        make_env(max_turns=0)
    with pytest.raises(ValueError, match="user_timeout must be a positive number"):
        make_env(user_timeout=-1)
    with pytest.raises(ValueError, match="'keywords' is a single-turn task"):
        make_env(task="keywords")
    with pytest.raises(ValueError, match="has no scripted user"):
        make_user(
            "scripted", ConversationTask("t", {"train": [Sample("hi", (), {"goal": 1})]}, "rouge_l")
        )
    with pytest.raises(ValueError, match="sample 0 of split 'train' has no 'goal'"):
        ConversationTask("t", {"train": [Sample("hi")]}, "rouge_l")
    with pytest.raises(ValueError, match="does not end an assistant turn"):
        make_env(end_of_turn_token_id=0)
    env = make_env()
    with pytest.raises(ValueError, match="reset options take only 'index'"):
        env.reset(options={"prompt": "hi"})


def replay_task() -> ConversationTask:
    sample = Sample(
        "I would like a coffee.",
        ("done",),
        {"goal": "a latte", "user_turns": ["A latte.", "Large."]},
    )
    return ConversationTask("replayed", {"train": [sample]}, "rouge_l", default_user="replay")


def test_replay_user_answers_the_logged_turns_then_ends():
    env = make_env(task=replay_task())
    env.reset(seed=0)
    assert say(env, "Which one?")[4]["user_message"] == "A latte."
    assert say(env, "Which size?")[4]["user_message"] == "Large."
    *_, terminated, _, info = say(env, "Here you go.")
    assert terminated and info["finish_reason"] == "user_ended" and info["num_turns"] == 3
    assert set(info["reward_components"]) == {"rouge_l", "user_failure"}
    with pytest.raises(ValueError, match="needs meta\\['user_turns'\\]"):
        ReplayUser()([[{"role": "user", "content": "x"}]], [None], user_turns=[None])


def test_lm_user_answers_a_batch_with_one_generate_call(tokenizer):
    from textgym.models import tiny_model

    user = LMUser(tiny_model(tokenizer), tokenizer, max_new_tokens=4)
    conversations = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "What do you want?"}],
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Yes?"}],
    ]
    replies = user(conversations, ["a tea", "a coffee"])
    assert len(replies) == 2 and all(r is None or isinstance(r, str) for r in replies)
    assert user(conversations, ["a tea", "a coffee"]) == replies  # greedy: deterministic
    env = make_env(user=user)
    env.reset(seed=0)
    *_, info = say(env, "Hello")
    assert info["turn"] == 1 and ("user_message" in info or "user_error" in info)


def test_remote_user_uses_the_judge_client():
    def respond(body: dict) -> str:  # one question, then the end marker
        return "Is it big? <END> (ignored)" if len(body["messages"]) == 3 else "<END>"

    with OpenAIServer(respond) as server:
        user = RemoteUser(server.url, api_key_env=None, max_retries=0)
        env = make_env(user=user)
        env.reset(seed=0)
        assert say(env, "Hi")[4]["user_message"] == "Is it big?"
        *_, terminated, _, info = say(env, "It is big.")
        body = server.requests[0]
    assert terminated and info["finish_reason"] == "user_ended"
    # The user's LM sees the dialogue with roles swapped and its goal as the system prompt.
    assert body["messages"][0]["role"] == "system" and "Your goal" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "Hi"}


def test_human_user_reads_the_console():
    answers = iter(["Is it a bird?", ""])
    shown: list[str] = []
    env = make_env(user=HumanUser(lambda prompt: next(answers), shown.append))
    env.reset(seed=0)
    assert say(env, "Ask me.")[4]["user_message"] == "Is it a bird?"
    assert say(env, "Maybe.")[4]["finish_reason"] == "user_ended"
    assert any("your goal" in line for line in shown)


def test_parse_reply():
    assert [parse_reply(t) for t in ("  Hi ", "<END>", "Bye <END> x", None)] == [
        "Hi",
        None,
        "Bye",
        "",
    ]


def test_hidden_item_task_splits_and_single_turn_use():
    task = hidden_item_task(num_choices=3)
    assert [len(task.split(s)) for s in ("train", "validation", "test")] == [48, 8, 8]
    assert all(s.meta["goal"]["item"] in s.meta["goal"]["items"] for s in task.split("train"))
    with pytest.raises(ValueError, match="num_choices must be an int in"):
        hidden_item_task(num_choices=1)
    # As a single-turn TextGen-v0 task the completion is the guess.
    env = gym.make("TextGen-v0", task="hidden_item", max_prompt_tokens=96)
    env.reset(seed=0)
    item = env.unwrapped._sample.meta["goal"]["item"]
    for token in env.unwrapped.tokenizer.encode(f"The {item}"):
        env.step(token)
    *_, info = env.step(env.unwrapped.eos_token_id)
    assert info["reward_components"]["success"] == 1.0
