"""Bad training input ends in one line naming the value and what is allowed, never in NaN weights
or a traceback (issue 17, items 11-12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import Trainer, TrainingStopped, make_config
from agents.checkpoint import latest_checkpoint
from textgym import cli

ROOT = Path(__file__).resolve().parents[1]
BASE = ["train", "--model", "tiny", "--batch-size", "2", "--max-new-tokens", "2", "--iterations",
        "1", "--eval-every", "0", "--no-progress", "--report-to", "none"]  # fmt: skip

NOT_CALLABLE = 5
"""A module attribute that is not a reward (``--reward tests.test_bad_input:NOT_CALLABLE``)."""


@pytest.mark.parametrize(
    "options, message",
    [
        (["--learning-rate", "inf"], "learning_rate must be a finite number > 0, got inf"),
        (["--learning-rate", "0"], "learning_rate must be a finite number > 0, got 0.0"),
        (["--kl-coef", "nan"], "kl_coef must be a finite number >= 0, got nan"),
        (["--max-grad-norm", "-1"], "max_grad_norm must be a finite number >= 0, got -1.0"),
        (["--top-p", "1.5"], "top_p must be a finite number in (0, 1], got 1.5"),
        (["--temperature", "0"], "temperature must be a finite number > 0, got 0.0"),
        (["--max-abs-reward", "inf"], "max_abs_reward must be a finite number > 0, got inf"),
        (["--algo", "ppo", "--gamma", "2"], "gamma must be a finite number in [0, 1], got 2.0"),
        (["--seed", "-1"], "seed must be an int >= 0, got -1"),
        (["--seed", str(2**32)], "seed must be an int from 0 to 2**32 - 1, got 4294967296"),
        (["--max-prompt-tokens", "1"], "max_prompt_tokens must be an int >= 32, got 1"),
        (["--split", "nosuch"], "split must be one of ['train', 'validation', 'test'], got 'nosuch'"),
        (["--task", "nosuch"], "unknown task 'nosuch'; registered tasks: "),
        (["--reward", "tests.test_bad_input:NOT_CALLABLE"], "reward 'tests.test_bad_input:NOT_CALLABLE' is not callable"),
        (["--reward", "tests.test_bad_input:nosuch"], "cannot import 'nosuch' from module 'tests.test_bad_input'"),
        (["--model", "/nonexistent/model"], "cannot load tokenizer '/nonexistent/model': no such directory; give a local directory, a Hugging Face hub id"),
        (["--tokenizer", "/nonexistent/tok"], "cannot load tokenizer '/nonexistent/tok': no such directory"),
    ],
)  # fmt: skip
def test_each_bad_option_is_one_line_with_exit_2(tmp_path, capsys, options, message):
    assert cli.main([*BASE, "--run-dir", str(tmp_path / "run"), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("textgym train: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "policy").exists()  # nothing was trained or saved


def test_a_saved_model_directory_that_holds_no_model_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        cli.main([*BASE, "--run-dir", str(tmp_path / "run"), "--model", str(tmp_path / "empty")])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'} is not a saved tokenizer" in err and err.count("\n") == 1


def test_an_unreachable_hub_id_is_one_line_in_a_fresh_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # fail at once instead of retrying the network
    proc = subprocess.run(
        [sys.executable, "-m", "textgym.cli", *BASE, "--run-dir", str(tmp_path), "--tokenizer", "nosuch"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("textgym train: error: cannot load tokenizer 'nosuch': not a local "
                           "directory, and the hub could not provide it")  # fmt: skip
    assert "Traceback" not in proc.stderr


def test_resume_hint_only_when_a_checkpoint_exists(tmp_path):
    def fails(prompts, completions, references=None, **meta):
        raise ConnectionError("down")

    config = make_config("ppo", **_tiny(tmp_path, iterations=2, save_every=1))
    with pytest.raises(TrainingStopped) as info:
        Trainer(config, reward=fails).train()
    assert "no checkpoint was written yet; start again without --resume" in str(info.value)
    assert "continue with" not in str(info.value)


def _tiny(run_dir: Path, **options):
    return {"model": "tiny", "task": "keywords", "batch_size": 4, "max_new_tokens": 4,
            "top_k": 8, "eval_every": 0, "save_every": 0, "progress": False,
            "report_to": "none", "run_dir": str(run_dir), **options}  # fmt: skip


def _constant(value: float):
    def reward(prompts, completions, references=None, **meta):
        return np.full(len(completions), value, dtype=np.float32)

    return reward


def test_a_huge_reward_stops_the_run_before_any_update(tmp_path):
    trainer = Trainer(make_config("grpo", **_tiny(tmp_path, iterations=3)), reward=_constant(1e30))
    before = [p.detach().clone() for p in trainer.params]
    with pytest.raises(
        TrainingStopped, match=r"a reward of magnitude 1e\+30 exceeds max_abs_reward=1e\+06"
    ):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_weights_and_the_last_checkpoint(tmp_path):
    # Rewards of 1e30 are let through (max_abs_reward above them): PPO's value loss overflows.
    config = make_config("ppo", **_tiny(tmp_path, iterations=4, save_every=1, max_abs_reward=1e38))
    calls = {"n": 0}

    def late_huge(prompts, completions, references=None, **meta):
        calls["n"] += 1
        return np.full(len(completions), 1e30 if calls["n"] >= 3 else 0.5, dtype=np.float32)

    trainer = Trainer(config, reward=late_huge)
    with pytest.raises(TrainingStopped) as info:
        trainer.train()
    message = str(info.value)
    assert "iteration 3: FloatingPointError: non-finite loss" in message
    assert "the weights were not updated" in message
    assert "iter_000002 is intact; continue with resume=True / --resume" in message
    assert latest_checkpoint(tmp_path).name == "iter_000002"
    assert all(torch.isfinite(p).all() for p in trainer.params)


def test_a_finite_run_is_unchanged_by_the_checks(tmp_path):
    """The finiteness check clips with max_norm=inf when clipping is off: grads are untouched."""
    rows = Trainer(make_config("ppo", **_tiny(tmp_path, iterations=2, max_grad_norm=0))).train()
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all("train/grad_norm" not in r or np.isfinite(r["train/grad_norm"]) for r in rows)


# -- data files (issue 17, item 13) -----------------------------------------------------------

GOOD = '{"document": "A text.", "summary": "Short."}\n'


@pytest.mark.parametrize(
    "content, message",
    [
        (GOOD.encode() + '{"document": "Café.", "summary": "x"}\n'.encode("latin-1"),
         r"train\.jsonl line 2: has byte 0xe9 at column 18, which is not UTF-8 \(a Latin-1"),
        (GOOD.encode("utf-16"), r"train\.jsonl line 1: is UTF-16 \(it starts with a UTF-16 byte-order mark\); save it as UTF-8"),
        (GOOD.encode() + b"[" * 30000 + b"\n", r"train\.jsonl line 2: is JSON nested too deeply to read"),
        (b'{"document": "A text.", "summary": NaN}\n',
         r"train\.jsonl line 1: field 'summary' is NaN, not a finite number"),
        (b'{"document": "A text.", "summary": "x", "id": Infinity}\n',
         r"train\.jsonl line 1: field 'id' is Infinity, not a finite number"),
        (GOOD.encode() + b"{oops\n", r"train\.jsonl line 2: is not JSON \(Expecting property name"),
    ],
)  # fmt: skip
def test_bad_data_files_name_the_file_and_line(tmp_path, content, message):
    from textgym.tasks import make_task
    from textgym.tasks.datasets import DataFormatError

    (tmp_path / "train.jsonl").write_bytes(content)
    with pytest.raises(DataFormatError, match=message):
        make_task("xsum", path=tmp_path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    from textgym.tasks import make_task

    (tmp_path / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + GOOD.encode() * 3)
    assert make_task("xsum", path=tmp_path).split("train")[0].references == ("Short.",)


def test_a_json_file_that_is_not_utf8_is_named(tmp_path):
    from textgym.tasks.datasets import DataFormatError
    from textgym.tasks.datasets.records import read_records

    path = tmp_path / "data.json"
    path.write_bytes('[{"text": "Ça"}]'.encode("latin-1"))
    with pytest.raises(
        DataFormatError, match=r"data\.json line 1: has byte 0xc7 at column 12, which is not UTF-8"
    ):
        list(read_records(path))
