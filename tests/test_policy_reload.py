"""Saved policies reload exactly (LM and value head), warm starts read them, and carry a model card."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest
import torch
import yaml

import textgym
from agents import TransformerPolicy, build_trainer, load_policy, make_config, push_to_hub
from agents.cli import add_train_parser, config_from_args
from agents.hub import train_command
from agents.policy import policy_dir

TINY = {
    "model": "tiny",
    "task": "keywords",
    "batch_size": 4,
    "max_new_tokens": 4,
    "top_k": 8,
    "iterations": 1,
    "eval_every": 1,
    "eval_samples": 2,
    "save_every": 0,
    "progress": False,
    "report_to": "none",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A PPO run of one iteration (so the value head has moved off zero)."""
    run_dir = tmp_path_factory.mktemp("ppo")
    trainer = build_trainer(make_config("ppo", run_dir=str(run_dir), **TINY))
    trainer.train()
    return trainer, run_dir


def outputs(policy: TransformerPolicy) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 17, 230, 9, 4], [0, 0, 44, 81, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        return policy(ids, mask)  # (B, T, V), (B, T)


def test_reloaded_logits_and_values_equal_the_saved_ones(finished):
    trainer, run_dir = finished
    logits, values = outputs(trainer.policy)
    assert values.abs().sum() > 0  # the trained head, not a fresh zero one
    for path in (run_dir, run_dir / "policy"):
        policy, tokenizer = load_policy(path)
        assert len(tokenizer) == len(trainer.tokenizer)
        assert not policy.has_reference
        got_logits, got_values = outputs(policy)
        torch.testing.assert_close(got_logits, logits, rtol=0, atol=0)
        torch.testing.assert_close(got_values, values, rtol=0, atol=0)
    with_ref = TransformerPolicy.from_pretrained(run_dir, reference="copy")
    with with_ref.reference_mode_on() as ref:
        assert ref is not with_ref.model
    torch.testing.assert_close(outputs(with_ref)[1], values, rtol=0, atol=0)


def test_init_warm_starts_from_the_same_weights_and_value_head(finished, tmp_path):
    trainer, run_dir = finished
    warm = build_trainer(make_config("ppo", run_dir=str(tmp_path), init=str(run_dir), **TINY))
    logits, values = outputs(trainer.policy)
    got_logits, got_values = outputs(warm.policy)
    torch.testing.assert_close(got_logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(got_values, values, rtol=0, atol=0)


def test_every_saved_policy_has_a_model_card(finished):
    trainer, run_dir = finished
    card = (run_dir / "policy" / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "transformers"
    assert meta["tags"] == ["textgym", "reinforcement-learning", "ppo", "keywords"]
    assert "base_model" not in meta  # "tiny" is a random model, not a Hub id
    assert f"textgym {textgym.__version__}" in body
    assert train_command(trainer.config) in body
    config = json.loads(body.split("```json\n", 1)[1].split("```", 1)[0])
    assert config == json.loads(json.dumps(trainer.config.to_dict()))
    final = trainer.logger.rows[-1]["eval/reward"]
    assert f"| eval/reward | {trainer.logger.rows[0]['eval/reward']:.4f} | {final:.4f} |" in body


def test_the_command_in_the_card_rebuilds_the_config(finished):
    trainer, _ = finished
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    argv = shlex.split(train_command(trainer.config))[1:]
    args = parser.parse_args(argv)
    rebuilt = config_from_args(args, {})
    assert rebuilt == trainer.config


def test_policy_dir_names_what_is_missing_and_refuses_lora_adapters(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected .*policy/config.json"):
        policy_dir(tmp_path)
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds LoRA adapters, not full weights"):
        load_policy(tmp_path)


def test_push_to_hub_refuses_a_directory_that_is_not_a_policy(tmp_path):
    # Checked before any network call; the upload itself is never run in tests.
    with pytest.raises(FileNotFoundError, match="is not a saved policy"):
        push_to_hub(tmp_path, "someone/some-policy")
