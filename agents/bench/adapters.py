"""How the bench trains each kind of run: an adapter is a function ``(RunSpec) -> Trained``.

The rule for what the bench runs: every on-policy algorithm of :mod:`agents.registry` is a bench
algorithm with no line here (:func:`train_registered` trains it through its registered trainer
under the grid's token budget). Everything else is a bench-local row of :data:`ADAPTERS`:

- ``base``: the untrained model;
- ``best-of-n``: the untrained model, evaluated by sampling n completions per prompt and keeping
  the one the task reward scores highest (it uses the reward at test time; options
  :data:`BEST_OF_OPTIONS`, n defaults to the group size);
- ``sft``: supervised fine-tuning on the task's train references (:mod:`agents.sft`);
- ``dpo``: DPO on pairs of the reference (chosen) over the base model's greedy output
  (rejected) for train prompts (:mod:`agents.dpo`; option ``pairs``: how many prompts);
- ``sb3-ppo`` / ``maskable-ppo``: the stable-baselines3 runs, PPO with a KL penalty and NLPO-style
  MaskablePPO with reference top-k masks and the same penalty (options :data:`SB3_OPTIONS`),
  evaluated under the same masks (:class:`agents.masked_lm.ReferenceMaskedLM`).

For sft and dpo the token budget counts the completion tokens trained on (references; chosen
plus rejected), plus for dpo the greedy tokens generated to build its pairs.
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
from textgym.lm import Sampling

if TYPE_CHECKING:
    import gymnasium as gym

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
    eval_sampling: Sampling | None = None
    """How the main evaluation draws tokens (None: greedy, the rule for every trained policy)."""
    eval_best_of: int = 1
    """Completions per prompt of which evaluation keeps the best by the reward (best-of-n)."""
    eval_model: nn.Module | None = None
    """The policy as it acted in training, where that is not ``model`` alone (maskable-ppo: the
    LM under its reference top-k mask, :class:`agents.masked_lm.ReferenceMaskedLM`)."""


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


def finished(trainer: Any, curve: list[dict[str, float]], tokens: int, seconds: float) -> Trained:
    """Close the trainer's logger and hand its policy and budget to the grid."""
    trainer.logger.close()
    return Trained(
        model=trainer.policy.model,
        curve=curve,
        tokens=tokens,
        seconds=seconds,
        config=trainer.config.to_dict(),
        reference=trainer.policy.reference if trainer.policy.reference_mode == "copy" else None,
        save=trainer.save_pretrained,
    )


def train_registered(spec: RunSpec) -> Trained:
    """An on-policy algorithm of :mod:`agents.registry` (PPO, RLOO, GRPO, REINFORCE, ...)
    through its registered trainer, one iteration at a time until the token or time budget is
    spent (the trainer counts generated tokens)."""

    config = trainer_config(spec, spec.options)
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
    return finished(trainer, curve, tokens, seconds)


def untrained(spec: RunSpec) -> Trained:
    """The "base" baseline: the model as loaded, no training (its KL to itself is 0)."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.bench.model, spec.tokenizer, spec.seed).to(
        resolve_device(spec.bench.device)
    )
    return Trained(model=model, curve=[], tokens=0, seconds=0.0, reference=model)


BEST_OF_OPTIONS = {"n": 0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
"""Settings of best-of-n (``--set best-of-n.n=8``): ``n`` completions sampled per prompt (0 = the
group size: ``completions_per_prompt`` when the grid sets it, else GRPO's default), drawn with
``temperature`` / ``top_k`` / ``top_p`` (grid-wide ``--set top_k=...`` applies, so it samples as
the RL algorithms do)."""


def best_of_n(spec: RunSpec) -> Trained:
    """The "best-of-n" baseline: the untrained model; its evaluation samples n completions per
    prompt and keeps the one with the highest task reward. An honest reference point for RL,
    not a policy: it calls the reward at test time, n times per prompt."""
    o = {**BEST_OF_OPTIONS, **spec.options}
    if not o["n"]:
        group = spec.bench.options.get("*", {}).get("completions_per_prompt")
        o["n"] = group or registry.make_config("grpo").completions_per_prompt  # type: ignore[attr-defined]
    if not isinstance(o["n"], int) or o["n"] < 2:
        raise ValueError(f"best-of-n needs n >= 2 completions per prompt, got n={o['n']!r}")
    trained = untrained(spec)
    trained.config = {"algo": spec.algo, "task": spec.task, "seed": spec.seed,
                      "model": spec.bench.model, **o}  # fmt: skip
    trained.eval_sampling = Sampling(o["temperature"], o["top_k"], o["top_p"])
    trained.eval_best_of = o["n"]
    return trained


DPO_PAIRS = 256
"""Train prompts whose (reference, base greedy output) pairs dpo learns (``--set dpo.pairs=N``)."""


def trainer_config(spec: RunSpec, options: dict[str, Any]) -> Any:
    """The registered config of ``spec.algo``: the bench's shared settings, then ``options``."""
    b = spec.bench
    # With a token budget, every iteration generates >= batch_size tokens, so this cap is never
    # what stops a run; it only sizes a "linear" LR schedule, so the bench default is constant.
    cap = math.ceil(b.budget_tokens / b.batch_size) if b.budget_tokens else 10**9
    return registry.make_config(
        spec.algo,
        **{
            "model": b.model, "tokenizer": b.tokenizer, "task": spec.task, "seed": spec.seed,
            "device": b.device, "batch_size": b.batch_size,
            "max_prompt_tokens": b.max_prompt_tokens, "max_new_tokens": b.max_new_tokens,
            "iterations": cap, "eval_every": 0, "save_every": b.save_every,
            "report_to": "none", "progress": False, "run_dir": str(spec.run_dir / "train"),
            **options,
        },
    )  # fmt: skip


def train_offline(
    spec: RunSpec, tokens_of: Callable[[Any], int], start_tokens: int = 0, **data: Any
) -> Trained:
    """sft or dpo through its registered trainer, one optimizer step at a time until the token
    (``start_tokens`` plus ``tokens_of`` each item trained on) or time budget is spent."""
    config = trainer_config(spec, {k: v for k, v in spec.options.items() if k != "pairs"})
    train_dir = Path(config.output_dir)
    trainer = registry.build_trainer(
        config, tokenizer=spec.tokenizer, resume=latest_checkpoint(train_dir) is not None, **data
    )
    step_tokens = [
        sum(tokens_of(x) for x in trainer.batch_items(i)) for i in range(trainer.iteration)
    ]
    tokens = start_tokens + sum(step_tokens)
    seconds = sum(float(r.get("time/step_s", 0.0)) for r in trainer.logger.rows)
    curve: list[dict[str, float]] = []  # a resumed run's steps so far, then the new ones
    total, elapsed = start_tokens, 0.0
    for row, used in zip(trainer.logger.rows, step_tokens, strict=False):
        total, elapsed = total + used, elapsed + float(row.get("time/step_s", 0.0))
        curve.append({"iteration": int(row["iteration"]), "tokens": total, "seconds": elapsed,
                      "loss": float(row["train/loss"])})  # fmt: skip
    while not spec.budget_spent(tokens, seconds) and trainer.iteration < config.iterations:
        used = sum(tokens_of(x) for x in trainer.batch_items(trainer.iteration))
        row = trainer.train(num_iterations=1)[-1]
        tokens, seconds = tokens + used, seconds + float(row["time/step_s"])
        curve.append({"iteration": trainer.iteration, "tokens": tokens, "seconds": seconds,
                      "loss": float(row["train/loss"])})  # fmt: skip
    return finished(trainer, curve, tokens, seconds)


def train_sft(spec: RunSpec) -> Trained:
    """sft: supervised fine-tuning on the task's train references (one example per reference);
    the budget counts the reference tokens trained on."""
    return train_offline(spec, lambda row: sum(len(c) for _, c in row))


def train_dpo(spec: RunSpec) -> Trained:
    """dpo: pairs of the reference (chosen) over the base model's greedy output (rejected) on
    the first ``pairs`` train prompts (pairs where the two are equal are dropped); the budget
    counts the greedy tokens generated for the pairs, then the chosen and rejected tokens
    trained on."""
    from agents.evaluation import evaluate
    from textgym.feedback.store import PreferencePair
    from textgym.tasks import make_task

    b = spec.bench
    task = make_task(spec.task)
    torch.manual_seed(spec.seed)
    base = build_model(b.model, spec.tokenizer, spec.seed).to(resolve_device(b.device))
    greedy = evaluate(base, spec.tokenizer, task, split="train",
                      num_prompts=int(spec.options.get("pairs", DPO_PAIRS)),
                      batch_size=b.eval_batch_size, max_prompt_tokens=b.max_prompt_tokens,
                      max_new_tokens=b.max_new_tokens)  # fmt: skip
    pairs = [
        PreferencePair(task.split("train")[s["index"]].prompt, ref, s["completion"], "base-greedy")
        for s in greedy.samples
        for ref in s["references"][:1]
        if ref.strip() and ref.strip() != s["completion"].strip()
    ]
    if not pairs:
        raise ValueError(
            f"dpo on {spec.task}: no (reference, greedy output) pairs; the task's train split "
            "needs references"
        )
    generated = round(sum(s["length"] for s in greedy.samples))
    return train_offline(
        spec, lambda t: len(t[1]) + len(t[2]), start_tokens=generated, model=base, pairs=pairs
    )


SB3_OPTIONS: dict[str, Any] = {
    "learning_rate": 1e-5, "n_steps": None, "batch_size": None, "n_epochs": 2, "vf_coef": 0.1,
    "max_grad_norm": 1.0, "kl_coef": 0.05, "top_k": 16,
}  # fmt: skip
"""Settings of the stable-baselines3 runs (``--set sb3-ppo.n_steps=16`` etc.) and their defaults.

They mirror ``ppo``'s config: a rollout of one episode per env (``n_steps`` None: the grid's
``max_new_tokens``), two epochs of two minibatches (``batch_size`` None: half a rollout, which
holds every episode, so :func:`textgym.lm.shared_prefix_forward` prefills each episode once per
minibatch), the value loss weight and the gradient clip. ``kl_coef`` is the weight of the
per-token KL reward of both (:class:`textgym.wrappers.KLPenalty`), ``top_k`` the reference top-k
action mask of maskable-ppo (:class:`textgym.wrappers.ReferenceActionMask`): NLPO is masks plus
PPO's KL penalty (Ramamurthy et al., 2023)."""


def train_sb3(spec: RunSpec) -> Trained:
    """sb3-ppo (PPO + KL-shaped reward) or maskable-ppo (MaskablePPO + reference top-k masks +
    KL-shaped reward) with the LM as SB3 policy (:mod:`agents.sb3`); one env step is one
    generated token, so the token budget is SB3's ``total_timesteps``."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from agents.masked_lm import ReferenceMaskedLM
    from agents.sb3 import KLRewardCallback
    from textgym.wrappers import KLPenalty, ReferenceActionMask, ReferenceLM

    b = spec.bench
    o = {**SB3_OPTIONS, **spec.options}
    masked = spec.algo == "maskable-ppo"
    # Resolved defaults (SB3_OPTIONS): one episode per env a rollout, in two minibatches.
    o["n_steps"] = o["n_steps"] or b.max_new_tokens
    o["batch_size"] = o["batch_size"] or max(1, o["n_steps"] * b.batch_size // 2)
    reference = ReferenceLM(build_model(b.model, spec.tokenizer, spec.seed).eval())

    def wrap(env: gym.Env) -> gym.Env:  # the KL penalty outside: it shares the mask's slot
        if masked:
            env = ReferenceActionMask(env, reference, top_k=o["top_k"])
        return KLPenalty(env, reference, beta=o["kl_coef"])

    envs = make_vec_env(
        "TextGen-v0",
        n_envs=b.batch_size,
        seed=spec.seed,
        env_kwargs={"task": spec.task, "tokenizer": spec.tokenizer, "render_mode": "ansi",
                    "max_prompt_tokens": b.max_prompt_tokens, "max_new_tokens": b.max_new_tokens},
        wrapper_class=wrap,
    )  # fmt: skip
    agent = (MaskablePPO if masked else PPO)(
        "LMPolicy",
        envs,
        learning_rate=o["learning_rate"],
        n_steps=o["n_steps"],
        batch_size=o["batch_size"],
        n_epochs=o["n_epochs"],
        vf_coef=o["vf_coef"],
        max_grad_norm=o["max_grad_norm"],
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

    agent.learn(b.budget_tokens or 10**12, callback=[Budget(), KLRewardCallback()])
    config = {"algo": spec.algo, "task": spec.task, "seed": spec.seed, "model": b.model, **o}
    acting = None
    if masked:  # NLPO's policy is the masked one: evaluated under the same masks, as in RL4LMs
        acting = ReferenceMaskedLM(agent.policy.lm, reference.model, o["top_k"])
        config["eval_mask"] = f"reference top-{o['top_k']}"
    return Trained(
        model=agent.policy.lm,
        curve=curve,
        tokens=agent.num_timesteps,
        seconds=time.perf_counter() - start,
        config=config,
        reference=reference.model,
        eval_model=acting,
    )


def option_names(algo: str) -> list[str]:
    """The names ``--set`` accepts for ``algo``: its registry config's fields, or SB3_OPTIONS.

    >>> option_names("sb3-ppo")[:2], "gae_lambda" in option_names("ppo"), option_names("base")
    (['learning_rate', 'n_steps'], True, [])
    >>> option_names("best-of-n"), option_names("dpo")[-1]
    (['n', 'temperature', 'top_k', 'top_p'], 'pairs')
    """
    if algo in registry.names():
        names = [f.name for f in dataclasses.fields(registry.entry(algo).config)]
        return names + (["pairs"] if algo == "dpo" else [])
    if ADAPTERS[algo] is train_sb3:
        return list(SB3_OPTIONS)
    if ADAPTERS[algo] is best_of_n:
        return list(BEST_OF_OPTIONS)
    return []


def _on_policy(name: str) -> bool:
    return issubclass(registry.entry(name).trainer, OnPolicyTrainer)


Adapter = Callable[["RunSpec"], Trained]
"""Trains one run of the grid."""

ADAPTERS: dict[str, Adapter] = {
    "base": untrained,
    "best-of-n": best_of_n,
    **{name: train_registered for name in registry.names() if _on_policy(name)},
    "sft": train_sft,
    "dpo": train_dpo,
    "sb3-ppo": train_sb3,
    "maskable-ppo": train_sb3,
}
"""The bench's algorithms, name -> adapter: the baselines (untrained, best-of-n), every on-policy
row of :mod:`agents.registry` at import, sft and dpo, and the stable-baselines3 runs."""


def bench_algorithms() -> dict[str, Adapter]:
    """:data:`ADAPTERS` plus the on-policy registry rows registered after this module loaded."""
    late = {n: train_registered for n in registry.names() if n not in ADAPTERS and _on_policy(n)}
    return {**ADAPTERS, **late}


__all__ = [
    "ADAPTERS",
    "BEST_OF_OPTIONS",
    "DPO_PAIRS",
    "SB3_OPTIONS",
    "Adapter",
    "Trained",
    "bench_algorithms",
    "best_of_n",
    "option_names",
    "train_dpo",
    "train_offline",
    "train_registered",
    "train_sb3",
    "train_sft",
    "trainer_curve",
    "untrained",
]
