"""The settings of a bench grid (:class:`BenchConfig`, and the command line that reproduces
it), and of one of its runs (:class:`RunSpec`)."""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from agents.bench.adapters import bench_algorithms, option_names
from agents.config import check_ints, check_real


@dataclass
class BenchConfig:
    """One comparison grid: every algorithm on every task with every seed, under one budget."""

    algos: tuple[str, ...] = ("ppo", "rloo", "grpo", "reinforce")
    """Algorithms (:func:`~agents.bench.adapters.bench_algorithms`); "base" evaluates the untrained model as a baseline."""
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
    eval_temperature: float = 1.0
    """Temperature of the second, sampled evaluation on the same prompts (seeded by the run's seed; the grid-wide top_k / top_p apply); 0 = greedy evaluation only."""
    save_every: int = 0
    """Checkpoint every this many iterations so an interrupted run continues (0 = never)."""
    save_policy: bool = False
    """Keep the trained policy (Hugging Face format) in ``<run>/policy``."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra config options: {"*": {...}} for every algorithm that has them, {"ppo": {...}} for one."""
    progress: bool = True
    """Show progress."""

    def __post_init__(self) -> None:
        self.algos, self.tasks, self.seeds = tuple(self.algos), tuple(self.tasks), tuple(self.seeds)
        for name in ("algos", "tasks", "seeds"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        valid_algos = bench_algorithms()
        unknown = [a for a in self.algos if a not in valid_algos]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; valid: {', '.join(valid_algos)}")
        from textgym.tasks import list_tasks

        bad_tasks = [t for t in self.tasks if t not in list_tasks()]
        if bad_tasks:
            raise ValueError(f"unknown task(s) {bad_tasks}; valid: {', '.join(list_tasks())}")
        if len(set(self.seeds)) != len(self.seeds) or any(
            not isinstance(s, int) or s < 0 for s in self.seeds
        ):
            raise ValueError(f"seeds must be distinct ints >= 0, got {list(self.seeds)}")
        check_ints(self, ("budget_tokens", "save_every"), 0)
        check_real(self, "budget_seconds", 0)
        check_real(self, "eval_temperature", 0)
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
            unknown = sorted(set(self.options.get(algo, {})) - set(valid))
            if unknown:
                raise ValueError(
                    f"unknown option(s) {unknown} for {algo}; valid options: {', '.join(valid)}"
                )
        # A grid-wide option applies to the algorithms that have it (top_k to the samplers,
        # not to sft); one that none of them has is a typo.
        shared = set(self.options.get("*", {}))
        unknown = sorted(shared - {n for algo in self.algos for n in option_names(algo)})
        if unknown:
            valid = sorted({n for algo in self.algos for n in option_names(algo)})
            raise ValueError(
                f"unknown option(s) {unknown} for {', '.join(self.algos)}; valid options: "
                + ", ".join(valid)
            )

    def algo_options(self, algo: str) -> dict[str, Any]:
        """The extra config options of ``algo``: the grid-wide ones it has, then its own."""
        valid = set(option_names(algo))
        shared = {k: v for k, v in self.options.get("*", {}).items() if k in valid}
        return {**shared, **self.options.get(algo, {})}

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


INT_OPTIONS = ("batch_size", "max_prompt_tokens", "max_new_tokens", "eval_prompts",
                "eval_batch_size", "save_every")  # fmt: skip
"""The integer settings of a grid, each a ``--name`` option of ``textgym bench``."""


def bench_command(bench: BenchConfig) -> str:
    """The ``textgym bench`` command line that reproduces ``bench`` (every setting explicit).

    >>> print(bench_command(BenchConfig(algos=("ppo",), tasks=("keywords",), seeds=(0, 1),
    ...                                 budget_tokens=512, options={"ppo": {"kl_coef": 0.1}})))
    textgym bench --algos ppo --tasks keywords --seeds 0,1 --budget-tokens 512 --budget-seconds 0 --model smollm2-135m --device auto --out runs/bench --batch-size 16 --max-prompt-tokens 256 --max-new-tokens 48 --eval-prompts 64 --eval-batch-size 16 --save-every 0 --eval-temperature 1 --set ppo.kl_coef=0.1
    """
    b = bench
    parts = ["textgym bench", f"--algos {','.join(b.algos)}", f"--tasks {','.join(b.tasks)}",
             f"--seeds {','.join(map(str, b.seeds))}{',' if len(b.seeds) == 1 else ''}", f"--budget-tokens {b.budget_tokens}",
             f"--budget-seconds {b.budget_seconds:g}", f"--model {b.model}"]  # fmt: skip
    if b.tokenizer:
        parts.append(f"--tokenizer {b.tokenizer}")
    parts.append(f"--device {b.device} --out {b.out_dir}")
    for name in INT_OPTIONS:
        parts.append(f"--{name.replace('_', '-')} {getattr(b, name)}")
    parts.append(f"--eval-temperature {b.eval_temperature:g}")
    if b.save_policy:
        parts.append("--save-policy")
    for algo, options in b.options.items():
        for key, value in options.items():
            prefix = "" if algo == "*" else f"{algo}."
            parts.append(shlex.quote(f"{prefix}{key}={json.dumps(value)}").join(["--set ", ""]))
    return " ".join(parts)


__all__ = ["INT_OPTIONS", "BenchConfig", "RunSpec", "bench_command"]
