"""``textgym eval``: score a saved policy, or the base model, on held-out prompts of a task.

Every policy is judged alike: the first ``--num-prompts`` prompts of the split in file order,
the same prompt and completion budgets, the bench's metrics (:func:`agents.evaluation.evaluate`:
reward, ROUGE, KL and perplexity under the reference, distinct-n, length, EOS fraction), greedy
and then sampled (seeded) on the same prompts. ``--path FILE`` evaluates on any file in the
task's schema (e.g. a new ``test.jsonl`` of DialogSum). The result is one JSON file (settings,
metrics, each prompt's scores, the greedy completions) and a table on stdout::

    textgym eval --policy runs/ppo-dialogsum-seed0 --task dialogsum
    textgym eval --policy base --model smollm2-135m --task dialogsum --path my_test.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

POLICY_BASE = "base"
"""``--policy base``: the untrained ``--model``."""


def run_settings(path: str | Path) -> dict[str, Any]:
    """The training config of the run behind a policy path, or {} when none is found.

    Looks in ``RUN/config.json`` (``textgym train``), ``RUN/train/config.json`` and
    ``RUN/result.json`` (a bench run), and the same next to a ``policy/`` directory.
    """
    path = Path(path)
    for run in (path, path.parent) if path.name == "policy" else (path,):
        for file in (run / "config.json", run / "train" / "config.json"):
            if file.is_file():
                config = json.loads(file.read_text())
                if "algo" in config:  # a model's own config.json has no algo
                    return config
        if (run / "result.json").is_file():
            return json.loads((run / "result.json").read_text()).get("config", {})
    return {}


def load_eval_model(
    policy: str, model: str, tokenizer: str | None, seed: int
) -> tuple[Any, Any, str]:
    """``(model, tokenizer, base model name)`` of ``policy``: ``"base"`` (``model`` untrained), a
    run or policy directory with full weights, or one with LoRA adapters (merged into the base
    model the run was trained from)."""
    from agents.models import build_model
    from agents.policy import load_policy, policy_dir
    from textgym.models import SMOLLM2_ALIAS, load_tokenizer

    def tokenizer_of(name: str) -> Any:
        return load_tokenizer(tokenizer or (SMOLLM2_ALIAS if name == "tiny" else name))

    if policy == POLICY_BASE:
        tok = tokenizer_of(model)
        return build_model(model, tok, seed), tok, model
    base = run_settings(policy).get("model", model)
    adapters = [
        d for d in (Path(policy) / "policy", Path(policy)) if (d / "adapter_config.json").is_file()
    ]
    if adapters:  # LoRA: the base model the run started from, with its adapters merged in
        from peft import PeftModel

        tok = tokenizer_of(base)
        lm = build_model(base, tok, seed)
        return PeftModel.from_pretrained(lm, str(adapters[0])).merge_and_unload(), tok, base
    loaded, tok = load_policy(policy_dir(policy, "--policy"))
    return loaded.model, tok, base


def load_eval_task(task: str, path: str | None, split: str) -> Any:
    """The task, or with ``path`` the task built from that one file as its ``split``."""
    from textgym.tasks import make_task

    if path is None:
        return make_task(task)
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"--path {path}: no such file")
    try:
        return make_task(task, path=file.parent, split={split: str(file)}, holdout=0)
    except TypeError:
        raise ValueError(
            f"task {task!r} is built in and reads no files; --path applies to the data-set "
            "tasks (dialogsum, samsum, taskmaster4, imdb, ...)"
        ) from None


def metric_lines(runs: dict[str, Any]) -> str:
    """A plain-text table: one line per metric, one column per evaluation (greedy, sampled),
    each per-prompt metric with its 95% bootstrap interval over prompts.

    >>> run = {"metrics": {"eval/reward": 0.5, "eval/length": 3.0},
    ...        "per_prompt": {"index": [0, 1], "reward": [0.5, 0.5], "length": [3.0, 3.0]}}
    >>> print(metric_lines({"greedy": run}))
    metric    greedy
    reward    0.500 [0.500, 0.500]
    length    3.000 [3.000, 3.000]
    """
    from agents.report import fmt
    from agents.stats import bootstrap_ci

    names: list[str] = []
    for run in runs.values():
        names += [k[5:] for k in run["metrics"] if k[5:] not in names]
    rows = [["metric", *runs]]
    for name in names:
        row = [name]
        for run in runs.values():
            value = run["metrics"].get(f"eval/{name}")
            scores = run["per_prompt"].get(name)
            if value is None:
                row.append("")
            elif scores and len(scores) > 1:
                low, high = bootstrap_ci(scores)
                row.append(f"{fmt(value)} [{fmt(low)}, {fmt(high)}]")
            else:
                row.append(fmt(value))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "    ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def default_out(policy: str, model: str, task: str, split: str) -> Path:
    """``RUN_DIR/eval_<task>_<split>.json``, or ``runs/eval/base_<model>_<task>_<split>.json``."""
    if policy == POLICY_BASE:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")
        return Path("runs") / "eval" / f"base_{name}_{task}_{split}.json"
    return Path(policy) / f"eval_{task}_{split}.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``textgym eval``."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a saved policy or the base model on held-out prompts of a task",
        description="Score a policy (a `textgym train` / `textgym bench --save-policy` run "
        "directory, its policy/ folder, or 'base' for the untrained --model) on the first "
        "--num-prompts prompts of a task's split, greedy and then sampled, with the bench's "
        "metrics. Writes a JSON file and prints a table (95% intervals over prompts).",
        allow_abbrev=False,
    )
    p.add_argument("--policy", required=True, metavar="RUN_DIR",
                   help="run directory, policy directory, or 'base' (the untrained --model)")  # fmt: skip
    p.add_argument("--task", required=True, help="registered task name (textgym info lists them)")
    p.add_argument("--path", metavar="FILE",
                   help="evaluate on this file (in the task's schema) as the --split")  # fmt: skip
    p.add_argument("--split", help="held-out split (default: test, else validation)")
    p.add_argument("--model", default="smollm2-135m",
                   help="the base model for --policy base, and the default reference "
                        "(default smollm2-135m; a run's own base model wins for a run)")  # fmt: skip
    p.add_argument("--tokenizer", help="tokenizer (default: the policy's or the model's)")
    p.add_argument("--reference", help="reference LM for kl and ppl_ref (default: the policy's "
                   "base model); 'none' skips them")  # fmt: skip
    p.add_argument("--reward", help="reward spec (default: the task's own reward)")
    p.add_argument("--num-prompts", type=int, default=100, help="prompts (default 100)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batch (default 16)")
    p.add_argument("--max-prompt-tokens", type=int, default=256, help="default 256 (as the bench)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="default 48 (as the bench)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="temperature of the sampled evaluation (0 = greedy only; default 1)")  # fmt: skip
    p.add_argument("--top-k", type=int, default=0, help="sampled evaluation top-k (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="sampled evaluation top-p (1 = off)")
    p.add_argument("--best-of", type=int, default=1,
                   help="sampled evaluation keeps the best of N completions per prompt by the "
                        "reward (uses the reward at test time; default 1)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled evaluation")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", metavar="FILE.json",
                   help="default RUN_DIR/eval_<task>_<split>.json, or "
                        "runs/eval/base_<model>_<task>_<split>.json for --policy base")  # fmt: skip
    p.set_defaults(func=_main)


def evaluate_policy(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluations of ``args`` (the parsed options of ``textgym eval``); the JSON record."""
    import torch

    from agents.bench.results import environment_info
    from agents.evaluation import eval_split, evaluate
    from agents.models import build_model
    from agents.runtime import resolve_device
    from textgym.lm import Sampling

    if args.best_of > 1 and args.temperature == 0:
        raise ValueError("--best-of needs sampled completions: set --temperature > 0")
    task = load_eval_task(args.task, args.path, args.split or "test")
    split = eval_split(task, args.split or ("test" if args.path else None))
    # The run's seed builds its model ("tiny" weights are seeded) and reference; else --seed.
    settings = run_settings(args.policy) if args.policy != POLICY_BASE else {}
    seed = int(settings.get("seed", args.seed))
    torch.manual_seed(seed)
    model, tokenizer, base = load_eval_model(args.policy, args.model, args.tokenizer, seed)
    device = resolve_device(args.device)
    model = model.to(device)
    reference_name = args.reference or base
    reference = None
    if reference_name != "none":
        reference = build_model(reference_name, tokenizer, seed).to(device).eval()
    common = {
        "reference": reference, "reward": args.reward, "split": split,
        "num_prompts": args.num_prompts, "batch_size": args.batch_size,
        "max_prompt_tokens": args.max_prompt_tokens, "max_new_tokens": args.max_new_tokens,
    }  # fmt: skip
    passes = {"greedy": (None, 1)}
    if args.temperature > 0:
        sampling = Sampling(args.temperature, args.top_k, args.top_p)
        passes["sampled" if args.best_of == 1 else f"best_of_{args.best_of}"] = (
            sampling,
            args.best_of,
        )
    record: dict[str, Any] = {
        "policy": args.policy, "base_model": base, "reference": reference_name,
        "task": task.name, "path": args.path, "split": split,
        "settings": {k: v for k, v in common.items() if k not in ("reference",)}
        | {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
           "best_of": args.best_of, "seed": args.seed},
    }  # fmt: skip
    start = time.perf_counter()
    for name, (sampling, best_of) in passes.items():
        result = evaluate(
            model, tokenizer, task, sampling=sampling, seed=args.seed, best_of=best_of, **common
        )
        record[name] = {"metrics": result.metrics, "per_prompt": result.per_prompt()}
        if name == "greedy":
            record["samples"] = result.samples
    record["eval_seconds"] = time.perf_counter() - start
    record["env"] = environment_info(device)
    return record


def _main(args: argparse.Namespace) -> int:
    from agents.tracking import atomic_write

    try:
        record = evaluate_policy(args)
    except (ValueError, TypeError, OSError, KeyError) as exc:  # bad names, paths, splits
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"textgym eval: error: {message}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out(args.policy, args.model, args.task,
                                                      record["split"])  # fmt: skip
    atomic_write(out, json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
    runs = {k: v for k, v in record.items() if isinstance(v, dict) and "metrics" in v}
    n = len(record["greedy"]["per_prompt"]["index"])
    print(f"{record['policy']} on {record['task']} ({record['split']}, {n} prompts):")
    print(metric_lines(runs))
    print(f"written: {out}")
    return 0


__all__ = [
    "POLICY_BASE",
    "add_parser",
    "default_out",
    "evaluate_policy",
    "load_eval_model",
    "load_eval_task",
    "metric_lines",
    "run_settings",
]
