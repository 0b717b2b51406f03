"""``textgym bench``: the command line of a grid, and the command that reproduces one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from agents.bench.adapters import bench_algorithms
from agents.bench.config import INT_OPTIONS, BenchConfig
from agents.bench.grid import run_grid


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
                   help=f"comma-separated; valid: {', '.join(bench_algorithms())}")  # fmt: skip
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
    for name in INT_OPTIONS:
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


__all__ = ["add_parser", "parse_options", "parse_seeds"]
