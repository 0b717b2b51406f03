"""``textgym bench``: a grid of algorithms x tasks x seeds under one budget, evaluated alike.

Every run gets the same budget of environment tokens (generated tokens, the unit an LM agent
pays for) and/or seconds of training, then the same held-out evaluation
(:func:`agents.evaluation.evaluate`: same prompts, greedy decoding, KL and perplexity against
the same reference model). Layout of the output directory::

    OUT/bench.json                          the latest settings; every command run here
    OUT/results.csv                         one row per finished run (rebuilt after each run)
    OUT/<task>/<algo>/seed<k>/result.json   config, versions, device, budget used, eval metrics
    OUT/<task>/<algo>/seed<k>/curve.csv     reward vs environment tokens and seconds
    OUT/<task>/<algo>/seed<k>/samples.jsonl held-out prompts, completions, references
    OUT/<task>/<algo>/seed<k>/train/        the algorithm's own logs (metrics.csv, ...)

``result.json`` is written last and atomically: a run that has it is finished and skipped on
a rerun, so an interrupted grid resumes where it stopped (a run interrupted midway restarts,
or continues from its last checkpoint with ``save_every``).

Adding an algorithm is one entry in :data:`ADAPTERS`: a function ``(RunSpec) -> Trained``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from agents.evaluation import evaluate
from agents.runtime import resolve_device
from agents.tracking import atomic_write


@dataclass
class BenchConfig:
    """One comparison grid: every algorithm on every task with every seed, under one budget."""

    algos: tuple[str, ...] = ("ppo", "rloo", "grpo", "reinforce")
    """Algorithms (keys of ``ADAPTERS``); "base" evaluates the untrained model as a baseline."""
    tasks: tuple[str, ...] = ("dialogsum", "taskmaster4")
    """Registered task names."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds; each (algo, task, seed) is one run."""
    budget_tokens: int = 200_000
    """Environment tokens (generated tokens, summed over episodes) per run; 0 = no token limit."""
    budget_seconds: float = 0.0
    """Training wall time per run in seconds (evaluation excluded); 0 = no time limit."""
    model: str = "smollm2-135m"
    """Policy and reference LM: HF id, local path, alias, or "tiny" (random, for tests)."""
    tokenizer: str | None = None
    """Tokenizer; default the model's ("smollm2-135m" for "tiny")."""
    device: str = "auto"
    """"auto", "cpu", "cuda" or "cuda:N"."""
    out_dir: str = "runs/bench"
    """Output directory of the grid."""
    batch_size: int = 16
    """Episodes per rollout batch (per iteration for the custom trainers)."""
    max_prompt_tokens: int = 256
    """Prompt budget P (longer prompts keep their end)."""
    max_new_tokens: int = 48
    """Completion budget N, in training and evaluation."""
    eval_prompts: int = 64
    """Held-out prompts per evaluation (the first ones of the test split, same for every run)."""
    eval_batch_size: int = 16
    """Prompts per evaluation batch."""
    save_every: int = 0
    """Checkpoint every this many iterations so an interrupted run continues (0 = never)."""
    save_policy: bool = False
    """Keep the trained policy (Hugging Face format) in ``<run>/policy``."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra config options: {"*": {...}} for every algorithm, {"ppo": {...}} for one."""
    progress: bool = True
    """Show progress."""

    def __post_init__(self) -> None:
        self.algos, self.tasks, self.seeds = tuple(self.algos), tuple(self.tasks), tuple(self.seeds)
        for name in ("algos", "tasks", "seeds"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        unknown = [a for a in self.algos if a not in ADAPTERS]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; valid: {', '.join(ADAPTERS)}")
        from textgym.tasks import list_tasks

        bad_tasks = [t for t in self.tasks if t not in list_tasks()]
        if bad_tasks:
            raise ValueError(f"unknown task(s) {bad_tasks}; valid: {', '.join(list_tasks())}")
        if len(set(self.seeds)) != len(self.seeds) or any(
            not isinstance(s, int) or s < 0 for s in self.seeds
        ):
            raise ValueError(f"seeds must be distinct ints >= 0, got {list(self.seeds)}")
        if self.budget_tokens < 0 or self.budget_seconds < 0:
            raise ValueError(
                f"budgets must be >= 0, got budget_tokens={self.budget_tokens}, "
                f"budget_seconds={self.budget_seconds}"
            )
        if not self.budget_tokens and not self.budget_seconds:
            raise ValueError("set a budget: budget_tokens > 0 and/or budget_seconds > 0")
        for name in ("batch_size", "max_prompt_tokens", "max_new_tokens", "eval_prompts",
                     "eval_batch_size"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        bad_keys = [k for k in self.options if k != "*" and k not in self.algos]
        if bad_keys:
            raise ValueError(
                f"options for {bad_keys} but those are not in algos {list(self.algos)}"
            )
        for algo in self.algos:
            valid = option_names(algo)
            unknown = sorted(set(self.algo_options(algo)) - set(valid))
            if unknown and algo != "base":  # the untrained baseline takes no options
                raise ValueError(
                    f"unknown option(s) {unknown} for {algo}; valid options: {', '.join(valid)}"
                )

    def algo_options(self, algo: str) -> dict[str, Any]:
        """The extra config options of ``algo``: those for every algorithm, then its own."""
        return {**self.options.get("*", {}), **self.options.get(algo, {})}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunSpec:
    """What an adapter is asked to train: one (algo, task, seed) under the grid's budget."""

    algo: str
    task: str
    seed: int
    run_dir: Path
    bench: BenchConfig
    tokenizer: PreTrainedTokenizerBase

    @property
    def options(self) -> dict[str, Any]:
        """The ``--set`` options of this run's algorithm."""
        return self.bench.algo_options(self.algo)

    def budget_spent(self, tokens: int, seconds: float) -> bool:
        """Whether ``tokens`` generated / ``seconds`` of training exhaust either budget."""
        b = self.bench
        return bool(
            (b.budget_tokens and tokens >= b.budget_tokens)
            or (b.budget_seconds and seconds >= b.budget_seconds)
        )


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


# ---------------------------------------------------------------------- adapters


def build_lm(name: str, tokenizer: PreTrainedTokenizerBase, seed: int) -> nn.Module:
    """The untrained LM of a run (``"tiny"`` is seeded, so policy and reference agree)."""
    from agents.trainer import build_model

    return build_model(name, tokenizer, seed)


def trainer_curve(rows: list[dict[str, Any]], batch_size: int) -> list[dict[str, float]]:
    """The learning curve of :class:`~agents.trainer.Trainer` metric rows: per iteration the
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


def train_custom(spec: RunSpec) -> Trained:
    """PPO / RLOO / GRPO / REINFORCE through :class:`agents.trainer.Trainer`, one iteration at a
    time until the token or time budget is spent (the trainer counts generated tokens)."""
    from agents.checkpoint import latest_checkpoint
    from agents.trainer import Trainer, make_config

    b = spec.bench
    # With a token budget, every iteration generates >= batch_size tokens, so this cap is never
    # what stops a run; it only sizes a "linear" LR schedule, so the bench default is constant.
    cap = math.ceil(b.budget_tokens / b.batch_size) if b.budget_tokens else 10**9
    options = {
        "model": b.model, "tokenizer": b.tokenizer, "task": spec.task, "seed": spec.seed,
        "device": b.device, "batch_size": b.batch_size, "max_prompt_tokens": b.max_prompt_tokens,
        "max_new_tokens": b.max_new_tokens, "iterations": cap, "eval_every": 0,
        "save_every": b.save_every, "tensorboard": False, "progress": False,
        "run_dir": str(spec.run_dir / "train"),
        **spec.options,
    }  # fmt: skip
    config = make_config(spec.algo, **options)
    train_dir = Path(config.output_dir)
    trainer = Trainer(
        config, tokenizer=spec.tokenizer, resume=latest_checkpoint(train_dir) is not None
    )

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
    model = build_lm(spec.bench.model, spec.tokenizer, spec.seed).to(
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
    reference = ReferenceLM(build_lm(b.model, spec.tokenizer, spec.seed).eval())
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
        policy_kwargs={"model": build_lm(b.model, spec.tokenizer, spec.seed)},
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
    """The names ``--set`` accepts for ``algo``: its trainer config's fields, or SB3_OPTIONS.

    >>> option_names("sb3-ppo")[:2], "gae_lambda" in option_names("ppo"), option_names("base")
    (['learning_rate', 'n_steps'], True, [])
    """
    if ADAPTERS[algo] is train_sb3:
        return list(SB3_OPTIONS)
    if ADAPTERS[algo] is train_custom:
        from agents.trainer import ALGORITHMS

        return [f.name for f in dataclasses.fields(ALGORITHMS[algo][0])]
    return []


ADAPTERS: dict[str, Callable[[RunSpec], Trained]] = {
    "base": untrained,
    "ppo": train_custom,
    "rloo": train_custom,
    "grpo": train_custom,
    "reinforce": train_custom,
    "sb3-ppo": train_sb3,
    "maskable-ppo": train_sb3,
}
"""Algorithm name -> function training one run; add a line here to add an algorithm."""


# ---------------------------------------------------------------------- the grid


def environment_info(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and code revision, recorded with every run."""
    import gymnasium
    import numpy
    import transformers

    import textgym

    versions = {
        "python": platform.python_version(),
        "textgym": textgym.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
    }
    for name in ("stable_baselines3", "sb3_contrib", "peft"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()} CPU"
    info: dict[str, Any] = {
        "versions": versions,
        "device": str(device),
        "hardware": hardware,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    return info


def run_dir(out_dir: str | Path, task: str, algo: str, seed: int) -> Path:
    return Path(out_dir) / task / algo / f"seed{seed}"


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's ``result.json`` under ``out_dir``, in (task, algo, seed) order."""
    results = [json.loads(p.read_text()) for p in Path(out_dir).glob("*/*/seed*/result.json")]
    return sorted(results, key=lambda r: (r["task"], r["algo"], r["seed"]))


def write_csv(path: Path, rows: Sequence[dict[str, Any]], empty_header: Sequence[str] = ()) -> None:
    """Atomically write ``rows`` as CSV; columns in order of first appearance."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys or list(empty_header))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def write_results_csv(out_dir: str | Path) -> Path:
    """``results.csv``: one row per finished run (its budget use and eval metrics)."""
    rows = []
    for r in load_results(out_dir):
        row = {"task": r["task"], "algo": r["algo"], "seed": r["seed"], "tokens": r["tokens"],
               "train_seconds": r["train_seconds"], "eval_seconds": r["eval_seconds"],
               "device": r["env"]["device"]}  # fmt: skip
        row.update(r["metrics"])
        rows.append(row)
    path = Path(out_dir) / "results.csv"
    write_csv(path, rows, ["task", "algo", "seed", "tokens"])
    return path


class Reference:
    """The reference LM of a grid, loaded once (per seed for "tiny", whose weights are seeded)."""

    def __init__(self, bench: BenchConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.bench, self.tokenizer = bench, tokenizer
        self._cached: tuple[int | None, nn.Module] | None = None

    def get(self, seed: int, device: torch.device) -> nn.Module:
        key = seed if self.bench.model == "tiny" else None
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # free the old one first
            model = build_lm(self.bench.model, self.tokenizer, seed).to(device).eval()
            model.requires_grad_(False)
            self._cached = (key, model)
        return self._cached[1]


def run_one(
    spec: RunSpec, reference: Reference, device: torch.device, env: dict[str, Any]
) -> dict[str, Any]:
    """Train (through the adapter) and evaluate one run; writes its files, result.json last."""
    b = spec.bench
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    trained = ADAPTERS[spec.algo](spec)
    write_csv(spec.run_dir / "curve.csv", trained.curve, ["tokens", "seconds", "reward"])
    ref = trained.reference if trained.reference is not None else reference.get(spec.seed, device)
    start = time.perf_counter()
    result = evaluate(
        trained.model,
        spec.tokenizer,
        spec.task,
        reference=ref,
        num_prompts=b.eval_prompts,
        batch_size=b.eval_batch_size,
        max_prompt_tokens=b.max_prompt_tokens,
        max_new_tokens=b.max_new_tokens,
    )
    eval_seconds = time.perf_counter() - start
    lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in result.samples)
    atomic_write(spec.run_dir / "samples.jsonl", lines)
    if b.save_policy and trained.save is not None:
        trained.save(spec.run_dir / "policy")
    record = {
        "algo": spec.algo,
        "task": spec.task,
        "seed": spec.seed,
        "tokens": trained.tokens,
        "train_seconds": trained.seconds,
        "eval_seconds": eval_seconds,
        "metrics": result.metrics,
        "budget": {"tokens": b.budget_tokens, "seconds": b.budget_seconds},
        "bench": b.to_dict(),
        "config": trained.config,
        "env": env,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write(spec.run_dir / "result.json", json.dumps(record, indent=2, default=str) + "\n")
    shutil.rmtree(spec.run_dir / "train" / "checkpoints", ignore_errors=True)
    return record


def run_grid(bench: BenchConfig) -> list[dict[str, Any]]:
    """Run every unfinished (seed, task, algo) of the grid; returns all finished results.

    Seeds are the outer loop, so an interrupted grid has comparable partial results. Several
    invocations may share one output directory when they run disjoint seeds (e.g. ``--seeds 0``
    and ``--seeds 1`` in two processes); a run another one finished meanwhile is skipped.
    """
    from textgym.models import SMOLLM2_ALIAS, load_tokenizer

    out = Path(bench.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Several invocations may fill one directory (e.g. a baseline added later): keep every command.
    log = out / "bench.json"
    commands = json.loads(log.read_text()).get("commands", []) if log.is_file() else []
    command = bench_command(bench)
    commands += [] if command in commands else [command]
    atomic_write(log, json.dumps({"bench": bench.to_dict(), "commands": commands}, indent=2) + "\n")
    device = resolve_device(bench.device)
    env = environment_info(device)
    tokenizer = load_tokenizer(
        bench.tokenizer or (SMOLLM2_ALIAS if bench.model == "tiny" else bench.model)
    )
    reference = Reference(bench, tokenizer)
    grid = [(s, t, a) for s in bench.seeds for t in bench.tasks for a in bench.algos]
    todo = [g for g in grid if not (run_dir(out, g[1], g[2], g[0]) / "result.json").is_file()]
    say = tqdm.write if bench.progress else (lambda _: None)
    say(f"bench: {len(grid)} runs, {len(grid) - len(todo)} already finished, {len(todo)} to go")
    bar = tqdm(total=len(grid), initial=len(grid) - len(todo), disable=not bench.progress)
    for seed, task, algo in todo:
        bar.set_description(f"{algo} {task} seed{seed}")
        spec = RunSpec(algo, task, seed, run_dir(out, task, algo, seed), bench, tokenizer)
        if (spec.run_dir / "result.json").is_file():  # finished meanwhile by another invocation
            bar.update(1)
            continue
        record = run_one(spec, reference, device, env)
        write_results_csv(out)
        m = record["metrics"]
        say(
            f"{algo:>10} {task} seed {seed}: {record['tokens']} tokens in "
            f"{record['train_seconds']:.0f} s | eval reward {m['eval/reward']:.3f}"
            + (f", kl {m['eval/kl']:.2f}" if "eval/kl" in m else "")
            + f", length {m['eval/length']:.1f}"
        )
        bar.update(1)
    bar.close()
    write_results_csv(out)
    return load_results(out)


# ---------------------------------------------------------------------- command line


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["kl_coef=0.1", "ppo.num_epochs=2"]`` -> ``{"*": {"kl_coef": 0.1}, "ppo": {...}}``.

    >>> parse_options(["kl_coef=0.1", "ppo.num_epochs=2", "top_k=50"])
    {'*': {'kl_coef': 0.1, 'top_k': 50}, 'ppo': {'num_epochs': 2}}
    """
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE or ALGO.KEY=VALUE, got {item!r}")
        algo, _, name = key.rpartition(".")
        options.setdefault(algo or "*", {})[name] = _value(value)
    return options


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"3"`` -> (0, 1, 2); ``"0,5,7"`` -> (0, 5, 7); one seed k alone is ``"k,"``.

    >>> parse_seeds("3"), parse_seeds("4,2"), parse_seeds("1,")
    ((0, 1, 2), (4, 2), (1,))
    """
    parts = [p for p in text.split(",") if p.strip()]
    try:
        if len(parts) == 1 and "," not in text:
            return tuple(range(int(parts[0])))
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--seeds expects a count (3) or a list (0,5,7), got {text!r}") from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def bench_command(bench: BenchConfig) -> str:
    """The ``textgym bench`` command line that reproduces ``bench`` (every setting explicit).

    >>> print(bench_command(BenchConfig(algos=("ppo",), tasks=("keywords",), seeds=(0, 1),
    ...                                 budget_tokens=512, options={"ppo": {"kl_coef": 0.1}})))
    textgym bench --algos ppo --tasks keywords --seeds 0,1 --budget-tokens 512 --budget-seconds 0 --model smollm2-135m --device auto --out runs/bench --batch-size 16 --max-prompt-tokens 256 --max-new-tokens 48 --eval-prompts 64 --eval-batch-size 16 --save-every 0 --set ppo.kl_coef=0.1
    """
    b = bench
    parts = ["textgym bench", f"--algos {','.join(b.algos)}", f"--tasks {','.join(b.tasks)}",
             f"--seeds {','.join(map(str, b.seeds))}{',' if len(b.seeds) == 1 else ''}", f"--budget-tokens {b.budget_tokens}",
             f"--budget-seconds {b.budget_seconds:g}", f"--model {b.model}"]  # fmt: skip
    if b.tokenizer:
        parts.append(f"--tokenizer {b.tokenizer}")
    parts.append(f"--device {b.device} --out {b.out_dir}")
    for name in _INT_OPTIONS:
        parts.append(f"--{name.replace('_', '-')} {getattr(b, name)}")
    if b.save_policy:
        parts.append("--save-policy")
    for algo, options in b.options.items():
        for key, value in options.items():
            prefix = "" if algo == "*" else f"{algo}."
            parts.append(shlex.quote(f"{prefix}{key}={json.dumps(value)}").join(["--set ", ""]))
    return " ".join(parts)


_INT_OPTIONS = ("batch_size", "max_prompt_tokens", "max_new_tokens", "eval_prompts",
                "eval_batch_size", "save_every")  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``textgym bench``."""
    d = BenchConfig.__dataclass_fields__
    p = subparsers.add_parser(
        "bench",
        help="compare algorithms on tasks over seeds under one budget",
        description="Run a grid of algorithms x tasks x seeds under one budget, evaluate every "
        "run on the same held-out prompts, and write a report. Finished runs are skipped on "
        "a rerun.",
    )
    p.add_argument("--algos", default="ppo,rloo,grpo,reinforce",
                   help=f"comma-separated; valid: {', '.join(ADAPTERS)}")  # fmt: skip
    p.add_argument("--tasks", default="dialogsum,taskmaster4", help="comma-separated task names")
    p.add_argument(
        "--seeds", default="3", help="a count (3 = 0,1,2) or a list (0,5,7; seed 1 alone: 1,)"
    )
    p.add_argument("--budget-tokens", type=int, default=d["budget_tokens"].default,
                   help="environment tokens per run (0 = no limit)")  # fmt: skip
    p.add_argument("--budget-seconds", type=float, default=0.0,
                   help="training seconds per run (0 = no limit)")  # fmt: skip
    p.add_argument("--model", default=d["model"].default)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default=d["out_dir"].default, help="output directory")
    for name in _INT_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=d[name].default)
    p.add_argument("--save-policy", action="store_true", help="keep each trained policy")
    p.add_argument("--set", action="append", default=[], metavar="[ALGO.]KEY=VALUE",
                   help="config option for every algorithm (or ALGO's only); repeatable")  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="skip writing OUT/report.md")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        bench = BenchConfig(
            algos=_csv(args.algos),
            tasks=_csv(args.tasks),
            seeds=parse_seeds(args.seeds),
            budget_tokens=args.budget_tokens,
            budget_seconds=args.budget_seconds,
            model=args.model,
            tokenizer=args.tokenizer,
            device=args.device,
            out_dir=args.out,
            batch_size=args.batch_size,
            max_prompt_tokens=args.max_prompt_tokens,
            max_new_tokens=args.max_new_tokens,
            eval_prompts=args.eval_prompts,
            eval_batch_size=args.eval_batch_size,
            save_every=args.save_every,
            save_policy=args.save_policy,
            options=parse_options(args.set),
            progress=not args.quiet,
        )
    except ValueError as exc:
        print(f"textgym bench: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    run_grid(bench)
    print(f"bench finished in {time.perf_counter() - start:.0f} s: {bench.out_dir}/results.csv")
    if not args.no_report:
        from agents.report import write_report

        print(f"report: {write_report(bench.out_dir)}")
    return 0


__all__ = [
    "ADAPTERS",
    "BenchConfig",
    "RunSpec",
    "Trained",
    "add_parser",
    "load_results",
    "run_grid",
    "write_results_csv",
]
