"""The `textgym` command line: the command table, help and the info command."""

from __future__ import annotations

import argparse

import pytest

from textgym import cli


def test_info_lists_tasks_and_rewards(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "keywords" in out and "dialogsum" in out and "rouge_l" in out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: textgym" in capsys.readouterr().out


def test_unknown_command_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["frobnicate"])
    assert excinfo.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_every_registered_command_resolves():
    commands = cli.discover_commands()
    assert {"info", "train", "demo", "feedback", "bench", "report", "eval"} <= commands.keys()
    for name, ep in commands.items():
        assert callable(cli.load_command(ep)), name


def test_help_texts_print_percent_signs_once():
    """argparse %-formats argument help but not descriptions: a description's ``%%`` prints
    doubled."""

    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    found = list(parsers(cli.build_parser()))
    assert len(found) > 8  # every command and its own subcommands
    for parser in found:
        assert "%%" not in parser.format_help(), parser.prog
