"""The CUDA paths: KV-cache rollout, bf16 autocast, and one iteration of each trainer family.

Run by ``benchmarks/gpu_check.sh`` on a machine with an NVIDIA GPU (``pytest -m cuda``).
CPU-only CI skips every test here with the reason below; the same code paths run on CPU in
tests/test_agents_policy.py and tests/test_trainer.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import Trainer, make_config
from agents.policy import TransformerPolicy, evaluate_tokens, rollout
from textgym.lm import Sampling
from textgym.models import load_tokenizer, tiny_model
from textgym.vector import TextGenVectorEnv

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs an NVIDIA GPU: torch.cuda.is_available() is False",
    ),
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def cuda_rollout(tokenizer, policy, seed: int, autocast=None):
    envs = TextGenVectorEnv(
        num_envs=8, task="keywords", tokenizer=tokenizer, max_new_tokens=12,
        autoreset_mode="disabled", copy=False,
    )  # fmt: skip
    generator = torch.Generator(device="cuda").manual_seed(seed)
    options = {"index": [0, 0, 1, 1, 2, 3, 4, 5]}  # two groups share a prompt
    return rollout(
        policy, envs, Sampling(top_k=50), generator, seed=seed, options=options, autocast=autocast
    )


def test_float32_rollout_logprobs_equal_a_full_forward_on_cuda(tokenizer):
    """Tolerance 1e-4: float32 with TF32 matmuls off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    policy = TransformerPolicy(tiny_model(tokenizer), reference="copy").cuda()
    with torch.no_grad():
        policy.value_head.weight.normal_()
    batch = cuda_rollout(tokenizer, policy, seed=0)
    assert batch.tokens.device.type == "cuda"
    with torch.no_grad():
        logprobs, values, _ = evaluate_tokens(
            policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, 1.0
        )
    live = batch.mask.bool()
    torch.testing.assert_close(logprobs[live], batch.logprobs[live], atol=1e-4, rtol=0)
    torch.testing.assert_close(values[live], batch.values[live], atol=1e-4, rtol=0)


def test_seeded_cuda_rollouts_repeat(tokenizer):
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None).cuda()
    first, second = (cuda_rollout(tokenizer, policy, seed=3) for _ in range(2))
    assert torch.equal(first.tokens, second.tokens)


def test_bf16_autocast_rollout_stays_close_to_its_full_forward(tokenizer):
    """bf16 has 8 mantissa bits: the cached and no-cache log-probs agree to 0.1 nats."""
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None).cuda()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    batch = cuda_rollout(tokenizer, policy, seed=1, autocast=autocast)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logprobs, _, _ = evaluate_tokens(
            policy, batch.prompt_ids, batch.prompt_mask, batch.tokens, 1.0
        )
    live = batch.mask.bool()
    assert (logprobs[live] - batch.logprobs[live]).abs().max() < 0.1


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_one_training_iteration_on_cuda(tmp_path, algo):
    config = make_config(
        algo, model="tiny", task="keywords", reward="keyword_coverage_soft", batch_size=8, max_new_tokens=8, iterations=1,
        eval_every=0, save_every=0, progress=False, report_to="none", run_dir=str(tmp_path),
        device="cuda",
    )  # fmt: skip
    trainer = Trainer(config)
    metrics = trainer.step()
    assert trainer.last_batch.tokens.device.type == "cuda"
    keys = ("train/reward", "train/kl", "train/loss/policy", "train/grad_norm")
    assert np.isfinite([metrics[key] for key in keys]).all()
