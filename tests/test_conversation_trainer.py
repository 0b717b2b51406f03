"""Whole dialogues through the package's trainer and CLI; truncated turns in rollout and training."""

from __future__ import annotations

import csv
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import textgym  # noqa: F401 - registers the env ids
from agents import registry
from agents.dialogue import dialogue_logprobs, dialogue_targets, rollout_dialogues
from agents.dialogue_eval import evaluate_dialogues
from agents.dialogue_trainer import DialogueTrainer, dialogue_config
from agents.policy import TransformerPolicy
from textgym import cli
from textgym.lm import Sampling
from textgym.models import tiny_model

TINY = {
    "model": "tiny", "task": "hidden_item", "batch_size": 4, "max_prompt_tokens": 160,
    "max_new_tokens": 3, "max_turns": 2, "iterations": 2, "eval_every": 0, "save_every": 0,
    "progress": False, "report_to": "none", "top_k": 20, "learning_rate": 1e-3,
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(algo: str, run_dir: Path, **options):
    group = {"completions_per_prompt": 2} if algo in ("rloo", "grpo") else {}
    return registry.make_config(algo, **{**TINY, **group, "run_dir": str(run_dir), **options})


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)
        ]


@pytest.mark.parametrize("algo", ["ppo"])
def test_a_resumed_dialogue_run_equals_an_unbroken_one(algo, tmp_path):
    options = {"iterations": 2, "save_every": 1, "eval_every": 2, "eval_samples": 2,
               "kl_coef": 0.05, "num_epochs": 1}  # fmt: skip
    unbroken = registry.build_trainer(tiny_config(algo, tmp_path / "unbroken", **options))
    assert isinstance(unbroken, DialogueTrainer)
    unbroken.train()
    first = registry.build_trainer(tiny_config(algo, tmp_path / "broken", **options))
    first.train(num_iterations=1)
    del first
    resumed = registry.build_trainer(tiny_config(algo, tmp_path / "broken", **options), resume=True)
    assert resumed.iteration == 1
    resumed.train()
    assert rows(tmp_path / "broken") == rows(tmp_path / "unbroken")
    for (name, a), b in zip(
        unbroken.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    last = rows(tmp_path / "unbroken")[-1]
    for key in ("train/reward", "train/success", "train/turns", "train/turn_reward",
                "train/cut_turns", "train/kl", "train/policy_loss", "eval/success",
                "eval/turns", "eval/turn_reward"):  # fmt: skip
        assert last[key] != "", key
    assert float(last["train/turns"]) <= 2 and float(last["train/turn_reward"]) == pytest.approx(
        -0.1
    )  # hidden_item: a turn costs 0.1 and has no other per-turn reward


def test_textgym_train_on_a_conversation_task(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--algo", "rloo", "--task", "hidden_item", "--model", "tiny",
            "--batch-size", "4", "--completions-per-prompt", "2", "--max-prompt-tokens", "160",
            "--max-new-tokens", "3", "--max-turns", "2", "--max-total-tokens", "5",
            "--iterations", "2", "--eval-every", "2", "--eval-samples", "2", "--save-every", "0",
            "--report-to", "none", "--no-progress", "--run-dir", str(run_dir)]  # fmt: skip
    assert cli.main(args) == 0
    assert "eval/success" in capsys.readouterr().out
    table = rows(run_dir)
    assert [r["iteration"] for r in table] == ["0", "1", "2"]
    # At most 5 agent tokens a dialogue; the tiny model rarely ends a turn itself within 3.
    assert all(float(r["train/length"]) <= 5 for r in table[1:])
    assert float(table[-1]["train/cut_turns"]) > 0.5
    assert (run_dir / "policy" / "config.json").is_file()
    assert (run_dir / "samples" / "iter_000002.md").read_text().count("assistant:") >= 2


def test_conversation_settings_are_validated(tmp_path):
    with pytest.raises(ValueError, match=r"user must be one of \['scripted', .*got 'robot'"):
        tiny_config("ppo", tmp_path, user="robot")
    with pytest.raises(ValueError, match="max_turns must be a positive int, got 0"):
        tiny_config("ppo", tmp_path, max_turns=0)
    with pytest.raises(ValueError, match="max_total_tokens must be an int >= 0, got -1"):
        tiny_config("ppo", tmp_path, max_total_tokens=-1)
    config = registry.make_config("sft", model="tiny", task="hidden_item", run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="sft does not train on conversation tasks; choose one"):
        registry.build_trainer(config)
    with pytest.raises(ValueError, match="chat_template=False"):
        registry.build_trainer(tiny_config("ppo", tmp_path, chat_template=False))
    with pytest.raises(ValueError, match="is a conversation task: train it with"):
        from agents.onpolicy import OnPolicyTrainer

        OnPolicyTrainer(tiny_config("ppo", tmp_path))
    config = tiny_config("ppo", tmp_path, clip_range=0.3, gae_lambda=0.9, num_epochs=3)
    shared = dialogue_config(config)
    assert (shared.algo, shared.clip_range, shared.gae_lambda, shared.epochs) == (
        "ppo",
        0.3,
        0.9,
        1,
    )


def never_ending_policy(tokenizer, eot):
    """A tiny policy that never writes the end-of-turn token: every turn is cut at a cap."""
    policy = TransformerPolicy(tiny_model(tokenizer))
    with torch.no_grad():
        policy.model.lm_head.weight[eot] = 0.0
        policy.model.lm_head.weight[eot, 0] = -1e3  # paired with a large negative logit
    policy.model.config.tie_word_embeddings = False
    return policy


def test_truncated_turns_in_the_rollout_and_the_targets(tokenizer):
    envs = gym.make_vec("TextGen-Conversation-v0", num_envs=3, tokenizer=tokenizer,
                        max_context_tokens=200, max_turn_tokens=4, max_turns=4,
                        max_total_tokens=10, autoreset_mode="disabled")  # fmt: skip
    eot = envs.unwrapped.end_of_turn_token_id
    torch.manual_seed(0)
    policy = TransformerPolicy(tiny_model(tokenizer))
    policy.model.lm_head = torch.nn.Linear(64, len(tokenizer), bias=True)
    policy.model.config.tie_word_embeddings = False
    with torch.no_grad():
        policy.model.lm_head.bias[eot] = -1e4  # never ends a turn itself
    batch = rollout_dialogues(
        policy, envs, Sampling(top_k=20), torch.Generator().manual_seed(0), seed=0,
        record_values=True,
    )  # fmt: skip
    for b, info in enumerate(batch.infos):
        # 4 + 4 tokens, then the total cap of 10 cuts the third turn after 2.
        assert info["finish_reason"] == "max_total_tokens" and info["num_tokens"] == 10
        assert batch.cut_turns[b] == [True, True, True]
        assert batch.turn_rewards[b] == pytest.approx([-0.1, -0.1, -0.1])
        agent = batch.action_mask[b].nonzero().squeeze(-1)
        assert agent.numel() == 10
        # A cut turn's end-of-turn token is the env's (state), not the agent's (an action).
        first_turn_end = int(agent[3])
        assert int(batch.ids[b, first_turn_end + 1]) == eot
        assert batch.action_mask[b, first_turn_end + 1] == 0
        # Per-turn rewards sit on each turn's last agent token, the final one on the last.
        placed = batch.rewards[b, agent].tolist()
        assert placed[3] == pytest.approx(-0.1) and placed[7] == pytest.approx(-0.1)
        assert [placed[i] for i in (0, 1, 2, 4, 5, 6, 8)] == [0.0] * 7
        assert placed[9] == pytest.approx(-0.1 + info["reward_components"]["success"])
    with torch.no_grad():
        no_cache = dialogue_logprobs(policy, batch)
    torch.testing.assert_close(
        no_cache * batch.action_mask, batch.logprobs, atol=1e-4, rtol=0
    )  # the KV cache follows the env's end-of-turn insertion after cut turns
    targets = dialogue_targets(policy, batch, dialogue_config(registry.make_config("ppo")), 1)
    assert ((targets["advantages"] != 0) <= (batch.action_mask > 0)).all()


def test_evaluate_dialogues_reports_success_turns_and_turn_reward(tokenizer):
    result = evaluate_dialogues(tiny_model(tokenizer), tokenizer, "hidden_item", num_prompts=3,
                                batch_size=2, max_context_tokens=160, max_turn_tokens=3,
                                max_turns=2)  # fmt: skip
    m = result.metrics
    assert m["eval/turns"] == 2.0 and m["eval/turn_reward"] == pytest.approx(-0.1)
    assert m["eval/success"] == 0.0 and m["eval/reward"] == pytest.approx(-0.2)
    assert [s["index"] for s in result.samples] == [0, 1, 2]
    assert all(s["completion"].startswith("assistant: ") for s in result.samples)
    with pytest.raises(ValueError, match="'keywords' is a single-turn task"):
        evaluate_dialogues(tiny_model(tokenizer), tokenizer, "keywords")


def test_bench_and_report_on_a_conversation_task(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "--algos", "base,rloo", "--tasks", "hidden_item", "--seeds", "1",
            "--budget-tokens", "8", "--model", "tiny", "--batch-size", "4",
            "--max-prompt-tokens", "160", "--max-new-tokens", "3", "--eval-prompts", "2",
            "--eval-batch-size", "2", "--eval-temperature", "0", "--out", str(out),
            "--set", "max_turns=2", "--set", "rloo.completions_per_prompt=2", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    with open(out / "results.csv", newline="") as f:
        results = {r["algo"]: r for r in csv.DictReader(f)}
    assert set(results) == {"base", "rloo"}
    for row in results.values():  # two turns of 3 tokens, each costing 0.1, no success
        assert float(row["eval/turns"]) == 2.0
        assert float(row["eval/turn_reward"]) == pytest.approx(-0.1)
        assert float(row["eval/success"]) == 0.0
    assert int(results["rloo"]["tokens"]) >= 8
    report = (out / "report.md").read_text()
    assert "| success |" in report and "| turns |" in report and "| turn_reward |" in report
    assert "assistant:" in report  # the dialogues side by side
