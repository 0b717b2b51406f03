"""``textgym train --config`` and ``textgym bench --config``: YAML and TOML files, command-line
overrides, refused keys, and the shipped examples/configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agents.bench.cli import bench_config
from agents.cli import config_from_args
from agents.config_file import ConfigFileError, read_config_file
from textgym import cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs"


def _train_args(*argv: str):
    return cli.build_parser(["train"]).parse_args(["train", *argv])


def _bench_args(*argv: str):
    return cli.build_parser(["bench"]).parse_args(["bench", *argv])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_run_config_builds_its_algorithms_config(path):
    args = _train_args("--config", str(path))
    config = config_from_args(args, {})
    algo, task = path.stem.split("-", 1)
    assert (args.algo, config.algo, config.task) == (algo, algo, task)
    assert config.run_dir == f"runs/{path.stem}"
    assert config.learning_rate == float(read_config_file(path)["learning_rate"])


def test_the_shipped_grid_config_builds_its_grid():
    bench = bench_config(_bench_args("--config", str(CONFIGS / "bench-dialogsum.toml")))
    assert bench.algos == ("base", "ppo", "rloo", "grpo", "reinforce")
    assert bench.seeds == (0, 1) and bench.budget_tokens == 384
    assert bench.algo_options("grpo") == {"learning_rate": 5e-5}


def test_the_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algo: grpo\nlearning-rate: 1e-5\nbatch_size: 8\ntop_k: 8\n")
    config = config_from_args(_train_args("--config", str(path), "--batch-size", "4"), {})
    # YAML 1.1 reads 1e-5 as a string; the float field converts it
    assert (config.algo, config.learning_rate, config.batch_size, config.top_k) == (
        "grpo",
        1e-5,
        4,
        8,
    )
    config = config_from_args(_train_args("--config", str(path), "--algo", "rloo"), {})
    assert config.algo == "rloo" and config.learning_rate == 1e-5


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("run.yaml", "algo: ppo\nlr: 0.1\n", r"config file .*run\.yaml \(algo ppo\): unknown key\(s\) \['lr'\]; valid keys: model, tokenizer, task"),
        ("run.yaml", "algo: a2c\n", r"unknown algo 'a2c'; valid: ppo, rloo, grpo, reinforce, sft, dpo"),
        ("run.yaml", "algo: sft\ntop_k: 5\n", r"\(algo sft\): unknown key\(s\) \['top_k'\]"),
        ("run.yaml", "learning_rate: fast\n", r"learning_rate must be a number, got 'fast'"),
        ("run.yaml", "- a\n- b\n", r"expected a mapping of option names to values, got list"),
        ("run.yaml", "algo: [ppo\n", r"run\.yaml: not valid YAML"),
        ("run.toml", "algo = \n", r"run\.toml: not valid TOML"),
        ("run.json", "{}", r"run\.json: use a \.yaml, \.yml, \.toml file"),
        ("run.yaml", "learning_rate: .inf\n", r"learning_rate must be a finite number > 0, got inf"),
    ],
)  # fmt: skip
def test_bad_config_files_are_one_line_with_exit_2(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    assert cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("textgym train: error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_a_missing_config_file_is_named(tmp_path, capsys):
    assert cli.main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read it" in capsys.readouterr().err


def test_train_runs_from_a_toml_file(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(
        'algo = "rloo"\nmodel = "tiny"\nbatch-size = 4\nmax-new-tokens = 3\ntop-k = 8\n'
        f'iterations = 1\neval-every = 0\nprogress = false\nreport-to = "none"\nrun-dir = "{tmp_path / "run"}"\n'
    )
    assert cli.main(["train", "--config", str(path)]) == 0
    assert '"algo": "rloo"' in (tmp_path / "run" / "config.json").read_text()


def test_bench_file_and_command_line(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "algos: ppo,grpo\ntasks: [keywords]\nseeds: 2\nmodel: tiny\nbudget_tokens: 64\n"
        "options:\n  ppo: {kl_coef: 0.1}\n"
    )
    bench = bench_config(
        _bench_args("--config", str(path), "--seeds", "5,", "--set", "ppo.top_k=8")
    )
    assert bench.algos == ("ppo", "grpo") and bench.tasks == ("keywords",)
    assert bench.seeds == (5,) and bench.model == "tiny"
    assert bench.algo_options("ppo") == {"kl_coef": 0.1, "top_k": 8}
    path.write_text("algos: ppo\nbudget: 5\n")
    with pytest.raises(
        ConfigFileError, match=r"unknown key\(s\) \['budget'\]; valid keys: algos, tasks, seeds"
    ):
        bench_config(_bench_args("--config", str(path)))


def test_bench_numbers_are_validated(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("algos: ppo\ntasks: keywords\nbudget_seconds: .nan\n")
    with pytest.raises(ValueError, match="budget_seconds must be a finite number >= 0, got nan"):
        bench_config(_bench_args("--config", str(path)))
    with pytest.raises(ValueError, match="budget_tokens must be an int >= 0, got -5"):
        bench_config(
            _bench_args("--config", str(path), "--budget-tokens", "-5", "--budget-seconds", "1")
        )
