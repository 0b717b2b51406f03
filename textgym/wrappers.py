"""Reference-LM wrappers: action masks, top-k actions and KL shaping from a frozen language model.

A reference LM (usually the pretrained model the agent starts from) knows which next tokens are
plausible. The wrappers here use it three ways:

- :class:`ReferenceActionMask` exposes ``action_masks()``: the reference's top-k and/or top-p
  next tokens (the NLPO idea), so sb3-contrib ``MaskablePPO`` trains with masks unchanged.
- :class:`TopKActions` turns the vocabulary-wide token choice into ``Discrete(k)`` over the
  reference's k most likely next tokens, with a small float observation (candidate
  log-probabilities, their similarity to the prompt, a pooled hidden state), so DQN, QR-DQN,
  TRPO, RecurrentPPO and MLP PPO/A2C learn on text.
- :class:`KLPenalty` adds ``-beta * (log pi_agent - log pi_ref)`` to the reward when the agent
  reports its log-probability (:meth:`KLPenalty.report_logprob`), and puts the reference
  log-probability in ``info`` either way.

All of them ask a :class:`ReferenceLM`, which never recomputes a prefix: it keeps a KV cache per
env slot (:class:`PrefixCache`) keyed by the observed prefix, so an ordinary step costs one
incremental forward of one token. Wrappers that share one :class:`ReferenceLM` (say one per env
of a ``DummyVecEnv``) are served together: the first wrapper that needs an answer runs ONE
batched forward for every env whose prefix changed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from numpy.typing import ArrayLike
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

ModelSpec = str | os.PathLike[str] | nn.Module


# ----------------------------------------------------------------------------- LM forward
def content_end(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) one past the last attended column of each row (the prompt and completion are one run).

    >>> content_end(torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])).tolist()
    [3, 4]
    """
    width = attention_mask.shape[1]
    return width - attention_mask.flip(1).to(torch.int8).argmax(1)


def right_align(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observation layout -> a left-padded batch whose last column holds every row's last token.

    An observation has the prompt left-padded before column P and the generated tokens from
    column P on, so each row's tokens form one run of attended columns ending at
    :func:`content_end`. Shifting each row right so that run ends at the final column puts every
    last token in one place (the LM head then runs on one position); columns masked in every
    row are dropped. Returns ``(ids, mask)``, both (B, W) with W <= the observation length.

    >>> ids = torch.tensor([[0, 5, 6, 7, 0], [8, 9, 6, 0, 0]])
    >>> mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    >>> right_align(ids, mask)
    (tensor([[5, 6, 7],
            [8, 9, 6]]), tensor([[1, 1, 1],
            [1, 1, 1]]))
    """
    end = content_end(attention_mask)  # (B,)
    width = int(end.max())
    cols = torch.arange(width, device=input_ids.device)[None, :] - (width - end)[:, None]  # (B, W)
    valid = cols >= 0
    cols = cols.clamp(min=0)
    ids = input_ids[:, :width].gather(1, cols)
    mask = attention_mask[:, :width].gather(1, cols) * valid
    first = int(mask.any(0).to(torch.int8).argmax())
    return ids[:, first:], mask[:, first:]


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: ``cumsum(mask) - 1``, 0 on padding."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def last_token_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    use_cache: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Next-token logits and last hidden state for a batch of observations (full prefix).

    Returns ``(logits (B, V), hidden (B, H), cache)``; the LM head runs on the last position
    only (``logits_to_keep=1``), the model's own forward applies any logit scaling it has, and
    ``cache`` (a ``DynamicCache`` over the right-aligned prefix, or None) lets
    :class:`PrefixCache` continue from here.
    """
    ids, mask = right_align(input_ids.long(), attention_mask.long())
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions(mask),
        use_cache=use_cache,
        logits_to_keep=1,
        output_hidden_states=True,
    )
    return (
        out.logits[:, -1, :vocab_size],
        out.hidden_states[-1][:, -1],
        out.past_key_values if use_cache else None,
    )


def check_vocab(model: nn.Module, vocab_size: int) -> None:
    """Raise when ``model`` cannot score every action of a ``Discrete(vocab_size)`` env."""
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < vocab_size:
        raise ValueError(
            f"the model has {rows} output tokens but the env's action space has {vocab_size}; "
            "use a model built for the env's tokenizer"
        )


@dataclass
class _CacheState:
    ids: torch.Tensor  # (B, L) the observations last seen, one row per env slot
    mask: torch.Tensor  # (B, L)
    end: torch.Tensor  # (B,) content_end of each row
    cache: DynamicCache | None  # KV of every row's prefix, right-aligned at the last column
    attn: torch.Tensor | None  # (B, C) attention mask over the cache columns
    logits: torch.Tensor  # (B, V) next-token logits of each row's last observation
    hidden: torch.Tensor  # (B, H) last-layer hidden state at each row's last token
    version: int


class PrefixCache:
    """Next-token logits for batches of observations, reusing a KV cache per batch row (slot).

    Row i of every call is treated as the same env slot. When its observation extends the last
    one seen in that row by one token, only that token is run (one incremental forward for all
    such rows together); when it is unchanged, the stored answer is returned; otherwise (a new
    episode, or an unrelated observation) its whole prefix is run and spliced into the cache.
    Rows keep their prefix right-aligned at the last cache column; the cache is trimmed to the
    longest live prefix after every call.

    The cache is dropped when the batch shape or ``version`` changes (pass something that changes
    when the weights do, e.g. a parameter version counter). Models whose cache is not a plain
    ``DynamicCache`` (sliding-window or recurrent layers) get the full prefix every call.

    Args:
        model: a Hugging Face causal LM (eval mode is the caller's business).
        vocab_size: V, the number of logits kept (the env's action space).

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> model = tiny_model(shared_tokenizer("smollm2-135m"))
    >>> cache = PrefixCache(model, vocab_size=model.config.vocab_size)
    >>> ids, mask = torch.tensor([[0, 7, 8, 0, 0]]), torch.tensor([[0, 1, 1, 0, 0]])
    >>> _ = cache(ids, mask)
    >>> ids[0, 3], mask[0, 3] = 9, 1
    >>> logits, hidden = cache(ids, mask)
    >>> full, _, _ = last_token_forward(model, ids, mask, model.config.vocab_size)
    >>> cache.incremental_rows, bool(torch.allclose(logits, full, atol=1e-4))
    (1, True)
    """

    def __init__(self, model: nn.Module, vocab_size: int) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.incremental = True
        self.incremental_rows = 0  # rows answered by one-token forwards (a statistic)
        self.full_rows = 0  # rows whose whole prefix was run
        self._state: _CacheState | None = None

    def reset(self) -> None:
        """Forget every cached prefix."""
        self._state = None

    @torch.no_grad()
    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, version: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, V), hidden (B, H))`` at the last token of each observation row."""
        ids, mask = input_ids.long(), attention_mask.long()  # (B, L)
        end = content_end(mask)  # (B,)
        st = self._state
        if st is None or st.ids.shape != ids.shape or st.version != version:
            return self._start(ids, mask, end, version)
        cols = torch.arange(ids.shape[1], device=ids.device)[None, :]
        seen = cols < st.end[:, None]
        same_prefix = (((ids == st.ids) & (mask == st.mask)) | ~seen).all(1)  # (B,)
        step = same_prefix & (end == st.end + 1)
        full = ~(step | (same_prefix & (end == st.end)))
        if step.any():
            self._step(st, ids, mask, end, step)
        if full.any():
            self._splice(st, ids, mask, full)
        self._trim(st)
        st.ids, st.mask, st.end = ids.clone(), mask.clone(), end
        return st.logits, st.hidden

    def _start(
        self, ids: torch.Tensor, mask: torch.Tensor, end: torch.Tensor, version: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, hidden, cache = last_token_forward(
            self.model, ids, mask, self.vocab_size, use_cache=self.incremental
        )
        self.full_rows += ids.shape[0]
        if not self.incremental or not _plain_cache(cache):
            self.incremental = False
            return logits, hidden
        _, attn = right_align(ids, mask)
        self._state = _CacheState(
            ids.clone(), mask.clone(), end, cache, attn, logits.clone(), hidden.clone(), version
        )
        return self._state.logits, self._state.hidden

    def _step(
        self,
        st: _CacheState,
        ids: torch.Tensor,
        mask: torch.Tensor,
        end: torch.Tensor,
        step: torch.Tensor,
    ) -> None:
        """One forward of one new token per row; rows not stepping get a masked dummy column."""
        last = (end - 1)[:, None]  # (B, 1)
        tokens = torch.where(step[:, None], ids.gather(1, last), 0)  # (B, 1)
        st.attn = torch.cat([st.attn, step.long()[:, None]], 1)  # (B, C+1)
        out = self.model(
            input_ids=tokens,
            attention_mask=st.attn,
            position_ids=(mask.sum(1, keepdim=True) - 1).clamp(min=0),
            past_key_values=st.cache,
            use_cache=True,
            logits_to_keep=1,
            output_hidden_states=True,
        )
        st.logits[step] = out.logits[step, -1, : self.vocab_size]
        st.hidden[step] = out.hidden_states[-1][step, -1]
        self.incremental_rows += int(step.sum())

    def _splice(
        self, st: _CacheState, ids: torch.Tensor, mask: torch.Tensor, full: torch.Tensor
    ) -> None:
        """Run the whole prefix of the ``full`` rows and write their KV at the cache's end."""
        rows = full.nonzero().squeeze(1)
        logits, hidden, cache = last_token_forward(
            self.model, ids[rows], mask[rows], self.vocab_size, use_cache=True
        )
        _, sub_attn = right_align(ids[rows], mask[rows])
        width, columns = sub_attn.shape[1], st.attn.shape[1]
        layers = st.cache.layers  # type: ignore[union-attr]
        if columns < width:  # make room on the left for a longer prefix
            grow = width - columns
            for layer in layers:
                layer.keys = nn.functional.pad(layer.keys, (0, 0, grow, 0))
                layer.values = nn.functional.pad(layer.values, (0, 0, grow, 0))
            st.attn = nn.functional.pad(st.attn, (grow, 0))
        for layer, new in zip(layers, cache.layers, strict=True):
            layer.keys[rows, :, -width:] = new.keys
            layer.values[rows, :, -width:] = new.values
        st.attn[rows] = 0
        st.attn[rows, -width:] = sub_attn
        st.logits[rows] = logits
        st.hidden[rows] = hidden
        self.full_rows += rows.numel()

    @staticmethod
    def _trim(st: _CacheState) -> None:
        """Drop leading cache columns that no row attends to."""
        first = int(st.attn.any(0).to(torch.int8).argmax())  # type: ignore[union-attr]
        if first:
            for layer in st.cache.layers:  # type: ignore[union-attr]
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            st.attn = st.attn[:, first:]  # type: ignore[index]


def _plain_cache(cache: Any) -> bool:
    return isinstance(cache, DynamicCache) and all(
        type(layer) is DynamicLayer for layer in cache.layers
    )


# ----------------------------------------------------------------------------- reference LM
def load_reference(model: ModelSpec, device: str | torch.device | None = None) -> nn.Module:
    """A frozen causal LM in eval mode: a loaded module as is, or a name/path via ``load_model``."""
    if isinstance(model, (str, os.PathLike)):
        from textgym.models import load_model

        model = load_model(model, device=device)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"reference must be a model name/path, an nn.Module or a ReferenceLM, got {type(model).__name__}"
        )
    model.eval().requires_grad_(False)
    return model


class ReferenceLM:
    """A frozen causal LM that answers next-token questions for several env slots at once.

    Each wrapper :meth:`attach`-es one slot and reports its current observation with
    :meth:`observe`. When any slot asks for :meth:`logprobs`, every slot whose prefix changed is
    answered by ONE batched forward through a :class:`PrefixCache` (one token per row in the
    usual case), so wrappers of a ``DummyVecEnv`` that share a ReferenceLM cost one batched
    step per vector step.

    Args:
        model: a causal LM module, or a name/path/alias for :func:`textgym.models.load_model`.
        device: where the model runs (default: where its weights are; ``"cpu"`` for a name).

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> ref = ReferenceLM(tiny_model(shared_tokenizer("smollm2-135m")))
    >>> a, b = ref.attach(vocab_size=49152), ref.attach(vocab_size=49152)
    >>> ref.observe(a, {"input_ids": np.array([5, 6, 0]), "attention_mask": np.array([1, 1, 0])})
    >>> ref.observe(b, {"input_ids": np.array([0, 7, 0]), "attention_mask": np.array([0, 1, 0])})
    >>> ref.logprobs(a).shape, ref.batched_calls
    (torch.Size([49152]), 1)
    >>> _ = ref.logprobs(b); ref.batched_calls  # answered by the same batched forward
    1
    """

    def __init__(self, model: ModelSpec, device: str | torch.device | None = None) -> None:
        self.model = load_reference(model, device)
        self.device = next(self.model.parameters()).device
        self.batched_calls = 0
        self._cache: PrefixCache | None = None
        self._obs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._rows: dict[int, int] = {}  # slot -> row of the last answer
        self._fresh: set[int] = set()
        self._logprobs: torch.Tensor | None = None
        self._hidden: torch.Tensor | None = None
        self._vocab_size: int | None = None
        self._num_slots = 0

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @functools.cached_property
    def unit_embeddings(self) -> torch.Tensor:
        """(V, E) the input embeddings scaled to unit length, built once and shared by wrappers."""
        weight = self.model.get_input_embeddings().weight.detach()
        return nn.functional.normalize(weight.float(), dim=-1)

    def attach(self, vocab_size: int) -> int:
        """A new slot for an env with ``vocab_size`` actions."""
        check_vocab(self.model, vocab_size)
        if self._vocab_size is not None and self._vocab_size != vocab_size:
            raise ValueError(
                f"this ReferenceLM serves envs with {self._vocab_size} actions, got {vocab_size}: "
                "use one ReferenceLM per vocabulary"
            )
        self._vocab_size = vocab_size
        self._num_slots += 1
        return self._num_slots - 1

    def observe(self, slot: int, observation: dict[str, np.ndarray]) -> None:
        """Record ``slot``'s current observation (its answer is computed when first asked)."""
        ids = torch.as_tensor(observation["input_ids"], device=self.device)
        others = [seen.shape for s, (seen, _) in self._obs.items() if s != slot]
        if others and others[0] != ids.shape:
            raise ValueError(
                f"slot {slot} observes {tuple(ids.shape)} token ids but the other slots of this "
                f"ReferenceLM observe {tuple(others[0])}: share a ReferenceLM only between envs "
                "with the same max_prompt_tokens + max_new_tokens"
            )
        self._obs[slot] = (ids, torch.as_tensor(observation["attention_mask"], device=self.device))
        self._fresh.discard(slot)

    def logprobs(self, slot: int) -> torch.Tensor:
        """Log-probabilities (V,) of the next token after ``slot``'s current observation."""
        self._answer(slot)
        return self._logprobs[self._rows[slot]]  # type: ignore[index]

    def hidden(self, slot: int) -> torch.Tensor:
        """Last-layer hidden state (H,) at ``slot``'s last token."""
        self._answer(slot)
        return self._hidden[self._rows[slot]]  # type: ignore[index]

    def _answer(self, slot: int) -> None:
        if slot not in self._obs:
            raise RuntimeError(f"slot {slot} has no observation yet; call observe() after reset")
        if slot in self._fresh:
            return
        assert self._vocab_size is not None
        if self._cache is None:
            self._cache = PrefixCache(self.model, self._vocab_size)
        slots = sorted(self._obs)
        ids = torch.stack([self._obs[s][0] for s in slots])  # (B, L)
        mask = torch.stack([self._obs[s][1] for s in slots])
        logits, hidden = self._cache(ids, mask)
        self._logprobs = torch.log_softmax(logits.float(), -1)  # (B, V)
        self._hidden = hidden.float()  # (B, H)
        self._rows = {s: i for i, s in enumerate(slots)}
        self._fresh = set(slots)
        self.batched_calls += 1


def _reference(reference: ReferenceLM | ModelSpec) -> ReferenceLM:
    return reference if isinstance(reference, ReferenceLM) else ReferenceLM(reference)


class _ReferenceWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Keeps a :class:`ReferenceLM` slot in step with the wrapped TextGen env's observations.

    Subclasses record their constructor arguments (``RecordConstructorArgs``) so that
    ``env.spec`` can rebuild them, as Gymnasium's own wrappers do.
    """

    def __init__(self, env: gym.Env, reference: ReferenceLM | ModelSpec) -> None:
        super().__init__(env)
        space = env.observation_space
        if not (
            isinstance(space, spaces.Dict)
            and {"input_ids", "attention_mask"} <= set(space.spaces)
            and isinstance(env.action_space, spaces.Discrete)
        ):
            raise TypeError(
                f"{type(self).__name__} wraps a TextGen env (Dict observation with input_ids and "
                f"attention_mask, Discrete actions); got {space} and {env.action_space}"
            )
        self.reference = _reference(reference)
        self.vocab_size = int(env.action_space.n)
        self.slot = self.reference.attach(self.vocab_size)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.reference.observe(self.slot, obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            self.reference.observe(self.slot, obs)
        return obs, reward, terminated, truncated, info


# ----------------------------------------------------------------------------- wrappers
def top_set(logprobs: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Bool mask (..., V) of the top-k tokens, then the smallest top-p nucleus among them.

    >>> lp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    >>> top_set(lp, 3, None).tolist(), top_set(lp, None, 0.7).tolist()
    ([True, True, True, False], [True, True, False, False])
    """
    sorted_lp, order = logprobs.sort(-1, descending=True)
    keep = torch.ones_like(sorted_lp, dtype=torch.bool)
    if top_k is not None:
        keep[..., top_k:] = False
    if top_p is not None:
        before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of the better tokens
        keep &= before < top_p
    return torch.zeros_like(keep).scatter(-1, order, keep)


def _check_top(top_k: int | None, top_p: float | None, vocab_size: int) -> None:
    if top_k is None and top_p is None:
        raise ValueError("give top_k, top_p or both to choose the allowed tokens")
    if top_k is not None and (
        not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= vocab_size
    ):
        raise ValueError(f"top_k must be an int in [1, {vocab_size}], got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a float in (0, 1], got {top_p!r}")


class ReferenceActionMask(_ReferenceWrapper):
    """Allow only the reference LM's likely next tokens: ``action_masks()`` for MaskablePPO.

    The allowed set is the reference's ``top_k`` tokens, narrowed to the smallest nucleus of
    probability ``top_p`` when both are given (NLPO: Ramamurthy et al., 2023). Spaces are
    unchanged; sb3-contrib ``MaskablePPO`` finds ``action_masks()`` through ``DummyVecEnv``.
    A masked action still steps the env (checkers sample random actions) but is counted in
    ``masked_actions_taken`` and flagged with ``info["masked_action"] = True``.

    Args:
        env: a TextGen env (``gym.make("TextGen-v0", ...)``).
        reference: a :class:`ReferenceLM` (share one between the envs of a vector env to batch
            its forwards), a causal LM module, or a model name/path.
        top_k: size of the allowed set (default 16).
        top_p: nucleus probability, or None.

    >>> import gymnasium as gym, textgym
    >>> from textgym.models import tiny_model
    >>> env = gym.make("TextGen-v0", max_new_tokens=4)
    >>> env = ReferenceActionMask(env, tiny_model(env.unwrapped.tokenizer), top_k=8)
    >>> obs, info = env.reset(seed=0)
    >>> mask = env.action_masks()
    >>> mask.shape, int(mask.sum())
    ((49152,), 8)
    """

    def __init__(
        self,
        env: gym.Env,
        reference: ReferenceLM | ModelSpec,
        top_k: int | None = 16,
        top_p: float | None = None,
    ) -> None:
        _check_top(top_k, top_p, int(getattr(env.action_space, "n", 0)) or 1)
        gym.utils.RecordConstructorArgs.__init__(
            self, reference=reference, top_k=top_k, top_p=top_p
        )
        super().__init__(env, reference)
        self.top_k, self.top_p = top_k, top_p
        self.masked_actions_taken = 0

    def action_masks(self) -> np.ndarray:
        """Bool (V,): True for the tokens the agent may emit next."""
        return top_set(self.reference.logprobs(self.slot), self.top_k, self.top_p).cpu().numpy()

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        allowed = bool(self.action_masks()[int(action)])
        obs, reward, terminated, truncated, info = super().step(action)
        if not allowed:
            self.masked_actions_taken += 1
            info = {**info, "masked_action": True}
        return obs, reward, terminated, truncated, info


class TopKActions(_ReferenceWrapper):
    """``Discrete(k)``: pick one of the reference LM's k most likely next tokens.

    ## Observation
    ``Box(float32, (3k + 1 [+ H],))``, in this order:

    - ``logprob`` (k): the candidates' reference log-probabilities, best first (clipped at -50);
    - ``prompt_match`` (k): each candidate's best cosine similarity, in input-embedding space,
      to a prompt token (1 when the candidate appears in the prompt: copying keywords);
    - ``used`` (k): 1 when the candidate is already in the completion;
    - ``progress`` (1): generated tokens / ``max_new_tokens``;
    - ``hidden`` (H, when ``include_hidden``): the reference's last-layer hidden state at the
      last token, a pooled summary of the prefix.

    The terminal observation is all zeros (no forward is spent on a finished episode).

    ## Action
    ``Discrete(k)``: action i emits the i-th candidate token. ``info["token_id"]`` holds it.

    >>> import gymnasium as gym, textgym
    >>> from textgym.models import tiny_model
    >>> env = gym.make("TextGen-v0", max_new_tokens=3)
    >>> env = TopKActions(env, tiny_model(env.unwrapped.tokenizer), k=4, include_hidden=False)
    >>> obs, info = env.reset(seed=0)
    >>> env.action_space, obs.shape
    (Discrete(4), (13,))
    >>> obs, reward, terminated, truncated, info = env.step(0)
    >>> info["token_id"] == int(env.candidates[0]) or terminated
    True
    """

    def __init__(
        self,
        env: gym.Env,
        reference: ReferenceLM | ModelSpec,
        k: int = 8,
        include_hidden: bool = True,
    ) -> None:
        _check_top(k, None, int(getattr(env.action_space, "n", 0)) or 1)
        gym.utils.RecordConstructorArgs.__init__(
            self, reference=reference, k=k, include_hidden=include_hidden
        )
        super().__init__(env, reference)
        self.k = k
        self.include_hidden = include_hidden
        self.max_new_tokens = int(env.get_wrapper_attr("max_new_tokens"))
        hidden = self.reference.hidden_size if include_hidden else 0
        # logprob in [-50, 0], prompt_match in [-1, 1], used and progress in [0, 1], hidden free.
        low = np.concatenate([np.full(k, -50.0), np.full(k, -1.0), np.zeros(k + 1)])
        high = np.concatenate([np.zeros(k), np.ones(2 * k + 1)])
        self.action_space = spaces.Discrete(k)
        self.observation_space = spaces.Box(
            np.concatenate([low, np.full(hidden, -np.inf)]).astype(np.float32),
            np.concatenate([high, np.full(hidden, np.inf)]).astype(np.float32),
            dtype=np.float32,
        )
        self._embed = self.reference.unit_embeddings  # (V, E)
        self._prompt_embed: torch.Tensor | None = None
        self._generated: list[int] = []
        self.candidates = np.zeros(k, dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        prompt = obs["input_ids"][obs["attention_mask"] > 0]  # nothing generated yet
        self._prompt_embed = self._embed[torch.as_tensor(prompt, device=self._embed.device)]
        self._generated = []
        return self._features(), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in [0, {self.k}), got {action!r}")
        token = int(self.candidates[int(action)])
        _, reward, terminated, truncated, info = super().step(token)
        self._generated.append(token)
        info = {**info, "token_id": token}
        if terminated or truncated:
            return (
                np.zeros(self.observation_space.shape, np.float32),
                reward,
                terminated,
                truncated,
                info,
            )
        return self._features(), reward, terminated, truncated, info

    def _features(self) -> np.ndarray:
        logprobs = self.reference.logprobs(self.slot)
        top_lp, top_ids = logprobs.topk(self.k)  # (k,)
        self.candidates = top_ids.cpu().numpy()
        cand = self._embed[top_ids]  # (k, E)
        match = (cand @ self._prompt_embed.T).max(1).values.clamp(-1.0, 1.0)  # type: ignore[union-attr]
        used = torch.tensor([t in self._generated for t in self.candidates.tolist()])
        parts = [
            top_lp.clamp(min=-50.0),
            match,
            used.float(),
            torch.tensor([len(self._generated) / self.max_new_tokens]),
        ]
        if self.include_hidden:
            parts.append(self.reference.hidden(self.slot))
        return torch.cat([p.float().cpu() for p in parts]).numpy()


def kl_penalty(logprob: ArrayLike, ref_logprob: ArrayLike, beta: float) -> np.ndarray:
    """The per-token shaping term ``-beta * (logprob - ref_logprob)`` (elementwise, float32).

    >>> print(kl_penalty([-1.0, -3.0], [-2.0, -3.0], beta=0.5))
    [-0.5  0. ]
    """
    kl = np.asarray(logprob, dtype=np.float32) - np.asarray(ref_logprob, dtype=np.float32)
    return (-beta * kl + 0.0).astype(np.float32)  # + 0.0 turns -0.0 into 0.0


class KLPenalty(_ReferenceWrapper):
    """Per-token KL shaping against a reference LM: ``r -= beta * (log pi_agent - log pi_ref)``.

    Call :meth:`report_logprob` with the agent's log-probability of the action before
    ``step(action)``; the step then adds ``-beta * (logprob - ref_logprob)`` to the reward and
    puts ``kl`` in ``info``. Without a report the reward is unchanged. Every step's ``info``
    has ``ref_logprob``, the reference log-probability of the action taken (use it for a KL
    penalty computed by the learner, or to monitor drift).

    Args:
        env: a TextGen env (token-id actions).
        reference: a :class:`ReferenceLM`, a causal LM module, or a model name/path.
        beta: KL coefficient (>= 0).

    >>> import gymnasium as gym, textgym
    >>> from textgym.models import tiny_model
    >>> env = KLPenalty(gym.make("TextGen-v0", max_new_tokens=3), tiny_model(textgym.models.shared_tokenizer("smollm2-135m")), beta=0.5)
    >>> _ = env.reset(seed=0)
    >>> env.report_logprob(-1.0)
    >>> obs, reward, terminated, truncated, info = env.step(42)
    >>> bool(np.isclose(reward, -0.5 * (-1.0 - info["ref_logprob"]))), info["kl"] == -1.0 - info["ref_logprob"]
    (True, True)
    """

    def __init__(
        self, env: gym.Env, reference: ReferenceLM | ModelSpec, beta: float = 0.05
    ) -> None:
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or beta < 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        gym.utils.RecordConstructorArgs.__init__(self, reference=reference, beta=beta)
        super().__init__(env, reference)
        self.beta = float(beta)
        self._reported: float | None = None

    def report_logprob(self, logprob: float) -> None:
        """The agent's log-probability of the action it is about to ``step``."""
        value = float(logprob)
        if not np.isfinite(value) or value > 1e-6:
            raise ValueError(f"logprob must be a finite log-probability <= 0, got {logprob!r}")
        self._reported = value

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        logprobs = self.reference.logprobs(self.slot)  # (V,) before the step changes the prefix
        obs, reward, terminated, truncated, info = super().step(action)  # the env checks action
        ref_logprob = float(logprobs[int(action)])
        info = {**info, "ref_logprob": ref_logprob}
        if self._reported is not None:
            reward = float(reward) + float(kl_penalty(self._reported, ref_logprob, self.beta))
            info["kl"] = self._reported - ref_logprob
            self._reported = None
        return obs, reward, terminated, truncated, info


__all__ = [
    "KLPenalty",
    "PrefixCache",
    "ReferenceActionMask",
    "ReferenceLM",
    "TopKActions",
    "content_end",
    "kl_penalty",
    "last_token_forward",
    "right_align",
    "top_set",
]
