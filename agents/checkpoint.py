"""Atomic checkpoints: a new directory per checkpoint, then a ``latest`` pointer swapped in.

A checkpoint is complete before ``latest`` names it, so killing the process at any moment
leaves the previous checkpoint loadable; older checkpoints are deleted only afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.tracking import atomic_write

LATEST = "latest"


def save_checkpoint(run_dir: Path, iteration: int, state: dict[str, Any], keep: int = 1) -> Path:
    """Write ``state`` as ``run_dir/checkpoints/iter_<iteration>/state.pt``; keep the newest ``keep``."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"iter_{iteration:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=root))
    try:
        torch.save(state, tmp / "state.pt")
        if target.exists():  # re-saving the same iteration (after a resume)
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(root / LATEST, target.name)
    finished = sorted(p for p in root.glob("iter_*") if ".tmp" not in p.name)
    for old in finished[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("iter_*.tmp*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / "state.pt").is_file() else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path / "state.pt", map_location="cpu", weights_only=False)
