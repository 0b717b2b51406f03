"""``textgym report RUN_DIR``: tables, plots and samples from a finished (or partial) bench grid.

Reads what :mod:`agents.bench` wrote (each run's ``result.json``, from which ``results.csv``
is rebuilt, and ``samples.jsonl`` where present) and writes, next to them::

    RUN_DIR/report.md                    one table per task, curves, frontier, samples
    RUN_DIR/plots/curves_<task>.png      train reward vs environment tokens, 95% bands
    RUN_DIR/plots/frontier_<task>.png    held-out reward vs KL to the reference, per run
    RUN_DIR/plots/gains_<task>.png       each algorithm's difference from the base, 95% CIs

Every number in a table is a statistic over seeds of the ``results.csv`` column of the same
name: the mean with its 95% percentile-bootstrap confidence interval, and for the reward also
the interquartile mean (:mod:`agents.stats`). The reward's interval is stratified over seeds
and prompts (:func:`~agents.stats.stratified_bootstrap_ci`) when the runs recorded per-prompt
scores. A second table per task gives each algorithm's difference from the base model on the
same prompts (reward, sampled reward, ROUGE-L) with stratified intervals, and a third the
probability of improvement P(row > column) of every algorithm over every other, the base
model included. A partial grid is reported as it stands;
the ``seeds`` column says how many runs each cell rests on. Since ``result.json`` holds the
metrics, per-prompt scores and learning curve, committed ``result.json`` files are enough to
regenerate every table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.evaluation import EVAL_METRICS
from agents.stats import (
    bootstrap_band,
    probability_of_improvement,
    stratified_bootstrap_ci,
    summarize,
)
from agents.tracking import atomic_write

CURVE_POINTS = 50
"""Grid points of the token axis on which seeds' learning curves are averaged."""
SAMPLE_PROMPTS = 3
"""Held-out prompts shown side by side in the report."""


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of strings (empty list when the file has no rows)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fmt(value: float) -> str:
    """A metric value with 3 significant decimals, large values without decimals.

    >>> fmt(0.123456), fmt(1234.5), fmt(-0.0001)
    ('0.123', '1234', '-0.000')
    """
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3f}"


def cell(values: Sequence[float]) -> str:
    """``mean [low, high]``: the mean over seeds and its 95% bootstrap confidence interval.

    >>> cell([0.2, 0.2])
    '0.200 [0.200, 0.200]'
    >>> cell([1.0])
    '1.000'
    """
    s = summarize(values)
    if s.n == 1:
        return fmt(s.mean)
    return f"{fmt(s.mean)} [{fmt(s.low)}, {fmt(s.high)}]"


def stratified_cell(scores: Sequence[Sequence[float]]) -> str:
    """``mean [low, high]`` of per-prompt ``scores`` (seeds, prompts): the mean over everything
    and its 95% bootstrap interval stratified over seeds and prompts.

    >>> stratified_cell([[0.5, 0.5], [0.5, 0.5]])
    '0.500 [0.500, 0.500]'
    """
    low, high = stratified_bootstrap_ci(scores)
    return f"{fmt(float(np.mean(scores)))} [{fmt(low)}, {fmt(high)}]"


PerPrompt = dict[str, list[list[float]]]
"""Algorithm -> per-seed lists of per-prompt scores (the same prompts for every seed)."""


def _reward_cell(runs: Sequence[dict[str, str]], key: str, per_prompt: PerPrompt, algo: str) -> str:
    scores = per_prompt.get(algo, [])
    if len(scores) == len(runs) and len({len(s) for s in scores}) == 1:
        return stratified_cell(scores)
    return cell([float(r[key]) for r in runs])


def task_table(
    rows: Sequence[dict[str, str]],
    per_prompt: PerPrompt | None = None,
    per_prompt_sampled: PerPrompt | None = None,
) -> str:
    """Markdown table of one task's runs: one line per algorithm, statistics over its seeds.

    ``rows`` are ``results.csv`` rows; metric columns absent from every row are left out. With
    ``per_prompt`` (the greedy rewards) / ``per_prompt_sampled`` (the sampled ones) of every
    run of an algorithm, its reward interval is stratified over seeds and prompts.

    >>> rows = [{"algo": "ppo", "seed": str(s), "tokens": "10", "eval/reward": str(r)}
    ...         for s, r in enumerate([0.1, 0.3])]
    >>> print(task_table(rows))
    | algo | seeds | tokens | reward (95% CI) | reward IQM |
    |---|---|---|---|---|
    | ppo | 2 | 10 | 0.200 [0.100, 0.300] | 0.200 |
    >>> print(task_table(rows, {"ppo": [[0.1, 0.1], [0.3, 0.3]]}).splitlines()[-1])
    | ppo | 2 | 10 | 0.200 [0.100, 0.300] | 0.200 |
    """
    by_algo: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_algo[row["algo"]].append(row)
    metrics = [m for m in EVAL_METRICS if any(r.get(f"eval/{m}", "") != "" for r in rows)]
    sampled = any(r.get("eval_sampled/reward", "") != "" for r in rows)
    head = ["algo", "seeds", "tokens", "reward (95% CI)", "reward IQM"]
    head += ["sampled reward (95% CI)"] if sampled else []
    head += [m for m in metrics if m != "reward"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algo, runs in by_algo.items():
        tokens = np.mean([float(r["tokens"]) for r in runs])
        rewards = [float(r["eval/reward"]) for r in runs]
        line = [algo, str(len(runs)), f"{tokens:.0f}",
                _reward_cell(runs, "eval/reward", per_prompt or {}, algo),
                fmt(summarize(rewards).iqm)]  # fmt: skip
        if sampled:
            done = [r for r in runs if r.get("eval_sampled/reward", "") != ""]
            line.append(
                _reward_cell(done, "eval_sampled/reward", per_prompt_sampled or {}, algo)
                if done
                else ""
            )
        for m in metrics:
            if m == "reward":
                continue
            values = [float(r[f"eval/{m}"]) for r in runs if r.get(f"eval/{m}", "") != ""]
            line.append(cell(values) if values else "")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


PAIRED_METRICS = (("reward", "per_prompt", "reward"),
                  ("sampled reward", "per_prompt_sampled", "reward"),
                  ("rouge_l", "per_prompt", "rouge_l"))  # fmt: skip
"""Columns of the table against the base model: (title, result.json key, per-prompt metric)."""


@dataclass(frozen=True)
class Difference:
    """An algorithm's mean difference from the base model over seeds and prompts, with its 95%
    bootstrap interval stratified over seeds and prompts, and the number of seeds."""

    mean: float
    low: float
    high: float
    seeds: int


def base_differences(
    paired: dict[str, PerPrompt], base: str = "base"
) -> dict[str, dict[str, Difference]]:
    """Per column title of ``paired``, per algorithm: its :class:`Difference` from ``base`` on
    the same held-out prompts. The base's score of a prompt is its mean over the base's seeds.
    Columns where ``base`` has no per-prompt scores are left out, and so are algorithms whose
    runs scored other prompts.

    ``paired`` maps a column title to per-algorithm, per-seed lists of per-prompt scores.

    >>> d = base_differences({"reward": {"base": [[0.2, 0.4]], "ppo": [[0.5, 0.5], [0.7, 0.5]]}})
    >>> ppo = d["reward"]["ppo"]
    >>> round(ppo.mean, 3), round(ppo.low, 3), round(ppo.high, 3), ppo.seeds
    (0.25, 0.1, 0.4, 2)
    """
    out: dict[str, dict[str, Difference]] = {}
    for title, per in paired.items():
        if not per.get(base):
            continue
        base_scores = np.mean(per[base], axis=0)  # (P,)
        out[title] = {}
        for algo, runs in per.items():
            if algo == base or not runs or any(len(r) != len(base_scores) for r in runs):
                continue
            diff = np.asarray(runs) - base_scores  # (S, P)
            low, high = stratified_bootstrap_ci(diff)
            out[title][algo] = Difference(float(diff.mean()), low, high, len(runs))
    return out


def _seeds(differences: dict[str, dict[str, Difference]], algo: str) -> int:
    """The most seeds behind ``algo``'s differences (a column may rest on fewer runs)."""
    return max(per[algo].seeds for per in differences.values() if algo in per)


def base_difference_table(differences: dict[str, dict[str, Difference]], base: str = "base") -> str:
    """Markdown table of :func:`base_differences`: a row per algorithm, a column per metric,
    each cell the mean difference with its 95% interval. An interval that excludes 0 is a
    difference from the base model that the held-out prompts and the seeds support. Empty when
    there is nothing to compare. ``base`` names the row the differences were taken from.

    >>> paired = {"reward": {"base": [[0.2, 0.4]], "ppo": [[0.5, 0.5], [0.7, 0.5]]}}
    >>> print(base_difference_table(base_differences(paired)))
    | algo - base | seeds | reward (95% CI) |
    |---|---|---|
    | ppo | 2 | 0.250 [0.100, 0.400] |
    """
    algos = list(dict.fromkeys(a for per in differences.values() for a in per))
    if not algos:
        return ""
    lines = [f"| algo - {base} | seeds | " + " | ".join(f"{t} (95% CI)" for t in differences) + " |",
             "|" + "---|" * (len(differences) + 2)]  # fmt: skip
    for algo in algos:
        cells = [per.get(algo) for per in differences.values()]
        line = [algo, str(_seeds(differences, algo))]
        line += [f"{fmt(d.mean)} [{fmt(d.low)}, {fmt(d.high)}]" if d else "" for d in cells]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def success_rates(paired: dict[str, PerPrompt], threshold: float) -> dict[str, PerPrompt]:
    """The reward columns of ``paired`` (greedy and sampled) as 1.0 where a prompt's reward is
    above ``threshold``, else 0.0, titled ``"<column> > <threshold>"``: their mean is the share
    of prompts a policy wins (for sentiment control at 0.5, the positive rate).

    >>> success_rates({"reward": {"base": [[0.2, 0.7]]}}, 0.5)
    {'reward > 0.5': {'base': [[0.0, 1.0]]}}
    """
    return {
        f"{title} > {threshold:g}": {
            algo: [[float(x > threshold) for x in run] for run in runs]
            for algo, runs in paired[title].items()
        }
        for title in ("reward", "sampled reward")
        if paired.get(title)
    }


def rate_table(rates: dict[str, PerPrompt]) -> str:
    """Markdown table of each algorithm's share per column of :func:`success_rates`, with its
    95% bootstrap interval stratified over seeds and prompts.

    >>> print(rate_table({"reward > 0.5": {"base": [[0.0, 1.0]], "ppo": [[1.0, 1.0]]}}))
    | algo | seeds | reward > 0.5 (95% CI) |
    |---|---|---|
    | base | 1 | 0.500 [0.000, 1.000] |
    | ppo | 1 | 1.000 [1.000, 1.000] |
    """
    algos = list(dict.fromkeys(a for per in rates.values() for a in per))
    lines = ["| algo | seeds | " + " | ".join(f"{t} (95% CI)" for t in rates) + " |",
             "|" + "---|" * (len(rates) + 2)]  # fmt: skip
    for algo in algos:
        seeds = max(len(per.get(algo, [])) for per in rates.values())
        cells = [stratified_cell(per[algo]) if per.get(algo) else "" for per in rates.values()]
        lines.append("| " + " | ".join([algo, str(seeds), *cells]) + " |")
    return "\n".join(lines)


def improvement_table(rows: Sequence[dict[str, str]], key: str = "eval/reward") -> str:
    """Markdown table of the probability of improvement P(row > column) on ``key``, with its
    95% bootstrap interval, for every ordered pair of algorithms (Agarwal et al. 2021).

    Each run's score is its held-out mean; two algorithms run on the same seeds are compared
    seed-paired (the bootstrap resamples seeds jointly), otherwise independently.

    >>> rows = [{"algo": a, "seed": str(s), "eval/reward": str(r)}
    ...         for a, rs in (("base", [0.1, 0.2]), ("ppo", [0.5, 0.6])) for s, r in enumerate(rs)]
    >>> print(improvement_table(rows))
    | P(row > column) | base | ppo |
    |---|---|---|
    | base | - | 0.000 [0.000, 0.000] |
    | ppo | 1.000 [1.000, 1.000] | - |
    """
    scores: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row.get(key, "") != "":
            scores[row["algo"]][int(row["seed"])] = float(row[key])
    algos = list(scores)
    lines = ["| P(row > column) | " + " | ".join(algos) + " |", "|" + "---|" * (len(algos) + 1)]
    for x in algos:
        line = [x]
        for y in algos:
            if x == y:
                line.append("-")
                continue
            paired = sorted(scores[x]) == sorted(scores[y])
            xs = [scores[x][s] for s in sorted(scores[x])]
            ys = [scores[y][s] for s in sorted(scores[y])]
            p = probability_of_improvement(xs, ys, paired=paired)
            line.append(f"{fmt(p.probability)} [{fmt(p.low)}, {fmt(p.high)}]")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def learning_curves(
    curves: dict[str, list[list[dict[str, str]]]], points: int = CURVE_POINTS
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per algorithm: ``(tokens (G,), mean (G,), low (G,), high (G,))`` of the train reward.

    Each seed's curve (``curve.csv`` rows) is linearly interpolated onto ``points`` token
    counts from its first point to the end that all seeds reached, then averaged with a 95%
    bootstrap band over seeds. Algorithms without a curve (the untrained baseline) are left out.

    >>> c = [[{"tokens": "0", "reward": "0"}, {"tokens": "10", "reward": "1"}]]
    >>> x, mean, low, high = learning_curves({"ppo": c}, points=3)["ppo"]
    >>> x.tolist(), mean.tolist()
    ([0.0, 5.0, 10.0], [0.0, 0.5, 1.0])
    """
    out = {}
    for algo, runs in curves.items():
        runs = [r for r in runs if r and "reward" in r[0]]  # sft / dpo curves hold a loss
        if not runs:
            continue
        xs = [np.array([float(p["tokens"]) for p in r]) for r in runs]
        ys = [np.array([float(p["reward"]) for p in r]) for r in runs]
        grid = np.linspace(max(x[0] for x in xs), min(x[-1] for x in xs), points)  # (G,)
        stacked = np.stack([np.interp(grid, x, y) for x, y in zip(xs, ys, strict=True)])  # (n, G)
        out[algo] = (grid, *bootstrap_band(stacked))
    return out


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def plot_curves(task: str, bands: dict[str, tuple[np.ndarray, ...]], path: Path) -> None:
    """Train reward vs environment tokens, mean and 95% band per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for algo, (x, mean, low, high) in bands.items():
        (line,) = ax.plot(x, mean, label=algo)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment tokens (generated)")
    ax.set_ylabel("train reward (batch mean)")
    ax.set_title(f"{task}: learning curves (mean, 95% bootstrap band over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save_figure(fig, path)


def plot_frontier(task: str, rows: Sequence[dict[str, str]], path: Path) -> None:
    """Held-out reward vs KL to the reference: one dot per run, mean with CI per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    by_algo: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row.get("eval/kl", "") != "":
            by_algo[row["algo"]].append(row)
    for algo, runs in by_algo.items():
        kl = np.array([float(r["eval/kl"]) for r in runs])
        reward = np.array([float(r["eval/reward"]) for r in runs])
        (dots,) = ax.plot(kl, reward, "o", alpha=0.4)
        s = summarize(reward)
        ax.errorbar(
            [kl.mean()],
            [s.mean],
            yerr=[[s.mean - s.low], [s.high - s.mean]],
            fmt="s",
            color=dots.get_color(),
            capsize=4,
            label=algo,
        )
    ax.set_xlabel("KL(policy || reference) per completion (nats)")
    ax.set_ylabel("held-out reward")
    ax.set_title(f"{task}: runs (dots), mean and 95% CI (squares)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save_figure(fig, path)


def plot_gains(task: str, differences: dict[str, dict[str, Difference]], path: Path) -> None:
    """Each algorithm's difference from the base model with its 95% interval, one panel per
    metric: a bar that clears the zero line is a gain (or loss) the data support."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = sorted({a for per in differences.values() for a in per}, reverse=True)
    fig, axes = plt.subplots(
        1, len(differences), figsize=(3.2 * len(differences) + 1, 0.35 * len(algos) + 1.4),
        sharey=True, squeeze=False,
    )  # fmt: skip
    for ax, (title, per) in zip(axes[0], differences.items(), strict=True):
        for y, algo in enumerate(algos):
            if algo in per:
                d = per[algo]
                clears = d.low > 0 or d.high < 0
                ax.errorbar([d.mean], [y], xerr=[[d.mean - d.low], [d.high - d.mean]], fmt="o",
                            color="C0" if clears else "0.6", capsize=3)  # fmt: skip
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{title} - base")
        ax.grid(axis="x", alpha=0.3)
    seeds = {a: _seeds(differences, a) for a in algos}
    axes[0][0].set_yticks(
        range(len(algos)), [f"{a} ({seeds[a]} seed{'s' * (seeds[a] > 1)})" for a in algos]
    )
    fig.suptitle(f"{task}: difference from the base model on held-out prompts (95% CI)")
    _save_figure(fig, path)


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def samples_side_by_side(
    samples: dict[str, list[dict[str, Any]]], count: int = SAMPLE_PROMPTS, width: int = 200
) -> str:
    """Markdown: for each of the first ``count`` held-out prompts, every algorithm's completion.

    ``samples`` maps an algorithm to one run's ``samples.jsonl`` records (same prompts in the
    same order for every run, as :func:`agents.evaluation.evaluate` guarantees).

    >>> s = {"ppo": [{"index": 0, "prompt": "Hi", "references": ["Hello"],
    ...               "completion": "Hey", "reward": 0.5}]}
    >>> print(samples_side_by_side(s))
    **Prompt 0**: Hi
    <BLANKLINE>
    | | completion | reward |
    |---|---|---|
    | reference | Hello | |
    | ppo | Hey | 0.500 |
    """
    first = next(iter(samples.values()), [])
    blocks = []
    for i, base in enumerate(first[:count]):
        lines = [
            f"**Prompt {base['index']}**: {_one_line(base['prompt'], 400)}",
            "",
            "| | completion | reward |",
            "|---|---|---|",
        ]
        if base["references"]:
            lines.append(f"| reference | {_one_line(base['references'][0], width)} | |")
        for algo, records in samples.items():
            record = records[i]
            text = _one_line(record["completion"], width)
            lines.append(f"| {algo} | {text} | {record['reward']:.3f} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _run_files(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run's ``result.json`` (empty when absent) and its learning curve (``result.json``'s,
    else ``curve.csv``'s, else none)."""
    record = (
        json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    )
    if "curve" in record:
        return record, record["curve"]
    return record, read_csv(run / "curve.csv") if (run / "curve.csv").is_file() else []


def write_report(
    run_dir: str | Path, threshold: float | None = None, against: Sequence[str] = ()
) -> Path:
    """Write ``report.md`` and the plots of the grid in ``run_dir``; returns the report's path.
    With ``threshold``, each task also gets the share of held-out prompts whose reward is
    above it (:func:`success_rates`), and that share's difference from the base model. Each
    algorithm of ``against`` gets a table like the base model's: every other algorithm's
    paired difference from it (``sft`` for RL after SFT), in the tasks that ran it.

    ``results.csv`` is rebuilt from the runs' ``result.json`` files first (when there are any),
    so the committed ``result.json`` files alone regenerate the report.

    Raises:
        FileNotFoundError: ``run_dir`` has no finished run (no ``result.json``, no ``results.csv``).
        ValueError: an algorithm of ``against`` has no run in ``run_dir``.
    """
    from agents.bench.results import load_results, write_results_csv

    run_dir = Path(run_dir)
    results = run_dir / "results.csv"
    if load_results(run_dir):
        write_results_csv(run_dir)
    if not results.is_file():
        raise FileNotFoundError(
            f"{results} not found: RUN_DIR must be the --out directory of `textgym bench` "
            "with at least one finished run (a <task>/<algo>/seed<k>/result.json)"
        )
    rows = read_csv(results)
    ran = {r["algo"] for r in rows}
    missing = [a for a in against if a not in ran]
    if missing:
        there = ", ".join(sorted(ran))
        raise ValueError(f"against={missing}: no run of it in {run_dir}; algorithms there: {there}")
    log = run_dir / "bench.json"
    commands = json.loads(log.read_text()).get("commands", []) if log.is_file() else []
    by_task: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    parts = [f"# Benchmark report: {run_dir.name}", ""]
    if commands:
        parts += ["Commands:", "", *(f"    {c}" for c in commands), ""]
    first = rows[0]
    parts += [
        f"Device: {first.get('device', '?')}. Each table row: mean over seeds with its 95% "
        "percentile-bootstrap confidence interval in brackets (for the rewards stratified over "
        "seeds and prompts: seeds resampled, then prompts within each seed); IQM = interquartile "
        "mean over seeds. Metrics are on held-out prompts with greedy decoding, the sampled "
        "reward with sampling (see agents/evaluation.py). P(row > column) is the probability of "
        "improvement (Agarwal et al. 2021) on the greedy held-out reward, with its 95% "
        "bootstrap interval over seeds.",
        "",
    ]
    for task, task_rows in by_task.items():
        curves: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        paired: dict[str, PerPrompt] = {title: defaultdict(list) for title, *_ in PAIRED_METRICS}
        samples: dict[str, list[dict[str, Any]]] = {}
        for row in sorted(task_rows, key=lambda r: int(r["seed"])):
            run = run_dir / task / row["algo"] / f"seed{row['seed']}"
            record, curve = _run_files(run)
            curves[row["algo"]].append(curve)
            for title, key, metric in PAIRED_METRICS:
                if metric in record.get(key, {}):
                    paired[title][row["algo"]].append(record[key][metric])
            if row["algo"] not in samples and (run / "samples.jsonl").is_file():
                lines = (run / "samples.jsonl").read_text().splitlines()  # the lowest seed's
                samples[row["algo"]] = [json.loads(line) for line in lines]
        summary = task_table(task_rows, paired["reward"], paired["sampled reward"])
        parts += [f"## {task}", "", summary, ""]
        differences = base_differences(paired)
        table = base_difference_table(differences)
        if table:
            parts += ["Against the base model, on the same prompts:", "", table, ""]
        for other in against:
            table = base_difference_table(base_differences(paired, other), other)
            if table:
                parts += [f"Against {other}, on the same prompts:", "", table, ""]
        rates = success_rates(paired, threshold) if threshold is not None else {}
        if rates:
            parts += [f"Share of prompts with a reward above {threshold:g}:", "",
                      rate_table(rates), ""]  # fmt: skip
            table = base_difference_table(base_differences(rates))
            if table:
                parts += ["Against the base model, on the same prompts:", "", table, ""]
        if any(differences.values()):
            plot_gains(task, differences, run_dir / "plots" / f"gains_{task}.png")
            parts += [f"![difference from the base model](plots/gains_{task}.png)", ""]
        if len({r["algo"] for r in task_rows}) > 1:
            parts += ["Probability of improvement:", "", improvement_table(task_rows), ""]
            if any(r.get("eval_sampled/reward", "") != "" for r in task_rows):
                table = improvement_table(task_rows, "eval_sampled/reward")
                parts += ["Probability of improvement (sampled reward):", "", table, ""]
        bands = learning_curves(curves)
        if bands:
            plot_curves(task, bands, run_dir / "plots" / f"curves_{task}.png")
            parts += [f"![learning curves](plots/curves_{task}.png)", ""]
        if any(r.get("eval/kl", "") != "" for r in task_rows):
            plot_frontier(task, task_rows, run_dir / "plots" / f"frontier_{task}.png")
            parts += [f"![reward vs KL](plots/frontier_{task}.png)", ""]
        if samples:
            parts += [
                "### Samples (lowest seed of each algorithm)",
                "",
                samples_side_by_side(samples),
                "",
            ]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(parts))
    return path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``textgym report``."""
    p = subparsers.add_parser(
        "report",
        help="tables, plots and samples of a `textgym bench` output directory",
        description="Write RUN_DIR/report.md (a table per task with 95% bootstrap CIs and "
        "IQMs over seeds, learning curves, reward-vs-KL frontier, samples side by side) and "
        "RUN_DIR/plots/*.png.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of `textgym bench`")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="T",
        help="also tabulate the share of held-out prompts whose reward is above T, against the "
        "base model (0.5 on sst2_sentiment: the positive rate)",
    )
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="ALGO",
        help="also tabulate every algorithm's paired difference from ALGO, as from the base "
        "model (sft: what RL after SFT adds); repeatable",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        print(f"report: {write_report(args.run_dir, args.threshold, args.against)}")
    except (FileNotFoundError, ValueError) as exc:
        import sys

        print(f"textgym report: error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["add_parser", "cell", "improvement_table", "learning_curves", "rate_table",
           "samples_side_by_side", "stratified_cell", "success_rates", "task_table",
           "write_report"]  # fmt: skip
