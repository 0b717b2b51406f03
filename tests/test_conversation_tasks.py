"""Conversation tasks on real data: Taskmaster-4 coffee orders (skipped without the data)."""

from __future__ import annotations

import json

import pytest

from textgym.conversation.env import ConversationEnv
from textgym.conversation.taskmaster import describe, taskmaster4_order


@pytest.fixture(scope="module")
def task(shared_data):
    return taskmaster4_order(shared_data, max_samples=40)


def order_line(item: dict) -> str:
    request = {
        "menu_item_id": item["drink"].replace(" ", "-"),
        "quantity": item["quantity"],
        "attributes": [{"attribute_id": k, "option": v} for k, v in item["attributes"].items()],
        "addons": [{"addon_id": a.replace(" ", "-"), "option": "ADD"} for a in item["addons"]],
    }
    return f"[API call add_order_item: {json.dumps(request)}]"


def play(env: ConversationEnv, turns: list[str]):
    for text in turns:
        for token in env.tokenizer.encode(text) + [env.end_of_turn_token_id]:
            result = env.step(token)
            if result[2]:
                return result
    return result


def test_goals_come_from_the_logged_order_calls(task):
    assert len(task.split("train")) == 40 and task.default_user == "replay"
    for sample in task.split("train"):
        order = sample.meta["order"]
        assert order and sample.meta["goal"] == describe(order)
        assert sample.prompt[-1]["role"] == "user" and sample.prompt[0]["role"] == "system"


def test_placing_the_logged_order_with_replay_user_scores_one(task):
    env = ConversationEnv(task=task, max_context_tokens=480, max_turn_tokens=128, max_turns=6)
    index = next(i for i, s in enumerate(task.split("train")) if s.meta["menu"])
    env.reset(options={"index": index})
    meta = env.sample.meta
    query = next(iter(meta["menu"]))
    # A menu look-up is answered from the log, not by the user, and does not use up a replay turn.
    *_, info = play(env, [f'[API call get_menu_items: {{"query": "{query}"}}]'])
    assert info["user_message"] == f"[API result get_menu_items: {meta['menu'][query]}]"
    lines = " ".join(order_line(item) for item in meta["order"])
    obs, reward, terminated, truncated, info = play(env, [lines] + ["Thanks."] * 6)
    assert terminated and info["reward_components"]["order_success"] == pytest.approx(1.0)
    users = [m["content"] for m in info["messages"] if m["role"] == "user"][1:]
    assert [u for u in users if not u.startswith("[API result")] == meta["user_turns"][
        : len(users) - 1
    ]


def test_a_partial_order_gets_partial_credit(task):
    env = ConversationEnv(task=task, max_context_tokens=480, max_turn_tokens=128, max_turns=1)
    index = next(
        i
        for i, s in enumerate(task.split("train"))
        if len(s.meta["order"]) == 1 and s.meta["order"][0]["attributes"]
    )
    env.reset(options={"index": index})
    item = dict(env.sample.meta["order"][0], attributes={})
    *_, info = play(env, [order_line(item)])
    credit = info["reward_components"]["order_success"]
    assert 0.0 < credit < 1.0 and info["finish_reason"] == "max_turns"


def test_open_chat_scores_each_turn_against_the_logged_reply(shared_data):
    from textgym.conversation.open_chat import open_chat

    task = open_chat(shared_data, max_samples=20)
    env = ConversationEnv(task=task, split="validation", max_context_tokens=480, max_turns=20)
    env.reset(options={"index": 0})
    meta = env.sample.meta
    *_, info = play(env, [meta["replies"][0]])
    assert info["turn_reward_components"]["logged_reply_chrf"] == pytest.approx(1.0)
    assert info["user_message"] == meta["user_turns"][0]
    *_, info = play(env, ["Something else entirely."])
    assert 0.0 <= info["turn_reward_components"]["logged_reply_chrf"] < 0.5
    obs, reward, terminated, truncated, info = play(env, ["Yes."] * 30)
    assert terminated and info["finish_reason"] == "user_ended"
    assert info["num_turns"] == len(meta["user_turns"]) + 1
    assert info["reward_components"] == {"none": 0.0, "user_failure": 0.0}
