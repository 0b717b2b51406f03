"""``textgym bench`` / ``textgym report``: the grid, its resume, the report against the CSVs,
the held-out evaluation metrics and the confidence-interval code against known cases."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import agents.bench as bench
import textgym.tasks.base
from agents.bench import BenchConfig, bench_command, load_results, parse_options, run_grid
from agents.evaluation import best_of_kl, distinct_n, evaluate
from agents.onpolicy import OnPolicyTrainer
from agents.report import write_report
from agents.stats import (
    bootstrap_band,
    bootstrap_ci,
    iqm,
    probability_of_improvement,
    stratified_bootstrap_ci,
    summarize,
)
from tests.conftest import char_count, make_small_task
from textgym import cli
from textgym.lm import Sampling
from textgym.models import tiny_model

# A tiny random model on the embedded summarization task: 2 iterations of 4 episodes x 4 tokens.
GRID = {
    "algos": ("ppo", "grpo"),
    "tasks": ("summarize",),
    "seeds": (0, 1),
    "budget_tokens": 24,
    "model": "tiny",
    "batch_size": 4,
    "max_prompt_tokens": 48,
    "max_new_tokens": 4,
    "eval_prompts": 3,
    "eval_batch_size": 2,
    "eval_temperature": 0.0,  # greedy evaluation only (the sampled one is tested once)
    "progress": False,
    "options": {"*": {"top_k": 8, "learning_rate": 1e-3}},
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- statistics against known cases ----------------------------------------------------------


def test_bootstrap_ci_matches_exact_enumeration_of_resamples():
    # With n = 5 values every one of the 5^5 = 3125 equally likely resamples can be enumerated:
    # the exact bootstrap distribution of the mean. Its 2.5% / 97.5% quantiles are what the Monte
    # Carlo bootstrap must approach (the means lie on a grid of step 0.2).
    values = [0.0, 1.0, 2.0, 4.0, 8.0]
    means = [np.mean(c) for c in itertools.product(values, repeat=5)]
    exact_low, exact_high = np.quantile(means, [0.025, 0.975], method="inverted_cdf")
    low, high = bootstrap_ci(values, num_resamples=200_000)
    assert low == pytest.approx(exact_low, abs=0.2)
    assert high == pytest.approx(exact_high, abs=0.2)
    assert 0.0 < low < np.mean(values) < high < 8.0
    # Two values: resample means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], confidence=0.4) == (0.5, 0.5)


def test_bootstrap_ci_matches_normal_theory_for_many_samples():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=2000)
    low, high = bootstrap_ci(x, num_resamples=5000)
    half = 1.96 * x.std() / np.sqrt(x.size)  # the CLT interval of the mean
    assert low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_iqm_summary_and_band_known_values():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == 4.5  # middle four of eight
    assert iqm([10.0, 0.0, 2.0, 4.0]) == 3.0  # sorted 0 2 4 10, middle 2 and 4
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.mean, s.iqm, s.n) == (2.5, 2.5, 4)
    assert 1.0 <= s.low < 2.5 < s.high <= 4.0
    mean, low, high = bootstrap_band(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    np.testing.assert_allclose(mean, [2.0, 3.0])
    assert (low < mean).all() and (mean < high).all()
    np.testing.assert_allclose(high - low, (high - low)[0])  # same resamples at every point
    # One wild seed: the IQM itself ignores it and its interval is narrower than the mean's
    # (resamples with three or more copies of it still move the IQM).
    wild = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 50.0]
    assert iqm(wild) == pytest.approx(1.0125)  # mean of 1.0, 1.0, 1.0, 1.05
    iqm_low, iqm_high = bootstrap_ci(wild, statistic="iqm")
    mean_low, mean_high = bootstrap_ci(wild)
    assert 0.9 <= iqm_low <= 1.0 < iqm_high < mean_high


def test_stratified_bootstrap_known_cases_and_normal_theory():
    # No spread within seeds: only the seed draw matters, the bootstrap of the seed means 0 and 1
    # (resample means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4).
    table = [[0.0] * 5, [1.0] * 5]
    assert stratified_bootstrap_ci(table) == (0.0, 1.0)
    assert stratified_bootstrap_ci(table, confidence=0.4) == (0.5, 0.5)
    # One seed: the bootstrap over prompts.
    x = np.random.default_rng(0).normal(size=400)
    low, high = stratified_bootstrap_ci([x], num_resamples=20_000)
    ref_low, ref_high = bootstrap_ci(x, num_resamples=20_000)
    assert low == pytest.approx(ref_low, abs=0.01) and high == pytest.approx(ref_high, abs=0.01)
    # Seeds and prompts: the resampled mean's variance is (var of the seed means + mean
    # within-seed variance / P) / S, wider than a bootstrap of the seed means alone.
    rng = np.random.default_rng(1)
    S, P = 8, 100
    scores = rng.normal(0.0, 0.1, size=(S, 1)) + rng.normal(0.0, 1.0, size=(S, P))
    seed_means = scores.mean(axis=1)
    sd = np.sqrt((seed_means.var() + scores.var(axis=1).mean() / P) / S)
    low, high = stratified_bootstrap_ci(scores, num_resamples=20_000)
    assert (high - low) / 2 == pytest.approx(1.96 * sd, rel=0.1)
    assert (low + high) / 2 == pytest.approx(scores.mean(), abs=0.2 * sd)
    seed_low, seed_high = bootstrap_ci(seed_means, num_resamples=20_000)
    assert high - low > 1.1 * (seed_high - seed_low)
    iqm_low, iqm_high = stratified_bootstrap_ci(scores, statistic="iqm")
    assert iqm_low < iqm(scores.ravel()) < iqm_high
    with pytest.raises(ValueError, match=r"\(seeds, prompts\) table"):
        stratified_bootstrap_ci([1.0, 2.0])


def test_probability_of_improvement_known_values():
    better = probability_of_improvement([0.8, 0.85, 0.9], [0.1, 0.2, 0.15])
    assert (better.probability, better.low, better.high, better.m, better.n) == (
        1.0,
        1.0,
        1.0,
        3,
        3,
    )
    worse = probability_of_improvement([0.1, 0.2, 0.15], [0.8, 0.85, 0.9], paired=True)
    assert (worse.probability, worse.high) == (0.0, 0.0)
    # Mann-Whitney by hand: of the four pairs (0 vs 0.5, 0 vs 2, 1 vs 0.5, 1 vs 2) X wins one.
    assert probability_of_improvement([0.0, 1.0], [0.5, 2.0]).probability == 0.25
    assert probability_of_improvement([1.0, 2.0, 3.0], [2.0]).probability == 0.5  # tie is half
    # The same runs against themselves, paired: every resample is symmetric, exactly 1/2.
    same = probability_of_improvement([0.3, 0.1, 0.7, 0.2], [0.3, 0.1, 0.7, 0.2], paired=True)
    assert (same.probability, same.low, same.high) == (0.5, 0.5, 0.5)
    # Overlapping algorithms: an interval that contains the estimate and stays in [0, 1].
    rng = np.random.default_rng(0)
    mixed = probability_of_improvement(rng.normal(0.2, 1, 5), rng.normal(0, 1, 5))
    assert 0.0 <= mixed.low < mixed.probability < mixed.high <= 1.0
    with pytest.raises(ValueError, match="paired runs need as many of each"):
        probability_of_improvement([1.0, 2.0], [1.0], paired=True)


def test_statistics_reject_bad_input():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        iqm([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        bootstrap_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="statistic must be one of"):
        bootstrap_ci([1.0, 2.0], statistic="median")


# -- evaluation ------------------------------------------------------------------------------


def test_distinct_n_counts():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["one"], 2) == 0.0  # no bigram at all


def test_evaluate_metrics_against_direct_computation(tokenizer):
    model = tiny_model(tokenizer, seed=0)
    result = evaluate(model, tokenizer, "summarize", reference=model, num_prompts=3,
                      batch_size=2, max_prompt_tokens=48, max_new_tokens=5)  # fmt: skip
    m = result.metrics
    assert [s["index"] for s in result.samples] == [0, 1, 2]  # the first test prompts, in order
    assert m["eval/kl"] == pytest.approx(0.0, abs=1e-6)  # a model against itself
    assert m["eval/reward"] == pytest.approx(np.mean([s["reward"] for s in result.samples]))
    eos = np.mean([s["finish_reason"] == "eos" for s in result.samples])
    assert m["eval/eos_frac"] == pytest.approx(eos)
    assert 1 <= m["eval/length"] <= 5
    assert m["eval/ppl_ref"] > 1.0
    completions = [s["completion"] for s in result.samples]
    assert m["eval/distinct1"] == pytest.approx(distinct_n(completions, 1))

    # A different reference gives a positive KL and changes the perplexity, not the completions.
    other = evaluate(model, tokenizer, "summarize", reference=tiny_model(tokenizer, seed=1),
                     num_prompts=3, batch_size=3, max_prompt_tokens=48, max_new_tokens=5)  # fmt: skip
    assert other.metrics["eval/kl"] > 0.01
    assert [s["completion"] for s in other.samples] == completions  # greedy, batch-independent
    with pytest.raises(ValueError, match="num_prompts must be a positive int"):
        evaluate(model, tokenizer, "summarize", num_prompts=0)


# -- the grid ----------------------------------------------------------------------------------


def test_bench_config_validation_names_what_is_allowed():
    with pytest.raises(
        ValueError, match=r"unknown algorithm\(s\) \['dqn'\]; valid: base, best-of-n, ppo"
    ):
        BenchConfig(**{**GRID, "algos": ("ppo", "dqn")})
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\]"):
        BenchConfig(**{**GRID, "tasks": ("nope",)})
    with pytest.raises(ValueError, match="set a budget"):
        BenchConfig(**{**GRID, "budget_tokens": 0})
    with pytest.raises(ValueError, match="seeds must be distinct"):
        BenchConfig(**{**GRID, "seeds": (1, 1)})
    with pytest.raises(ValueError, match=r"options for \['rloo'\] but those are not in algos"):
        BenchConfig(**{**GRID, "options": {"rloo": {"kl_coef": 0.1}}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['clip'\] for sb3-ppo; valid"):
        BenchConfig(**{**GRID, "algos": ("sb3-ppo",), "options": {"sb3-ppo": {"clip": 0.1}}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['top_kk'\] for ppo, grpo; valid"):
        BenchConfig(**{**GRID, "options": {"*": {"top_kk": 8}}})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['top_k'\] for sft; valid"):
        BenchConfig(**{**GRID, "algos": ("sft",), "options": {"sft": {"top_k": 8}}})
    # A grid-wide option goes to the algorithms that have it: top_k to ppo and best-of-n, not sft.
    mixed = BenchConfig(**{**GRID, "algos": ("ppo", "sft", "best-of-n")})
    assert mixed.algo_options("ppo") == {"top_k": 8, "learning_rate": 1e-3}
    assert mixed.algo_options("sft") == {"learning_rate": 1e-3}
    assert mixed.algo_options("best-of-n") == {"top_k": 8}
    one_seed = BenchConfig(**{**GRID, "seeds": (1,)})
    assert "--seeds 1, " in bench_command(one_seed)  # "--seeds 1" would mean 1 seed: seed 0
    assert parse_options(["ppo.num_epochs=2", "kl_coef=0"]) == {
        "ppo": {"num_epochs": 2},
        "*": {"kl_coef": 0},
    }


def test_grid_finishes_resumes_without_redoing_runs_and_report_matches_csv(tmp_path, monkeypatch):
    out = tmp_path / "grid"
    config = BenchConfig(**GRID, out_dir=str(out))

    # Interrupt the grid midway: the third run fails (as a kill would stop it).
    real = bench.ADAPTERS["ppo"]
    calls: list[tuple[str, int]] = []

    def counting(spec):
        calls.append((spec.algo, spec.seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(spec)

    for algo in ("ppo", "grpo"):
        monkeypatch.setitem(bench.ADAPTERS, algo, counting)
    with pytest.raises(KeyboardInterrupt):
        run_grid(config)
    assert calls == [("ppo", 0), ("grpo", 0), ("ppo", 1)]  # seeds outermost
    finished = {(r["algo"], r["seed"]) for r in load_results(out)}
    assert finished == {("ppo", 0), ("grpo", 0)}
    first = {p: p.stat().st_mtime_ns for p in out.glob("*/*/seed*/result.json")}

    # Rerun: only the two unfinished runs are trained; the finished ones are untouched.
    calls.clear()
    results = run_grid(config)
    assert calls == [("ppo", 1), ("grpo", 1)]
    assert {p: p.stat().st_mtime_ns for p in first} == first
    assert len(results) == 4

    # What each run recorded.
    for r in results:
        run = out / "summarize" / r["algo"] / f"seed{r['seed']}"
        assert r["tokens"] >= GRID["budget_tokens"]  # stopped once the budget was spent
        assert r["config"]["seed"] == r["seed"] and r["config"]["algo"] == r["algo"]
        assert {"torch", "transformers", "gymnasium", "textgym"} <= set(r["env"]["versions"])
        assert r["env"]["device"] == "cpu"
        curve = read_csv(run / "curve.csv")
        metrics = read_csv(run / "train" / "metrics.csv")
        assert [float(c["reward"]) for c in curve] == [float(m["train/reward"]) for m in metrics]
        assert int(curve[-1]["tokens"]) == r["tokens"]
        assert len((run / "samples.jsonl").read_text().splitlines()) == GRID["eval_prompts"]
    assert json.loads((out / "bench.json").read_text())["commands"] == [bench_command(config)]

    # The report's table cells are the statistics of the results.csv columns.
    rows = read_csv(out / "results.csv")
    assert len(rows) == 4
    report = write_report(out).read_text()
    for algo in ("ppo", "grpo"):
        rewards = [float(r["eval/reward"]) for r in rows if r["algo"] == algo]
        kls = [float(r["eval/kl"]) for r in rows if r["algo"] == algo]
        line = next(x for x in report.splitlines() if x.startswith(f"| {algo} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        head = next(x for x in report.splitlines() if x.startswith("| algo |"))
        columns = [c.strip() for c in head.strip("|").split("|")]
        s = summarize(rewards)
        # The reward's interval: stratified over seeds and the prompts each run recorded.
        per_prompt = [r["per_prompt"]["reward"] for r in results if r["algo"] == algo]
        low, high = stratified_bootstrap_ci(per_prompt)
        assert cells[columns.index("seeds")] == "2"
        assert (
            cells[columns.index("reward (95% CI)")]
            == f"{np.mean(per_prompt):.3f} [{low:.3f}, {high:.3f}]"
        )
        assert cells[columns.index("reward IQM")] == f"{s.iqm:.3f}"
        mean_kl = re.match(r"(-?[\d.]+)", cells[columns.index("kl")]).group(1)
        assert float(mean_kl) == pytest.approx(np.mean(kls), abs=5e-4)
    assert (out / "plots" / "curves_summarize.png").stat().st_size > 1000
    assert (out / "plots" / "frontier_summarize.png").stat().st_size > 1000
    assert "| reference |" in report and "**Prompt 0**" in report


def test_cli_bench_and_report(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["bench", "--algos", "base,reinforce", "--tasks", "summarize", "--seeds", "1",
            "--budget-tokens", "8", "--model", "tiny", "--batch-size", "2",
            "--max-prompt-tokens", "48", "--max-new-tokens", "4", "--eval-prompts", "2",
            "--eval-batch-size", "2", "--out", str(out), "--set", "top_k=8", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    rows = read_csv(out / "results.csv")
    assert {r["algo"] for r in rows} == {"base", "reinforce"}
    base = next(r for r in rows if r["algo"] == "base")
    assert float(base["tokens"]) == 0 and float(base["eval/kl"]) == pytest.approx(0.0, abs=1e-6)
    assert (out / "report.md").is_file()
    assert cli.main(["report", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "results.csv not found" in capsys.readouterr().err
    assert cli.main(["bench", "--algos", "ppo,dqn", "--model", "tiny"]) == 2
    assert "unknown algorithm(s) ['dqn']" in capsys.readouterr().err


def test_sampled_and_best_of_n_evaluation(tokenizer):
    model = tiny_model(tokenizer, seed=0)
    kw = {"num_prompts": 3, "max_prompt_tokens": 48, "max_new_tokens": 6, "reward": char_count}
    sampling = Sampling(temperature=1.0, top_k=50)
    first = evaluate(model, tokenizer, "summarize", sampling=sampling, seed=3, **kw)
    again = evaluate(model, tokenizer, "summarize", sampling=sampling, seed=3, **kw)
    other = evaluate(model, tokenizer, "summarize", sampling=sampling, seed=4, **kw)
    texts = [[s["completion"] for s in r.samples] for r in (first, again, other)]
    assert texts[0] == texts[1] != texts[2]  # seeded

    best = evaluate(model, tokenizer, "summarize", reference=model, sampling=sampling, seed=3,
                    best_of=4, batch_size=8, **kw)  # fmt: skip
    candidates = np.array([s["candidate_rewards"] for s in best.samples])  # (3 prompts, 4)
    assert candidates.shape == (3, 4)
    for s, row in zip(best.samples, candidates, strict=True):
        assert s["reward"] == row.max() == len(s["completion"])  # the chooser: the best by reward
        assert s["kl"] == pytest.approx(
            best_of_kl(4), abs=1e-5
        )  # model = reference: selection only
    assert best.metrics["eval/reward"] >= candidates.mean()
    assert best.metrics["eval/reward"] > candidates.min(axis=1).mean()  # the candidates differ
    assert best.metrics["eval/kl"] == pytest.approx(np.log(4) - 3 / 4, abs=1e-5)

    # Per-prompt records reproduce the corpus-level metrics.
    per = best.per_prompt()
    assert per["index"] == [0, 1, 2]
    assert np.mean(per["rouge_l"]) == pytest.approx(best.metrics["eval/rouge_l"])
    assert np.exp(sum(per["nll_ref"]) / sum(per["length"])) == pytest.approx(
        best.metrics["eval/ppl_ref"], rel=1e-5
    )
    with pytest.raises(ValueError, match="best_of=2 needs sampled completions"):
        evaluate(model, tokenizer, "summarize", best_of=2, **kw)


def test_evaluation_uses_the_model_device_and_keeps_training_mode(tokenizer):
    model = tiny_model(tokenizer)
    model.train()
    evaluate(model, tokenizer, "summarize", num_prompts=1, max_prompt_tokens=48, max_new_tokens=2)
    assert model.training
    assert next(model.parameters()).device == torch.device("cpu")


def test_sb3_algorithms_in_the_grid(tmp_path):
    # One env step is one token: SB3's total_timesteps is the token budget (rollouts of
    # n_steps x batch_size = 16 tokens, so 32 tokens = 2 rollouts, each a point of the curve).
    config = BenchConfig(**{**GRID, "algos": ("sb3-ppo", "maskable-ppo"), "seeds": (0,),
                            "budget_tokens": 32, "options": {"*": {"n_steps": 4, "batch_size": 8}},
                            "out_dir": str(tmp_path)})  # fmt: skip
    results = run_grid(config)
    assert [r["algo"] for r in results] == ["maskable-ppo", "sb3-ppo"]
    for r in results:
        assert r["tokens"] == 32
        curve = read_csv(tmp_path / "summarize" / r["algo"] / "seed0" / "curve.csv")
        assert [int(c["tokens"]) for c in curve] == [16, 32]
        # A random tiny LM scores 0 on summarize, so the only signal is the KL reward (both
        # algorithms pay it), float noise at the start (the policy is a copy of the reference).
        # The critic starts at 0, so no value noise becomes advantage: the policies move only
        # by that KL noise, which SB3's advantage normalization scales up.
        assert {float(c["reward"]) for c in curve} == {0.0}
        assert r["config"]["kl_coef"] == 0.05
    masked, plain = results
    assert plain["metrics"]["eval/kl"] == pytest.approx(0.0, abs=1e-4)
    # maskable-ppo is evaluated as it acted, under the reference's top-16 mask: a policy equal
    # to the reference then pays -log(the top 16's reference mass) per token, large for a
    # random tiny LM whose mass is spread over the whole vocabulary.
    assert masked["config"]["eval_mask"] == "reference top-16"
    assert "eval_mask" not in plain["config"]
    assert masked["metrics"]["eval/kl"] > 1.0


def test_sb3_defaults_give_each_rollout_one_episode_per_env_in_two_minibatches(tmp_path):
    # 4 envs x 4-token episodes: rollouts of 16 tokens, minibatches of 8, as ppo's 2 x 2 epochs.
    config = BenchConfig(**{**GRID, "algos": ("sb3-ppo",), "seeds": (0,), "budget_tokens": 16,
                            "options": {}, "out_dir": str(tmp_path)})  # fmt: skip
    (result,) = run_grid(config)
    assert result["tokens"] == 16
    expected = {"n_steps": 4, "batch_size": 8, "n_epochs": 2, "vf_coef": 0.1}
    assert {k: result["config"][k] for k in expected} == expected


def test_runs_finished_meanwhile_by_another_invocation_are_skipped(tmp_path, monkeypatch):
    config = BenchConfig(**{**GRID, "algos": ("base",), "out_dir": str(tmp_path), "options": {}})
    real = bench.ADAPTERS["base"]
    calls: list[int] = []

    def other_process_finishes_seed_1(spec):
        calls.append(spec.seed)
        if spec.seed == 0:  # while seed 0 runs, another invocation does seed 1
            run_grid(BenchConfig(**{**GRID, "algos": ("base",), "seeds": (1,),
                                    "out_dir": str(tmp_path), "options": {}}))  # fmt: skip
        return real(spec)

    monkeypatch.setitem(bench.ADAPTERS, "base", other_process_finishes_seed_1)
    results = run_grid(config)
    assert calls == [0, 1]  # seed 1 once, by the inner invocation
    assert [r["seed"] for r in results] == [0, 1]


def _chars_task(monkeypatch):
    """A task whose reward (the completion's length in characters) varies between completions."""
    monkeypatch.setitem(textgym.tasks.base._TASKS, "bench-chars", lambda: make_small_task(6))


def test_baselines_in_the_grid_and_the_report_from_result_json_alone(tmp_path, monkeypatch):
    _chars_task(monkeypatch)
    config = BenchConfig(**{**GRID, "algos": ("base", "best-of-n", "sft", "dpo"),
                            "tasks": ("bench-chars",), "seeds": (0,), "eval_temperature": 1.0,
                            "options": {"*": {"learning_rate": 1e-3, "top_k": 8},
                                        "dpo": {"pairs": 3}},
                            "out_dir": str(tmp_path)})  # fmt: skip
    results = {r["algo"]: r for r in run_grid(config)}
    assert list(results) == ["base", "best-of-n", "dpo", "sft"]
    for r in results.values():
        per = r["per_prompt"]
        assert per["index"] == [0, 1]  # the validation prompts (the task has no test split)
        assert r["metrics"]["eval/reward"] == pytest.approx(np.mean(per["reward"]))
        assert r["metrics"]["eval_sampled/reward"] == pytest.approx(
            np.mean(r["per_prompt_sampled"]["reward"])
        )
    assert results["best-of-n"]["config"]["n"] == 4  # the group size (GRPO's default)
    assert results["best-of-n"]["config"]["top_k"] == 8  # samples as the RL algorithms do
    assert results["best-of-n"]["metrics"]["eval/kl"] == pytest.approx(best_of_kl(4), abs=1e-5)
    for algo in ("sft", "dpo"):
        r = results[algo]
        assert r["tokens"] >= GRID["budget_tokens"] and r["curve"][-1]["tokens"] == r["tokens"]
        assert r["metrics"]["eval/kl"] > 0  # trained away from the base model

    # The committed files are result.json alone: the report rebuilds results.csv from them.
    for path in [tmp_path / "results.csv", *tmp_path.glob("*/*/seed0/*.csv"),
                 *tmp_path.glob("*/*/seed0/samples.jsonl")]:  # fmt: skip
        path.unlink()
    report = write_report(tmp_path).read_text()
    assert len(read_csv(tmp_path / "results.csv")) == 4
    assert "Probability of improvement:" in report and "sampled reward (95% CI)" in report
    assert "Probability of improvement (sampled reward):" in report


def _fake_run(out, task, algo, seed, rewards, kl):
    run = out / task / algo / f"seed{seed}"
    run.mkdir(parents=True)
    record = {"algo": algo, "task": task, "seed": seed, "tokens": 100, "train_seconds": 1.0,
              "eval_seconds": 1.0, "env": {"device": "cpu"},
              "metrics": {"eval/reward": float(np.mean(rewards)), "eval/kl": kl},
              "per_prompt": {"index": list(range(len(rewards))), "reward": list(rewards)},
              "curve": [{"tokens": 0, "seconds": 0.0, "reward": 0.0},
                        {"tokens": 100, "seconds": 1.0, "reward": float(np.mean(rewards))}]}  # fmt: skip
    (run / "result.json").write_text(json.dumps(record))


def test_report_tables_from_result_files_stratified_and_probability_of_improvement(tmp_path):
    rng = np.random.default_rng(0)
    scores = {
        "base": rng.uniform(0.0, 0.3, size=(3, 20)),
        "ppo": rng.uniform(0.6, 1.0, size=(3, 20)),
    }
    for algo, table in scores.items():
        for seed, rewards in enumerate(table):
            _fake_run(tmp_path, "t", algo, seed, rewards, kl=0.0 if algo == "base" else 2.0)
    report = write_report(tmp_path).read_text().splitlines()
    head = next(x for x in report if x.startswith("| algo |"))
    columns = [c.strip() for c in head.strip("|").split("|")]
    for algo, table in scores.items():
        line = next(x for x in report if x.startswith(f"| {algo} | 3 |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        low, high = stratified_bootstrap_ci(table)
        assert (
            cells[columns.index("reward (95% CI)")] == f"{table.mean():.3f} [{low:.3f}, {high:.3f}]"
        )
    # Against the base model: ppo's per-prompt scores minus base's mean over seeds, per prompt.
    against = report[report.index("Against the base model, on the same prompts:") + 2 :]
    assert against[0] == "| algo - base | seeds | reward (95% CI) |"
    difference = scores["ppo"] - scores["base"].mean(axis=0)  # (seeds, prompts)
    low, high = stratified_bootstrap_ci(difference)
    assert against[2] == f"| ppo | 3 | {difference.mean():.3f} [{low:.3f}, {high:.3f}] |"
    assert low > 0
    # ppo beats base in every seed pairing: P(ppo > base) = 1 with interval [1, 1].
    poi = report[report.index("Probability of improvement:") + 2 :]
    assert poi[0] == "| P(row > column) | base | ppo |"
    assert poi[2] == "| base | - | 0.000 [0.000, 0.000] |"
    assert poi[3] == "| ppo | 1.000 [1.000, 1.000] | - |"
    assert (tmp_path / "plots" / "curves_t.png").is_file()
    assert (tmp_path / "plots" / "frontier_t.png").is_file()
    assert (tmp_path / "plots" / "gains_t.png").stat().st_size > 1000
    assert "![difference from the base model](plots/gains_t.png)" in report


def test_report_has_no_difference_plot_without_a_base_row(tmp_path):
    for seed in range(2):
        _fake_run(tmp_path, "t", "ppo", seed, [0.5, 0.7], kl=1.0)
        _fake_run(tmp_path, "t", "grpo", seed, [0.6, 0.8], kl=1.0)
    report = write_report(tmp_path).read_text()
    assert "Against the base model" not in report and "gains_t.png" not in report
    assert not (tmp_path / "plots" / "gains_t.png").exists()


def test_report_against_another_algorithm(tmp_path, capsys):
    # RL after SFT: each algorithm's paired difference from sft, beside the one from base.
    rewards = {"base": [0.1, 0.2, 0.3], "sft": [0.5, 0.6, 0.7], "rloo": [0.6, 0.6, 0.9]}
    for algo, values in rewards.items():
        _fake_run(tmp_path, "t", algo, 0, values, kl=1.0)
    report = write_report(tmp_path, against=["sft"]).read_text().splitlines()
    table = report[report.index("Against sft, on the same prompts:") + 2 :]
    assert table[0] == "| algo - sft | seeds | reward (95% CI) |"
    rows = {line.split(" | ")[0][2:]: line for line in table[2:4]}
    assert set(rows) == {"base", "rloo"}
    assert rows["rloo"].startswith(f"| rloo | 1 | {np.mean([0.1, 0.0, 0.2]):.3f} [")
    assert "Against the base model, on the same prompts:" in report
    with pytest.raises(ValueError, match=r"against=\['dpo'\]: no run of it in .*: base, rloo, sft"):
        write_report(tmp_path, against=["dpo"])
    assert cli.main(["report", str(tmp_path), "--against", "dpo"]) == 2
    assert "no run of it" in capsys.readouterr().err


def test_report_threshold_tabulates_the_share_of_prompts_won_against_the_base(tmp_path, capsys):
    base = np.array([[0.2, 0.6, 0.4, 0.9]])  # 2 of 4 prompts above 0.5
    ppo = np.array([[0.7, 0.8, 0.3, 0.6], [0.9, 0.9, 0.9, 0.1]])  # 3 of 4 in each seed
    for seed, rewards in enumerate(base):
        _fake_run(tmp_path, "t", "base", seed, rewards, kl=0.0)
    for seed, rewards in enumerate(ppo):
        _fake_run(tmp_path, "t", "ppo", seed, rewards, kl=1.0)
    assert "Share of prompts" not in write_report(tmp_path).read_text()
    assert cli.main(["report", str(tmp_path), "--threshold", "0.5"]) == 0
    report = (tmp_path / "report.md").read_text().splitlines()
    share = report[report.index("Share of prompts with a reward above 0.5:") + 2 :]
    assert share[0] == "| algo | seeds | reward > 0.5 (95% CI) |"
    wins = (ppo > 0.5).astype(float)
    low, high = stratified_bootstrap_ci(wins)
    assert share[2] == "| base | 1 | 0.500 [0.000, 1.000] |"
    assert share[3] == f"| ppo | 2 | 0.750 [{low:.3f}, {high:.3f}] |"
    against = share[share.index("Against the base model, on the same prompts:") + 2 :]
    difference = wins - (base > 0.5).astype(float).mean(axis=0)  # (seeds, prompts)
    low, high = stratified_bootstrap_ci(difference)
    assert against[2] == f"| ppo | 2 | 0.250 [{low:.3f}, {high:.3f}] |"


def test_a_run_interrupted_midway_continues_from_its_checkpoint(tmp_path, monkeypatch):
    config = BenchConfig(**{**GRID, "algos": ("reinforce",), "seeds": (0,), "save_every": 1,
                            "out_dir": str(tmp_path)})  # fmt: skip
    real = OnPolicyTrainer.train
    calls = []

    def interrupted(self, num_iterations=None):
        calls.append(self.iteration)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, num_iterations)

    monkeypatch.setattr(OnPolicyTrainer, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_grid(config)
    train = tmp_path / "summarize" / "reinforce" / "seed0" / "train"
    first = read_csv(train / "metrics.csv")
    assert [r["iteration"] for r in first] == ["1"] and (train / "checkpoints").is_dir()
    calls.clear()
    (result,) = run_grid(config)
    assert calls[0] == 1  # continued after iteration 1, not from scratch
    rows = read_csv(train / "metrics.csv")
    assert rows[0] == first[0] and [int(r["iteration"]) for r in rows] == list(
        range(1, len(rows) + 1)
    )
    assert [c["iteration"] for c in result["curve"]] == list(range(1, len(rows) + 1))
    assert result["tokens"] >= GRID["budget_tokens"]
    assert not (train / "checkpoints").exists()  # checkpoints stay out of the committed files
