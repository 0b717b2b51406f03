"""Where one training iteration's time goes: rollout decode, reward, reference, update.

Runs our trainer (``textgym train``'s code path) for each algorithm on the keywords task with
the soft keyword-coverage reward, one untimed warm-up iteration and then ``--steps`` timed
ones, and splits each iteration into:

- ``decode``: the KV-cache rollout (prefill and per-token forwards, sampling, env steps);
- ``reward``: the env's calls of the reward on finished episodes (timed around the reward);
- ``reference``: the reference model's no-cache forward over the batch (timed by running it
  again on the iteration's batch);
- ``update``: targets, the loss's forward and backward, and the optimizer step.

It prints completion tokens/s and the fraction of the compute limit reached: about
2 x params x tokens FLOPs for the rollout and the reference and 6 x params x tokens for the
update (tokens = prompt + completion tokens of every sequence; attention not counted, so a
lower bound), against the matmul FLOP/s measured on the device in the dtype the trainer's
matmuls run in (bf16 autocast on CUDA, float32 on CPU). On CUDA it also prints the peak memory. ``--lora R`` trains LoRA adapters of rank R instead of all weights; ``--cpu-bf16`` runs the trainer with bf16 autocast on CPU (``cpu_bf16``), against the bf16 matmul limit.

    python benchmarks/iteration_profile.py [--algos grpo,ppo] [--model smollm2-135m]
        [--batch 16] [--group 4] [--new-tokens 32] [--steps 2] [--lora 0]
        [--device cpu|cuda] [--cpu-bf16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from agents import Trainer, make_config
from agents.policy import evaluate_tokens
from textgym.models import load_model, load_tokenizer, tiny_model
from textgym.rewards import SoftKeywordCoverage

LEARNING_RATE = 1e-6
KL_COEF = 0.04


class TimedReward(SoftKeywordCoverage):
    """The soft keyword-coverage reward, adding up the seconds spent in it (on the class: the
    trainer may hold a copy)."""

    seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            TimedReward.seconds += time.perf_counter() - start


def matmul_flops(device: str, dtype: torch.dtype, size: int = 2048, seconds: float = 2.0) -> float:
    """Measured matmul FLOP/s on ``device`` in ``dtype`` (the compute limit of the ratio)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * size**3 * n / (time.perf_counter() - start)


def n_params(model: torch.nn.Module) -> int:
    """Parameters a token's matmuls touch: tied embeddings counted once more for the LM head."""
    params = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight
    if head is model.get_input_embeddings().weight:
        params += head.numel()
    return params


def profile(algo: str, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per phase over the timed iterations, and the token counts."""
    reward = TimedReward()
    with tempfile.TemporaryDirectory() as run_dir:
        group = {"completions_per_prompt": args.group} if algo in ("grpo", "rloo") else {}
        config = make_config(
            algo, model=args.model, task="keywords", batch_size=args.batch,
            max_new_tokens=args.new_tokens, iterations=args.steps + 1,
            learning_rate=LEARNING_RATE, kl_coef=KL_COEF, num_epochs=1, num_minibatches=1,
            eval_every=0, save_every=0, progress=False, report_to="none", run_dir=run_dir,
            device=args.device, lora_r=args.lora, cpu_bf16=args.cpu_bf16, **group,
        )  # fmt: skip
        trainer = Trainer(config, reward=reward)
        trainer.step()  # warm-up
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        phases: dict[str, list[float]] = {
            k: [] for k in ("decode", "reward", "reference", "update")
        }
        tokens = seq_tokens = 0
        for _ in range(args.steps):
            TimedReward.seconds = 0.0
            metrics = trainer.step()
            batch = trainer.last_batch
            start = time.perf_counter()
            with torch.no_grad(), trainer.runtime.autocast():
                evaluate_tokens(
                    trainer.policy, batch.prompt_ids, batch.prompt_mask, batch.tokens,
                    trainer.sampling.scale, reference=True, share_prompts=True,
                )  # fmt: skip
            reference = time.perf_counter() - start if trainer.policy.has_reference else 0.0
            phases["reference"].append(reference)
            phases["reward"].append(TimedReward.seconds)
            phases["decode"].append(metrics["time/rollout_s"] - reference - TimedReward.seconds)
            phases["update"].append(metrics["time/update_s"])
            tokens += batch.num_tokens
            seq_tokens += int(batch.prompt_mask.sum()) + batch.num_tokens
    out = {k: statistics.median(v) for k, v in phases.items()}
    out["tokens"], out["seq_tokens"] = tokens / args.steps, seq_tokens / args.steps
    out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="grpo,ppo")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--group", type=int, default=4, help="completions per prompt (grpo/rloo)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed iterations per algorithm")
    parser.add_argument("--lora", type=int, default=0, help="LoRA rank (0 = full fine-tuning)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on CPU too")
    args = parser.parse_args()
    tokenizer = load_tokenizer()
    model = tiny_model(tokenizer) if args.model == "tiny" else load_model(args.model)
    params = n_params(model)
    dtype = torch.bfloat16 if args.device == "cuda" or args.cpu_bf16 else torch.float32  # autocast
    peak = matmul_flops(args.device, dtype)
    print(
        f"model={args.model} ({params / 1e6:.0f}M params) device={args.device} matmuls={str(dtype)[6:]} "
        f"threads={torch.get_num_threads()} batch={args.batch} group={args.group} "
        f"new_tokens={args.new_tokens} lora={args.lora or 'off'} matmul={peak / 1e12:.3f} TFLOP/s "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    header = ("algo", "decode s", "reward s", "ref s", "update s", "s/iter", "tok/s", "compute")
    print(" ".join(f"{h:>9s}" for h in header) + ("  peak GiB" if args.device == "cuda" else ""))
    for algo in args.algos.split(","):
        r = profile(algo, args)
        total = r["decode"] + r["reward"] + r["reference"] + r["update"]
        flops = (2 + 2 + 6) * params * r["seq_tokens"]  # rollout + reference + update
        row = [f"{algo:>9s}"] + [
            f"{r[k]:9.2f}" for k in ("decode", "reward", "reference", "update")
        ]
        row += [f"{total:9.2f}", f"{r['tokens'] / total:9.1f}", f"{flops / total / peak:9.1%}"]
        print(" ".join(row) + (f"  {r['peak_gib']:8.2f}" if args.device == "cuda" else ""))


if __name__ == "__main__":
    main()
