"""bf16 autocast on CPU (``cpu_bf16``): opt-in, consistent between rollout and update, and a
clear error when asked for without ``mixed_precision``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import Trainer, make_config
from agents.policy import TransformerPolicy, evaluate_tokens, rollout
from agents.runtime import Runtime
from textgym.lm import Sampling
from textgym.models import load_tokenizer, tiny_model
from textgym.vector import TextGenVectorEnv


def test_cpu_autocast_is_opt_in():
    assert Runtime("cpu").amp_dtype is None
    assert Runtime("cpu", cpu_bf16=True).amp_dtype is torch.bfloat16
    assert Runtime("cpu", mixed_precision=False, cpu_bf16=True).amp_dtype is None


def test_cpu_bf16_without_mixed_precision_is_refused():
    with pytest.raises(ValueError, match="cpu_bf16=True needs mixed_precision=True"):
        make_config("ppo", model="tiny", cpu_bf16=True, mixed_precision=False)


def test_a_bf16_rollout_matches_its_bf16_full_forward_and_differs_from_float32():
    """One autocast region spans the decode; its log-probs are the bf16 model's (0.1 nats from
    a bf16 no-cache forward), not float32's."""
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None)
    envs = TextGenVectorEnv(
        num_envs=6, task="keywords", tokenizer=tokenizer, max_new_tokens=10,
        autoreset_mode="disabled", copy=False,
    )  # fmt: skip
    batch = rollout(
        policy, envs, Sampling(top_k=50), torch.Generator().manual_seed(1), seed=1,
        options={"index": [0, 0, 1, 1, 2, 3]}, autocast=torch.autocast("cpu", torch.bfloat16),
    )  # fmt: skip
    live = batch.mask.bool()
    with torch.no_grad():
        with torch.autocast("cpu", torch.bfloat16):
            bf16, _, _ = evaluate_tokens(
                policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, 1.0
            )
        fp32, _, _ = evaluate_tokens(policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, 1.0)
    assert (bf16[live] - batch.logprobs[live]).abs().max() < 0.1
    assert (fp32[live] - batch.logprobs[live]).abs().max() > 1e-4  # bf16 really ran


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_one_cpu_bf16_iteration_trains(tmp_path, algo):
    config = make_config(
        algo, model="tiny", task="keywords", reward="keyword_coverage_soft", batch_size=8,
        max_new_tokens=8, iterations=1, eval_every=0, save_every=0, progress=False,
        report_to="none", run_dir=str(tmp_path), device="cpu", cpu_bf16=True,
    )  # fmt: skip
    trainer = Trainer(config)
    before = [p.detach().clone() for p in trainer.policy.model.parameters()]
    metrics = trainer.step()
    keys = ("train/reward", "train/kl", "train/loss/policy", "train/grad_norm")
    assert np.isfinite([metrics[key] for key in keys]).all()
    assert all(p.dtype == torch.float32 for p in trainer.policy.model.parameters())
    changed = [
        not torch.equal(a, b)
        for a, b in zip(before, trainer.policy.model.parameters(), strict=True)
    ]
    assert any(changed)
