"""The trainers under ``accelerate launch`` with 2 CPU processes (gloo): the issue's checks."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agents import Trainer

pytest.importorskip("accelerate")
sys.path.insert(0, str(Path(__file__).parent))
from distributed_worker import worker_config  # noqa: E402

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, *args: str) -> list[dict]:
    """Two CPU processes running the worker; returns each process's report."""
    command = [
        # --multi_gpu picks accelerate's torchrun launcher (--cpu would start one process);
        # with no GPU the trainer asks accelerate for CPU processes over gloo.
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(WORKER), "--out", str(out), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)
        ]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_two_processes_train_in_step_and_resume_exactly(algo, tmp_path):
    unbroken = launch(
        tmp_path / "a", "--algo", algo, "--run-dir", str(tmp_path / "unbroken"), "--check-whiten"
    )
    rank0, rank1 = unbroken
    assert rank0["num_processes"] == rank1["num_processes"] == 2
    # DDP (through accelerate) keeps both processes' parameters bit-identical after every update.
    assert list(rank0["digests"]) == ["1", "2", "3", "4"]
    assert rank0["digests"] == rank1["digests"]
    assert len(set(rank0["digests"].values())) == 4  # and every update changed them
    # Whitening over two shards equals whitening the whole batch in one process.
    assert rank0["whiten_max_difference"] < 1e-5 and rank1["whiten_max_difference"] < 1e-5
    # Only process 0 logs: one row per iteration (and iteration 0's evaluation).
    rows = metrics(tmp_path / "unbroken")
    assert [r["iteration"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[2]["eval/reward"] != "" and (tmp_path / "unbroken" / "policy").is_dir()

    if algo != "ppo":
        return  # resume is checked once: the mechanism is the same for every algorithm
    broken = tmp_path / "broken"
    launch(tmp_path / "b", "--algo", algo, "--run-dir", str(broken), "--stop-after", "2")
    resumed = launch(tmp_path / "c", "--algo", algo, "--run-dir", str(broken), "--resume")
    assert list(resumed[0]["digests"]) == ["3", "4"]
    for rank in resumed:
        assert rank["digests"] == {k: rank0["digests"][k] for k in ("3", "4")}
    assert metrics(broken) == rows
    with pytest.raises(
        ValueError,
        match=r"written by 2 process\(es\); resume it with the same number \(this run has 1\)",
    ):
        Trainer(worker_config(algo, str(broken), 4), resume=True)
