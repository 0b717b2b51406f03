"""Whole-dialogue rollouts of the batched policy on TextGen-Conversation-v0, and their loss.

:func:`rollout_dialogues` steps a :class:`~textgym.conversation.vector.ConversationVectorEnv`
in lockstep with ONE KV-cache forward per step for all B rows. After a step, each row feeds the
forward its action and, where its turn ended, the tokens the env inserted (the user's message
and the next assistant header; ``info["inserted_tokens"]``): rows are ragged, so every step's
block is left-padded per row and the padding is masked out (positions come from the mask).

The result is one token sequence per row (:class:`DialogueRollout`): opening, agent tokens and
inserted tokens, with ``action_mask`` marking the agent's tokens. Only those are actions: the
loss (:func:`policy_gradient_loss`) is masked to them, and per-turn rewards sit at the last
token of their turn. :func:`dialogue_logprobs` is the no-cache forward over the same sequences
that training uses; it equals the rollout's KV-cache log-probs (tested to 1e-4).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents.policy import TransformerPolicy
from textgym.conversation.vector import ConversationVectorEnv
from textgym.lm import Sampling, sample_tokens, token_logprobs


@dataclass
class DialogueRollout:
    """B whole dialogues as token sequences of a common length T (tensors on the policy's device).

    Each row is left-padded (``attention`` 0) and then one run of real tokens; ``action_mask`` is 1 exactly at the
    agent's tokens, where ``logprobs`` (and ``values``) were recorded; ``rewards`` holds each
    step's env reward at that step's action: per-turn rewards at the last token of their turn,
    the final reward added at the last token of the dialogue.
    """

    ids: torch.Tensor  # (B, T) int64
    attention: torch.Tensor  # (B, T) int64
    action_mask: torch.Tensor  # (B, T) float32
    logprobs: torch.Tensor  # (B, T) float32
    rewards: torch.Tensor  # (B, T) float32
    values: torch.Tensor | None  # (B, T) float32
    infos: list[dict[str, Any]] = field(default_factory=list)  # each row's final info

    @property
    def returns(self) -> torch.Tensor:
        """(B,) the sum of each dialogue's rewards."""
        return self.rewards.sum(-1)

    @property
    def success(self) -> np.ndarray:
        """(B,) the final reward's first component per dialogue (e.g. ``success``)."""
        return np.array([next(iter(info["reward_components"].values())) for info in self.infos])


def check_dialogue_env(envs: Any) -> ConversationVectorEnv:
    env = getattr(envs, "unwrapped", envs)
    if not isinstance(env, ConversationVectorEnv):
        raise TypeError(f"the rollout needs a ConversationVectorEnv, got {type(env).__name__}")
    if env.autoreset_mode != AutoresetMode.DISABLED:
        raise ValueError(
            "the dialogue rollout steps envs in lockstep and needs autoreset_mode='disabled', "
            f"got {env.autoreset_mode.name.lower()}"
        )
    return env


def _row_info(info: dict[str, Any], b: int) -> dict[str, Any]:
    """Row b's entries of a batched vector-env info (nested dicts included)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_") or not info[f"_{key}"][b]:
            continue
        item = _row_info(value, b) if isinstance(value, dict) else value[b]
        out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def _block(
    rows: list[list[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token lists -> (ids, attention), each (B, L), left-padded per row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    for b, tokens in enumerate(rows):
        if tokens:
            ids[b, width - len(tokens) :] = torch.as_tensor(tokens)
            attention[b, width - len(tokens) :] = 1
    return ids.to(device), attention.to(device)


@torch.no_grad()
def rollout_dialogues(
    policy: TransformerPolicy,
    envs: Any,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    record_values: bool = False,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> DialogueRollout:
    """Reset every sub-env and play all B dialogues to their end in lockstep.

    One prefill of the openings, then per step ONE forward over each row's action plus the
    tokens the env inserted after it (a turn that ended: the user's message and the next
    header). The KV cache holds whole dialogues, so a context budget that drops turns
    (``info["dropped_turns"] > 0``) is refused with a message: raise ``max_context_tokens``.

    >>> import gymnasium as gym, textgym
    >>> from textgym.models import tiny_model
    >>> envs = gym.make_vec("TextGen-Conversation-v0", num_envs=2, max_context_tokens=160,
    ...                     max_turn_tokens=3, max_turns=2, autoreset_mode="disabled")
    >>> policy = TransformerPolicy(tiny_model(envs.unwrapped.tokenizer))
    >>> batch = rollout_dialogues(policy, envs, Sampling(top_k=20), torch.Generator().manual_seed(0), seed=0)
    >>> int(batch.action_mask.sum()), [info["num_turns"] for info in batch.infos]
    (12, [2, 2])
    """
    env = check_dialogue_env(envs)
    device = policy.value_head.weight.device
    autocast = autocast if autocast is not None else contextlib.nullcontext()
    B, C = env.num_envs, env.max_context_tokens
    obs, _ = env.reset(seed=seed, options={**(options or {}), "reset_mask": np.ones(B, dtype=bool)})
    first = int(np.argmax(obs["attention_mask"][:, :C].any(0)))  # drop all-padding columns
    ids = [torch.as_tensor(obs["input_ids"][:, first:C], device=device)]
    attention = [torch.as_tensor(obs["attention_mask"][:, first:C], device=device).long()]
    zeros = torch.zeros(B, C - first, device=device)
    actions, logprobs, rewards, values = [zeros], [zeros.clone()], [zeros.clone()], [zeros.clone()]
    infos: list[dict[str, Any]] = [{} for _ in range(B)]

    with autocast:
        logits, hidden, cache = policy.lm_forward(
            policy.model, ids[0], attention[0], keep=1, use_cache=True, hidden=record_values
        )
    active = env.active
    while active.any():
        step_logits = logits[:, -1]  # (B, V): each row's last column is its newest real token
        action = sample_tokens(step_logits, sampling, generator)
        step_logp = token_logprobs(step_logits, action, sampling.scale)
        step_value = (
            policy.value_head(hidden[:, -1].float()).squeeze(-1) if record_values else None  # type: ignore[index]
        )
        obs, reward, terminated, _, info = env.step(action.cpu().numpy())
        dropped = info.get("dropped_turns")
        if dropped is not None and (dropped[info["_dropped_turns"]] > 0).any():
            raise ValueError(
                f"a dialogue outgrew max_context_tokens={C} and lost its oldest turns, which a "
                "KV-cache rollout of whole dialogues cannot follow; raise max_context_tokens"
            )
        rows: list[list[int]] = []
        for b in range(B):
            if not active[b]:
                rows.append([])
                continue
            turn_ended = "_inserted_tokens" in info and info["_inserted_tokens"][b]
            inserted = int(info["inserted_tokens"][b]) if turn_ended else 0
            rows.append([int(action[b]), *obs["input_ids"][b, C - inserted : C].tolist()])
            if terminated[b]:
                infos[b] = _row_info(info, b)
        block_ids, block_attention = _block(rows, env.pad_token_id, device)
        L = block_ids.shape[1]
        # The action sits in each live row's first real column of the block.
        column = L - torch.as_tensor([len(r) for r in rows], device=device)
        live = torch.as_tensor(active, device=device)
        here = torch.zeros(B, L, device=device)
        here[live, column[live]] = 1.0
        ids.append(block_ids)
        attention.append(block_attention)
        actions.append(here)
        logprobs.append(here * step_logp[:, None])
        rewards.append(here * torch.as_tensor(reward, dtype=torch.float32, device=device)[:, None])
        if step_value is not None:
            values.append(here * step_value[:, None])
        active = env.active
        if not active.any():
            break
        with autocast:
            logits, hidden, cache = policy.lm_forward(
                policy.model,
                block_ids,
                torch.cat(attention, dim=1),
                cache=cache,
                keep=1,
                use_cache=True,
                hidden=record_values,
            )
    return _compact(
        torch.cat(ids, dim=1),
        torch.cat(attention, dim=1),
        {
            "action_mask": torch.cat(actions, dim=1),
            "logprobs": torch.cat(logprobs, dim=1),
            "rewards": torch.cat(rewards, dim=1),
            **({"values": torch.cat(values, dim=1)} if record_values else {"values": None}),
        },
        env.pad_token_id,
        infos,
    )


def _compact(
    ids: torch.Tensor,
    attention: torch.Tensor,
    columns: dict[str, torch.Tensor | None],
    pad: int,
    infos: list[dict[str, Any]],
) -> DialogueRollout:
    """Drop the padding inside rows: each row's real tokens left-padded into one run, so that
    column t-1 is the token before column t (what a no-cache forward predicts from)."""
    real = attention.bool()
    lengths = real.sum(1)
    B, W = ids.shape[0], int(lengths.max())
    out_ids = torch.full((B, W), pad, dtype=ids.dtype, device=ids.device)
    out_attention = torch.zeros(B, W, dtype=attention.dtype, device=ids.device)
    out = {
        k: None if v is None else torch.zeros(B, W, device=ids.device) for k, v in columns.items()
    }
    for b in range(B):
        start = W - int(lengths[b])
        out_ids[b, start:] = ids[b, real[b]]
        out_attention[b, start:] = 1
        for key, value in columns.items():
            if value is not None:
                out[key][b, start:] = value[b, real[b]]  # type: ignore[index]
    return DialogueRollout(ids=out_ids, attention=out_attention, infos=infos, **out)  # type: ignore[arg-type]


def dialogue_logprobs(
    policy: TransformerPolicy | torch.nn.Module, batch: DialogueRollout, scale: float = 1.0
) -> torch.Tensor:
    """(B, T) log-probs of every token under the policy from ONE no-cache forward over the
    whole dialogues (column 0 is 0: nothing predicts it); mask with ``batch.action_mask``."""
    logits, _, _ = policy.lm_forward(policy.model, batch.ids[:, :-1], batch.attention[:, :-1])
    logp = token_logprobs(logits, batch.ids[:, 1:], scale)
    return torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)


def reward_to_go(batch: DialogueRollout) -> torch.Tensor:
    """(B, T) the rewards from each column on (undiscounted): a per-turn reward counts for the
    tokens of its turn and the turns before it, the final reward for every token."""
    return batch.rewards.flip(1).cumsum(1).flip(1)


def policy_gradient_loss(
    policy: TransformerPolicy | torch.nn.Module,
    batch: DialogueRollout,
    advantages: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """REINFORCE's loss over whole dialogues: ``-sum(advantage * log-prob)`` over agent tokens
    only, divided by the number of agent tokens. User and template tokens are state: they get
    exactly zero weight (and so zero gradient through their positions' logits).

    ``advantages`` is (B, T) (e.g. :func:`reward_to_go` minus a baseline) or (B,) per dialogue.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(batch.action_mask)
    logp = dialogue_logprobs(policy, batch, scale)
    weights = batch.action_mask * advantages.detach()
    return -(weights * logp).sum() / batch.action_mask.sum().clamp(min=1)


def group_advantages(batch: DialogueRollout, group_size: int) -> torch.Tensor:
    """(B, T) advantages for groups of ``group_size`` consecutive rows that share one goal:
    each token's reward-to-go minus the mean return of the OTHER dialogues of its group
    (RLOO's leave-one-out baseline, per token so that per-turn rewards count where they fall)."""
    B = batch.ids.shape[0]
    if group_size < 2 or B % group_size:
        raise ValueError(
            f"group_size={group_size} must be >= 2 and divide the batch of {B} dialogues"
        )
    returns = batch.returns.view(-1, group_size)  # (G, K)
    baseline = (returns.sum(1, keepdim=True) - returns) / (group_size - 1)
    return reward_to_go(batch) - baseline.reshape(B, 1)


def train_step(
    policy: TransformerPolicy,
    optimizer: torch.optim.Optimizer,
    envs: Any,
    sampling: Sampling,
    group_size: int,
    generator: torch.Generator | None = None,
    split_indices: list[int] | None = None,
) -> dict[str, float]:
    """One RLOO update on whole dialogues: B / ``group_size`` goals, each played
    ``group_size`` times (a group shares one sample), then one gradient step on the masked
    policy-gradient loss. ``split_indices`` picks the goals (default: drawn by the env).
    Returns ``train/...`` metrics of the rollout."""
    env = check_dialogue_env(envs)
    B = env.num_envs
    options = None
    if split_indices is not None:
        if len(split_indices) * group_size != B:
            raise ValueError(
                f"{len(split_indices)} goals x group_size={group_size} != {B} sub-envs"
            )
        options = {"index": [i for i in split_indices for _ in range(group_size)]}
    policy.eval()
    batch = rollout_dialogues(policy, envs, sampling, generator, options=options)
    policy.train()
    loss = policy_gradient_loss(policy, batch, group_advantages(batch, group_size), sampling.scale)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {
        "train/loss": float(loss.detach()),
        "train/return": float(batch.returns.mean()),
        "train/success": float(batch.success.mean()),
        "train/turns": float(np.mean([info["num_turns"] for info in batch.infos])),
    }
