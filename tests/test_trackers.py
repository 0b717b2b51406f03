"""``report_to``: metrics reach accelerate's trackers (TensorBoard and trackio, both offline
here) with the values metrics.csv holds, across a resume; names are validated."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents import make_config
from agents.tracking import parse_report_to, start_trackers

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)


def csv_column(run_dir: Path, key: str) -> dict[int, float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return {int(r["iteration"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def tensorboard_scalars(run_dir: Path, key: str) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars(key)]
    assert len(steps) == len(set(steps)), f"{key} has duplicated steps {steps}"
    return {e.step: e.value for e in events.Scalars(key)}


def test_report_to_is_validated_with_the_valid_names_listed(capsys):
    assert parse_report_to(" tensorboard ,trackio,tensorboard") == ("tensorboard", "trackio")
    assert parse_report_to("none") == parse_report_to("") == ()
    with pytest.raises(ValueError, match=r"unknown tracker\(s\) \['tensorbord'\]; valid: .*mlflow"):
        make_config("ppo", report_to="tensorbord,wandb")
    with pytest.raises(ValueError, match="comma-separated string"):
        make_config("ppo", report_to=["tensorboard"])
    with pytest.raises(ValueError, match="project must be a non-empty name"):
        make_config("sft", project=" ")

    from textgym.cli import main

    assert main(["train", "--model", "tiny", "--report-to", "wandb,neptune"]) == 2
    err = capsys.readouterr().err
    assert "unknown tracker(s) ['neptune']" in err
    assert "tensorboard, trackio, wandb" in err


def test_a_tracker_that_is_not_installed_is_skipped_with_a_warning(tmp_path):
    from accelerate.tracking import get_available_trackers

    missing = {"comet_ml", "aim", "clearml", "swanlab"} - {str(t) for t in get_available_trackers()}
    if not missing:
        pytest.skip("every tracker is installed")
    name = sorted(missing)[0]
    with pytest.warns(UserWarning, match=f"tracker '{name}' is not installed"):
        assert start_trackers((name,), tmp_path, project="p", config={}) == []


# Run in a fresh interpreter: trackio reads TRACKIO_DIR (where its SQLite files go) on import.
TRAIN_TWICE_AND_READ_TRACKIO = """
import json, sys
from agents import Trainer, make_config

cfg = make_config("reinforce", model="tiny", batch_size=2, max_new_tokens=2, top_k=8,
                  iterations=4, save_every=2, eval_every=2, eval_samples=2, progress=False,
                  report_to="tensorboard,trackio", project="textgym-test", run_dir=sys.argv[1])
first = Trainer(cfg)
first.train(num_iterations=3)
first.logger.close()  # the process "died" after iteration 3; the checkpoint is iteration 2's
Trainer(cfg, resume=True).train()

from trackio.sqlite_storage import SQLiteStorage as S
print(json.dumps({"runs": S.get_runs("textgym-test"), "logs": S.get_logs("textgym-test", "run"),
                  "config": S.get_run_config("textgym-test", "run")}))
"""


def test_trackers_get_what_metrics_csv_holds_across_a_resume(tmp_path):
    """TensorBoard and trackio get the numbers metrics.csv holds, the config as hyperparameters
    and (TensorBoard) the sample tables. After a crash between checkpoints, the resumed
    TensorBoard writer purges the lost iteration, so its curves equal metrics.csv; trackio
    continues the same run and keeps both copies of that iteration, the re-run one last."""
    pytest.importorskip("trackio")
    run_dir = tmp_path / "run"
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    done = subprocess.run(
        [sys.executable, "-c", TRAIN_TWICE_AND_READ_TRACKIO, str(run_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("{")))

    rewards = csv_column(run_dir, "train/reward")
    evals = csv_column(run_dir, "eval/reward")
    assert sorted(rewards) == [1, 2, 3, 4] and sorted(evals) == [0, 2, 4]
    assert tensorboard_scalars(run_dir, "train/reward") == pytest.approx(rewards)
    assert tensorboard_scalars(run_dir, "eval/reward") == pytest.approx(evals)
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    assert "eval/samples/text_summary" in events.Tags()["tensors"]
    hparams = list((run_dir / "tb").glob("*/hparams.yml"))
    assert len(hparams) == 1 and "algo: reinforce" in hparams[0].read_text()  # not again

    assert stored["runs"] == ["run"]  # one run, continued by the resume
    steps = [r["step"] for r in stored["logs"] if "train/reward" in r]
    assert steps == [1, 2, 3, 3, 4]
    logged = {r["step"]: r["train/reward"] for r in stored["logs"] if "train/reward" in r}
    assert logged == pytest.approx(rewards)
    assert stored["config"]["algo"] == "reinforce"
    assert stored["config"]["report_to"] == "tensorboard,trackio"
