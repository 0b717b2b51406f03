"""The task abstraction: where prompts, references and the default reward come from."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ChatMessages = list[dict[str, str]]
"""A chat prompt: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``."""

Prompt = str | ChatMessages

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Sample:
    """One prompt of a task.

    Attributes:
        prompt: plain text, or chat messages that end with the user turn to answer.
        references: zero or more reference completions (summaries, gold turns, ...).
        meta: per-sample data a reward may use, e.g. ``{"keywords": ["dog", "park"]}``.
            Rewards receive it batched: ``meta["keywords"] -> [[...], [...], ...]``.
    """

    prompt: Prompt
    references: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str):
            if not self.prompt.strip():
                raise ValueError(
                    "Sample.prompt is empty; a prompt needs at least one visible character"
                )
        elif isinstance(self.prompt, list):
            if not self.prompt or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in self.prompt
            ):
                raise ValueError(
                    "Sample.prompt as chat messages must be a non-empty list of "
                    '{"role": ..., "content": ...} dicts'
                )
        else:
            raise TypeError(
                f"Sample.prompt must be str or list of chat messages, got {type(self.prompt).__name__}"
            )
        if isinstance(self.references, str):
            object.__setattr__(self, "references", (self.references,))
        else:
            object.__setattr__(self, "references", tuple(self.references))


def prompt_text(prompt: Prompt) -> str:
    """The prompt as one plain string (chat messages joined as ``role: content`` lines)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


class Task:
    """A named collection of samples in train/validation/test splits with a default reward.

    Subclasses or callers provide ``splits`` (split name -> sequence of :class:`Sample`).
    ``default_reward`` is anything :func:`textgym.rewards.make_reward` accepts.

    >>> t = Task("demo", {"train": [Sample("Say hi.", ("hi",))]}, default_reward="rouge_l")
    >>> len(t), t.sample(np.random.default_rng(0)).prompt
    (1, 'Say hi.')
    """

    def __init__(
        self,
        name: str,
        splits: Mapping[str, Sequence[Sample]],
        default_reward: Any = "rouge_l",
        description: str = "",
    ) -> None:
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(
                f"task {name!r}: unknown split(s) {sorted(unknown)}; allowed: {list(SPLITS)}"
            )
        if not any(len(s) for s in splits.values()):
            raise ValueError(f"task {name!r} has no samples in any split")
        self.name = name
        self.splits: dict[str, Sequence[Sample]] = dict(splits)
        self.default_reward = default_reward
        self.description = description

    def split(self, split: str = "train") -> Sequence[Sample]:
        """The samples of one split, in their fixed evaluation order."""
        if split not in self.splits or not len(self.splits[split]):
            available = [k for k, v in self.splits.items() if len(v)]
            raise KeyError(f"task {self.name!r} has no split {split!r}; available: {available}")
        return self.splits[split]

    def sample(self, rng: np.random.Generator, split: str = "train") -> Sample:
        """A uniformly random sample of ``split`` drawn from ``rng`` (the env's ``np_random``)."""
        samples = self.split(split)
        return samples[int(rng.integers(len(samples)))]

    def __len__(self) -> int:
        return len(self.splits.get("train", ()))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"Task({self.name!r}, {sizes})"


TaskBuilder = Callable[..., Task]
_TASKS: dict[str, TaskBuilder] = {}


def register_task(name: str, builder: TaskBuilder) -> None:
    """Register ``builder(**kwargs) -> Task`` under ``name`` (lower case)."""
    _TASKS[name.lower()] = builder


def list_tasks() -> list[str]:
    """Names accepted by :func:`make_task`."""
    return sorted(_TASKS)


def make_task(task: str | Task, **kwargs: Any) -> Task:
    """Build a task by registered name, or pass a :class:`Task` through unchanged."""
    if isinstance(task, Task):
        if kwargs:
            raise TypeError(
                f"task options {sorted(kwargs)} given with a Task instance; pass them when building it"
            )
        return task
    if not isinstance(task, str):
        raise TypeError(f"task must be a registered name or a Task, got {type(task).__name__}")
    key = task.lower()
    if key not in _TASKS:
        raise ValueError(f"unknown task {task!r}; registered tasks: {', '.join(list_tasks())}")
    return _TASKS[key](**kwargs)
