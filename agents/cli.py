"""``textgym train`` and ``textgym demo``: the trainer from the command line.

Every field of the algorithm's config dataclass is an option (``--batch-size 16``); booleans
take ``--x`` / ``--no-x``. The help text of each option is the field's docstring.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import typing
from collections.abc import Sequence
from typing import Any

from agents.config import TrainConfig, field_docs
from agents.config_file import ConfigFileError, coerce_fields, read_config_file

DEMO_DEFAULTS: dict[str, Any] = {
    # SmolLM2-135M-Instruct with PPO on the keywords task; about 6-8 minutes on 2 CPU cores.
    "model": "smollm2-135m",
    "task": "keywords",
    "batch_size": 16,
    "max_new_tokens": 24,
    "iterations": 12,
    "learning_rate": 2e-5,
    "top_k": 50,
    "num_epochs": 1,
    "num_minibatches": 2,
    "kl_coef": 0.02,
    "eval_every": 6,
    "eval_samples": 8,
    "save_every": 6,
    "device": "cpu",
    "run_dir": "runs/demo-ppo-keywords",
}


def _algorithms() -> dict[str, type]:
    """Algorithm name -> config class, for every row of :mod:`agents.registry`."""
    from agents import registry

    return {name: registry.entry(name).config for name in registry.names()}


def _all_fields() -> dict[str, dataclasses.Field[Any]]:
    fields: dict[str, dataclasses.Field[Any]] = {}
    for cls in _algorithms().values():
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, f)
    return fields


def _valid_options(algo: str) -> list[str]:
    cls = _algorithms()[algo]
    return ["--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)]


class _OptionsParser(argparse.ArgumentParser):
    """Rejects unknown options itself so that the error lists the valid ones."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            algo = getattr(ns, "algo", None) or "ppo"
            self.error(
                f"unknown option(s) {' '.join(extras)}; valid options for {algo}: "
                + ", ".join(_valid_options(algo) + ["--resume"])
            )
        return ns, extras


def _arg_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    return {"int": int, "float": float, "str": str, "bool": bool}.get(
        getattr(base, "__name__", str(base)), str
    )


def _add_config_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """One option per config field (union over algorithms); unset options are not passed."""
    docs: dict[str, str] = {}
    for cls in _algorithms().values():
        docs.update(field_docs(cls))
    hints: dict[str, Any] = {}
    for cls in _algorithms().values():
        hints.update(typing.get_type_hints(cls))
    group = parser.add_argument_group("training options (fields of the algorithm's config)")
    for name in _all_fields():
        flag = "--" + name.replace("_", "-")
        kind = _arg_type(hints[name])
        help_text = docs.get(name, "")
        if name in defaults:
            help_text += f" [demo default: {defaults[name]}]"
        help_text = help_text.replace("%", "%%")
        if kind is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            group.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def _add_parser(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse.ArgumentParser:
    previous = subparsers._parser_class
    subparsers._parser_class = _OptionsParser
    try:
        # No prefix matching: a typo must not silently select a neighbouring option.
        return subparsers.add_parser(
            name, help=help_text, description=help_text, allow_abbrev=False
        )
    finally:
        subparsers._parser_class = previous


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _add_parser(
        subparsers,
        "train",
        "train a language model policy on a task with PPO, RLOO, GRPO, REINFORCE, SFT or DPO",
    )
    parser.add_argument(
        "--algo",
        default=None,
        choices=list(_algorithms()),
        help="training algorithm (default: the config file's algo, else ppo)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its latest checkpoint",
    )
    _add_config_file_option(parser)
    _add_config_options(parser, {})
    parser.set_defaults(func=_train)


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = _add_parser(
        subparsers,
        "demo",
        "train SmolLM2-135M-Instruct with PPO on the keywords task on CPU (offline, < 10 min)",
    )
    parser.add_argument("--algo", default=None, choices=list(_algorithms()), help="algorithm")
    parser.add_argument("--resume", action="store_true", help="continue the demo run")
    _add_config_file_option(parser)
    _add_config_options(parser, DEMO_DEFAULTS)
    parser.set_defaults(func=_demo)


def _add_config_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or TOML file of options (and algo); options on the command line override it; "
        "examples/configs/ has one per algorithm and task",
    )


def _options(
    args: argparse.Namespace, defaults: dict[str, Any], from_file: dict[str, Any]
) -> dict[str, Any]:
    """The config options: ``defaults``, then the config file's, then the command line's."""
    cls = _algorithms()[args.algo]
    valid = {f.name for f in dataclasses.fields(cls)}
    from_file = coerce_fields(cls, from_file, f"config file {args.config} (algo {args.algo})")
    given = {
        name: value for name in _all_fields() if (value := getattr(args, name, None)) is not None
    }
    unknown = sorted(set(given) - valid)
    if unknown:
        raise SystemExit(
            f"textgym {args.command}: option(s) {['--' + u.replace('_', '-') for u in unknown]} "
            f"do not apply to {args.algo}; valid options: {', '.join(_valid_options(args.algo))}"
        )
    return {**{k: v for k, v in defaults.items() if k in valid}, **from_file, **given}


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any]) -> TrainConfig:
    """The run's config: ``defaults``, then ``--config FILE``, then the command line; sets
    ``args.algo`` (the command line's, else the file's, else ppo)."""
    from agents.registry import make_config

    from_file = read_config_file(args.config) if args.config else {}
    file_algo = from_file.pop("algo", None)
    if file_algo is not None and file_algo not in _algorithms():
        raise ConfigFileError(
            f"config file {args.config}: unknown algo {file_algo!r}; valid: "
            + ", ".join(_algorithms())
        )
    args.algo = args.algo or file_algo or "ppo"
    return make_config(args.algo, **_options(args, defaults, from_file))


def _run(args: argparse.Namespace, defaults: dict[str, Any]) -> int:
    from agents.registry import build_trainer
    from agents.trainer import TrainingStopped

    try:
        config = config_from_args(args, defaults)
        trainer = build_trainer(config, resume=args.resume)
    except (ValueError, TypeError, OSError) as exc:  # bad options, models, rewards, run dirs
        print(f"textgym {args.command}: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        rows = trainer.train()
    except TrainingStopped as exc:
        print(f"textgym {args.command}: {exc}", file=sys.stderr)
        return 1
    key = "train/reward" if any("train/reward" in r for r in rows) else "train/loss"  # sft, dpo
    rewards = [r[key] for r in rows if key in r]
    evals = [r["eval/reward"] for r in rows if "eval/reward" in r]
    wins = [r["eval/success"] for r in rows if "eval/success" in r]  # conversation tasks
    k = max(1, min(3, len(rewards) // 3))
    print(
        f"done in {time.perf_counter() - start:.0f} s: {key} {sum(rewards[:k]) / k:.3f} "
        f"(first {k} iterations) -> {sum(rewards[-k:]) / k:.3f} (last {k})"
        + (f"; eval/reward {evals[0]:.3f} -> {evals[-1]:.3f}" if len(evals) > 1 else "")
        + (f"; eval/success {wins[0]:.3f} -> {wins[-1]:.3f}" if len(wins) > 1 else "")
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    return _run(args, {})


def _demo(args: argparse.Namespace) -> int:
    return _run(args, DEMO_DEFAULTS)
