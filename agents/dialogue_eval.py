"""Held-out evaluation on whole dialogues: success rate, turns per dialogue, per-turn reward.

The dialogue counterpart of :func:`agents.evaluation.evaluate`: the first ``num_prompts`` goals
of the held-out split, in order, each played to its end against the task's user simulator
(greedy by default, so that runs differ by their policies alone). Metrics (``eval/...``, see
:func:`agents.dialogue.dialogue_metrics`): ``reward`` (the return), ``success``, ``turns``,
``turn_reward``, ``cut_turns``, ``length`` (agent tokens per dialogue), ``user_failure`` and the
final reward's other components. One record per dialogue holds its text and scores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from agents.dialogue import DialogueRollout, dialogue_metrics, rollout_dialogues
from agents.evaluation import EvalResult, eval_split
from agents.policy import TransformerPolicy
from textgym.conversation.dialogue import dialogue_text
from textgym.conversation.tasks import ConversationTask
from textgym.conversation.vector import ConversationVectorEnv
from textgym.lm import Sampling
from textgym.rewards.base import RewardSpec
from textgym.tasks import Task, make_task


def dialogue_records(envs: ConversationVectorEnv, batch: DialogueRollout) -> list[dict[str, Any]]:
    """One record per dialogue that ``envs`` just played into ``batch``: its split ``index``,
    the opening (``prompt``) and the dialogue after it (``completion``) as ``role: content``
    lines, the sample's ``references``, its ``reward`` (return), ``success``, ``turns``, ``turn_rewards``, ``length`` (agent
    tokens) and ``finish_reason``."""
    records = []
    for b, info in enumerate(batch.infos):
        row = envs.dialogues.rows[b]
        assert row is not None
        opening = row.opening
        records.append(
            {
                "index": row.index,
                "prompt": dialogue_text(opening),
                "completion": dialogue_text(info["messages"][len(opening) :]),
                "references": list(row.sample.references),
                "reward": float(batch.returns[b]),
                "success": float(batch.success[b]),
                "turns": int(info["num_turns"]),
                "turn_rewards": list(batch.turn_rewards[b]),
                "length": float(batch.action_mask[b].sum()),
                "finish_reason": info["finish_reason"],
            }
        )
    return records


def play_goals(
    policy: TransformerPolicy,
    envs: ConversationVectorEnv,
    indices: list[int],
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> tuple[DialogueRollout, list[dict[str, Any]]]:
    """Play goal ``indices[b]`` in sub-env b (greedy unless ``sampling``); the rollout and its
    :func:`dialogue_records`."""
    batch = rollout_dialogues(
        policy,
        envs,
        sampling if sampling is not None else Sampling(temperature=0),
        generator,
        options={"index": indices},
        autocast=autocast,
    )
    return batch, dialogue_records(envs, batch)


def is_conversation_task(task: str | Task) -> bool:
    """Whether ``task`` (a name or a task) is one that TextGen-Conversation-v0 plays."""
    if isinstance(task, Task):
        return isinstance(task, ConversationTask)
    from textgym.conversation.tasks import list_conversation_tasks

    return task.lower() in list_conversation_tasks()


def conversation_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`evaluate_dialogues` settings among a run's config ``options`` (its
    ``max_turns``, ``max_total_tokens`` and ``user``), so that a run is evaluated on the
    dialogues it trained on.

    >>> conversation_settings({"max_turns": 3, "max_total_tokens": 0, "top_k": 8})
    {'max_turns': 3, 'max_total_tokens': None}
    """
    out = {k: options[k] for k in ("max_turns", "max_total_tokens", "user") if k in options}
    if "max_total_tokens" in out:
        out["max_total_tokens"] = out["max_total_tokens"] or None  # 0: no cap, as in training
    return out


def evaluate_dialogues(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: str | Task,
    reward: RewardSpec | None = None,
    split: str | None = None,
    num_prompts: int = 64,
    batch_size: int = 16,
    max_context_tokens: int = 256,
    max_turn_tokens: int = 32,
    max_turns: int = 8,
    max_total_tokens: int | None = None,
    user: str | None = None,
    sampling: Sampling | None = None,
    seed: int = 0,
) -> EvalResult:
    """Play the first ``num_prompts`` goals of the held-out split (default "test", else
    "validation") with ``model``, ``batch_size`` dialogues at a time; ``eval/...`` metrics and
    one record per dialogue. ``sampling`` (seeded by ``seed``) replaces greedy decoding.

    >>> from textgym.models import load_tokenizer, tiny_model
    >>> tok = load_tokenizer()
    >>> result = evaluate_dialogues(tiny_model(tok), tok, "hidden_item", num_prompts=3,
    ...                             batch_size=2, max_context_tokens=160, max_turn_tokens=3,
    ...                             max_turns=2)
    >>> result.metrics["eval/turns"], len(result.samples), result.samples[0]["index"]
    (2.0, 3, 0)
    """
    for name, value in (("num_prompts", num_prompts), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    built = make_task(task)
    if not isinstance(built, ConversationTask):
        raise ValueError(
            f"task {built.name!r} is a single-turn task; evaluate it with agents.evaluation.evaluate"
        )
    split = eval_split(built, split)
    n = min(num_prompts, len(built.split(split)))
    policy = TransformerPolicy(model, reference=None, vocab_size=len(tokenizer))
    embed = model.get_output_embeddings().weight.shape[0]
    env_kwargs: dict[str, Any] = {
        "task": built, "tokenizer": tokenizer, "user": user, "reward": reward, "split": split,
        "max_context_tokens": max_context_tokens, "max_turn_tokens": max_turn_tokens,
        "max_turns": max_turns, "max_total_tokens": max_total_tokens,
        "vocab_size": max(embed, len(tokenizer)), "autoreset_mode": "disabled", "copy": False,
    }  # fmt: skip
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed) if sampling is not None else None
    envs: dict[int, ConversationVectorEnv] = {}
    batches: list[DialogueRollout] = []
    samples: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            index = list(range(start, min(start + batch_size, n)))
            if len(index) not in envs:
                envs[len(index)] = ConversationVectorEnv(num_envs=len(index), **env_kwargs)
            batch, records = play_goals(policy, envs[len(index)], index, sampling, generator)
            batches.append(batch)
            samples.extend(records)
    finally:
        model.train(was_training)
    return EvalResult(dialogue_metrics(batches, "eval"), samples)


__all__ = [
    "conversation_settings",
    "dialogue_records",
    "evaluate_dialogues",
    "is_conversation_task",
    "play_goals",
]
