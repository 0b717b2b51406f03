"""``textgym bench``: the command line of a grid, and the command that reproduces one."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from agents.bench.adapters import bench_algorithms
from agents.bench.config import INT_OPTIONS, BenchConfig
from agents.bench.grid import run_grid
from agents.config_file import coerce_fields, read_config_file


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
    # Defaults are None: what is unset comes from --config FILE, then from BenchConfig.
    p.add_argument("--config", metavar="FILE",
                   help="YAML or TOML file of grid settings (BenchConfig fields); the options "
                        "below override it")  # fmt: skip
    p.add_argument("--algos", help=f"comma-separated (default: {','.join(d['algos'].default)}); "
                   f"valid: {', '.join(bench_algorithms())}")  # fmt: skip
    p.add_argument("--tasks", help="comma-separated task names (default: dialogsum,taskmaster4)")
    p.add_argument(
        "--seeds", help="a count (3 = 0,1,2) or a list (0,5,7; seed 1 alone: 1,); default 3"
    )
    p.add_argument("--budget-tokens", type=int,
                   help=f"environment tokens per run (0 = no limit; default {d['budget_tokens'].default})")  # fmt: skip
    p.add_argument("--budget-seconds", type=float,
                   help="training seconds per run (0 = no limit, the default)")  # fmt: skip
    p.add_argument("--model", help=f"default {d['model'].default}")
    p.add_argument("--tokenizer")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--out", dest="out_dir", help=f"output directory (default {d['out_dir'].default})"
    )
    for name in INT_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {d[name].default}")
    p.add_argument("--eval-temperature", type=float,
                   help="temperature of the second, sampled evaluation (0 = greedy only; "
                        f"default {d['eval_temperature'].default})")  # fmt: skip
    p.add_argument("--save-policy", action="store_true", default=None,
                   help="keep each trained policy")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="[ALGO.]KEY=VALUE",
                   help="config option for every algorithm (or ALGO's only); repeatable")  # fmt: skip
    p.add_argument("--no-report", action="store_true", help="skip writing OUT/report.md")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_main)


def _as_tuple(value: Any, parse: Any) -> Any:
    """A comma-separated string (command line, or a file) through ``parse``; lists as given."""
    return parse(value) if isinstance(value, str) else value


def bench_config(args: argparse.Namespace) -> BenchConfig:
    """The grid: BenchConfig's defaults, then ``--config FILE``, then the command line."""
    settings = read_config_file(args.config) if args.config else {}
    settings = coerce_fields(BenchConfig, settings, f"config file {args.config}")
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(BenchConfig)
        if getattr(args, f.name, None) is not None
    }
    settings.update(given)
    if "seeds" in settings:
        seeds = settings["seeds"]
        settings["seeds"] = parse_seeds(str(seeds)) if isinstance(seeds, (str, int)) else seeds
    for name in ("algos", "tasks"):
        if name in settings:
            settings[name] = _as_tuple(settings[name], _csv)
    options = settings.get("options", {})
    for algo, values in parse_options(args.set).items():  # --set adds to the file's options
        options[algo] = {**options.get(algo, {}), **values}
    settings["options"] = options
    if args.quiet:
        settings["progress"] = False
    return BenchConfig(**settings)


def _main(args: argparse.Namespace) -> int:
    try:
        bench = bench_config(args)
    except (ValueError, TypeError) as exc:
        print(f"textgym bench: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    run_grid(bench)
    print(f"bench finished in {time.perf_counter() - start:.0f} s: {bench.out_dir}/results.csv")
    if not args.no_report:
        from agents.report import write_report

        print(f"report: {write_report(bench.out_dir)}")
    return 0


__all__ = ["add_parser", "bench_config", "parse_options", "parse_seeds"]
