"""How the bench trains each kind of run: an adapter is a function ``(RunSpec) -> Trained``.

The rule for what the bench runs: every on-policy algorithm of :mod:`agents.registry` is a bench
algorithm with no line here (:func:`train_registered` trains it through its registered trainer
under the grid's token budget); offline ones (sft, dpo) are not, as they generate no environment
tokens to budget. What is not an agents trainer is a bench-local row of :data:`ADAPTERS`: the
untrained baseline ``base`` and the stable-baselines3 runs ``sb3-ppo`` / ``maskable-ppo``
(options :data:`SB3_OPTIONS`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from agents import registry
from agents.checkpoint import latest_checkpoint
from agents.models import build_model
from agents.onpolicy import OnPolicyTrainer
from agents.runtime import resolve_device

if TYPE_CHECKING:
    from agents.bench.config import RunSpec


@dataclass
class Trained:
    """An adapter's result: the trained LM, its learning curve and what it consumed.

    ``curve`` rows hold at least ``tokens`` (cumulative environment tokens), ``seconds``
    (cumulative training time) and ``reward`` (mean training reward of that batch).
    ``reference`` may be the adapter's own frozen reference LM, saving a second copy.
    """

    model: nn.Module
    curve: list[dict[str, float]]
    tokens: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    reference: nn.Module | None = None
    save: Callable[[Path], None] | None = None


def trainer_curve(rows: list[dict[str, Any]], batch_size: int) -> list[dict[str, float]]:
    """The learning curve of :class:`~agents.onpolicy.OnPolicyTrainer` metric rows: per iteration the
    cumulative generated tokens and training seconds, the batch's mean reward and KL.

    >>> rows = [{"iteration": 1, "train/length": 3.5, "train/reward": 0.25, "time/rollout_s": 1.0,
    ...          "time/update_s": 0.5}]
    >>> trainer_curve(rows, batch_size=4)
    [{'iteration': 1, 'tokens': 14, 'seconds': 1.5, 'reward': 0.25}]
    """
    curve: list[dict[str, float]] = []
    tokens, seconds = 0, 0.0
    for row in rows:
        if "train/length" not in row:  # an evaluation-only row
            continue
        tokens += round(float(row["train/length"]) * batch_size)  # mean length x episodes
        seconds += float(row["time/rollout_s"]) + float(row["time/update_s"])
        point = {"iteration": int(row["iteration"]), "tokens": tokens, "seconds": seconds,
                 "reward": float(row["train/reward"])}  # fmt: skip
        if "train/kl" in row:
            point["kl"] = float(row["train/kl"])
        curve.append(point)
    return curve


def train_registered(spec: RunSpec) -> Trained:
    """An on-policy algorithm of :mod:`agents.registry` (PPO, RLOO, GRPO, REINFORCE, ...)
    through its registered trainer, one iteration at a time until the token or time budget is
    spent (the trainer counts generated tokens)."""

    b = spec.bench
    # With a token budget, every iteration generates >= batch_size tokens, so this cap is never
    # what stops a run; it only sizes a "linear" LR schedule, so the bench default is constant.
    cap = math.ceil(b.budget_tokens / b.batch_size) if b.budget_tokens else 10**9
    options = {
        "model": b.model, "tokenizer": b.tokenizer, "task": spec.task, "seed": spec.seed,
        "device": b.device, "batch_size": b.batch_size, "max_prompt_tokens": b.max_prompt_tokens,
        "max_new_tokens": b.max_new_tokens, "iterations": cap, "eval_every": 0,
        "save_every": b.save_every, "report_to": "none", "progress": False,
        "run_dir": str(spec.run_dir / "train"),
        **spec.options,
    }  # fmt: skip
    config = registry.make_config(spec.algo, **options)
    train_dir = Path(config.output_dir)
    trainer = registry.build_trainer(
        config, tokenizer=spec.tokenizer, resume=latest_checkpoint(train_dir) is not None
    )
    assert isinstance(trainer, OnPolicyTrainer)

    def progress() -> tuple[list[dict[str, float]], int, float]:
        curve = trainer_curve(trainer.logger.rows, config.batch_size)
        return (curve, int(curve[-1]["tokens"]), curve[-1]["seconds"]) if curve else ([], 0, 0.0)

    curve, tokens, seconds = progress()
    while not spec.budget_spent(tokens, seconds) and trainer.iteration < config.iterations:
        trainer.train(num_iterations=1)
        curve, tokens, seconds = progress()
    trainer.logger.close()
    return Trained(
        model=trainer.policy.model,
        curve=curve,
        tokens=tokens,
        seconds=seconds,
        config=config.to_dict(),
        reference=trainer.policy.reference if trainer.policy.reference_mode == "copy" else None,
        save=trainer.save_pretrained,
    )


def untrained(spec: RunSpec) -> Trained:
    """The "base" baseline: the model as loaded, no training (its KL to itself is 0)."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.bench.model, spec.tokenizer, spec.seed).to(
        resolve_device(spec.bench.device)
    )
    return Trained(model=model, curve=[], tokens=0, seconds=0.0, reference=model)


SB3_OPTIONS = {"learning_rate": 1e-5, "n_steps": 8, "batch_size": 32, "n_epochs": 1,
               "kl_coef": 0.05, "top_k": 16}  # fmt: skip
"""Settings of the stable-baselines3 runs (``--set sb3-ppo.n_steps=16`` etc.) and their defaults.

``n_steps`` is per env (a rollout holds ``n_steps * batch_size`` tokens of the grid), ``kl_coef``
the KL shaping weight of sb3-ppo (:class:`textgym.wrappers.KLPenalty`), ``top_k`` the reference
top-k action mask of maskable-ppo (:class:`textgym.wrappers.ReferenceActionMask`)."""


def train_sb3(spec: RunSpec) -> Trained:
    """sb3-ppo (PPO + KL-shaped reward) or maskable-ppo (MaskablePPO + reference top-k masks) with
    the LM as SB3 policy (:mod:`agents.sb3`); one env step is one generated token, so the token
    budget is SB3's ``total_timesteps``."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from agents.sb3 import KLRewardCallback
    from textgym.wrappers import KLPenalty, ReferenceActionMask, ReferenceLM

    b = spec.bench
    o = {**SB3_OPTIONS, **spec.options}
    masked = spec.algo == "maskable-ppo"
    reference = ReferenceLM(build_model(b.model, spec.tokenizer, spec.seed).eval())
    envs = make_vec_env(
        "TextGen-v0",
        n_envs=b.batch_size,
        seed=spec.seed,
        env_kwargs={"task": spec.task, "tokenizer": spec.tokenizer, "render_mode": "ansi",
                    "max_prompt_tokens": b.max_prompt_tokens, "max_new_tokens": b.max_new_tokens},
        wrapper_class=ReferenceActionMask if masked else KLPenalty,
        wrapper_kwargs={"reference": reference}
        | ({"top_k": o["top_k"]} if masked else {"beta": o["kl_coef"]}),
    )  # fmt: skip
    agent = (MaskablePPO if masked else PPO)(
        "LMPolicy",
        envs,
        learning_rate=o["learning_rate"],
        n_steps=o["n_steps"],
        batch_size=o["batch_size"],
        n_epochs=o["n_epochs"],
        gamma=1.0,
        seed=spec.seed,
        device=str(resolve_device(b.device)),
        policy_kwargs={"model": build_model(b.model, spec.tokenizer, spec.seed)},
    )
    curve: list[dict[str, float]] = []
    start = time.perf_counter()

    class Budget(BaseCallback):
        """Records the learning curve at each rollout's end; stops on the time budget."""

        def __init__(self) -> None:
            super().__init__()
            self.rewards: list[float] = []

        def _on_step(self) -> bool:
            self.rewards += [i["episode"]["r"] for i in self.locals["infos"] if "episode" in i]
            return not spec.budget_spent(0, time.perf_counter() - start)

        def _on_rollout_end(self) -> None:
            if self.rewards:  # Monitor's episode return: the unshaped task reward
                curve.append({"tokens": self.num_timesteps, "reward": float(np.mean(self.rewards)),
                              "seconds": time.perf_counter() - start})  # fmt: skip
            self.rewards = []

    callbacks = [Budget()] if masked else [Budget(), KLRewardCallback()]
    agent.learn(b.budget_tokens or 10**12, callback=callbacks)
    config = {"algo": spec.algo, "task": spec.task, "seed": spec.seed, "model": b.model, **o}
    return Trained(
        model=agent.policy.lm,
        curve=curve,
        tokens=agent.num_timesteps,
        seconds=time.perf_counter() - start,
        config=config,
        reference=reference.model,
    )


def option_names(algo: str) -> list[str]:
    """The names ``--set`` accepts for ``algo``: its registry config's fields, or SB3_OPTIONS.

    >>> option_names("sb3-ppo")[:2], "gae_lambda" in option_names("ppo"), option_names("base")
    (['learning_rate', 'n_steps'], True, [])
    """
    if algo in registry.names():
        return [f.name for f in dataclasses.fields(registry.entry(algo).config)]
    if ADAPTERS[algo] is train_sb3:
        return list(SB3_OPTIONS)
    return []


def _on_policy(name: str) -> bool:
    return issubclass(registry.entry(name).trainer, OnPolicyTrainer)


Adapter = Callable[["RunSpec"], Trained]
"""Trains one run of the grid."""

ADAPTERS: dict[str, Adapter] = {
    "base": untrained,
    **{name: train_registered for name in registry.names() if _on_policy(name)},
    "sb3-ppo": train_sb3,
    "maskable-ppo": train_sb3,
}
"""The bench's algorithms, name -> adapter: the untrained baseline, every on-policy row of
:mod:`agents.registry` at import, and the stable-baselines3 runs."""


def bench_algorithms() -> dict[str, Adapter]:
    """:data:`ADAPTERS` plus the on-policy registry rows registered after this module loaded."""
    late = {n: train_registered for n in registry.names() if n not in ADAPTERS and _on_policy(n)}
    return {**ADAPTERS, **late}


__all__ = [
    "ADAPTERS",
    "SB3_OPTIONS",
    "Adapter",
    "Trained",
    "bench_algorithms",
    "option_names",
    "train_registered",
    "train_sb3",
    "trainer_curve",
    "untrained",
]
