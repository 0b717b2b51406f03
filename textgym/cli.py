"""The ``textgym`` command line. Each subcommand lives with the code it drives.

``COMMANDS`` maps a subcommand to ``"module:function"``; the function receives argparse's
subparsers object, adds its parser and sets ``func(args) -> int``. Modules are imported only
when their command runs, so ``textgym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "info": "textgym.cli:add_info_parser",
    "train": "agents.cli:add_train_parser",
    "demo": "agents.cli:add_demo_parser",
    "feedback": "textgym.feedback.cli:add_parser",
    "bench": "agents.bench:add_parser",
    "report": "agents.report:add_parser",
}


def add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="list registered tasks and rewards")
    parser.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    import textgym

    print("tasks:  ", ", ".join(textgym.list_tasks()))
    print("rewards:", ", ".join(textgym.list_rewards()))
    return 0


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textgym", description="Token-level text generation as a Gymnasium env."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands if commands is not None else COMMANDS:
        module_name, _, function = COMMANDS[name].partition(":")
        getattr(importlib.import_module(module_name), function)(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the requested command's module; --help and unknown commands list all of them.
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else None
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
