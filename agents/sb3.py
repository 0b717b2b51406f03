"""stable-baselines3 / sb3-contrib integration: a language model as an SB3 actor-critic policy.

:class:`LMActorCriticPolicy` (PPO, A2C) and :class:`MaskableLMActorCriticPolicy` (sb3-contrib
MaskablePPO) make a Hugging Face causal LM the actor over ``TextGen-v0``'s token ids: its
next-token logits are the ``Discrete(V)`` action distribution, and a value head on the last
hidden state is the critic (the LM body is shared). Importing this module registers the name
``"LMPolicy"`` with PPO, A2C and MaskablePPO::

    from stable_baselines3 import PPO
    import agents.sb3, gymnasium as gym, textgym
    env = gym.make("TextGen-v0", task="keywords", max_new_tokens=16)
    model = PPO("LMPolicy", env, policy_kwargs={"model": "smollm2-135m"}, learning_rate=1e-5)
    model.learn(10_000)

## What is cached and what is not
- Rollouts (``forward``/``predict``/``predict_values`` without gradients) go through a
  :class:`~textgym.lm.PrefixCache`: each env slot keeps its KV cache keyed by the prefix,
  so a step is ONE one-token forward for all envs, a new episode one prompt forward, and a
  repeated query (``predict_values`` on the last observation) is free. The cache is dropped
  when the weights change (after each update), so the first step of the next rollout runs the
  full prefixes once.
- Training (``evaluate_actions``) shares prefixes. SB3's buffers shuffle single steps, but the
  steps of one episode in a minibatch extend one another, so
  :func:`textgym.lm.shared_prefix_forward` runs each episode once (up to its latest step there)
  and reads every step's logits and hidden state at that step's own column: a minibatch of S
  steps from E episodes costs E prefills, not S. Large minibatches of whole episodes therefore
  cost about what the custom trainer pays: ``n_steps`` = the episode length and
  ``batch_size`` = half a rollout put each episode in both minibatches once. Memory grows with
  E x prefix length, and the LM head runs on up to N + 1 columns of each episode.
  ``share_prefixes=False`` runs each step's whole prefix instead (same numbers).
- Sampling is :func:`textgym.lm.sample_tokens` (inverse-CDF: exact, masked tokens never drawn,
  from torch's global generator, which SB3 seeds), the same sampler as the custom rollout.
- Logits come from :func:`textgym.lm.forward` (the model's own forward, so logit scaling and
  soft-capping apply, as for the policy and the reference wrappers); the value head
  (:func:`textgym.lm.value_head`, zero at the start) reads the hidden state of the same forward.

Measured with ``benchmarks/sb3_throughput.py`` (B=16 envs, 16-token episodes, one torch thread,
on a 2-core CPU shared with other jobs, so rough): with SmolLM2-135M the SB3 rollout ran 14.6
and 14.5 env steps/s in two runs (5.4 without the prefix cache) against 17.1 and 35.8 for the
custom lockstep rollout (``agents.policy.rollout``): 1.2x to 2.5x. With the tiny test model,
SB3's per-step overhead (Python per env, buffers, float32 observations) shows: 413 against
1,526 env steps/s (3.7x, median of 3). A whole ``learn()`` (rollouts, then two epochs of two
minibatches) with SmolLM2, B=8 envs and 12-token episodes on the keywords task (2 threads,
nothing else running, median of 3): 10.2 env steps/s with shared prefixes against 2.7 with one
prefill per step (3.8x); the rollout alone ran 48.2 against the custom rollout's 78.0.

## KL shaping
:class:`KLRewardCallback` adds ``-beta * (log pi - log pi_ref)`` to every step's reward of an
on-policy agent, with the reference log-probability from :class:`textgym.wrappers.KLPenalty`
and ``beta`` from that wrapper.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from agents.masked_lm import MASKED_LOGIT
from textgym.lm import (
    PrefixCache,
    Sampling,
    check_vocab,
    last_token_forward,
    sample_tokens,
    shared_prefix_forward,
    value_head,
)
from textgym.rewards.online import OnlineReward, online_rewards
from textgym.wrappers import kl_penalty

ModelSpec = str | os.PathLike[str] | nn.Module | PretrainedConfig


def build_lm(model: ModelSpec) -> nn.Module:
    """A causal LM from a name/path/alias (``load_model``), a config (random init) or a module."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, PretrainedConfig):
        return AutoModelForCausalLM.from_config(model)
    if isinstance(model, (str, os.PathLike)):
        from textgym.models import load_model

        return load_model(model)
    raise TypeError(
        f"model must be a name/path, a transformers config or an nn.Module, got {type(model).__name__}"
    )


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> int:
    """The vocabulary size V, after checking the spaces are TextGen-v0's."""
    if not (
        isinstance(observation_space, spaces.Dict)
        and {"input_ids", "attention_mask"} <= set(observation_space.spaces)
    ):
        raise ValueError(
            "the LM policy needs TextGen-v0's Dict(input_ids, attention_mask) observations, got "
            f"{observation_space}; for TopKActions or other Box observations use 'MlpPolicy'"
        )
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"the LM policy needs Discrete token actions, got {action_space}")
    return int(action_space.n)


def as_mask(action_masks: Any, batch: int, vocab: int, device: torch.device) -> torch.Tensor:
    """Bool (B, V) mask from numpy or torch masks of any matching shape."""
    mask = torch.as_tensor(action_masks, device=device).reshape(batch, vocab)
    return mask if mask.dtype == torch.bool else mask > 0.5


class _LMPolicyMixin:
    """The LM actor-critic shared by the plain and the maskable policy classes."""

    action_space: spaces.Discrete
    lm: nn.Module
    value_net: nn.Module
    optimizer: torch.optim.Optimizer

    def _init_lm_args(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        model: ModelSpec,
        prefix_cache: bool,
        share_prefixes: bool,
    ) -> None:
        self.vocab_size = check_spaces(observation_space, action_space)
        # A plain attribute, not a submodule: the built LM is registered once, as ``lm``.
        object.__setattr__(self, "model_spec", model)
        self.prefix_cache = prefix_cache
        self.share_prefixes = share_prefixes
        # The rollout KV cache, built on the first no-grad call (its incremental_rows and
        # full_rows count one-token and whole-prefix forwards).
        self.rollout_cache: PrefixCache | None = None

    def _build(self, lr_schedule: Schedule) -> None:
        """The LM, a value head on its last hidden state, and the optimizer over both."""
        self.lm = build_lm(self.model_spec)
        check_vocab(self.lm, self.vocab_size)
        # The critic starts at exactly 0 (value_head), not at SB3's orthogonal gain-1 init: SB3
        # normalizes advantages per minibatch, so a random critic's values (about +-1.4 on
        # SmolLM2's hidden states, whose norms are about 40) become advantages larger than the
        # reward's own spread, and the policy drifts on noise (on sentiment: KL 4.9, reward below
        # the untrained model's; docs/results.md). With no reward at all, nothing moves.
        self.value_net = value_head(self.lm)
        self.optimizer = self.optimizer_class(  # type: ignore[attr-defined]
            self.parameters(),  # type: ignore[attr-defined]
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,  # type: ignore[attr-defined]
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(
            model=self.model_spec,
            prefix_cache=self.prefix_cache,
            share_prefixes=self.share_prefixes,
        )
        return data

    # -- the LM ------------------------------------------------------------------------------
    def _weights_version(self) -> int:
        """Changes whenever an optimizer step or a load writes the weights in place."""
        return sum(p._version for p in self.parameters())  # type: ignore[attr-defined]

    def _last_token(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, V), hidden (B, H))`` at each observation's last token."""
        ids, mask = obs["input_ids"], obs["attention_mask"]  # type: ignore[index]
        if self.prefix_cache and not torch.is_grad_enabled():
            if self.rollout_cache is None:
                self.rollout_cache = PrefixCache(self.lm, self.vocab_size)
            return self.rollout_cache(ids, mask, version=self._weights_version())
        if self.share_prefixes:
            return shared_prefix_forward(self.lm, ids, mask, self.vocab_size)
        logits, hidden, _ = last_token_forward(self.lm, ids, mask, self.vocab_size)
        return logits, hidden

    @staticmethod
    def _masked(logits: torch.Tensor, action_masks: Any) -> torch.Tensor:
        if action_masks is None:
            return logits
        mask = as_mask(action_masks, *logits.shape, logits.device)
        return logits.masked_fill(~mask, MASKED_LOGIT)

    def _distribution(self, logits: torch.Tensor, action_masks: Any) -> Distribution:
        return CategoricalDistribution(self.vocab_size).proba_distribution(
            self._masked(logits, action_masks)
        )

    # -- the SB3 policy API ------------------------------------------------------------------
    def forward(
        self, obs: PyTorchObs, deterministic: bool = False, action_masks: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions (B,), values (B, 1) and the actions' log-probabilities (B,)."""
        logits, hidden = self._last_token(obs)
        logits = self._masked(logits.float(), action_masks)  # (B, V)
        logp = torch.log_softmax(logits, -1)
        actions = sample_tokens(logits, Sampling(temperature=0.0 if deterministic else 1.0))
        values = self.value_net(hidden.float())  # (B, 1)
        return actions, values, logp.gather(1, actions[:, None]).squeeze(1)

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor, action_masks: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values (B, 1), log-probabilities (B,) and entropies (B,) of the given actions."""
        logits, hidden = self._last_token(obs)
        logits = self._masked(logits.float(), action_masks)
        logp = torch.log_softmax(logits, -1)  # (B, V)
        entropy = -(logp.exp() * logp).sum(-1)
        log_prob = logp.gather(1, actions.long().reshape(-1, 1)).squeeze(1)
        return self.value_net(hidden.float()), log_prob, entropy

    def get_distribution(self, obs: PyTorchObs, action_masks: Any = None) -> Distribution:
        """The categorical next-token distribution (masked when masks are given)."""
        logits, _ = self._last_token(obs)
        return self._distribution(logits.float(), action_masks)

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        """Values (B, 1) of the observations."""
        return self.value_net(self._last_token(obs)[1].float())

    def _predict(
        self, observation: PyTorchObs, deterministic: bool = False, action_masks: Any = None
    ) -> torch.Tensor:
        return self.forward(observation, deterministic, action_masks)[0]


class LMActorCriticPolicy(_LMPolicyMixin, ActorCriticPolicy):
    """A causal LM as the actor and a value head on its last hidden state as the critic.

    For PPO and A2C on ``TextGen-v0`` (``Dict(input_ids, attention_mask)`` observations,
    ``Discrete(V)`` token actions). Pass options through ``policy_kwargs``:

    Args:
        model: a name/path/alias for :func:`textgym.models.load_model` (default
            ``"smollm2-135m"``), a transformers config (random init) or a causal LM module
            (used as is: do not share it with a reference model). ``model.save()`` pickles
            this spec, so save with a name/path or a config: a module does not pickle, and the
            trained weights are restored from the saved state dict either way.
        prefix_cache: reuse a per-env KV cache during rollouts (default True); False runs the
            whole prefix every step (same numbers, slower).
        share_prefixes: in training (and in rollouts without the prefix cache), run each
            episode of a batch once and read every step's logits at its own position (default
            True); False runs each step's whole prefix (same numbers, up to one episode length
            times slower).

    The remaining keyword arguments are :class:`ActorCriticPolicy`'s; ``net_arch``,
    ``activation_fn`` and ``features_extractor_class`` do not apply (the LM is the network).

    >>> import gymnasium as gym, textgym
    >>> from stable_baselines3 import PPO
    >>> from textgym.models import tiny_model
    >>> env = gym.make("TextGen-v0", max_new_tokens=4)
    >>> model = PPO("LMPolicy", env, n_steps=8, batch_size=8, n_epochs=1,
    ...             policy_kwargs={"model": tiny_model(env.unwrapped.tokenizer)})
    >>> _ = model.learn(8)
    >>> action, _ = model.predict(env.reset(seed=0)[0])
    >>> bool(0 <= int(action) < env.action_space.n)
    True
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model: ModelSpec = "smollm2-135m",
        prefix_cache: bool = True,
        share_prefixes: bool = True,
        **kwargs: Any,
    ) -> None:
        self._init_lm_args(observation_space, action_space, model, prefix_cache, share_prefixes)
        kwargs.update(net_arch=[], ortho_init=False)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class MaskableLMActorCriticPolicy(_LMPolicyMixin, MaskableActorCriticPolicy):
    """:class:`LMActorCriticPolicy` for sb3-contrib ``MaskablePPO``: masked tokens get probability 0.

    Use it with :class:`textgym.wrappers.ReferenceActionMask` (the reference LM's top-k / top-p
    tokens), or any wrapper with ``action_masks()``.

    >>> import gymnasium as gym, textgym
    >>> from sb3_contrib import MaskablePPO
    >>> from textgym.models import tiny_model
    >>> from textgym.wrappers import ReferenceActionMask
    >>> env = gym.make("TextGen-v0", max_new_tokens=4)
    >>> tok = env.unwrapped.tokenizer
    >>> env = ReferenceActionMask(env, tiny_model(tok), top_k=8)
    >>> model = MaskablePPO("LMPolicy", env, n_steps=8, batch_size=8, n_epochs=1,
    ...                     policy_kwargs={"model": tiny_model(tok)})
    >>> _ = model.learn(8)
    >>> env.masked_actions_taken
    0
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model: ModelSpec = "smollm2-135m",
        prefix_cache: bool = True,
        share_prefixes: bool = True,
        **kwargs: Any,
    ) -> None:
        self._init_lm_args(observation_space, action_space, model, prefix_cache, share_prefixes)
        kwargs.update(net_arch=[], ortho_init=False)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _distribution(self, logits: torch.Tensor, action_masks: Any) -> Distribution:
        dist = MaskableCategoricalDistribution(self.vocab_size).proba_distribution(logits)
        if action_masks is not None:
            dist.apply_masking(action_masks)
        return dist


class KLRewardCallback(BaseCallback):
    """Per-token KL shaping for on-policy agents: ``reward += -beta * (log pi - log pi_ref)``.

    The envs must be wrapped in :class:`textgym.wrappers.KLPenalty`, which puts the reference
    log-probability of each action in ``info["ref_logprob"]`` and holds ``beta``. At every step
    of the rollout (PPO, A2C, MaskablePPO, RecurrentPPO: algorithms whose rollout has the
    actions' ``log_probs``) the callback shapes the step's rewards in place, before SB3 stores
    them. The episode returns SB3 logs (``rollout/ep_rew_mean``) stay the unshaped task reward;
    the mean per-token KL is logged as ``rollout/kl``.

    >>> import gymnasium as gym, textgym
    >>> from textgym.models import tiny_model
    >>> from textgym.wrappers import KLPenalty
    >>> env = gym.make("TextGen-v0", max_new_tokens=2)
    >>> env = KLPenalty(env, tiny_model(env.unwrapped.tokenizer), beta=0.1)
    >>> model = PPO("LMPolicy", env, n_steps=4, batch_size=4, n_epochs=1,
    ...             policy_kwargs={"model": tiny_model(env.unwrapped.tokenizer, seed=1)})
    >>> callback = KLRewardCallback()
    >>> _ = model.learn(4, callback=callback)
    >>> callback.beta, len(callback.kl) > 0
    (0.1, True)
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.beta = 0.0
        self.kl: list[float] = []  # mean per-token KL of each step of the current rollout

    def _on_training_start(self) -> None:
        try:
            betas = set(self.training_env.get_attr("beta"))
        except AttributeError as exc:
            raise TypeError(
                "KLRewardCallback needs envs wrapped in textgym.wrappers.KLPenalty (it holds beta "
                "and puts ref_logprob in info)"
            ) from exc
        if len(betas) != 1:
            raise ValueError(f"the KLPenalty wrappers of the envs disagree on beta: {betas}")
        self.beta = float(betas.pop())

    def _on_rollout_start(self) -> None:
        self.kl = []

    def _on_step(self) -> bool:
        infos, rewards = self.locals["infos"], self.locals["rewards"]  # (n_envs,) float32
        if "log_probs" not in self.locals:
            raise TypeError(
                f"KLRewardCallback needs an on-policy algorithm whose rollout has log_probs "
                f"(PPO, A2C, MaskablePPO), got {type(self.model).__name__}"
            )
        missing = [i for i, info in enumerate(infos) if "ref_logprob" not in info]
        if missing:
            raise KeyError(
                f"envs {missing} put no 'ref_logprob' in info: wrap them in textgym.wrappers.KLPenalty"
            )
        logprob = self.locals["log_probs"].detach().cpu().numpy()  # (n_envs,)
        ref_logprob = np.array([info["ref_logprob"] for info in infos], dtype=np.float32)
        rewards += kl_penalty(logprob, ref_logprob, self.beta)
        self.kl.append(float(np.mean(logprob - ref_logprob)))
        return True

    def _on_rollout_end(self) -> None:
        if self.kl:
            self.logger.record("rollout/kl", float(np.mean(self.kl)))


class OnlineRewardCallback(BaseCallback):
    """Trains the rewards that learn online (a discriminator) beside any SB3 agent.

    Give it the reward object the envs score with: build the reward once and pass the same
    object to ``gym.make(..., reward=...)`` and here (the reward itself, or a weighted sum with
    online terms). At each step the callback keeps the prompt, completion and references of
    every episode that ended; at the end of each rollout every online reward observes them
    (its ``update_every`` counts rollouts) and its stats are logged (``train/disc_loss``,
    ``train/disc_accuracy``, ...) with the mean of its reward component over those episodes
    (``train/reward/<label>``). The envs must run in this process (``DummyVecEnv``, SB3's
    default): ``SubprocVecEnv`` gives each worker a copy of the reward, which this callback
    cannot train, and :meth:`_on_training_start` says so. ``reward.state_dict()`` is what to
    save beside ``model.save()`` for a resume.

    >>> import gymnasium as gym, textgym
    >>> from textgym.models import tiny_model
    >>> class Counter:  # an online reward that counts what it observed
    ...     name, online, seen = "counter", True, 0
    ...     def __call__(self, prompts, completions, references, **meta):
    ...         return np.zeros(len(completions), dtype=np.float32)
    ...     def observe(self, prompts, completions, references):
    ...         self.seen += len(completions)
    ...         return {"seen": float(self.seen)}
    ...     def evaluate(self, prompts, completions, references): return {}
    ...     def state_dict(self): return {"seen": self.seen}
    ...     def load_state_dict(self, state): self.seen = state["seen"]
    >>> reward = Counter()
    >>> env = gym.make("TextGen-v0", task="summarize", reward=reward, max_new_tokens=2)
    >>> model = PPO("LMPolicy", env, n_steps=4, batch_size=4, n_epochs=1,
    ...             policy_kwargs={"model": tiny_model(env.unwrapped.tokenizer)})
    >>> _ = model.learn(4, callback=OnlineRewardCallback(reward))
    >>> reward.seen >= 2  # episodes of at most 2 tokens: at least 2 in 4 steps
    True
    """

    def __init__(self, reward: Any, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.online: list[tuple[str, OnlineReward]] = online_rewards(reward)
        if not self.online:
            raise ValueError(
                f"{reward!r} holds no reward that learns online (e.g. a DiscriminatorReward "
                "with online=True); nothing for OnlineRewardCallback to train"
            )
        self.episodes: list[tuple[str, str, list[str]]] = []  # ended in the current rollout
        self.components: dict[str, list[float]] = {}

    def _on_training_start(self) -> None:
        try:
            scorers = self.training_env.get_attr("reward_fn")
        except AttributeError as exc:
            raise TypeError("OnlineRewardCallback needs TextGen-v0 envs (reward_fn)") from exc
        for label, reward in self.online:
            other = [
                i
                for i, fn in enumerate(scorers)
                if not any(inner is reward for _, inner in online_rewards(fn))
            ]
            if other:
                raise ValueError(
                    f"envs {other} do not score with this {label!r} reward object, so training "
                    "it would not change their rewards: pass the same object to gym.make(..., "
                    "reward=...) and to the callback, and run the envs in this process "
                    "(DummyVecEnv; SubprocVecEnv copies the reward into each worker)"
                )

    def _on_rollout_start(self) -> None:
        self.episodes, self.components = [], {}

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and "completion" in info:  # an episode that ended scored (not truncated)
                self.episodes.append((info["prompt"], info["completion"], list(info["references"])))
                for label, _ in self.online:
                    value = info.get("reward_components", {}).get(label)
                    if value is not None:
                        self.components.setdefault(label, []).append(float(value))
        return True

    def _on_rollout_end(self) -> None:
        if not self.episodes:
            return
        prompts, completions, references = (
            list(column) for column in zip(*self.episodes, strict=True)
        )
        for label, reward in self.online:
            stats = reward.observe(prompts, completions, references)
            prefix = "train/" if len(self.online) == 1 else f"train/{label}/"
            for key, value in stats.items():
                self.logger.record(prefix + key, value)
            if self.components.get(label):
                self.logger.record(f"train/reward/{label}", float(np.mean(self.components[label])))
        self.episodes, self.components = [], {}


def register_policies() -> None:
    """Make ``"LMPolicy"`` a policy name of PPO, A2C and MaskablePPO (done on import)."""
    PPO.policy_aliases["LMPolicy"] = LMActorCriticPolicy
    A2C.policy_aliases["LMPolicy"] = LMActorCriticPolicy
    MaskablePPO.policy_aliases["LMPolicy"] = MaskableLMActorCriticPolicy


register_policies()

__all__ = [
    "KLRewardCallback",
    "LMActorCriticPolicy",
    "MaskableLMActorCriticPolicy",
    "OnlineRewardCallback",
    "build_lm",
    "register_policies",
]
