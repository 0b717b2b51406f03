"""SFT and DPO: loss masks, packing, hand-computed losses, learning, feedback-store data, --init."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer, Trainer, make_config, train
from agents.dpo import dpo_loss
from agents.offline import ExampleEncoder
from agents.policy import TransformerPolicy
from agents.sft import Example, collate, pack, target_logprobs
from textgym import cli
from textgym.feedback.store import FeedbackStore
from textgym.models import tiny_model

RUN = {"model": "tiny", "save_every": 0, "progress": False, "report_to": "none"}
TOPICS = [
    "rivers",
    "bread",
    "bicycles",
    "owls",
    "glaciers",
    "chess",
    "violins",
    "tomatoes",
    "bridges",
    "comets",
    "honey",
    "deserts",
    "lanterns",
    "ferns",
    "kites",
    "volcanoes",
    "puzzles",
    "whales",
    "coffee",
    "maps",
    "tunnels",
    "gardens",
    "clocks",
    "sailboats",
]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def policy(tokenizer) -> TransformerPolicy:
    return TransformerPolicy(tiny_model(tokenizer, seed=0), None, vocab_size=len(tokenizer)).eval()


@pytest.fixture(scope="module")
def encoded(tokenizer) -> list[tuple[np.ndarray, np.ndarray]]:
    encoder = ExampleEncoder(tokenizer, max_prompt_tokens=24, max_new_tokens=8)
    examples = [
        Example("Say hi.", "Hi there!"),
        Example([{"role": "user", "content": "Name a fruit."}], "An apple, a pear or a plum."),
        Example("Count to three.", "One, two, three."),
        Example("Thank the reader for reading this far.", "Thanks!"),
    ]
    return [encoder(x) for x in examples]


# -- data: masks and packing -----------------------------------------------------------------


def test_loss_mask_covers_completion_tokens_only(encoded, policy, tokenizer):
    (p0, c0), (p1, c1) = encoded[:2]
    assert c0[-1] == tokenizer.eos_token_id  # the completion ends the episode
    assert len(c1) == 8 and c1[-1] != tokenizer.eos_token_id  # cut at max_new_tokens
    batch = collate([[(p0, c0), (p1, c1)]], pad_token_id=tokenizer.pad_token_id)  # one packed row
    expected = np.zeros(len(p0) + len(c0) + len(p1) + len(c1), dtype=bool)
    expected[len(p0) : len(p0) + len(c0)] = True
    expected[len(p0) + len(c0) + len(p1) :] = True
    assert batch.targets[0].tolist() == expected.tolist()
    assert batch.num_targets == len(c0) + len(c1)

    # The SFT loss is the NLL of the completion tokens, computed by hand from full forwards.
    with torch.no_grad():
        got = target_logprobs(policy, batch)  # (K,)
        want = []
        for p, c in ((p0, c0), (p1, c1)):
            ids = torch.as_tensor(np.concatenate([p, c]))[None]
            logits = policy.model(input_ids=ids).logits[0, :, : len(tokenizer)].float()
            logp = logits.log_softmax(-1)[len(p) - 1 : -1]  # positions that predict c
            want.append(logp.gather(-1, torch.as_tensor(c)[:, None]).squeeze(-1))
    torch.testing.assert_close(got, torch.cat(want), rtol=0, atol=1e-4)


def test_packing_keeps_examples_independent(encoded, policy, tokenizer):
    lengths = [len(p) + len(c) for p, c in encoded]
    rows = pack(lengths, capacity=max(lengths) * 2)
    assert sorted(i for row in rows for i in row) == [0, 1, 2, 3] and len(rows) < 4
    assert all(sum(lengths[i] for i in row) <= max(lengths) * 2 for row in rows)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        packed = target_logprobs(policy, collate([[encoded[i] for i in r] for r in rows], pad))
        alone = [target_logprobs(policy, collate([[encoded[i]]], pad)) for r in rows for i in r]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=0, atol=1e-4)


# -- SFT -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_lowers_validation_loss_and_raises_rouge(tmp_path):
    trainer = train(
        "sft",
        **RUN,
        task="summarize",
        batch_size=8,
        iterations=60,
        learning_rate=1e-2,
        max_prompt_tokens=96,
        max_new_tokens=24,
        eval_every=60,
        eval_samples=5,
        run_dir=str(tmp_path),
    )
    assert isinstance(trainer, SFTTrainer)
    before, after = (r for r in trainer.logger.rows if "eval/loss" in r)
    assert after["eval/loss"] < before["eval/loss"] - 0.3
    assert before["eval/rouge_l"] == 0.0  # a random model writes no word of the summaries
    assert after["eval/rouge_l"] > 0.03
    assert trainer.logger.rows[-1]["train/loss"] < trainer.logger.rows[1]["train/loss"] - 1.0


def test_sft_from_a_feedback_store_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "feedback.sqlite"
    store = FeedbackStore(path)
    for topic in TOPICS[:6]:
        store.add_demonstration(
            f"Write about {topic}.", f"{topic.capitalize()} are nice.", rater="ann"
        )
        sample = store.add_sample(f"Praise {topic}.", "meh")
        store.add_edit(sample, f"{topic.capitalize()} are wonderful!", rater="bob")
    store.close()
    args = ["train", "--algo", "sft", "--data", str(path), "--model", "tiny", "--task", "summarize",
            "--batch-size", "4", "--iterations", "2", "--max-new-tokens", "8", "--eval-every", "0",
            "--no-progress", "--report-to", "none", "--run-dir", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(args) == 0
    assert "train/loss" in capsys.readouterr().out
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2 and float(rows[1]["train/loss"]) > 0
    assert (tmp_path / "run" / "policy" / "config.json").is_file()

    missing = args[:4] + [str(tmp_path / "nope.sqlite")] + args[5:-1] + [str(tmp_path / "run2")]
    assert cli.main(missing) == 2
    assert "feedback store" in capsys.readouterr().err
    FeedbackStore(tmp_path / "empty.sqlite").close()
    empty = args[:4] + [str(tmp_path / "empty.sqlite")] + args[5:-1] + [str(tmp_path / "run3")]
    assert cli.main(empty) == 2
    assert "nothing to imitate: feedback store" in capsys.readouterr().err


def test_sft_resume_reproduces_an_unbroken_run(tmp_path):
    options = {**RUN, "task": "summarize", "batch_size": 4, "max_prompt_tokens": 64,
               "max_new_tokens": 8, "eval_every": 0, "learning_rate": 1e-3, "save_every": 1}  # fmt: skip
    unbroken = SFTTrainer(SFTConfig(**options, iterations=3, run_dir=str(tmp_path / "a"))).train()
    SFTTrainer(SFTConfig(**options, iterations=3, run_dir=str(tmp_path / "b"))).train(2)
    resumed = SFTTrainer(
        SFTConfig(**options, iterations=3, run_dir=str(tmp_path / "b")), resume=True
    )
    rows = resumed.train()
    assert [r["train/loss"] for r in rows] == [r["train/loss"] for r in unbroken]


def test_settings_are_validated_with_actionable_messages():
    with pytest.raises(ValueError, match="sft has no reference model, so kl_coef must be 0"):
        SFTConfig(kl_coef=0.1)
    with pytest.raises(ValueError, match=r"dpo needs kl_coef \(beta\) > 0, got 0"):
        DPOConfig(kl_coef=0)
    with pytest.raises(
        ValueError, match=r"loss_type must be one of \['sigmoid', 'ipo'\], got 'hinge'"
    ):
        DPOConfig(loss_type="hinge")
    with pytest.raises(
        ValueError, match=r"eval_fraction must be a finite number in \[0, 1\), got 1"
    ):
        DPOConfig(eval_fraction=1)
    with pytest.raises(
        ValueError, match="dpo needs preference pairs: set data to a feedback store"
    ):
        DPOTrainer(DPOConfig(**RUN))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['loss_type'\] for sft"):
        make_config("sft", loss_type="ipo")


# -- DPO -------------------------------------------------------------------------------------


def test_dpo_loss_matches_hand_computed_cases():
    logps = [torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])]  # chosen, rejected (policy)
    refs = [torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -3.0])]  # chosen, rejected (reference)
    loss, h = dpo_loss(*logps, *refs, beta=0.5)
    # h = (chosen - ref_chosen) - (rejected - ref_rejected): (1 - (-1), -1 - 1) = (2, -2)
    torch.testing.assert_close(h, torch.tensor([2.0, -2.0]))
    # -log sigmoid(beta h) = log(1 + exp(-beta h))
    torch.testing.assert_close(loss, torch.tensor([math.log1p(math.exp(-1)), math.log1p(math.e)]))
    ipo, _ = dpo_loss(*logps, *refs, beta=0.5, loss_type="ipo")
    torch.testing.assert_close(ipo, torch.tensor([(2.0 - 1.0) ** 2, (-2.0 - 1.0) ** 2]))


def _ranking_store(path: Path) -> Path:
    """Per topic a ranking of three completions, best first: 3 preference pairs each."""
    store = FeedbackStore(path)
    for topic in TOPICS:
        prompt = f"Tell me about {topic}."
        ids = [
            store.add_sample(prompt, f"Sure! {topic.capitalize()} are fascinating, here is why."),
            store.add_sample(prompt, f"{topic.capitalize()}? Maybe later."),
            store.add_sample(prompt, f"No. I will not talk about {topic}."),
        ]
        store.add_ranking(ids, rater="ai:test")
    store.close()
    return path


DPO_RUN = {**RUN, "task": "summarize", "batch_size": 8, "max_prompt_tokens": 32,
           "max_new_tokens": 16, "eval_samples": 2, "eval_fraction": 0.25}  # fmt: skip


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_first_step_loss_is_the_hand_computed_value_at_the_reference(loss_type, tmp_path):
    # At the first step the policy is its reference: h = 0 for every pair, so the loss is
    # -log sigmoid(0) = log 2 (DPO) or (0 - 1 / (2 beta))^2 = 25 with beta = 0.1 (IPO).
    config = DPOConfig(**DPO_RUN, data=str(_ranking_store(tmp_path / "f.sqlite")), iterations=1,
                       loss_type=loss_type, eval_every=0, run_dir=str(tmp_path / "run"))  # fmt: skip
    trainer = DPOTrainer(config)
    assert len(trainer.items) + len(trainer.eval_items) == 3 * len(TOPICS)  # 3 pairs per ranking
    row = trainer.train()[0]
    assert row["train/loss"] == pytest.approx(math.log(2) if loss_type == "sigmoid" else 25.0)
    assert row["train/margin"] == 0.0


def test_dpo_raises_the_margin_on_held_out_pairs(tmp_path):
    config = DPOConfig(**DPO_RUN, data=str(_ranking_store(tmp_path / "f.sqlite")), iterations=10,
                       learning_rate=1e-3, eval_every=10, run_dir=str(tmp_path / "run"))  # fmt: skip
    trainer = DPOTrainer(config)
    held_out = {tuple(prompt) for prompt, _, _ in trainer.eval_items}
    assert held_out.isdisjoint(tuple(prompt) for prompt, _, _ in trainer.items)  # never trained on
    before, after = (r for r in trainer.train() if "eval/pair_margin" in r)
    assert before["eval/pair_margin"] == 0.0 and before["eval/pair_accuracy"] == 0.0
    assert after["eval/pair_margin"] > 0.5
    assert after["eval/pair_accuracy"] == 1.0
    assert after["eval/pair_chosen_logratio"] > after["eval/pair_rejected_logratio"]
    assert "eval/rouge_l" in after  # the task's greedy evaluation runs too


# -- warm start ------------------------------------------------------------------------------


def test_init_loads_the_sft_weights(tmp_path, tokenizer):
    sft = SFTTrainer(
        SFTConfig(**RUN, task="summarize", batch_size=4, iterations=1, learning_rate=1e-2,
                  max_prompt_tokens=64, max_new_tokens=8, eval_every=0, run_dir=str(tmp_path / "sft"))
    )  # fmt: skip
    sft.train()
    ppo = Trainer(make_config("ppo", **RUN, init=str(tmp_path / "sft"), batch_size=2,
                              max_new_tokens=2, top_k=8, eval_every=0, run_dir=str(tmp_path / "ppo")))  # fmt: skip
    trained = sft.policy.model.state_dict()
    loaded = ppo.policy.model.state_dict()
    fresh = tiny_model(tokenizer, seed=0).state_dict()
    assert set(loaded) == set(trained)
    for name, value in loaded.items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0)
    assert any(not torch.equal(fresh[n], trained[n]) for n in trained)  # SFT changed weights
    # The reference of the RL run is the SFT model too: zero KL at the start.
    ref = ppo.policy.reference.state_dict()
    assert all(torch.equal(ref[n], trained[n]) for n in trained)

    with pytest.raises(FileNotFoundError, match=r"init='.*nope' is not a finished run: expected"):
        Trainer(make_config("ppo", **RUN, init=str(tmp_path / "nope"), run_dir=str(tmp_path / "x")))
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds LoRA adapters, not full weights"):
        Trainer(make_config("ppo", **RUN, init=str(tmp_path / "lora"), run_dir=str(tmp_path / "y")))
