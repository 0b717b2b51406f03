"""Real labelled data for reward models: SST-2 sentiment and Taskmaster-4 human reward labels.

Benchmark-only loaders (benchmarks/reward_models.py and one slow test use them), kept next to
the benchmarks rather than in the package.

Both read local files under the data root (``$TEXTGYM_DATA`` or ``../shared/data``, see
:func:`textgym.tasks.datasets.default_data_dir`) or a ``path`` given by the caller, and return
:class:`~textgym.feedback.reward_model.ScoredText` items with 0/1 targets for a "binary" reward
model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from textgym.feedback.reward_model import ScoredText
from textgym.tasks.datasets import DataFormatError, default_data_dir

TASKMASTER4_REWARD_FILES = tuple(f"reward_{i:02d}.json" for i in range(6))
"""The six files of ``taskmaster4/reward/``; the stated split trains on 00-04, tests on 05."""


def sst2(split: str = "train", path: str | os.PathLike[str] | None = None) -> list[ScoredText]:
    """SST-2 sentences (``split`` "train" or "dev") as completions with an empty prompt."""
    if split not in ("train", "dev"):
        raise ValueError(f"SST-2 split must be 'train' or 'dev', got {split!r}")
    file = Path(path) if path is not None else default_data_dir() / "sst2"
    file = file / f"{split}.tsv" if file.is_dir() else file
    out = []
    with open(file, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if len(header) != 2 or header[0] != "label":
            raise DataFormatError(f"{file}: expected a 'label<TAB>sentence' header, got {header}")
        for n, line in enumerate(f, 2):
            label, _, sentence = line.rstrip("\n").partition("\t")
            if label not in ("0", "1") or not sentence:
                raise DataFormatError(f"{file} line {n}: expected '0|1<TAB>sentence'")
            out.append(ScoredText("", sentence, float(label)))
    return out


def _turn_text(turn: dict[str, Any]) -> str:
    """One Taskmaster-4 turn as a compact line: ``user: ...``, ``agent api: {...}``, ..."""
    role = turn.get("role", "?")
    if "text" in turn:
        return f"{role}: {turn['text']}"
    for key in ("api", "response"):
        if key in turn:
            return f"{role} {key}: {json.dumps(turn[key], separators=(',', ':'))}"
    raise DataFormatError(f"a turn has neither 'text', 'api' nor 'response': {sorted(turn)}")


def taskmaster4_rewards(
    files: tuple[str, ...] = TASKMASTER4_REWARD_FILES,
    path: str | os.PathLike[str] | None = None,
) -> list[ScoredText]:
    """Taskmaster-4 reward examples: the conversation so far (prompt), the candidate agent turn
    (completion) and the human label (0.0 or 1.0), from the given files of ``taskmaster4/reward``.
    """
    folder = Path(path) if path is not None else default_data_dir() / "taskmaster4" / "reward"
    out = []
    for name in files:
        file = folder / name
        rows = json.loads(file.read_text(encoding="utf-8"))
        for i, row in enumerate(rows):
            try:
                context = json.loads(row["context"])
                prompt = "\n".join(_turn_text(t) for t in context)
                completion = _turn_text(json.loads(row["generation"]))
                target = float(row["reward"])
            except (KeyError, TypeError, json.JSONDecodeError) as exc:
                raise DataFormatError(
                    f"{file} item {i}: not a Taskmaster-4 reward row ({exc})"
                ) from exc
            if target not in (0.0, 1.0):
                raise DataFormatError(f"{file} item {i}: reward must be 0.0 or 1.0, got {target}")
            out.append(ScoredText(prompt, completion, target))
    return out
