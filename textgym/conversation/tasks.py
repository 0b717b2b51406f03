"""Conversation tasks: each sample is an opening plus the user's goal; the task says how the
dialogue is judged (a final reward, optional per-turn rewards and a cost per turn) and which
user answers by default.

The embedded ``hidden_item`` task needs no data and no second LM: the user thinks of one of four
animals and a scripted user answers yes/no questions about it; the agent must name it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textgym.conversation.open_chat import open_chat
from textgym.conversation.simulators import ScriptFn, ToolFn
from textgym.conversation.taskmaster import taskmaster4_order
from textgym.tasks.base import ChatMessages, Sample, Task, register_task


class ConversationTask(Task):
    """A :class:`~textgym.tasks.base.Task` whose samples are dialogues to hold.

    Every sample's ``prompt`` is the opening (a user message, or chat messages ending with a
    user turn) and its ``meta["goal"]`` the user's goal or persona, which the simulator gets.

    Args:
        name, splits, description: as for :class:`Task`.
        default_reward: the final reward, called once for all dialogues that end in a step
            as ``reward(prompts, completions, references, **meta)`` with the opening's text as
            the prompt, the dialogue after it as ``role: content`` lines as the completion, and
            ``meta`` holding the samples' metadata plus ``messages`` (each whole dialogue).
        default_user: the simulator kind used when the env is given none.
        script: the scripted user (``fn(messages, goal) -> str | None``), or None.
        turn_reward: the default per-turn reward (same protocol; the prompt is the dialogue
            before the agent's turn, the completion the turn), or None.
        turn_cost: subtracted at every agent turn (a reward of ``-turn_cost``).
        tool: answers API calls in an agent turn from the sample (e.g. menu look-ups), in
            place of the user's reply (``fn(messages, meta) -> str | None``), or None.
    """

    def __init__(
        self,
        name: str,
        splits: Mapping[str, Sequence[Sample]],
        default_reward: Any,
        default_user: str = "scripted",
        script: ScriptFn | None = None,
        turn_reward: Any = None,
        turn_cost: float = 0.0,
        description: str = "",
        tool: ToolFn | None = None,
    ) -> None:
        super().__init__(name, splits, default_reward, description)
        for split, samples in self.splits.items():
            for i, sample in enumerate(samples):
                if "goal" not in sample.meta:
                    raise ValueError(
                        f"task {name!r}: sample {i} of split {split!r} has no 'goal' in its meta; "
                        "every conversation sample needs the user's goal (meta={'goal': ...})"
                    )
        self.default_user = default_user
        self.script = script
        self.turn_reward = turn_reward
        self.turn_cost = float(turn_cost)
        self.tool = tool


# -- the embedded hidden-item task -----------------------------------------------------------
ANIMALS: dict[str, frozenset[str]] = {
    "cat": frozenset({"fur", "pet", "small", "meow"}),
    "dog": frozenset({"fur", "pet", "bark"}),
    "cow": frozenset({"fur", "farm", "big", "milk", "moo"}),
    "duck": frozenset({"farm", "small", "fly", "swim", "feathers", "eggs"}),
    "horse": frozenset({"fur", "farm", "big", "ride"}),
    "fish": frozenset({"pet", "small", "swim", "water"}),
    "eagle": frozenset({"wild", "fly", "feathers", "eggs"}),
    "lion": frozenset({"fur", "wild", "big", "roar"}),
}
"""The animals and the properties a yes/no question can ask about (matched as words)."""

QUESTION_WORDS = {
    "fur": ("fur", "furry", "hair", "hairy"),
    "pet": ("pet", "pets", "house", "home"),
    "small": ("small", "little", "tiny"),
    "big": ("big", "large", "huge"),
    "farm": ("farm",),
    "wild": ("wild",),
    "fly": ("fly", "flies", "flying", "wings"),
    "swim": ("swim", "swims", "swimming"),
    "water": ("water", "sea", "river", "lake"),
    "feathers": ("feathers", "feather", "bird"),
    "eggs": ("egg", "eggs"),
    "milk": ("milk",),
    "ride": ("ride", "riding"),
    "bark": ("bark", "barks"),
    "meow": ("meow", "meows"),
    "moo": ("moo", "moos"),
    "roar": ("roar", "roars"),
}

_WORD = re.compile(r"[a-z]+")


def _named(text: str, items: Sequence[str]) -> list[str]:
    words = set(_WORD.findall(text.lower()))
    return [item for item in items if item in words or item + "s" in words]


def hidden_item_user(messages: ChatMessages, goal: Mapping[str, Any]) -> str | None:
    """The scripted user: ends the dialogue when the agent names the hidden animal alone,
    says no to a wrong guess, answers yes/no questions about the animal's properties.

    >>> goal = {"item": "duck", "items": ["cat", "dog", "cow", "duck"]}
    >>> [hidden_item_user([{"role": "assistant", "content": t}], goal)
    ...  for t in ("Can it fly?", "Is it a cat?", "Is it the duck?", "cat or dog?", "Hello")]
    ['Yes.', 'No, it is not the cat.', None, 'Guess one animal at a time.', 'Ask me a yes/no question about the animal, or guess it.']
    """
    text = messages[-1]["content"]
    named = _named(text, goal["items"])
    if len(named) > 1:
        return "Guess one animal at a time."
    if named:
        return None if named[0] == goal["item"] else f"No, it is not the {named[0]}."
    words = set(_WORD.findall(text.lower()))
    for prop, synonyms in QUESTION_WORDS.items():
        if words & set(synonyms):
            return "Yes." if prop in ANIMALS[goal["item"]] else "No."
    return "Ask me a yes/no question about the animal, or guess it."


def hidden_item_success(
    prompts: list[str], completions: list[str], references: Any, **meta: Any
) -> np.ndarray:
    """1 where the agent's last turn names the hidden animal and no other, else 0 (as a
    single-turn reward, e.g. under TextGen-v0, the completion is that turn)."""
    lasts = (
        [
            next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
            for messages in meta["messages"]
        ]
        if "messages" in meta
        else completions
    )
    out = [
        float(_named(last, goal["items"]) == [goal["item"]])
        for last, goal in zip(lasts, meta["goal"], strict=True)
    ]
    return np.asarray(out, dtype=np.float32)


hidden_item_success.name = "success"  # type: ignore[attr-defined]


def hidden_item_task(
    num_choices: int = 4, turn_cost: float = 0.1, seed: int = 0
) -> ConversationTask:
    """Every animal hidden among ``num_choices`` of :data:`ANIMALS`; 3/4 train, 1/8 each for
    validation and test (fixed shuffle by ``seed``). Reward: success minus ``turn_cost`` a turn.

    >>> task = hidden_item_task()
    >>> sample = task.split("train")[0]
    >>> sample.meta["goal"]["item"] in sample.meta["goal"]["items"], len(task.split("validation"))
    (True, 8)
    """
    if not isinstance(num_choices, int) or not 2 <= num_choices <= len(ANIMALS):
        raise ValueError(f"num_choices must be an int in [2, {len(ANIMALS)}], got {num_choices!r}")
    rng = np.random.default_rng(seed)
    names = sorted(ANIMALS)
    samples = []
    for start in range(0, 64):
        items = [str(x) for x in rng.choice(names, size=num_choices, replace=False)]
        item = items[start % num_choices]
        opening = (
            f"I am thinking of one of these animals: {', '.join(items)}. Find out which one: ask "
            "me yes/no questions about it, or guess it by its name. One question per turn."
        )
        samples.append(Sample(opening, (item,), {"goal": {"item": item, "items": items}}))
    return ConversationTask(
        "hidden_item",
        {"train": samples[:48], "validation": samples[48:56], "test": samples[56:]},
        default_reward=hidden_item_success,
        default_user="scripted",
        script=hidden_item_user,
        turn_cost=turn_cost,
        description="find the hidden animal by yes/no questions (scripted user, offline)",
    )


BUILDERS = {
    "hidden_item": hidden_item_task,
    "taskmaster4_order": taskmaster4_order,
    "open_chat": open_chat,
}
"""Conversation task name -> builder; registered with :func:`textgym.tasks.register_task`."""


def list_conversation_tasks() -> list[str]:
    """The registered tasks that TextGen-Conversation-v0 accepts by name."""
    return sorted(BUILDERS)


for _name, _builder in BUILDERS.items():
    register_task(_name, _builder)
