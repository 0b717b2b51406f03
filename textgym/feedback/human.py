"""``HumanReward``: people score finished episodes, through the web page or the console.

Each call stores the batch's (prompt, completion) pairs, with their task metadata (the JSON-able
values, e.g. keywords), in the feedback store, queues one
"rate" task per completion (``raters_per_item`` raters each) and waits for the ratings:

- ``mode="web"``: raters label on the page of ``textgym feedback serve --db FILE`` (the same
  file; any number of raters, any machine that can reach it), or on a server this reward
  starts itself (``serve=True``); the reward polls the store until every task is done or
  ``timeout`` seconds pass;
- ``mode="console"``: the reward asks on the terminal (``input_fn``), one completion at a time.

The reward of a rated completion is the mean of its ratings mapped to [-1, 1]
(``(mean - 3) / 2``). The policy for completions still unrated at the timeout (``on_timeout``):

- ``"default"``: the reward is ``default`` (0.0: neither good nor bad);
- ``"fallback"``: the reward is that of ``fallback``, any reward spec, typically the current
  learned reward model (``{"reward_model": ...}`` or a :class:`LearnedReward`);
- ``"raise"``: ``TimeoutError`` naming the unlabeled tasks.

Either way the tasks stay in the queue, so late labels still reach the store and the next
reward model. The component ``human_labeled`` (1 rated, 0 not) reports which rewards are real.

>>> import tempfile, os
>>> answers = iter(["5", "1"])
>>> reward = HumanReward(os.path.join(tempfile.mkdtemp(), "fb.sqlite"), mode="console",
...                      input_fn=lambda prompt: next(answers), output_fn=lambda *a: None)
>>> reward(["Greet me."] * 2, ["Hello, friend!", "Go away."], None).tolist()
[1.0, -1.0]
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from textgym.feedback.store import FeedbackStore
from textgym.rewards.base import (
    ComponentReward,
    RewardSpec,
    make_reward,
    register_reward,
    validate_rewards,
)

ON_TIMEOUT = ("default", "fallback", "raise")
MODES = ("web", "console")


def rating_to_reward(mean_score: float) -> float:
    """A 1-to-5 rating as a reward in [-1, 1].

    >>> [rating_to_reward(s) for s in (1, 3, 4.5, 5)]
    [-1.0, 0.0, 0.75, 1.0]
    """
    return (float(mean_score) - 3.0) / 2.0


def console_label(
    store: FeedbackStore,
    task_id: int,
    *,
    rater: str,
    input_fn: Callable[[str], str] = input,
    output_fn: Callable[..., None] = print,
) -> bool:
    """Ask for one rating of a "rate" task on the console; return False when skipped.

    An empty answer skips the item; anything but 1-5 is asked again.
    """
    task = store.task(task_id)
    if task.kind != "rate":
        raise ValueError(f"console labeling handles 'rate' tasks; task {task_id} is {task.kind!r}")
    sample = store.sample(task.sample_ids[0])
    output_fn(f"\n--- prompt ---\n{sample.prompt}\n--- completion ---\n{sample.completion}\n")
    while True:
        answer = input_fn("rating 1-5 (Enter skips): ").strip()
        if not answer:
            return False
        if answer in {"1", "2", "3", "4", "5"}:
            store.add_rating(sample.id, int(answer), rater=rater, task_id=task.id)
            return True
        output_fn(f"{answer!r} is not a rating: type 1, 2, 3, 4 or 5")


class HumanReward(ComponentReward):
    """A TextGen-v0 reward from people's 1-to-5 ratings (see the module docstring).

    Args:
        db: the feedback store (path or open :class:`FeedbackStore`).
        mode: "web" (wait for ratings from the labeling page) or "console" (ask here).
        timeout: seconds to wait for a batch's ratings in "web" mode.
        on_timeout: "default", "fallback" or "raise" for completions still unrated.
        default: the reward of an unrated completion under ``on_timeout="default"``.
        fallback: reward spec used for unrated completions under ``on_timeout="fallback"``.
        raters_per_item: ratings wanted per completion (their mean is the reward).
        poll_interval: seconds between store checks in "web" mode.
        serve: in "web" mode, start a labeling server on ``host``:``port`` in this process.
        host, port, token: the server's address and access token (see
            :func:`~textgym.feedback.server.make_server`).
        rater: the console rater's name.
        task, model: tags stored with each sample.
        input_fn, output_fn: console input and output (tests pass their own).
    """

    name = "human"

    def __init__(
        self,
        db: str | os.PathLike[str] | FeedbackStore,
        *,
        mode: str = "web",
        timeout: float = 600.0,
        on_timeout: str = "default",
        default: float = 0.0,
        fallback: RewardSpec | None = None,
        raters_per_item: int = 1,
        poll_interval: float = 0.5,
        serve: bool = False,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        rater: str = "console",
        task: str = "",
        model: str = "",
        input_fn: Callable[[str], str] = input,
        output_fn: Callable[..., None] = print,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"HumanReward mode must be one of {list(MODES)}, got {mode!r}")
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(
                f"HumanReward on_timeout must be one of {list(ON_TIMEOUT)}, got {on_timeout!r}"
            )
        if on_timeout == "fallback" and fallback is None:
            raise ValueError(
                "HumanReward on_timeout='fallback' needs fallback= a reward (e.g. "
                "{'reward_model': 1.0} after make_reward('reward_model', path=...))"
            )
        if not timeout > 0 or not poll_interval > 0:
            raise ValueError(
                f"HumanReward timeout and poll_interval must be > 0, got {timeout}, {poll_interval}"
            )
        if (
            isinstance(raters_per_item, bool)
            or not isinstance(raters_per_item, int)
            or (raters_per_item < 1)
        ):
            raise ValueError(
                f"HumanReward raters_per_item must be an int >= 1, got {raters_per_item!r}"
            )
        if serve and mode != "web":
            raise ValueError("HumanReward serve=True only applies to mode='web'")
        self.store = db if isinstance(db, FeedbackStore) else FeedbackStore(db)
        self.mode = mode
        self.timeout = float(timeout)
        self.on_timeout = on_timeout
        self.default = float(default)
        self.fallback = make_reward(fallback) if fallback is not None else None
        self.raters_per_item = raters_per_item
        self.poll_interval = float(poll_interval)
        self.rater = rater
        self.task = task
        self.model = model
        self.input_fn = input_fn
        self.output_fn = output_fn
        self.server = None
        if serve:
            from textgym.feedback.server import LabelingApp, LabelingServer

            self.server = LabelingServer(LabelingApp(self.store), host, port, token).start()
            output_fn(f"label the episodes at {self.server.url}")

    def _collect(self, task_ids: list[int]) -> None:
        if self.mode == "console":
            for tid in task_ids:
                console_label(
                    self.store,
                    tid,
                    rater=self.rater,
                    input_fn=self.input_fn,
                    output_fn=self.output_fn,
                )
            return
        deadline = time.monotonic() + self.timeout
        while not all(self.store.task_done(t) for t in task_ids):
            if time.monotonic() >= deadline:
                return
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def components(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> dict[str, np.ndarray]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
        sample_ids = [
            self.store.add_sample(
                p, c, task=self.task, model=self.model, meta=_sample_meta(meta, i)
            )
            for i, (p, c) in enumerate(zip(prompts, completions, strict=True))
        ]
        task_ids = [
            self.store.add_task("rate", sample_ids=[s], needed=self.raters_per_item)
            for s in sample_ids
        ]
        self._collect(task_ids)
        scores = self.store.task_scores(task_ids)
        values = np.full(len(completions), self.default, dtype=np.float32)
        labeled = np.zeros(len(completions), dtype=np.float32)
        for i, tid in enumerate(task_ids):
            if scores[tid]:
                values[i] = rating_to_reward(float(np.mean(scores[tid])))
                labeled[i] = 1.0
        missing = np.flatnonzero(labeled == 0)
        if len(missing) and self.on_timeout == "raise":
            raise TimeoutError(
                f"reward 'human': {len(missing)} of {len(completions)} completions unrated after "
                f"{self.timeout:g} s (labeling tasks {[task_ids[i] for i in missing]})"
            )
        if len(missing) and self.on_timeout == "fallback":
            sub = _subset(prompts, completions, references, meta, missing)
            values[missing] = validate_rewards(
                self.fallback(*sub[:3], **sub[3]), len(missing), "human fallback"
            )
        return {"human": values, "human_labeled": labeled}

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return parts["human"]

    def close(self) -> None:
        """Stop the labeling server this reward started, if any."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __repr__(self) -> str:
        return (
            f"HumanReward({str(self.store.path)!r}, mode={self.mode!r}, "
            f"timeout={self.timeout:g}, on_timeout={self.on_timeout!r})"
        )


def _sample_meta(meta: dict[str, Any], i: int) -> dict[str, Any]:
    """Sample ``i``'s task metadata (e.g. its keywords) for the store: JSON-able values only.

    >>> _sample_meta({"keywords": [["a", "b"], ["c"]], "array": [object(), object()]}, 1)
    {'keywords': ['c']}
    """
    out = {}
    for key, values in meta.items():
        value = values[i]
        value = value.tolist() if hasattr(value, "tolist") else value
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


def _subset(
    prompts: list[str],
    completions: list[str],
    references: list[list[str]] | None,
    meta: dict[str, Any],
    idx: Sequence[int],
) -> tuple[list[str], list[str], list[list[str]] | None, dict[str, Any]]:
    """The batch restricted to positions ``idx`` (meta values are per-sample lists)."""
    return (
        [prompts[i] for i in idx],
        [completions[i] for i in idx],
        None if references is None else [references[i] for i in idx],
        {k: [v[i] for i in idx] for k, v in meta.items()},
    )


register_reward("human", HumanReward)
