"""What the bench records: each run's environment, ``result.json`` files and ``results.csv``."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from agents.tracking import atomic_write


def environment_info(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and code revision, recorded with every run."""
    import gymnasium
    import numpy
    import transformers

    import textgym

    versions = {
        "python": platform.python_version(),
        "textgym": textgym.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
    }
    for name in ("stable_baselines3", "sb3_contrib", "peft"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{platform.processor() or platform.machine()} CPU"
    info: dict[str, Any] = {
        "versions": versions,
        "device": str(device),
        "hardware": hardware,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    return info


def run_dir(out_dir: str | Path, task: str, algo: str, seed: int) -> Path:
    return Path(out_dir) / task / algo / f"seed{seed}"


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's ``result.json`` under ``out_dir``, in (task, algo, seed) order."""
    results = [json.loads(p.read_text()) for p in Path(out_dir).glob("*/*/seed*/result.json")]
    return sorted(results, key=lambda r: (r["task"], r["algo"], r["seed"]))


def write_csv(path: Path, rows: Sequence[dict[str, Any]], empty_header: Sequence[str] = ()) -> None:
    """Atomically write ``rows`` as CSV; columns in order of first appearance."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys or list(empty_header))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def write_results_csv(out_dir: str | Path) -> Path:
    """``results.csv``: one row per finished run (its budget use and eval metrics)."""
    rows = []
    for r in load_results(out_dir):
        row = {"task": r["task"], "algo": r["algo"], "seed": r["seed"], "tokens": r["tokens"],
               "train_seconds": r["train_seconds"], "eval_seconds": r["eval_seconds"],
               "device": r["env"]["device"]}  # fmt: skip
        row.update(r["metrics"])
        rows.append(row)
    path = Path(out_dir) / "results.csv"
    write_csv(path, rows, ["task", "algo", "seed", "tokens"])
    return path


__all__ = ["environment_info", "load_results", "run_dir", "write_csv", "write_results_csv"]
