"""Completion tokens per second of a full training iteration, ours against TRL, in one run.

One iteration = sample B completions (k per prompt), score them, one optimizer step. Both
sides get the same model, prompts (the keywords task, chat template), batch, group size,
completion length, sampling (temperature 1, whole vocabulary), KL weight, learning rate and
reward (soft keyword coverage on the decoded text). Each side runs one untimed warm-up
iteration, then ``--steps`` timed ones. Also printed: the fraction of the machine's compute
limit reached, counting about 2 x params x tokens FLOPs for the rollout and 6 x params x
tokens for the update (tokens = prompt + completion tokens of every sequence; the
reference-model forward and attention are not counted, so the fraction is a lower bound),
against the fp32 matmul FLOP/s measured here.

Needs TRL: ``pip install -e ".[bench]"`` (``make bench`` installs it).

    python benchmarks/train_vs_trl.py [--algos grpo,rloo] [--model smollm2-135m] [--batch 16]
        [--group 4] [--new-tokens 32] [--steps 2] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import torch
from iteration_profile import matmul_flops, n_params  # the same counts as the profile

from agents import Trainer, make_config
from textgym.models import load_model, load_tokenizer, tiny_model
from textgym.rewards import SoftKeywordCoverage
from textgym.tasks import make_task

LEARNING_RATE = 1e-6
KL_COEF = 0.04


def as_messages(prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def build(model_name: str, tokenizer: Any) -> torch.nn.Module:
    return tiny_model(tokenizer) if model_name == "tiny" else load_model(model_name)


def run_ours(algo: str, args: argparse.Namespace, reward: SoftKeywordCoverage) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as run_dir:
        config = make_config(
            algo, model=args.model, task="keywords", batch_size=args.batch,
            completions_per_prompt=args.group, max_new_tokens=args.new_tokens,
            iterations=args.steps + 1, learning_rate=LEARNING_RATE, kl_coef=KL_COEF,
            num_epochs=1, num_minibatches=1, eval_every=0, save_every=0, progress=False,
            report_to="none", run_dir=run_dir, device=args.device,
        )  # fmt: skip
        trainer = Trainer(config, reward=reward)
        trainer.step()  # warm-up
        tokens = seq_tokens = 0
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.step()
            batch = trainer.last_batch
            tokens += batch.num_tokens
            seq_tokens += int(batch.prompt_mask.sum()) + batch.num_tokens
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": tokens, "seq_tokens": seq_tokens}


def run_trl(algo: str, args: argparse.Namespace, reward: SoftKeywordCoverage) -> dict[str, float]:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    tokenizer = load_tokenizer()
    task = make_task("keywords")
    samples = task.split("train")[: args.batch * 8]
    messages = [as_messages(s.prompt) for s in samples]
    dataset = Dataset.from_list(
        [
            {"prompt": m, "keywords": list(s.meta["keywords"])}
            for m, s in zip(messages, samples, strict=True)
        ]
    )

    def keyword_reward(prompts, completions, keywords, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward(["" for _ in texts], texts, None, keywords=keywords).tolist()

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.lengths: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            self.steps.append(time.perf_counter() - self._start)

        def on_log(self, _args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "completions/mean_length" in logs:
                self.lengths.append(float(logs["completions/mean_length"]))

    config_cls, trainer_cls = {
        "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
        "rloo": (trl.RLOOConfig, trl.RLOOTrainer),
    }[algo]
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        config = config_cls(
            output_dir=out, use_cpu=args.device == "cpu", per_device_train_batch_size=args.batch,
            num_generations=args.group, max_completion_length=args.new_tokens,
            max_steps=args.steps + 1, learning_rate=LEARNING_RATE, beta=KL_COEF,
            temperature=1.0, top_k=0, top_p=1.0, logging_steps=1, report_to="none",
            save_strategy="no", disable_tqdm=True, seed=0,
        )  # fmt: skip
        # TRL builds its reference model from a path, so the policy goes through one too.
        build(args.model, tokenizer).save_pretrained(f"{out}/model")
        trainer = trainer_cls(
            model=f"{out}/model", reward_funcs=keyword_reward, args=config,
            train_dataset=dataset, processing_class=tokenizer, callbacks=[timer],
        )  # fmt: skip
        trainer.train()
    timed = timer.steps[1:]  # the first step is the warm-up
    length = float(np.mean(timer.lengths[1:])) if len(timer.lengths) > 1 else args.new_tokens
    prompt_len = float(
        np.mean(
            [
                len(
                    tokenizer(
                        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                    )["input_ids"]
                )
                for m in messages[: args.batch]
            ]
        )
    )
    tokens = length * args.batch * len(timed)
    return {
        "seconds": sum(timed),
        "tokens": tokens,
        "seq_tokens": tokens + prompt_len * args.batch * len(timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="grpo,rloo")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--group", type=int, default=4, help="completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed iterations per side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reward = SoftKeywordCoverage()
    params = n_params(build(args.model, load_tokenizer()))
    peak = matmul_flops("cpu", torch.float32) if args.device == "cpu" else float("nan")
    print(
        f"model={args.model} ({params / 1e6:.0f}M params) device={args.device} "
        f"threads={torch.get_num_threads()} batch={args.batch} group={args.group} "
        f"new_tokens={args.new_tokens} matmul={peak / 1e9:.1f} GFLOP/s"
    )
    print(f"{'algo':6s} {'side':5s} {'s/iter':>8s} {'tok/s':>8s} {'compute':>8s}")
    for algo in args.algos.split(","):
        rates = {}
        for side, run in (("trl", run_trl), ("ours", run_ours)):
            r = run(algo, args, reward)
            per_iter = r["seconds"] / args.steps
            rates[side] = r["tokens"] / r["seconds"]
            flops = 8 * params * r["seq_tokens"]  # 2 (rollout) + 6 (update) per token
            print(
                f"{algo:6s} {side:5s} {per_iter:8.1f} {rates[side]:8.1f} "
                f"{flops / r['seconds'] / peak:8.1%}"
            )
        print(f"{algo:6s} ours / trl: {rates['ours'] / rates['trl']:.1f}x completion tokens/s")


if __name__ == "__main__":
    main()
