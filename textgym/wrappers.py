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

All of them ask a :class:`~textgym.reference.ReferenceLM` (pass one, shared between the envs of
a vector env, to batch its forwards; or a model / name and each wrapper builds its own), which
keeps a prefix KV cache per env slot (:class:`textgym.lm.PrefixCache`). Wrappers stacked on one
env with the same ``ReferenceLM`` share its slot, so NLPO's masks plus a KL penalty
(``KLPenalty(ReferenceActionMask(env, ref), ref)``) cost one reference forward per step.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from numpy.typing import ArrayLike

from textgym.lm import check_top_set, top_set
from textgym.reference import ModelSpec, ReferenceLM


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
        inner = _inner_reference_wrapper(env)
        # The same reference under this wrapper already tracks this env: share its slot.
        shared = inner is not None and inner.reference is self.reference
        self.slot = inner.slot if shared else self.reference.attach(self.vocab_size)

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


def _record_args(wrapper: _ReferenceWrapper, **kwargs: Any) -> None:
    """Record the constructor arguments for ``env.spec`` without copying them: Gymnasium
    deep-copies them by default, which copied the reference LM (about 0.5 GB for SmolLM2) into
    every wrapper of every env, where a shared ``ReferenceLM`` is meant to be shared."""
    gym.utils.RecordConstructorArgs.__init__(wrapper, _disable_deepcopy=True, **kwargs)


def _inner_reference_wrapper(env: gym.Env) -> _ReferenceWrapper | None:
    """The nearest :class:`_ReferenceWrapper` inside ``env``'s wrapper stack, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, _ReferenceWrapper):
            return env
        env = env.env
    return None


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
        check_top_set(top_k, top_p, int(getattr(env.action_space, "n", 0)) or 1)
        _record_args(self, reference=reference, top_k=top_k, top_p=top_p)
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
        check_top_set(k, None, int(getattr(env.action_space, "n", 0)) or 1)
        _record_args(self, reference=reference, k=k, include_hidden=include_hidden)
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
        _record_args(self, reference=reference, beta=beta)
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


__all__ = ["KLPenalty", "ReferenceActionMask", "TopKActions", "kl_penalty"]
