"""Token-steps per second of TextGenEnv and TextGenVectorEnv with random actions.

Runs side by side, on the same task, tokenizer and actions:
- the single env (raw, and through ``gym.make`` with its checker/order wrappers);
- the native vector env at B=64 against Gymnasium's SyncVectorEnv over 64 single envs;
each with the reward excluded (a constant reward, decoding still done) and included (the
task's default reward). Each measurement follows an untimed warm-up of the same length,
so prompts are measured as in training, already encoded (the envs cache each sample's
tokens on first use). Goals: single env >= 20,000 steps/s; vector env >= 1,000,000
token-steps/s at B=64 without reward (at most 1 microsecond per token-step).

    python benchmarks/env_throughput.py [--seconds 3] [--num-envs 64] [--task keywords]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.env import TextGenEnv
from textgym.vector import TextGenVectorEnv


def zero_reward(prompts, completions, references, **meta) -> np.ndarray:
    return np.zeros(len(completions), dtype=np.float32)


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--task", default="keywords")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    common = dict(task=args.task, max_new_tokens=args.max_new_tokens)
    rows = []
    for label, reward in (("reward excluded", zero_reward), ("reward included", None)):
        raw = single_rate(TextGenEnv(reward=reward, **common), args.seconds, rng)
        made = single_rate(gym.make("TextGen-v0", reward=reward, **common), args.seconds, rng)
        native = vector_rate(
            TextGenVectorEnv(num_envs=args.num_envs, reward=reward, **common), args.seconds, rng
        )
        sync = vector_rate(
            gym.vector.SyncVectorEnv(
                [lambda r=reward: TextGenEnv(reward=r, **common)] * args.num_envs
            ),
            args.seconds,
            rng,
        )
        rows.append((label, raw, made, native, sync))
    print(f"task={args.task} max_new_tokens={args.max_new_tokens} B={args.num_envs}")
    print(
        f"{'':16} {'single raw':>12} {'gym.make':>12} {'vector B':>12} {'SyncVector':>12} {'ratio':>7} {'us/token-step':>14}"
    )
    for label, raw, made, native, sync in rows:
        print(
            f"{label:16} {raw:12,.0f} {made:12,.0f} {native:12,.0f} {sync:12,.0f} "
            f"{native / sync:6.1f}x {1e6 / native:14.3f}"
        )
    excluded = rows[0]
    print(f"goal single >= 20,000 steps/s: {'met' if excluded[1] >= 20_000 else 'NOT met'}")
    print(
        f"goal vector >= 1,000,000 token-steps/s without reward: {'met' if excluded[3] >= 1e6 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
