"""The algorithm registry: a new algorithm is one file plus one registration, and every
consumer (``agents.train``, the command line, the bench) picks it up."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import agents
from agents import registry
from agents.algorithm import KLController, LossAndStats
from agents.config import OnPolicyConfig
from agents.policy import Rollout
from agents.runtime import Runtime
from textgym import cli

# -- a whole new algorithm: what its one file would hold -------------------------------------


@dataclass
class ToyConfig(OnPolicyConfig):
    """REINFORCE with a constant baseline (a toy for the registry test)."""

    algo: ClassVar[str] = "toy"

    baseline: float = 0.5
    """Subtracted from every score to form the sequence advantage."""


class Toy:
    """Sequence advantage ``score - baseline`` on every token, plain policy gradient."""

    uses_value_head = False

    def __init__(self, config: ToyConfig) -> None:
        self.config = config

    def kl_controller(self) -> KLController:
        return KLController(self.config.kl_coef)

    def targets(
        self, batch: Rollout, kl_coef: float, runtime: Runtime
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        advantages = batch.scores - self.config.baseline
        return {"advantages": advantages}, {"train/advantage": float(advantages.mean())}

    def loss(
        self,
        logprobs: torch.Tensor,
        values: torch.Tensor | None,
        old: dict[str, torch.Tensor],
        denom: float,
    ) -> LossAndStats:
        loss = -(old["advantages"][:, None] * logprobs * old["mask"]).sum() / denom
        return loss, {"loss/policy": loss.detach() * denom}


@pytest.fixture
def toy():
    registry.register("toy", config=ToyConfig, algorithm=Toy)  # the one registry line
    yield
    registry.unregister("toy")


TINY = {"model": "tiny", "task": "keywords", "batch_size": 2, "max_new_tokens": 3, "top_k": 8,
        "iterations": 1, "eval_every": 0, "save_every": 0, "progress": False,
        "report_to": "none"}  # fmt: skip


def test_a_registered_algorithm_trains_through_agents_train(toy, tmp_path):
    trainer = agents.train("toy", **TINY, baseline=0.25, run_dir=str(tmp_path))
    assert isinstance(trainer, agents.OnPolicyTrainer) and isinstance(trainer.algorithm, Toy)
    row = trainer.logger.rows[-1]
    assert row["iteration"] == 1 and "train/advantage" in row and "train/loss/policy" in row
    assert (tmp_path / "policy" / "config.json").is_file()
    assert not any(p.requires_grad for p in trainer.policy.value_head.parameters())


def test_a_registered_algorithm_trains_from_the_command_line(toy, tmp_path, capsys):
    args = ["train", "--algo", "toy", "--model", "tiny", "--batch-size", "2", "--max-new-tokens",
            "3", "--top-k", "8", "--iterations", "1", "--eval-every", "0", "--baseline", "0.1",
            "--no-progress", "--report-to", "none", "--run-dir", str(tmp_path)]  # fmt: skip
    assert cli.main(args) == 0
    assert "done in" in capsys.readouterr().out
    with open(tmp_path / "metrics.csv") as f:
        assert [r["iteration"] for r in csv.DictReader(f)] == ["1"]
    assert '"baseline": 0.1' in (tmp_path / "config.json").read_text()
    # Its own option exists for it only.
    with pytest.raises(SystemExit, match=r"option\(s\) \['--baseline'\] do not apply to ppo"):
        cli.main(["train", "--algo", "ppo", "--baseline", "0.1", "--model", "tiny"])


def test_the_bench_runs_every_on_policy_algorithm(toy):
    from agents.bench.adapters import (
        bench_algorithms,
        option_names,
        train_dpo,
        train_registered,
        train_sft,
    )

    algorithms = bench_algorithms()
    assert algorithms["toy"] is train_registered and "baseline" in option_names("toy")
    # Offline ones are bench-local rows (their budget counts the tokens trained on).
    assert algorithms["sft"] is train_sft and algorithms["dpo"] is train_dpo


def test_registry_rows_are_checked():
    assert registry.names() == ["ppo", "rloo", "grpo", "reinforce", "sft", "dpo"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("ppo", config=ToyConfig, algorithm=Toy)
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("ppo")
    registry.register("not-toy", config=ToyConfig, algorithm=Toy)
    try:
        with pytest.raises(TypeError, match="ToyConfig.algo is 'toy', but it is registered as"):
            registry.entry("not-toy")
    finally:
        registry.unregister("not-toy")


def test_a_trainer_refuses_a_config_of_another_trainer(tmp_path):
    config = agents.make_config("sft", model="tiny", run_dir=str(tmp_path))
    with pytest.raises(TypeError, match="OnPolicyTrainer cannot train a SFTConfig"):
        agents.Trainer(config)
