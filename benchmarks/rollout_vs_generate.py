"""Our KV-cache rollout through the vector env against ``model.generate``, side by side.

Same model, batch, prompts (the task's first B training prompts, chat template applied and
left-padded by the env), number of new tokens and sampling distribution (temperature 1, the
whole vocabulary unless ``--top-k``). Both stop a row at EOS and the batch when every row has
stopped. ``generate`` gets the env's token ids directly, so it pays no tokenization; our
rollout includes the env's work (reset, steps, decoding the completions, the reward).
Reported: median seconds per batch over ``--repeats`` timed runs after one warm-up, completion
tokens per second, and the ratio. Goal: at least 1.5x for the tiny model at batch 16 on CPU
and no slower for SmolLM2-135M. ``--values`` also records the value of every state (the value
head reads the hidden state of the same forward, as in training rollouts).

    python benchmarks/rollout_vs_generate.py [--models tiny,smollm2-135m] [--batch 16]
        [--new-tokens 32] [--repeats 3] [--threads N] [--device cpu] [--values]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from agents.policy import Sampling, TransformerPolicy, rollout
from textgym.models import load_model, load_tokenizer, tiny_model
from textgym.vector import TextGenVectorEnv


def timed(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median seconds of ``fn`` over ``repeats`` runs after a warm-up, and its token count."""
    fn()
    times, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def completion_tokens(new: torch.Tensor, eos: int) -> int:
    """Tokens up to and including each row's first EOS (all of them where none)."""
    is_eos = new == eos  # (B, N)
    after = is_eos.cumsum(-1) - is_eos.long()  # EOS seen strictly before this position
    return int((after == 0).sum())


def compare(
    name: str, batch: int, new_tokens: int, top_k: int, repeats: int, device: str, values: bool
) -> float:
    tokenizer = load_tokenizer()
    model = tiny_model(tokenizer) if name == "tiny" else load_model(name)
    model = model.to(device).eval()
    envs = TextGenVectorEnv(
        num_envs=batch, task="keywords", tokenizer=tokenizer, max_new_tokens=new_tokens,
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

    ours_s, ours_tokens = timed(ours, repeats)
    gen_s, gen_tokens = timed(generate, repeats)
    ours_rate, gen_rate = ours_tokens / ours_s, gen_tokens / gen_s
    print(
        f"{name:14s} {batch:5d} {new_tokens:6d} {gen_s:10.3f} {gen_rate:10.1f} "
        f"{ours_s:10.3f} {ours_rate:10.1f} {ours_rate / gen_rate:8.2f}x"
    )
    return ours_rate / gen_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=0, help="0 = whole vocabulary")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--values", action="store_true", help="record values in the rollout")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"device={args.device} threads={torch.get_num_threads()} top_k={args.top_k} "
        f"values={args.values}"
    )
    print(
        f"{'model':14s} {'batch':>5s} {'tokens':>6s} {'generate s':>10s} {'tok/s':>10s} "
        f"{'rollout s':>10s} {'tok/s':>10s} {'ratio':>9s}"
    )
    for name in args.models.split(","):
        compare(
            name, args.batch, args.new_tokens, args.top_k, args.repeats, args.device, args.values
        )


if __name__ == "__main__":
    main()
