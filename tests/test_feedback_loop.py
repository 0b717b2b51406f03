"""The closing-the-loop example, end to end with a tiny policy and the simulated rater."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from textgym.feedback import FeedbackStore
from textgym.feedback.reward_model import RewardModel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "feedback_loop.py"


@pytest.mark.slow
def test_feedback_loop_example_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("feedback_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--quick", "--dir", str(tmp_path)])
    assert summary["ratings"] == 8  # 2 iterations x 4 episodes, each rated once
    with FeedbackStore(tmp_path / "feedback.sqlite") as store:
        ratings = store.ratings()
        assert {r.rater for r in ratings} == {module.SIMULATED_RATER}
        assert all(1 <= r.score <= 5 for r in ratings)
        assert all("keywords" in s.meta for s in store.samples())
        assert store.progress()["open"] == 0
    assert RewardModel.load(tmp_path / "reward-model").kind == "ratings"
    assert math.isfinite(summary["policy/eval_reward_first"])
    assert math.isfinite(summary["policy/eval_reward_last"])
