"""The layers hold: textgym stands alone, imports stay light, rewards load lazily, and the
command line finds its subcommands through entry points."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import textgym
from textgym import cli
from textgym.rewards.base import BUILTIN_REWARDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "textgym"
HEAVY = ("agents", "torch", "sqlite3")


def fresh_modules(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; report which of :data:`HEAVY` (and the lazy
    reward families) it left in ``sys.modules``."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        "names = {m.split('.')[0] for m in sys.modules} | set(sys.modules)\n"
        f"watched = {list(HEAVY)!r} + ['textgym.rewards.judge', 'textgym.rewards.safety',"
        " 'textgym.feedback.store', 'textgym.feedback.reward_model']\n"
        "print(json.dumps({m: m in names for m in watched}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_textgym_loads_no_agents_torch_sqlite_or_reward_families():
    loaded = fresh_modules("import textgym")
    assert not any(loaded.values()), {m for m, yes in loaded.items() if yes}


def test_gym_make_loads_no_agents_torch_or_sqlite(tokenizer):
    # The tokenizer fixture has written the SmolLM2 cache, which a first use converts with torch.
    loaded = fresh_modules(
        "import gymnasium as gym, textgym\n"
        "env = gym.make('TextGen-v0')\n"
        "env.reset(seed=0)\n"
        "env.step(env.action_space.sample())"
    )
    assert not any(loaded.values()), {m for m, yes in loaded.items() if yes}


def test_list_rewards_names_lazy_families_without_importing_them():
    loaded = fresh_modules(
        "import textgym\n"
        "names = textgym.list_rewards()\n"
        "assert {'judge', 'safety', 'human', 'reward_model', 'rouge_l'} <= set(names), names"
    )
    assert not any(loaded.values()), {m for m, yes in loaded.items() if yes}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_file_under_textgym_imports_agents():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imports(ast.parse(path.read_text())) if m.split(".")[0] == "agents"
        )
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) > 20  # the scan saw the package


def _registered_in_source() -> dict[str, str]:
    """Every ``register_reward("name", ...)`` call under textgym/ -> the module making it."""
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "register_reward"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found[node.args[0].value] = module
    return found


def test_builtin_table_names_every_registered_reward_and_its_module():
    in_source = _registered_in_source()
    assert set(in_source) == set(BUILTIN_REWARDS)
    for name, module in in_source.items():
        table = BUILTIN_REWARDS[name]
        assert module == table or module.startswith(table + "."), (name, module, table)


def test_importing_each_family_registers_exactly_the_table():
    code = (
        "import importlib, json\n"
        "from textgym.rewards import base\n"
        "for module in sorted(set(base.BUILTIN_REWARDS.values())):\n"
        "    importlib.import_module(module)\n"
        "print(json.dumps({k: v.__module__ for k, v in base._REWARDS.items()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    registered = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(registered) == set(BUILTIN_REWARDS)
    for name, module in registered.items():
        table = BUILTIN_REWARDS[name]
        assert module == table or module.startswith(table + "."), (name, module, table)


def test_a_family_loads_on_first_build_and_keeps_a_users_earlier_override():
    code = (
        "import sys\n"
        "from textgym.rewards import make_reward, register_reward\n"
        "mine = lambda **kw: 'mine'\n"
        "register_reward('bleu', mine)\n"
        "assert 'textgym.rewards.metrics' not in sys.modules\n"
        "assert type(make_reward('rouge_l')).__name__ == 'Rouge'\n"
        "assert 'textgym.rewards.metrics' in sys.modules\n"
        "assert make_reward('bleu') == 'mine'\n"
        "assert type(make_reward('chrf')).__name__ == 'Chrf'\n"
        "print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "ok"


def test_package_attributes_import_their_family_on_first_access():
    from textgym.feedback.store import FeedbackStore
    from textgym.rewards.judge import JudgeReward
    from textgym.rewards.metrics import Rouge

    assert textgym.rewards.JudgeReward is JudgeReward
    assert textgym.rewards.Rouge is Rouge
    assert textgym.feedback.FeedbackStore is FeedbackStore
    assert "JudgeReward" in dir(textgym.rewards) and "FeedbackStore" in dir(textgym.feedback)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = textgym.rewards.Nope
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = textgym.feedback.Nope


def test_train_help_still_works_through_the_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "textgym.cli", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: textgym train" in out.stdout and "--algo" in out.stdout


def add_hello_parser(subparsers: argparse._SubParsersAction) -> None:
    """A third-party command: ``textgym hello NAME``."""
    parser = subparsers.add_parser("hello", help="greet")
    parser.add_argument("name")
    parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)


def _with_extra(monkeypatch, *extra: EntryPoint) -> None:
    real = list(cli.entry_points(group=cli.ENTRY_POINT_GROUP))
    monkeypatch.setattr(cli, "entry_points", lambda group: [*real, *extra])


def test_a_third_party_entry_point_adds_a_command(monkeypatch, capsys):
    hello = EntryPoint("hello", f"{__name__}:add_hello_parser", cli.ENTRY_POINT_GROUP)
    _with_extra(monkeypatch, hello)
    assert cli.main(["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello world\n"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "hello" in capsys.readouterr().out


def test_a_broken_entry_point_fails_clearly_and_spares_the_others(monkeypatch, capsys):
    broken = EntryPoint("broken", "no_such_package.cli:add_parser", cli.ENTRY_POINT_GROUP)
    _with_extra(monkeypatch, broken)
    assert cli.main(["broken"]) == 2
    err = capsys.readouterr().err
    assert (
        "textgym command 'broken' could not be loaded from 'no_such_package.cli:add_parser'" in err
    )
    assert "ModuleNotFoundError" in err
    assert cli.main(["info"]) == 0  # other commands still run
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    captured = capsys.readouterr()
    assert "warning: textgym command 'broken'" in captured.err and "feedback" in captured.out
