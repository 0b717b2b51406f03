"""Running a bench grid: every unfinished (seed, task, algo) trained by its adapter, then
evaluated alike (:func:`agents.evaluation.evaluate`) against one reference model: greedy
(``eval/...``), then sampled at ``eval_temperature`` (``eval_sampled/...``) on the same prompts.

``result.json`` holds everything the report needs (the metrics, each prompt's scores under
``per_prompt`` / ``per_prompt_sampled`` for the stratified bootstrap, and the learning curve),
so a grid's committed ``result.json`` files regenerate every table."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from agents.bench.adapters import bench_algorithms
from agents.bench.config import BenchConfig, RunSpec, bench_command
from agents.bench.results import (
    environment_info,
    load_results,
    run_dir,
    write_csv,
    write_results_csv,
)
from agents.dialogue_eval import conversation_settings, evaluate_dialogues, is_conversation_task
from agents.evaluation import EvalResult, evaluate
from agents.models import build_model
from agents.runtime import resolve_device
from agents.tracking import atomic_write
from textgym.lm import Sampling


class Reference:
    """The reference LM of a grid, loaded once (per seed for "tiny", whose weights are seeded)."""

    def __init__(self, bench: BenchConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.bench, self.tokenizer = bench, tokenizer
        self._cached: tuple[int | None, nn.Module] | None = None

    def get(self, seed: int, device: torch.device) -> nn.Module:
        key = seed if self.bench.model == "tiny" else None
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # free the old one first
            model = build_model(self.bench.model, self.tokenizer, seed).to(device).eval()
            model.requires_grad_(False)
            self._cached = (key, model)
        return self._cached[1]


def run_one(
    spec: RunSpec, reference: Reference, device: torch.device, env: dict[str, Any]
) -> dict[str, Any]:
    """Train (through the adapter) and evaluate one run; writes its files, result.json last."""
    b = spec.bench
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    trained = bench_algorithms()[spec.algo](spec)
    write_csv(spec.run_dir / "curve.csv", trained.curve, ["tokens", "seconds", "reward"])
    ref = trained.reference if trained.reference is not None else reference.get(spec.seed, device)
    policy = trained.eval_model if trained.eval_model is not None else trained.model
    start = time.perf_counter()

    def run_eval(sampling: Sampling | None) -> EvalResult:
        if is_conversation_task(spec.task):  # whole dialogues: success, turns, turn reward
            if trained.eval_best_of > 1:
                raise ValueError(f"{spec.algo} (best-of-n) does not apply to dialogue tasks")
            return evaluate_dialogues(
                policy,
                spec.tokenizer,
                spec.task,
                num_prompts=b.eval_prompts,
                batch_size=b.eval_batch_size,
                max_context_tokens=b.max_prompt_tokens,
                max_turn_tokens=b.max_new_tokens,
                sampling=sampling,
                seed=spec.seed,
                **conversation_settings({**b.options.get("*", {}), **spec.options}),
            )
        return evaluate(
            policy,
            spec.tokenizer,
            spec.task,
            reference=ref,
            num_prompts=b.eval_prompts,
            batch_size=b.eval_batch_size,
            max_prompt_tokens=b.max_prompt_tokens,
            max_new_tokens=b.max_new_tokens,
            sampling=sampling,
            seed=spec.seed,
            best_of=trained.eval_best_of,
        )

    result = run_eval(trained.eval_sampling)
    metrics = dict(result.metrics)
    per_prompt = {"per_prompt": result.per_prompt()}
    if b.eval_temperature > 0:
        shared = b.options.get("*", {})
        sampled = run_eval(
            Sampling(b.eval_temperature, shared.get("top_k", 0), shared.get("top_p", 1.0))
        )
        metrics.update({"eval_sampled/" + k[5:]: v for k, v in sampled.metrics.items()})
        per_prompt["per_prompt_sampled"] = sampled.per_prompt()
    eval_seconds = time.perf_counter() - start
    lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in result.samples)
    atomic_write(spec.run_dir / "samples.jsonl", lines)
    if b.save_policy and trained.save is not None:
        trained.save(spec.run_dir / "policy")
    record = {
        "algo": spec.algo,
        "task": spec.task,
        "seed": spec.seed,
        "tokens": trained.tokens,
        "train_seconds": trained.seconds,
        "eval_seconds": eval_seconds,
        "metrics": metrics,
        "budget": {"tokens": b.budget_tokens, "seconds": b.budget_seconds},
        "bench": b.to_dict(),
        "config": trained.config,
        "env": env,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **per_prompt,
        "curve": trained.curve,
    }
    atomic_write(spec.run_dir / "result.json", json.dumps(record, indent=2, default=str) + "\n")
    shutil.rmtree(spec.run_dir / "train" / "checkpoints", ignore_errors=True)
    return record


def run_grid(bench: BenchConfig) -> list[dict[str, Any]]:
    """Run every unfinished (seed, task, algo) of the grid; returns all finished results.

    Seeds are the outer loop, so an interrupted grid has comparable partial results. Several
    invocations may share one output directory when they run disjoint seeds (e.g. ``--seeds 0``
    and ``--seeds 1`` in two processes); a run another one finished meanwhile is skipped.
    """
    from textgym.models import SMOLLM2_ALIAS, load_tokenizer

    out = Path(bench.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Several invocations may fill one directory (e.g. a baseline added later): keep every command.
    log = out / "bench.json"
    commands = json.loads(log.read_text()).get("commands", []) if log.is_file() else []
    command = bench_command(bench)
    commands += [] if command in commands else [command]
    atomic_write(log, json.dumps({"bench": bench.to_dict(), "commands": commands}, indent=2) + "\n")
    device = resolve_device(bench.device)
    env = environment_info(device)
    tokenizer = load_tokenizer(
        bench.tokenizer or (SMOLLM2_ALIAS if bench.model == "tiny" else bench.model)
    )
    reference = Reference(bench, tokenizer)
    grid = [(s, t, a) for s in bench.seeds for t in bench.tasks for a in bench.algos]
    todo = [g for g in grid if not (run_dir(out, g[1], g[2], g[0]) / "result.json").is_file()]
    say = tqdm.write if bench.progress else (lambda _: None)
    say(f"bench: {len(grid)} runs, {len(grid) - len(todo)} already finished, {len(todo)} to go")
    bar = tqdm(total=len(grid), initial=len(grid) - len(todo), disable=not bench.progress)
    for seed, task, algo in todo:
        bar.set_description(f"{algo} {task} seed{seed}")
        spec = RunSpec(algo, task, seed, run_dir(out, task, algo, seed), bench, tokenizer)
        if (spec.run_dir / "result.json").is_file():  # finished meanwhile by another invocation
            bar.update(1)
            continue
        record = run_one(spec, reference, device, env)
        write_results_csv(out)
        m = record["metrics"]
        say(
            f"{algo:>10} {task} seed {seed}: {record['tokens']} tokens in "
            f"{record['train_seconds']:.0f} s | eval reward {m['eval/reward']:.3f}"
            + (f", kl {m['eval/kl']:.2f}" if "eval/kl" in m else "")
            + f", length {m['eval/length']:.1f}"
        )
        bar.update(1)
    bar.close()
    write_results_csv(out)
    return load_results(out)


__all__ = ["Reference", "run_grid", "run_one"]
