"""Env steps per second: SB3 PPO with the LM policy against the custom KV-cache rollout.

Both sides drive the same LM weights over the same task, batch B and episode length N, and
record a value per step (no reference model):

- ``custom``: :func:`agents.policy.rollout` with a :class:`agents.policy.TransformerPolicy` on a
  lockstep :class:`textgym.vector.TextGenVectorEnv` (one prefill, then one batched one-token
  forward per step);
- ``sb3``: the rollout phase of ``PPO("LMPolicy")`` over a ``DummyVecEnv`` of B envs, with the
  per-env prefix KV cache (``sb3 no-cache``: the whole prefix every step, for reference);
- ``sb3 learn``: a PPO's whole ``learn()`` (rollouts + two epochs of two minibatches, each
  episode prefilled once per minibatch), what SB3's ``time/fps`` reports; ``sb3 learn
  per-step``: the same with one prefill per step (``share_prefixes=False``), for reference.

Rollout phases are timed after an untimed warm-up (prompts encoded, caches built); the methods
take turns ``--repeats`` times and the median rate is reported, so a busy machine hurts each
alike. The closing lines are the ratios custom / sb3 rollout and shared / per-step learn.

    python benchmarks/sb3_throughput.py [--model smollm2-135m|tiny] [--num-envs 16]
        [--max-new-tokens 16] [--repeats 3] [--threads 1] [--skip-slow]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from tqdm import tqdm

import agents.sb3  # noqa: F401  (registers "LMPolicy")
import textgym  # noqa: F401  (registers TextGen-v0)
from agents.policy import Sampling, TransformerPolicy, rollout
from textgym.models import load_model, shared_tokenizer, tiny_model
from textgym.vector import TextGenVectorEnv


class TimeSteps(BaseCallback):
    """Times ``measured`` env steps after ``warmup`` steps, then stops ``learn()`` (no update)."""

    def __init__(self, warmup: int, measured: int) -> None:
        super().__init__()
        self.warmup, self.measured = warmup, measured
        self.start = 0.0
        self.rate = float("nan")

    def _on_step(self) -> bool:
        if self.num_timesteps == self.warmup:
            self.start = time.perf_counter()
        if self.num_timesteps == self.warmup + self.measured:
            self.rate = self.measured / (time.perf_counter() - self.start)
            return False
        return True


def sb3_rate(model: torch.nn.Module, args: argparse.Namespace, prefix_cache: bool) -> float:
    """Env steps/s of PPO's rollout phase: one rollout of warm-up + measured steps."""
    B, N = args.num_envs, args.max_new_tokens
    venv = DummyVecEnv([lambda: gym.make("TextGen-v0", **env_kwargs(args))] * B)
    timer = TimeSteps(warmup=N * B, measured=2 * N * B)  # one episode per env, then two
    ppo = PPO("LMPolicy", venv, n_steps=3 * N + 1, batch_size=B, n_epochs=1, seed=0,
              policy_kwargs={"model": model, "prefix_cache": prefix_cache})  # fmt: skip
    ppo.learn(10 * N * B, callback=timer)
    return timer.rate


def sb3_learn_rate(model: torch.nn.Module, args: argparse.Namespace, share_prefixes: bool) -> float:
    """Env steps/s of a whole PPO ``learn()``: two rollouts of N steps, each followed by two epochs
    of two minibatches (the ``textgym bench`` settings of sb3-ppo)."""
    B, N = args.num_envs, args.max_new_tokens
    venv = DummyVecEnv([lambda: gym.make("TextGen-v0", **env_kwargs(args))] * B)
    ppo = PPO("LMPolicy", venv, n_steps=N, batch_size=N * B // 2, n_epochs=2, seed=0,
              policy_kwargs={"model": model, "share_prefixes": share_prefixes})  # fmt: skip
    start = time.perf_counter()
    ppo.learn(2 * N * B)
    return ppo.num_timesteps / (time.perf_counter() - start)


def custom_rate(model: torch.nn.Module, args: argparse.Namespace) -> float:
    """Env steps/s of the custom lockstep rollout: warm-up batch, then two timed batches."""
    policy = TransformerPolicy(model, reference=None)
    envs = TextGenVectorEnv(num_envs=args.num_envs, autoreset_mode="disabled",
                            **env_kwargs(args))  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    rollout(policy, envs, Sampling(), generator, seed=0)
    steps, start = 0, time.perf_counter()
    for seed in (1, 2):
        steps += rollout(policy, envs, Sampling(), generator, seed=seed).num_tokens
    return steps / (time.perf_counter() - start)


def env_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {"task": args.task, "max_new_tokens": args.max_new_tokens}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m", help="an LM name/path, or 'tiny'")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--task", default="keywords")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="skip the reference runs: the rollout without the prefix cache and the learn() "
        "with one prefill per step (share_prefixes=False)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = shared_tokenizer("smollm2-135m")
    base = tiny_model(tokenizer) if args.model == "tiny" else load_model(args.model)
    methods: dict[str, Callable[[torch.nn.Module], float]] = {
        "custom": lambda m: custom_rate(m, args),
        "sb3": lambda m: sb3_rate(m, args, prefix_cache=True),
        "sb3 learn": lambda m: sb3_learn_rate(m, args, share_prefixes=True),
    }
    if not args.skip_slow:
        methods["sb3 no-cache"] = lambda m: sb3_rate(m, args, prefix_cache=False)
        methods["sb3 learn per-step"] = lambda m: sb3_learn_rate(m, args, share_prefixes=False)
    rates: dict[str, list[float]] = {name: [] for name in methods}
    with tqdm(total=args.repeats * len(methods), desc="measuring") as bar:
        for _ in range(args.repeats):
            for name, measure in methods.items():  # a fresh copy: learn() trains its model
                rates[name].append(measure(copy.deepcopy(base)))
                bar.update()

    print(
        f"model={args.model} task={args.task} B={args.num_envs} N={args.max_new_tokens} "
        f"threads={torch.get_num_threads()} (median of {args.repeats})"
    )
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, rate in median.items():
        print(f"{name:18} {rate:10,.1f} env steps/s")
    print(f"ratio custom / sb3 rollout: {median['custom'] / median['sb3']:.2f}x")
    if "sb3 learn per-step" in median:
        shared, per_step = median["sb3 learn"], median["sb3 learn per-step"]
        print(f"ratio sb3 learn shared / per-step prefills: {shared / per_step:.2f}x")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
