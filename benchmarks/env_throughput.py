"""Token-steps per second of TextGenEnv and TextGenVectorEnv with random actions.

Cold by default, as in training: the task has far more prompts than the run draws and the
envs keep no per-sample token cache, so every episode's prompt is rendered and tokenized when
it starts (only the tokenizer's segment cache of template stretches and words carries over, as
it does in training); ``--warm`` measures the old case instead: each sample encoded once, later
resets only copy. Measured side by side, on the same task, tokenizer and actions:

- the single env (raw, and through ``gym.make`` with its checker/order wrappers);
- the native vector env at B=64 against Gymnasium's SyncVectorEnv over 64 single envs;

each with the reward excluded (a constant reward; decoding is still done) and included (the
task's default reward, or ``--reward``). Goals (vector env, B=64, cold), each for a named
reward: 1,000,000 token-steps/s with a constant reward; 300,000 with the metric reward
``keyword_coverage_soft`` on the keywords task (``--reward keyword_coverage_soft``: the task's
default reward runs a language model); 100,000 with ``rouge_l`` on DialogSum
(``--task dialogsum --reward rouge_l``).

    python benchmarks/env_throughput.py [--seconds 3] [--num-envs 64] [--task keywords]
        [--reward NAME] [--warm]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import gymnasium as gym
import numpy as np

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.env import TextGenEnv
from textgym.tasks import Task, make_task
from textgym.vector import TextGenVectorEnv

COLD_KEYWORD_PROMPTS = 100_000
REWARD_GOALS = {"keywords": ("keyword_coverage_soft", 300_000), "dialogsum": ("rouge_l", 100_000)}
"""Task -> (the reward its goal names, token-steps/s of the vector env with it)."""


class _NoCache(dict):
    """A sample-token cache that keeps nothing: every reset encodes its prompt afresh."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def zero_reward(prompts, completions, references, **meta) -> np.ndarray:
    return np.zeros(len(completions), dtype=np.float32)


def make_cold(env: Any, warm: bool) -> Any:
    if not warm:
        for sub in getattr(env, "envs", [env]):
            sub.unwrapped.encoder._cache = _NoCache()
    return env


def single_rate(env: gym.Env, seconds: float, rng: np.random.Generator) -> float:
    actions = rng.integers(200, 30000, size=2000).tolist()
    env.reset(seed=0)
    for warm_up in (True, False):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for a in actions:
                if env.step(a)[2]:
                    env.reset()
            steps += len(actions)
        if not warm_up:
            return steps / (time.perf_counter() - start)
    raise AssertionError("unreachable")


def vector_rate(envs: gym.vector.VectorEnv, seconds: float, rng: np.random.Generator) -> float:
    batch = envs.num_envs
    actions = rng.integers(200, 30000, size=(500, batch))
    envs.reset(seed=0)
    for warm_up in (True, False):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for a in actions:
                envs.step(a)
            steps += len(actions) * batch
        if not warm_up:
            return steps / (time.perf_counter() - start)
    raise AssertionError("unreachable")


def benchmark_task(name: str) -> Task:
    """The task, with enough distinct keyword prompts that a cold run rarely repeats one."""
    if name == "keywords":
        return make_task("keywords", num_train=COLD_KEYWORD_PROMPTS)
    return make_task(name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--task", default="keywords")
    parser.add_argument("--reward", default=None, help="reward of the 'included' row")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--warm", action="store_true", help="cache each sample's tokens")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    task = benchmark_task(args.task)
    common = dict(task=task, max_new_tokens=args.max_new_tokens)
    rows = []
    for label, reward in (("reward excluded", zero_reward), ("reward included", args.reward)):
        raw = single_rate(
            make_cold(TextGenEnv(reward=reward, **common), args.warm), args.seconds, rng
        )
        made = single_rate(
            make_cold(gym.make("TextGen-v0", reward=reward, **common), args.warm), args.seconds, rng
        )
        native = vector_rate(
            make_cold(TextGenVectorEnv(num_envs=args.num_envs, reward=reward, **common), args.warm),
            args.seconds,
            rng,
        )
        sync = vector_rate(
            make_cold(
                gym.vector.SyncVectorEnv(
                    [lambda r=reward: TextGenEnv(reward=r, **common)] * args.num_envs
                ),
                args.warm,
            ),
            args.seconds,
            rng,
        )
        rows.append((label, raw, made, native, sync))
    included = args.reward or f"task default ({task.default_reward})"
    print(
        f"task={args.task} reward included={included} max_new_tokens={args.max_new_tokens} "
        f"B={args.num_envs} {'WARM (sample tokens cached)' if args.warm else 'cold'} "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'':16} {'single raw':>12} {'gym.make':>12} {'vector B':>12} {'SyncVector':>12} {'ratio':>7} {'us/token-step':>14}"
    )
    for label, raw, made, native, sync in rows:
        print(
            f"{label:16} {raw:12,.0f} {made:12,.0f} {native:12,.0f} {sync:12,.0f} "
            f"{native / sync:6.1f}x {1e6 / native:14.3f}"
        )
    excluded, with_reward = rows
    print(f"goal single >= 20,000 steps/s: {'met' if excluded[1] >= 20_000 else 'NOT met'}")
    print(
        f"goal vector >= 1,000,000 token-steps/s, constant reward: "
        f"{'met' if excluded[3] >= 1e6 else 'NOT met'}"
    )
    if args.task in REWARD_GOALS:
        name, goal = REWARD_GOALS[args.task]
        verdict = "met" if with_reward[3] >= goal else "NOT met"
        if args.reward != name:
            verdict = f"not measured (run with --reward {name})"
        print(f"goal vector >= {goal:,} token-steps/s with reward {name}: {verdict}")


if __name__ == "__main__":
    main()
