"""One decode step of the LM three ways, side by side: what a static KV cache and
``torch.compile`` would buy the rollout (issue 13, goal 2).

* ``dynamic eager``: a ``DynamicCache`` that grows by one column per step, the model run
  eagerly. Our rollout and ``model.generate`` both decode this way.
* ``static eager``: a ``StaticCache`` preallocated for prompt + new tokens (no reallocation).
* ``static compiled``: the same cache with ``torch.compile(model.forward, dynamic=False)``, so
  the Python dispatch of the ~400 small ops per step is traced away and elementwise ops fuse.

Same random prompt of ``--prompt-tokens`` tokens in every row, ``--new-tokens`` steps sampled
at temperature 1 from the whole vocabulary; the median step time of each way over
``--repeats`` rounds (the ways alternate, after one compile-and-warm-up round). The first two
steps of a round are not timed. Run it on a quiet machine: the load average is printed.

    python benchmarks/decode_step.py [--model smollm2-135m] [--batch 16] [--prompt-tokens 64]
        [--new-tokens 32] [--repeats 3] [--bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache, StaticCache

from textgym.models import load_model


def decode(model: Any, forward: Callable[..., Any], prompt: torch.Tensor, new_tokens: int,
           static: bool) -> float:  # fmt: skip
    """Prefill ``prompt`` (B, P), then sample ``new_tokens`` one step at a time with
    ``forward``; the median seconds per step, the first two steps excluded."""
    B, P = prompt.shape
    if static:
        cache = StaticCache(config=model.config, max_cache_len=P + new_tokens)
    else:
        cache = DynamicCache(config=model.config)
    positions = torch.arange(P)
    out = model(input_ids=prompt, position_ids=positions[None].expand(B, P), past_key_values=cache,
                use_cache=True, cache_position=positions, logits_to_keep=1)  # fmt: skip
    token = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
    times = []
    for t in range(new_tokens - 1):
        start = time.perf_counter()
        position = torch.tensor([P + t])
        out = forward(input_ids=token, position_ids=position[None].expand(B, 1),
                      past_key_values=cache, use_cache=True, cache_position=position,
                      logits_to_keep=1)  # fmt: skip
        token = torch.multinomial(out.logits[:, -1].float().softmax(-1), 1)  # (B, 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="run under CPU bf16 autocast")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_model(args.model).eval()
    prompt = torch.randint(100, model.config.vocab_size - 100, (args.batch, args.prompt_tokens))
    compiled = torch.compile(model.forward, dynamic=False)
    ways: dict[str, tuple[Callable[..., Any], bool]] = {
        "dynamic eager": (model.forward, False),
        "static eager": (model.forward, True),
        "static compiled": (compiled, True),
    }
    autocast = torch.autocast("cpu", torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        start = time.perf_counter()
        for forward, static in ways.values():
            decode(model, forward, prompt, args.new_tokens, static)
        print(f"compile and warm-up: {time.perf_counter() - start:.0f} s")
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, (forward, static) in ways.items():
                times[name].append(decode(model, forward, prompt, args.new_tokens, static))
    load = os.getloadavg()
    print(f"{args.model}, batch {args.batch}, prompt {args.prompt_tokens}, "
          f"{'bf16 autocast' if args.bf16 else 'float32'}, {torch.get_num_threads()} threads, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    print("| way | ms per step | ratio to dynamic eager |\n| --- | ---: | ---: |")
    baseline = statistics.median(times["dynamic eager"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e3:.1f} | {baseline / median:.2f}x |")


if __name__ == "__main__":
    main()
