"""Shared fixtures: the SmolLM2 tokenizer (loaded once) and small deterministic tasks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from textgym.models import shared_tokenizer
from textgym.tasks.base import Sample, Task

SHARED_DATA = Path(
    os.environ.get("TEXTGYM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (tiny models run faster so on 2 shared cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return shared_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set TEXTGYM_DATA to its folder)")
    return SHARED_DATA


def char_count(prompts, completions, references, **meta) -> np.ndarray:
    """A cheap reward with an obvious value: the completion's length in characters."""
    return np.array([len(c) for c in completions], dtype=np.float32)


def make_small_task(n: int = 5) -> Task:
    """``n`` distinct prompts with references and keyword metadata."""
    samples = [
        Sample(
            f"Write about item number {i}.", (f"item {i} is here",), {"keywords": ["item", str(i)]}
        )
        for i in range(n)
    ]
    return Task("small", {"train": samples, "validation": samples[:2]}, default_reward=char_count)


@pytest.fixture
def small_task() -> Task:
    return make_small_task()
