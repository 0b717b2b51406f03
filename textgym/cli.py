"""The ``textgym`` command line. Each subcommand lives with the code it drives.

Subcommands are entry points of the group :data:`ENTRY_POINT_GROUP` (``textgym.commands``),
so a package adds commands by declaring them in its own metadata, as ``agents`` does for
``train``, ``demo``, ``bench``, ``report`` and ``eval`` in this project's ``pyproject.toml``::

    [project.entry-points."textgym.commands"]
    mycommand = "my_package.cli:add_parser"

The entry point is a function that receives argparse's subparsers object, adds its parser and
sets ``func(args) -> int``. Only the requested command's module is imported, so ``textgym
COMMAND`` does not pay for the others; ``--help`` and unknown commands load all of them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points

ENTRY_POINT_GROUP = "textgym.commands"

AddParser = Callable[[argparse._SubParsersAction], None]
"""What a command's entry point is: adds its subparser and sets ``func``."""


class CommandLoadError(RuntimeError):
    """A subcommand's entry point could not be imported or is not callable."""


def discover_commands() -> dict[str, EntryPoint]:
    """Subcommand name -> its entry point, from every installed package (first one wins)."""
    commands: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        commands.setdefault(ep.name, ep)
    return commands


def load_command(ep: EntryPoint) -> AddParser:
    """The parser-adding function behind ``ep``, or :class:`CommandLoadError` saying why not."""
    try:
        add_parser = ep.load()
    except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
        raise CommandLoadError(
            f"textgym command {ep.name!r} could not be loaded from {ep.value!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(add_parser):
        raise CommandLoadError(f"textgym command {ep.name!r}: {ep.value!r} is not callable")
    return add_parser


def add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="list registered tasks and rewards")
    parser.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    import textgym

    print("tasks:  ", ", ".join(textgym.list_tasks()))
    print("rewards:", ", ".join(textgym.list_rewards()))
    return 0


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser with ``commands`` (default: every discovered one) as subcommands.

    A command named in ``commands`` that fails to load raises :class:`CommandLoadError`; when
    listing every command, a broken one is skipped with a warning so the others stay usable.
    """
    parser = argparse.ArgumentParser(
        prog="textgym", description="Token-level text generation as a Gymnasium env."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    available = discover_commands()
    for name in commands if commands is not None else available:
        try:
            add_parser = load_command(available[name])
        except CommandLoadError as exc:
            if commands is not None:
                raise
            print(f"warning: {exc}", file=sys.stderr)
            continue
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the requested command's module; --help and unknown commands list all of them.
    wanted = [argv[0]] if argv and argv[0] in discover_commands() else None
    try:
        parser = build_parser(wanted)
    except CommandLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
