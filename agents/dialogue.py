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

:func:`train_step` runs one update of PPO, RLOO, GRPO or REINFORCE (:class:`DialogueConfig`)
on such rollouts with the single-turn pieces of :mod:`agents.ppo`, :mod:`agents.rloo` and
:mod:`agents.grpo`: PPO's GAE runs over agent tokens only (:func:`dialogue_gae`), and every
loss and KL term is masked to agent tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents import grpo
from agents.algorithm import LossAndStats
from agents.config import check_ints, check_real
from agents.policy import TransformerPolicy
from agents.ppo import clipped_policy_loss, clipped_value_loss, gae
from agents.rloo import leave_one_out_advantages
from agents.runtime import whiten
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
    turn_rewards: list[list[float]] = field(default_factory=list)  # each row's per-turn rewards
    cut_turns: list[list[bool]] = field(default_factory=list)  # per turn: cut at a token cap

    @property
    def mask(self) -> torch.Tensor:
        """``action_mask`` under the name :meth:`agents.onpolicy.OnPolicyTrainer.update` reads."""
        return self.action_mask

    @property
    def returns(self) -> torch.Tensor:
        """(B,) the sum of each dialogue's rewards."""
        return self.rewards.sum(-1)

    @property
    def success(self) -> np.ndarray:
        """(B,) the final reward's first component per dialogue (e.g. ``success``)."""
        return np.array([next(iter(info["reward_components"].values())) for info in self.infos])

    def select(self, rows: torch.Tensor | list[int]) -> DialogueRollout:
        """The dialogues ``rows`` (indices) as a rollout of their own (a minibatch)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.ids.device)
        picked = index.tolist()
        tensors = {
            name: None if value is None else value[index]
            for name, value in (
                ("ids", self.ids), ("attention", self.attention),
                ("action_mask", self.action_mask), ("logprobs", self.logprobs),
                ("rewards", self.rewards), ("values", self.values),
            )
        }  # fmt: skip
        return DialogueRollout(
            **tensors,  # type: ignore[arg-type]
            infos=[self.infos[b] for b in picked],
            turn_rewards=[self.turn_rewards[b] for b in picked],
            cut_turns=[self.cut_turns[b] for b in picked],
        )


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
    turn_rewards: list[list[float]] = [[] for _ in range(B)]
    cut_turns: list[list[bool]] = [[] for _ in range(B)]

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
                "KV-cache rollout of whole dialogues cannot follow; raise max_context_tokens "
                "(--max-prompt-tokens of textgym train), or lower max_turns or the turn cap"
            )
        rows: list[list[int]] = []
        for b in range(B):
            if not active[b]:
                rows.append([])
                continue
            turn_ended = "_inserted_tokens" in info and info["_inserted_tokens"][b]
            inserted = int(info["inserted_tokens"][b]) if turn_ended else 0
            if turn_ended:
                turn_rewards[b].append(float(info["turn_reward"][b]))
                cut_turns[b].append(info["turn_finish_reason"][b] == "length")
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
        turn_rewards,
        cut_turns,
    )


def _compact(
    ids: torch.Tensor,
    attention: torch.Tensor,
    columns: dict[str, torch.Tensor | None],
    pad: int,
    infos: list[dict[str, Any]],
    turn_rewards: list[list[float]],
    cut_turns: list[list[bool]],
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
    return DialogueRollout(
        ids=out_ids,
        attention=out_attention,
        infos=infos,
        turn_rewards=turn_rewards,
        cut_turns=cut_turns,
        **out,  # type: ignore[arg-type]
    )


def dialogue_logprobs(
    policy: TransformerPolicy | torch.nn.Module, batch: DialogueRollout, scale: float = 1.0
) -> torch.Tensor:
    """(B, T) log-probs of every token under the policy from ONE no-cache forward over the
    whole dialogues (column 0 is 0: nothing predicts it); mask with ``batch.action_mask``."""
    return dialogue_forward(policy, policy.model, batch, scale)[0]


def dialogue_forward(
    policy: TransformerPolicy | torch.nn.Module,
    model: torch.nn.Module,
    batch: DialogueRollout,
    scale: float = 1.0,
    values: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model``'s (the policy's or its reference's) (B, T) token log-probs and, with
    ``values``, the value head's V of the state before each column, from one no-cache forward
    (column t is predicted from position t - 1; column 0 gets 0)."""
    logits, hidden, _ = policy.lm_forward(
        model, batch.ids[:, :-1], batch.attention[:, :-1], hidden=values
    )
    logp = token_logprobs(logits, batch.ids[:, 1:], scale)
    first = torch.zeros_like(logp[:, :1])
    if not values:
        return torch.cat([first, logp], dim=1), None
    value = policy.value_head(hidden.float()).squeeze(-1)  # type: ignore[union-attr]
    return torch.cat([first, logp], dim=1), torch.cat([first, value], dim=1)


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
    returns = batch.returns
    baseline = returns - leave_one_out_advantages(returns, group_size)  # the others' mean
    return reward_to_go(batch) - baseline[:, None]


def dialogue_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    action_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's :func:`~agents.ppo.gae` over each dialogue's agent tokens only: user and template
    tokens are state, not time steps, so a turn's last token hands on directly to the next
    turn's first (a per-turn reward enters at its turn's last token). Inputs and the returned
    ``(advantages, returns)`` are (B, T), 0 off agent tokens.

    >>> adv, ret = dialogue_gae(torch.tensor([[0.0, 1.0, 0.0, 2.0]]), torch.zeros(1, 4),
    ...                         torch.tensor([[0.0, 1.0, 0.0, 1.0]]), 1.0, 1.0)
    >>> adv.tolist()  # the user token at column 2 neither discounts nor breaks the return
    [[0.0, 3.0, 0.0, 2.0]]
    """
    order = torch.argsort(1 - action_mask, dim=1, stable=True)  # agent columns first, in order
    index = order[:, : max(int(action_mask.sum(1).max()), 1)]
    mask = action_mask.gather(1, index)
    advantages, returns = gae(rewards.gather(1, index), values.gather(1, index), mask, gamma, lam)
    # The gathered padding has mask 0, so scattering writes 0 back to non-agent columns.
    return (
        torch.zeros_like(rewards).scatter(1, index, advantages),
        torch.zeros_like(rewards).scatter(1, index, returns),
    )


DIALOGUE_ALGOS = ("ppo", "rloo", "grpo", "reinforce")


@dataclass
class DialogueConfig:
    """How :func:`train_step` turns B whole dialogues into one update (see each field)."""

    algo: str = "rloo"
    """One of :data:`DIALOGUE_ALGOS`: ``ppo`` (GAE on the value head, clipped losses),
    ``reinforce`` (reward-to-go minus the value head's baseline), ``rloo`` (reward-to-go minus
    the leave-one-out mean return of the group), ``grpo`` (group-standardised return)."""
    epochs: int = 1
    """Gradient steps on each rollout (the ratio clip of PPO/RLOO/GRPO acts from the second)."""
    kl_coef: float = 0.0
    """KL penalty to the policy's reference on agent tokens (0 = none): in the token rewards
    for PPO, REINFORCE and RLOO, a k3 loss term for GRPO."""
    clip_range: float = 0.2
    """Ratio clip epsilon of PPO, RLOO and GRPO."""
    gamma: float = 1.0
    """PPO's discount per agent token."""
    gae_lambda: float = 0.95
    """PPO's GAE lambda (REINFORCE uses 1: Monte-Carlo returns)."""
    vf_coef: float = 0.1
    """Weight of the value loss (PPO, REINFORCE)."""
    clip_range_value: float = 0.2
    """PPO's clip of the value update around the rollout's values (0 = none)."""
    whiten_advantages: bool = True
    """PPO/REINFORCE: normalise advantages over the batch's agent tokens."""
    scale_rewards: bool = True
    """GRPO: divide by the group's return std (False: only subtract the mean, Dr. GRPO)."""

    def __post_init__(self) -> None:
        if self.algo not in DIALOGUE_ALGOS:
            raise ValueError(
                f"algo must be one of {', '.join(DIALOGUE_ALGOS)} for whole dialogues, "
                f"got {self.algo!r}"
            )
        check_ints(self, ("epochs",), 1)
        for name in ("gamma", "gae_lambda"):
            check_real(self, name, 0, 1)
        check_real(self, "clip_range", 0, open_low=True)
        for name in ("kl_coef", "vf_coef", "clip_range_value"):
            check_real(self, name, 0)

    @property
    def uses_values(self) -> bool:
        """Whether the value head is recorded and trained (PPO, REINFORCE)."""
        return self.algo in ("ppo", "reinforce")

    @property
    def uses_groups(self) -> bool:
        """Whether the baseline comes from a group sharing one goal (RLOO, GRPO)."""
        return self.algo in ("rloo", "grpo")


@torch.no_grad()
def dialogue_targets(
    policy: TransformerPolicy,
    batch: DialogueRollout,
    config: DialogueConfig,
    group_size: int,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """(B, T) ``advantages`` (and ``returns`` for the value loss, ``ref_logprobs`` for GRPO's
    KL term) of ``config.algo``; rows come in groups of ``group_size`` sharing a goal. With
    ``kl_coef`` > 0 also ``kl``: the rollout's per-token log-ratio to the reference."""
    mask = batch.action_mask
    kl = torch.zeros_like(mask)
    ref_logprobs = None
    if config.kl_coef > 0:
        with policy.reference_mode_on() as reference:
            ref_logprobs = dialogue_forward(policy, reference, batch, scale)[0]
        kl = (batch.logprobs - ref_logprobs) * mask
    measured = {} if ref_logprobs is None else {"kl": kl}
    if config.algo == "grpo":
        standardised = grpo.group_advantages(batch.returns, group_size, config.scale_rewards)
        targets = {"advantages": standardised[:, None] * mask, **measured}  # one per dialogue
        return targets if ref_logprobs is None else {**targets, "ref_logprobs": ref_logprobs}
    penalised = replace(batch, rewards=batch.rewards - config.kl_coef * kl)
    if config.algo == "rloo":
        return {"advantages": group_advantages(penalised, group_size) * mask, **measured}
    if batch.values is None:
        raise ValueError(f"{config.algo} needs the rollout's values: record_values=True")
    gamma, lam = (config.gamma, config.gae_lambda) if config.algo == "ppo" else (1.0, 1.0)
    advantages, returns = dialogue_gae(penalised.rewards, batch.values, mask, gamma, lam)
    if config.whiten_advantages:
        advantages = whiten(advantages, mask)
    return {"advantages": advantages, "returns": returns, **measured}


def dialogue_loss(
    policy: TransformerPolicy | torch.nn.Module,
    batch: DialogueRollout,
    targets: dict[str, torch.Tensor],
    config: DialogueConfig,
    scale: float = 1.0,
    denom: float | None = None,
) -> LossAndStats:
    """``config.algo``'s loss on whole dialogues, every term masked to agent tokens and divided
    by ``denom`` (default: their number here; a minibatch's when ``batch`` is one micro-batch
    of it): PPO's clipped surrogate against the rollout's log-probs (plain for REINFORCE), the
    value loss (PPO, REINFORCE), GRPO's k3 KL term. Returns ``(loss, sums)``: each stat
    (``clipfrac``, ``approx_kl``, ``policy_loss``, ...) summed over agent tokens, as
    :meth:`~agents.trainer.BaseTrainer.optimizer_step` adds them up."""
    mask = batch.action_mask
    denom = float(mask.sum().clamp(min=1)) if denom is None else denom
    logp, values = dialogue_forward(policy, policy.model, batch, scale, config.uses_values)
    clip = None if config.algo == "reinforce" else config.clip_range
    loss, stats = clipped_policy_loss(
        logp, batch.logprobs, targets["advantages"], mask, clip, denom
    )
    stats["policy_loss"] = loss.detach() * denom
    if config.uses_values:
        assert values is not None and batch.values is not None
        value_clip = config.clip_range_value if config.algo == "ppo" else 0.0
        value_loss = clipped_value_loss(
            values, batch.values, targets["returns"], mask, value_clip, denom
        )
        stats["value_loss"] = value_loss.detach() * denom
        loss = loss + config.vf_coef * value_loss
    if "ref_logprobs" in targets:
        diff = torch.where(mask > 0, targets["ref_logprobs"] - logp, 0.0)
        kl_loss = ((diff.exp() - diff - 1) * mask).sum() / denom
        stats["kl_loss"] = kl_loss.detach() * denom
        loss = loss + config.kl_coef * kl_loss
    return loss, stats


def train_step(
    policy: TransformerPolicy,
    optimizer: torch.optim.Optimizer,
    envs: Any,
    sampling: Sampling,
    group_size: int,
    generator: torch.Generator | None = None,
    split_indices: list[int] | None = None,
    config: DialogueConfig | None = None,
) -> dict[str, float]:
    """One update of ``config.algo`` (default RLOO) on whole dialogues: B / ``group_size``
    goals, each played ``group_size`` times (a group shares one sample; RLOO and GRPO need
    >= 2), then ``config.epochs`` gradient steps on :func:`dialogue_loss`. ``split_indices``
    picks the goals (default: drawn by the env). Returns ``train/...`` metrics."""
    config = config if config is not None else DialogueConfig()
    env = check_dialogue_env(envs)
    B = env.num_envs
    smallest = 2 if config.uses_groups else 1
    if group_size < smallest or B % group_size:
        raise ValueError(
            f"group_size={group_size} must be >= {smallest} for {config.algo} and divide "
            f"the batch of {B} dialogues"
        )
    if config.kl_coef > 0 and not policy.has_reference:
        raise ValueError("kl_coef > 0 needs a policy with a reference (reference='copy')")
    options = None
    if split_indices is not None:
        if len(split_indices) * group_size != B:
            raise ValueError(
                f"{len(split_indices)} goals x group_size={group_size} != {B} sub-envs"
            )
        options = {"index": [i for i in split_indices for _ in range(group_size)]}
    policy.eval()
    batch = rollout_dialogues(
        policy, envs, sampling, generator, options=options, record_values=config.uses_values
    )
    targets = dialogue_targets(policy, batch, config, group_size, sampling.scale)
    policy.train()
    denom = float(batch.action_mask.sum().clamp(min=1))
    for _ in range(config.epochs):
        loss, sums = dialogue_loss(policy, batch, targets, config, sampling.scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {
        "train/loss": float(loss.detach()),
        **{f"train/{name}": float(value) / denom for name, value in sums.items()},
        **dialogue_metrics(batch, "train"),
    }


def dialogue_metrics(
    batches: DialogueRollout | Sequence[DialogueRollout], prefix: str
) -> dict[str, float]:
    """What one or more batches of dialogues show, as ``{prefix}/...`` means over dialogues:
    ``reward`` (the return: per-turn plus final rewards), ``success`` (the final reward's
    first component), ``turns`` (agent turns per dialogue), ``turn_reward`` (mean reward of a
    turn, the final reward excluded), ``cut_turns`` (the fraction of turns cut at a token cap),
    ``length`` (agent tokens per dialogue), ``user_failure`` (the fraction that ended on a
    failed user simulator) and ``reward/<name>`` for the final reward's other components."""
    batches = [batches] if isinstance(batches, DialogueRollout) else list(batches)
    infos = [info for b in batches for info in b.infos]
    turns = [r for b in batches for row in b.turn_rewards for r in row]
    cut = [c for b in batches for row in b.cut_turns for c in row]
    metrics = {
        f"{prefix}/reward": float(torch.cat([b.returns for b in batches]).mean()),
        f"{prefix}/success": float(np.concatenate([b.success for b in batches]).mean()),
        f"{prefix}/turns": float(np.mean([info["num_turns"] for info in infos])),
        f"{prefix}/turn_reward": float(np.mean(turns)) if turns else 0.0,
        f"{prefix}/cut_turns": float(np.mean(cut)) if cut else 0.0,
        f"{prefix}/length": float(torch.cat([b.action_mask.sum(1) for b in batches]).mean()),
    }
    for name in list(infos[0]["reward_components"])[1:]:
        values = [info["reward_components"][name] for info in infos]
        key = f"{prefix}/user_failure" if name == "user_failure" else f"{prefix}/reward/{name}"
        metrics[key] = float(np.mean(values))
    return metrics
