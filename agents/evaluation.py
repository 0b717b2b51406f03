"""Held-out evaluation of a trained LM: the numbers every run in a comparison is judged on.

All runs are evaluated on the same fixed prompts (the first ``num_prompts`` of the held-out
split, in order) with greedy decoding by default, so differences come from the policies, not
from the prompts or sampling noise; ``sampling=`` evaluates sampled completions instead (seeded),
and ``best_of=n`` keeps, per prompt, the best of n sampled completions by the reward (the
best-of-n baseline: it uses the reward at test time). Metrics (namespaced ``eval/``):

- ``reward``: the task's reward (or the given one), mean over prompts;
- ``rouge1`` / ``rouge2`` / ``rouge_l``: ROUGE F-measure against the references (best one);
- ``kl``: KL(policy || reference) per completion, summed over its tokens, where each token's
  term is the exact KL of the two next-token distributions (whole vocabulary) at that state;
  with ``best_of=n`` plus ``log n - (n - 1) / n``, the KL that choosing the best of n adds
  (Stiennon et al. 2020; an upper bound, Beirami et al. 2024);
- ``ppl_ref``: perplexity of the completions under the reference model (corpus level:
  ``exp(total NLL / total tokens)``), i.e. how natural the text still is to the base model;
- ``distinct1`` / ``distinct2``: distinct word uni/bigrams over all completions / total;
- ``length``: mean completion length in tokens; ``eos_frac``: fraction that ended with EOS.

Each prompt's record in ``samples`` holds its own ``reward``, ``kl``, ``nll_ref``, ``length``
and ROUGE scores, so statistics over prompts (:func:`agents.stats.stratified_bootstrap_ci`)
can be computed from the records alone (:meth:`EvalResult.per_prompt`).
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
    "length", "eos_frac", "success", "turns", "turn_reward", "cut_turns",
)  # fmt: skip
"""Metric names written by :func:`evaluate` and, on conversation tasks, by
:func:`agents.dialogue_eval.evaluate_dialogues` (``success`` ... ``cut_turns``), each prefixed
with ``eval/``."""


PER_PROMPT = (
    "reward",
    "rouge1",
    "rouge2",
    "rouge_l",
    "kl",
    "nll_ref",
    "length",
    "success",
    "turns",
)
"""Per-prompt values a sample record may hold (those the evaluation computed; ``success`` and
``turns`` are the dialogue evaluation's)."""


@dataclass
class EvalResult:
    """``metrics`` ({"eval/<name>": value}) and one record per prompt in ``samples``."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def per_prompt(self) -> dict[str, list[float]]:
        """``{"index": [...], "reward": [...], ...}``: the :data:`PER_PROMPT` values of every
        prompt, in prompt order (the small record a stratified bootstrap needs).

        >>> EvalResult({}, [{"index": 3, "reward": 0.5, "length": 2.0, "prompt": "p"}]).per_prompt()
        {'index': [3], 'reward': [0.5], 'length': [2.0]}
        """
        out: dict[str, list[float]] = {"index": [s["index"] for s in self.samples]}
        for name in PER_PROMPT:
            if self.samples and all(name in s for s in self.samples):
                out[name] = [float(s[name]) for s in self.samples]
        return out


def best_of_kl(n: int) -> float:
    """The KL of best-of-n selection to the sampler, ``log n - (n - 1) / n`` (nats).

    >>> best_of_kl(1), round(best_of_kl(4), 4)
    (0.0, 0.6363)
    """
    return math.log(n) - (n - 1) / n


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
    sampling: Sampling | None = None,
    seed: int = 0,
    best_of: int = 1,
) -> EvalResult:
    """Completions of ``model`` for the first ``num_prompts`` held-out prompts, scored.

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
        sampling: how tokens are drawn; None (the default) or temperature 0 is greedy.
        seed: seed of the sampled tokens (unused when greedy).
        best_of: completions sampled per prompt, of which the one with the highest reward is
            kept and scored (first on ties); needs non-greedy ``sampling`` when above 1.

    >>> from textgym.models import load_tokenizer, tiny_model
    >>> tok = load_tokenizer()
    >>> result = evaluate(tiny_model(tok), tok, "summarize", reference=tiny_model(tok, seed=1),
    ...                   num_prompts=2, max_new_tokens=4)
    >>> sorted(result.metrics)[:3], len(result.samples)
    (['eval/distinct1', 'eval/distinct2', 'eval/eos_frac'], 2)
    """
    for name, value in (("num_prompts", num_prompts), ("batch_size", batch_size),
                        ("micro_batch", micro_batch), ("best_of", best_of)):  # fmt: skip
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    sampling = sampling if sampling is not None else Sampling(temperature=0)
    if best_of > 1 and sampling.greedy:
        raise ValueError(
            f"best_of={best_of} needs sampled completions (greedy ones are all alike); pass "
            "sampling=Sampling(temperature=1.0) or best_of=1"
        )
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
    generator = None if sampling.greedy else torch.Generator(device=device).manual_seed(seed)
    nll_total, length_total = 0.0, 0.0
    samples: list[dict[str, Any]] = []
    per_batch = max(1, batch_size // best_of)  # prompts per rollout, so rows stay ~batch_size
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, per_batch):
            index = list(range(start, min(start + per_batch, n)))
            rows = [k for k in index for _ in range(best_of)]  # each prompt's n candidates
            if len(rows) not in envs:
                envs[len(rows)] = TextGenVectorEnv(num_envs=len(rows), **env_kwargs)
            batch = rollout(
                policy,
                envs[len(rows)],
                sampling,
                generator,
                options={"index": rows},
                record_values=False,
            )
            # The best candidate of each prompt by the reward (argmax: the first on ties).
            scores = batch.scores.view(len(index), best_of)  # (b, n)
            chosen = scores.argmax(-1) + torch.arange(len(index), device=scores.device) * best_of
            lengths = batch.lengths[chosen]
            kl = nll = None
            if ref_policy is not None:
                kl, nll = _kl_and_nll(
                    policy, ref_policy, batch.prompt_ids[chosen], batch.prompt_mask[chosen],
                    batch.tokens[chosen], batch.mask[chosen].to(device), micro_batch,
                )  # fmt: skip
                nll_total += float(nll.sum())
            length_total += float(lengths.sum())
            for i, (k, row) in enumerate(zip(index, chosen.tolist(), strict=True)):
                record = {
                    "index": k,
                    "prompt": batch.prompts[row],
                    "completion": batch.completions[row],
                    "references": list(task.split(split)[k].references),
                    "reward": float(batch.scores[row]),
                    "finish_reason": batch.finish_reasons[row],
                    "length": float(lengths[i]),
                }
                if kl is not None and nll is not None:
                    record["kl"] = float(kl[i]) + best_of_kl(best_of)
                    record["nll_ref"] = float(nll[i])
                if best_of > 1:
                    record["candidate_rewards"] = scores[i].tolist()
                samples.append(record)
    finally:
        model.train(was_training)
    completions = [s["completion"] for s in samples]
    metrics = {"eval/reward": float(np.mean([s["reward"] for s in samples]))}
    if all(s["references"] for s in samples):
        prompts = [s["prompt"] for s in samples]
        refs = [s["references"] for s in samples]
        for name in ("rouge1", "rouge2", "rouge_l"):
            values = make_reward(name)(prompts, completions, refs)
            for record, value in zip(samples, values.tolist(), strict=True):
                record[name] = float(value)
            metrics[f"eval/{name}"] = float(np.mean(values))
    if ref_policy is not None:
        metrics["eval/kl"] = float(np.mean([s["kl"] for s in samples]))
        metrics["eval/ppl_ref"] = math.exp(nll_total / max(length_total, 1.0))
    metrics["eval/distinct1"] = distinct_n(completions, 1)
    metrics["eval/distinct2"] = distinct_n(completions, 2)
    metrics["eval/length"] = float(np.mean([s["length"] for s in samples]))
    metrics["eval/eos_frac"] = float(np.mean([s["finish_reason"] == "eos" for s in samples]))
    return EvalResult(metrics, samples)


__all__ = ["EVAL_METRICS", "PER_PROMPT", "EvalResult", "best_of_kl", "distinct_n", "eval_split",
           "evaluate"]  # fmt: skip
