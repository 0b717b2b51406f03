"""Our KV-cache rollout through the vector env against ``model.generate``, side by side.

Same model, batch, prompts (the task's first B training prompts, chat template applied and
left-padded by the env), number of new tokens and sampling distribution (temperature 1, the
whole vocabulary unless ``--top-k``). Both stop a row at EOS and the batch when every row has
stopped. ``generate`` gets the env's token ids directly, so it pays no tokenization; our
rollout includes the env's work (reset, steps, decoding the completions, and the soft
keyword-coverage reward: a metric, so that an LM-based reward's cost is not counted as the
rollout's). Reported: median seconds per batch over ``--repeats`` timed runs after one warm-up
(the two sides alternate), completion tokens per second, and the ratio. Goals (issue 13): at
least 3x for the tiny model and 2x for SmolLM2-135M at batch 16 on CPU; on a GPU, 3x for
SmolLM2-135M in bf16 at batch 256. ``--values`` also records the value of every state (the value
head reads the hidden state of the same forward, as in training rollouts).

    python benchmarks/rollout_vs_generate.py [--models tiny,smollm2-135m] [--batch 16]
        [--new-tokens 32] [--repeats 3] [--threads N] [--device cpu] [--values]
        [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from agents.policy import Sampling, TransformerPolicy, rollout
from textgym.models import load_model, load_tokenizer, tiny_model
from textgym.vector import TextGenVectorEnv


def timed(fns: tuple[Callable[[], int], ...], repeats: int) -> list[tuple[float, int]]:
    """Median seconds and token count of each of ``fns`` after a warm-up of each. The runs
    alternate (a, b, a, b, ...) so that drifting machine load hits every side alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    tokens = [0] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            tokens[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), n) for t, n in zip(times, tokens, strict=True)]


def completion_tokens(new: torch.Tensor, eos: int) -> int:
    """Tokens up to and including each row's first EOS (all of them where none)."""
    is_eos = new == eos  # (B, N)
    after = is_eos.cumsum(-1) - is_eos.long()  # EOS seen strictly before this position
    return int((after == 0).sum())


def compare(
    name: str,
    batch: int,
    new_tokens: int,
    top_k: int,
    repeats: int,
    device: str,
    values: bool,
    dtype: torch.dtype,
) -> float:
    tokenizer = load_tokenizer()
    model = tiny_model(tokenizer) if name == "tiny" else load_model(name)
    model = model.to(device=device, dtype=dtype).eval()
    envs = TextGenVectorEnv(
        num_envs=batch, task="keywords", reward="keyword_coverage_soft", tokenizer=tokenizer,
        max_new_tokens=new_tokens,
        autoreset_mode="disabled", copy=False,
    )  # fmt: skip
    policy = TransformerPolicy(model, reference=None).to(device)
    sampling = Sampling(temperature=1.0, top_k=top_k)
    generator = torch.Generator(device=device).manual_seed(0)
    options = {"index": list(range(batch))}

    @torch.inference_mode()
    def ours() -> int:
        out = rollout(policy, envs, sampling, generator, options=options, record_values=values)
        return out.num_tokens

    probe = rollout(policy, envs, sampling, generator, options=options, record_values=False)
    prompt_ids, prompt_mask = probe.prompt_ids, probe.prompt_mask  # (B, P'), left-padded
    eos = envs.eos_token_id

    @torch.inference_mode()
    def generate() -> int:
        out = model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, temperature=1.0,
            top_k=top_k, top_p=1.0, max_new_tokens=new_tokens, eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        return completion_tokens(out[:, prompt_ids.shape[1] :], eos)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    (ours_s, ours_tokens), (gen_s, gen_tokens) = timed((ours, generate), repeats)
    ours_rate, gen_rate = ours_tokens / ours_s, gen_tokens / gen_s
    peak = f" {torch.cuda.max_memory_allocated() / 2**30:8.2f}" if device == "cuda" else ""
    print(
        f"{name:14s} {batch:5d} {new_tokens:6d} {gen_s:10.3f} {gen_rate:10.1f} "
        f"{ours_s:10.3f} {ours_rate:10.1f} {ours_rate / gen_rate:8.2f}x{peak}"
    )
    return ours_rate / gen_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2-135m")
    parser.add_argument("--batch", default="16", help="batch size(s), comma-separated")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=0, help="0 = whole vocabulary")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--values", action="store_true", help="record values in the rollout")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"top_k={args.top_k} values={args.values} "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"{'model':14s} {'batch':>5s} {'tokens':>6s} {'generate s':>10s} {'tok/s':>10s} "
        f"{'rollout s':>10s} {'tok/s':>10s} {'ratio':>9s}"
        + (" peak GiB" if args.device == "cuda" else "")
    )
    for name in args.models.split(","):
        for batch in map(int, args.batch.split(",")):
            compare(
                name, batch, args.new_tokens, args.top_k, args.repeats, args.device,
                args.values, getattr(torch, args.dtype),
            )  # fmt: skip


if __name__ == "__main__":
    main()
