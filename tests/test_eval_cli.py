"""``textgym eval``: a saved policy and the base model scored alike on the same prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents import registry
from agents.evaluation import best_of_kl, evaluate
from agents.policy import load_policy
from textgym import cli
from textgym.models import tiny_model

SIZES = ["--num-prompts", "3", "--max-prompt-tokens", "48", "--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished `textgym train` run of a tiny model (one REINFORCE iteration)."""
    run = tmp_path_factory.mktemp("runs") / "reinforce-summarize"
    registry.train("reinforce", model="tiny", task="summarize", seed=0, iterations=1,
                   batch_size=2, max_prompt_tokens=48, max_new_tokens=4, learning_rate=1e-2,
                   top_k=8, eval_every=0, run_dir=str(run), progress=False, report_to="none",
                   device="cpu")  # fmt: skip
    return run


def test_eval_of_a_run_and_the_base_model(run_dir, tmp_path, tokenizer, capsys):
    out = tmp_path / "run.json"
    assert cli.main(["eval", "--policy", str(run_dir), "--task", "summarize", *SIZES,
                     "--seed", "5", "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["base_model"] == "tiny" and record["reference"] == "tiny"
    assert record["split"] == "test" and record["settings"]["num_prompts"] == 3
    # The greedy numbers are evaluate()'s on the saved policy against the run's base model.
    policy, _ = load_policy(run_dir)
    direct = evaluate(policy.model, tokenizer, "summarize", reference=tiny_model(tokenizer, seed=0),
                      num_prompts=3, max_prompt_tokens=48, max_new_tokens=4)  # fmt: skip
    assert record["greedy"]["metrics"] == pytest.approx(direct.metrics)
    assert [s["completion"] for s in record["samples"]] == [s["completion"] for s in direct.samples]
    greedy = record["greedy"]
    assert greedy["per_prompt"]["index"] == [0, 1, 2]
    assert np.mean(greedy["per_prompt"]["kl"]) == pytest.approx(greedy["metrics"]["eval/kl"])
    assert greedy["metrics"]["eval/kl"] > 0  # trained away from the base model
    assert set(record["sampled"]["metrics"]) == set(greedy["metrics"])
    lines = printed.splitlines()
    assert lines[1].split() == ["metric", "greedy", "sampled"]
    reward = next(x for x in lines if x.startswith("reward "))
    assert reward.split()[1] == f"{greedy['metrics']['eval/reward']:.3f}"

    # The base model: the same prompts, KL 0 against itself; best-of-n adds its selection KL.
    base_out = tmp_path / "base.json"
    assert cli.main(["eval", "--policy", "base", "--model", "tiny", "--task", "summarize",
                     *SIZES, "--best-of", "2", "--out", str(base_out)]) == 0  # fmt: skip
    base = json.loads(base_out.read_text())
    assert [s["prompt"] for s in base["samples"]] == [s["prompt"] for s in record["samples"]]
    assert base["greedy"]["metrics"]["eval/kl"] == pytest.approx(0.0, abs=1e-6)
    assert base["best_of_2"]["metrics"]["eval/kl"] == pytest.approx(best_of_kl(2), abs=1e-5)


def test_eval_on_a_file_in_the_task_schema(tmp_path):
    data = tmp_path / "mine.jsonl"
    rows = [{"fname": f"d{i}", "dialogue": f"#Person1#: Hi {i}.\n#Person2#: Hello.",
             "summary": f"Two people greet {i}."} for i in range(4)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "file.json"
    assert cli.main(["eval", "--policy", "base", "--model", "tiny", "--task", "dialogsum",
                     "--path", str(data), *SIZES, "--num-prompts", "10", "--temperature", "0",
                     "--out", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["split"] == "test" and "sampled" not in record  # temperature 0: greedy only
    assert [s["references"] for s in record["samples"]] == [[r["summary"]] for r in rows]
    assert record["greedy"]["per_prompt"]["index"] == [0, 1, 2, 3]  # all 4, fewer than asked


def test_eval_errors_are_one_line(tmp_path, capsys):
    base = ["eval", "--policy", "base", "--model", "tiny", *SIZES]
    assert cli.main([*base, "--task", "summarize", "--path", str(tmp_path / "x.jsonl")]) == 2
    assert "--path" in capsys.readouterr().err
    (tmp_path / "x.jsonl").write_text("{}\n")
    assert cli.main([*base, "--task", "summarize", "--path", str(tmp_path / "x.jsonl")]) == 2
    assert "built in and reads no files" in capsys.readouterr().err
    assert cli.main([*base, "--task", "summarize", "--best-of", "2", "--temperature", "0"]) == 2
    assert "--best-of needs sampled completions" in capsys.readouterr().err
    assert cli.main(["eval", "--policy", str(tmp_path), "--task", "summarize"]) == 2
    err = capsys.readouterr().err
    assert "--policy='" in err and "is not a finished run" in err
    assert cli.main([*base, "--task", "summarize", "--split", "nope"]) == 2
    assert "has no split 'nope'" in capsys.readouterr().err


def test_eval_of_a_lora_run_merges_its_adapters_into_the_base(tmp_path):
    pytest.importorskip("peft")
    run = tmp_path / "lora"
    registry.train("reinforce", model="tiny", task="summarize", iterations=1, batch_size=2,
                   max_prompt_tokens=48, max_new_tokens=4, learning_rate=1e-2, top_k=8,
                   lora_r=2, eval_every=0, run_dir=str(run), progress=False, report_to="none",
                   device="cpu")  # fmt: skip
    assert (run / "policy" / "adapter_config.json").is_file()
    out = tmp_path / "lora.json"
    assert cli.main(["eval", "--policy", str(run), "--task", "summarize", *SIZES,
                     "--temperature", "0", "--out", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    assert record["base_model"] == "tiny"
    assert record["greedy"]["metrics"]["eval/kl"] > 0  # the adapters are in (off, KL would be 0)
