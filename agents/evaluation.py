"""Held-out evaluation of a trained LM: the numbers every run in a comparison is judged on.

All runs are evaluated on the same fixed prompts (the first ``num_prompts`` of the held-out
split, in order) with greedy decoding, so differences come from the policies, not from the
prompts or sampling noise. Metrics (namespaced ``eval/``):

- ``reward``: the task's reward (or the given one), mean over prompts;
- ``rouge1`` / ``rouge2`` / ``rouge_l``: ROUGE F-measure against the references (best one);
- ``kl``: KL(policy || reference) per completion, summed over its tokens, where each token's
  term is the exact KL of the two next-token distributions (whole vocabulary) at that state;
- ``ppl_ref``: perplexity of the completions under the reference model (corpus level:
  ``exp(total NLL / total tokens)``), i.e. how natural the text still is to the base model;
- ``distinct1`` / ``distinct2``: distinct word uni/bigrams over all completions / total;
- ``length``: mean completion length in tokens; ``eos_frac``: fraction that ended with EOS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from agents.policy import Sampling, TransformerPolicy, rollout
from textgym.rewards import make_reward
from textgym.rewards.base import RewardSpec
from textgym.tasks import Task, make_task
from textgym.vector import TextGenVectorEnv

EVAL_METRICS = (
    "reward", "rouge1", "rouge2", "rouge_l", "kl", "ppl_ref", "distinct1", "distinct2",
    "length", "eos_frac",
)  # fmt: skip
"""Metric names written by :func:`evaluate` (each prefixed with ``eval/``)."""


@dataclass
class EvalResult:
    """``metrics`` ({"eval/<name>": value}) and one record per prompt in ``samples``."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / total n-grams over all ``texts`` (lower-cased words; 0 when none).

    >>> distinct_n(["the cat the cat", "a dog"], 1)
    0.6666666666666666
    >>> distinct_n(["the cat the cat"], 2)
    0.6666666666666666
    """
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def eval_split(task: Task, split: str | None = None) -> str:
    """The held-out split: ``split`` if given, else "test", else "validation"."""
    if split is not None:
        task.split(split)  # raises naming the valid splits
        return split
    for name in ("test", "validation"):
        if name in task.splits:
            return name
    raise ValueError(f"task {task.name!r} has no 'test' or 'validation' split; pass split=")


@torch.no_grad()
def _kl_and_nll(
    policy: TransformerPolicy,
    reference: TransformerPolicy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    micro_batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed exact KL(policy || reference) and reference NLL over completion tokens."""
    N = tokens.shape[1]
    kls, nlls = [], []
    for start in range(0, tokens.shape[0], micro_batch):
        rows = slice(start, start + micro_batch)
        ids = torch.cat([prompt_ids[rows], tokens[rows]], dim=1)[:, :-1]  # (b, P+N-1)
        att = torch.cat([prompt_mask[rows], torch.ones_like(tokens[rows])], dim=1)[:, :-1]
        logits, _, _ = policy.lm_forward(policy.model, ids, att, keep=N)  # (b, N, V)
        ref_logits, _, _ = reference.lm_forward(reference.model, ids, att, keep=N)
        logp = torch.log_softmax(logits.float(), dim=-1)
        ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
        kl = (logp.exp() * (logp - ref_logp)).sum(-1).clamp(min=0)  # (b, N)
        nll = -ref_logp.gather(-1, tokens[rows, :, None]).squeeze(-1)  # (b, N)
        m = mask[rows]
        kls.append((kl * m).sum(-1))
        nlls.append((nll * m).sum(-1))
    return torch.cat(kls), torch.cat(nlls)


def evaluate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    reference: nn.Module | None = None,
    reward: RewardSpec | None = None,
    split: str | None = None,
    num_prompts: int = 64,
    batch_size: int = 16,
    max_prompt_tokens: int = 128,
    max_new_tokens: int = 32,
    chat_template: bool = True,
    micro_batch: int = 8,
) -> EvalResult:
    """Greedy completions of ``model`` for the first ``num_prompts`` held-out prompts, scored.

    Args:
        model: the trained causal LM (on any device; evaluation runs there).
        tokenizer: its tokenizer.
        task: task name or :class:`~textgym.tasks.Task`.
        reference: the reference LM for ``kl`` and ``ppl_ref`` (same tokenizer); without it
            those two metrics are left out.
        reward: reward spec; default the task's own.
        split: held-out split; default "test", else "validation".
        num_prompts: how many prompts (the first ones of the split, fewer if it is smaller).
        batch_size: completions generated per lockstep batch.
        max_prompt_tokens / max_new_tokens / chat_template: as in training, so the policy is
            judged on the episodes it was trained for.
        micro_batch: rows per forward when computing KL and perplexity (bounds the
            (rows, N, vocabulary) log-prob tensors).

    >>> from textgym.models import load_tokenizer, tiny_model
    >>> tok = load_tokenizer()
    >>> result = evaluate(tiny_model(tok), tok, "summarize", reference=tiny_model(tok, seed=1),
    ...                   num_prompts=2, max_new_tokens=4)
    >>> sorted(result.metrics)[:3], len(result.samples)
    (['eval/distinct1', 'eval/distinct2', 'eval/eos_frac'], 2)
    """
    for name, value in (("num_prompts", num_prompts), ("batch_size", batch_size),
                        ("micro_batch", micro_batch)):  # fmt: skip
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    task = make_task(task)
    split = eval_split(task, split)
    n = min(num_prompts, len(task.split(split)))
    device = next(model.parameters()).device
    vocab = len(tokenizer)
    policy = TransformerPolicy(model, reference=None, vocab_size=vocab)
    ref_policy = (
        TransformerPolicy(reference, reference=None, vocab_size=vocab)
        if reference is not None
        else None
    )
    embed = model.get_output_embeddings().weight.shape[0]
    env_kwargs: dict[str, Any] = {
        "task": task, "tokenizer": tokenizer, "reward": reward, "split": split,
        "max_prompt_tokens": max_prompt_tokens, "max_new_tokens": max_new_tokens,
        "chat_template": chat_template, "vocab_size": max(embed, vocab),
        "autoreset_mode": "disabled", "copy": False,
    }  # fmt: skip
    envs: dict[int, TextGenVectorEnv] = {}
    scores: list[float] = []
    lengths: list[float] = []
    kls: list[float] = []
    nll_total = 0.0
    samples: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            index = list(range(start, min(start + batch_size, n)))
            size = len(index)
            if size not in envs:
                envs[size] = TextGenVectorEnv(num_envs=size, **env_kwargs)
            batch = rollout(
                policy,
                envs[size],
                Sampling(temperature=0),
                options={"index": index},
                record_values=False,
            )
            scores.extend(batch.scores.tolist())
            lengths.extend(batch.lengths.tolist())
            if ref_policy is not None:
                kl, nll = _kl_and_nll(
                    policy, ref_policy, batch.prompt_ids, batch.prompt_mask,
                    batch.tokens, batch.mask.to(device), micro_batch,
                )  # fmt: skip
                kls.extend(kl.tolist())
                nll_total += float(nll.sum())
            for i, k in enumerate(index):
                sample = task.split(split)[k]
                samples.append(
                    {
                        "index": k,
                        "prompt": batch.prompts[i],
                        "completion": batch.completions[i],
                        "references": list(sample.references),
                        "reward": float(batch.scores[i]),
                        "finish_reason": batch.finish_reasons[i],
                    }
                )
    finally:
        model.train(was_training)
    completions = [s["completion"] for s in samples]
    metrics = {"eval/reward": float(np.mean(scores))}
    if all(s["references"] for s in samples):
        prompts = [s["prompt"] for s in samples]
        refs = [s["references"] for s in samples]
        for name in ("rouge1", "rouge2", "rouge_l"):
            metrics[f"eval/{name}"] = float(make_reward(name)(prompts, completions, refs).mean())
    if kls:
        metrics["eval/kl"] = float(np.mean(kls))
        metrics["eval/ppl_ref"] = math.exp(nll_total / max(sum(lengths), 1.0))
    metrics["eval/distinct1"] = distinct_n(completions, 1)
    metrics["eval/distinct2"] = distinct_n(completions, 2)
    metrics["eval/length"] = float(np.mean(lengths))
    metrics["eval/eos_frac"] = float(np.mean([s["finish_reason"] == "eos" for s in samples]))
    return EvalResult(metrics, samples)


__all__ = ["EVAL_METRICS", "EvalResult", "distinct_n", "eval_split", "evaluate"]
