"""The on-policy trainer: PPO, RLOO, GRPO and REINFORCE learn from the policy's own rollouts.

One iteration: a lockstep rollout of ``batch_size`` episodes through the vector env (the
policy records log-probs and, for algorithms with a critic, values as it goes; the reference's
log-probs follow in one forward), the algorithm's targets (e.g. advantages), then
``num_epochs`` x ``num_minibatches`` optimizer steps on full no-cache forwards, each over
``grad_accum_steps`` micro-batches. Everything else is :class:`~agents.trainer.BaseTrainer`'s.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import torch

from agents.algorithm import LossAndStats, OnPolicyAlgorithm
from agents.config import OnPolicyConfig
from agents.policy import Rollout, Sampling, evaluate_tokens, rollout
from agents.trainer import BaseTrainer
from textgym.conversation.tasks import ConversationTask
from textgym.rewards.online import online_rewards
from textgym.vector import TextGenVectorEnv


class OnPolicyTrainer(BaseTrainer):
    """Trains a :class:`~agents.policy.TransformerPolicy` on a textgym task with an on-policy
    algorithm (PPO, RLOO, GRPO, REINFORCE or any registered one); arguments as for
    :class:`~agents.trainer.BaseTrainer`.

    >>> from agents import PPOConfig, Trainer
    >>> cfg = PPOConfig(model="tiny", batch_size=2, max_new_tokens=2, iterations=1, top_k=8,
    ...                 eval_every=0, save_every=0, progress=False, report_to="none",
    ...                 run_dir=getfixture("tmp_path").as_posix())
    >>> rows = Trainer(cfg).train()
    >>> rows[-1]["iteration"], "train/reward" in rows[-1]
    (1, True)
    """

    config: OnPolicyConfig
    algorithm: OnPolicyAlgorithm

    def _uses_reference(self) -> bool:
        return self.algorithm.kl_controller().active

    def _setup(self, seed: int) -> None:
        cfg = self.config
        if isinstance(self.task, ConversationTask):
            raise ValueError(
                f"task {self.task.name!r} is a conversation task: train it with "
                "agents.registry.build_trainer (or agents.dialogue_trainer.DialogueTrainer), "
                "which plays whole dialogues"
            )
        self.sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p)
        self.envs = TextGenVectorEnv(num_envs=cfg.batch_size, split=cfg.split, **self.env_kwargs)
        self.envs.reset(seed=seed)
        # The eval envs score with this same reward object, so that a reward learning beside
        # the policy (a discriminator) is evaluated as it stands, not as a fresh copy.
        self.env_kwargs["reward"] = self.envs.reward_fn
        self.online_rewards = online_rewards(self.envs.reward_fn)
        if self.online_rewards and self.runtime.num_processes > 1:
            raise ValueError(
                f"rewards that learn online ({[label for label, _ in self.online_rewards]}) "
                "train in one process only; run without multiple processes, or pre-train them "
                "and load them fixed (online=False)"
            )
        self.kl = self.algorithm.kl_controller()
        self.generator = self.runtime.generator(seed)
        self.rng = np.random.default_rng(seed)  # minibatch shuffling

    # -- one iteration -----------------------------------------------------------------------
    def collect(self) -> Rollout:
        """A lockstep rollout of ``batch_size`` episodes; groups of k share a prompt.

        The reference's log-probs come from one no-cache forward over the finished batch
        rather than a reference step per token: a single wide forward uses the matmul units
        far better than N narrow decode steps (on 2 CPU cores with SmolLM2 at batch 16 and
        32 tokens it takes about a quarter of their time).
        """
        batch = rollout(
            self.policy,
            self.envs,
            self.sampling,
            self.generator,
            options={"index": self.draw_indices()},
            record_values=self.algorithm.uses_value_head,
            autocast=self.runtime.autocast(),
        )
        if self.policy.has_reference:
            with torch.no_grad(), self.runtime.autocast():
                ref_logprobs, _, _ = evaluate_tokens(
                    self.policy,
                    batch.prompt_ids,
                    batch.prompt_mask,
                    batch.tokens,
                    self.sampling.scale,
                    reference=True,
                    share_prompts=True,  # a group's k completions share one prompt pass
                )
            batch.ref_logprobs = ref_logprobs * batch.mask
        return batch

    def draw_indices(self) -> list[int]:
        """The split indices of the next rollout's ``batch_size`` episodes, drawn by the
        training env; groups of ``group_size`` consecutive episodes share one."""
        k = self.config.group_size
        n = len(self.task.split(self.config.split))
        index = np.repeat(self.envs.np_random.integers(n, size=self.config.batch_size // k), k)
        return index.tolist()

    def step(self) -> dict[str, float]:
        """Rollout, targets and update; returns the iteration's metrics."""
        cfg, rt = self.config, self.runtime
        start = time.perf_counter()
        batch = self.collect()
        rollout_s = time.perf_counter() - start
        targets, metrics = self.batch_targets(batch)
        update_start = time.perf_counter()
        metrics.update(self.update(batch, targets))
        if "train/kl" in metrics:
            self.kl.update(metrics["train/kl"], cfg.batch_size)
        self.iteration += 1
        end = time.perf_counter()
        metrics["time/rollout_s"] = rollout_s
        metrics["time/update_s"] = end - update_start
        metrics["time/tokens_per_s"] = float(rt.sum(batch.mask.sum())) / (end - start)
        self.last_batch = batch  # the latest rollout, for inspection and benchmarks
        return metrics

    def check_reward_scale(self, scores: torch.Tensor) -> None:
        """Stop on a reward above ``max_abs_reward`` (almost always a broken one)."""
        cfg = self.config
        worst = float(scores.abs().max())
        if worst > cfg.max_abs_reward:
            raise ValueError(
                f"a reward of magnitude {worst:g} exceeds max_abs_reward={cfg.max_abs_reward:g}; "
                "fix or rescale the reward (or raise --max-abs-reward if it is meant to be this large)"
            )

    def batch_targets(self, batch: Rollout) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The algorithm's training targets of a rollout (e.g. advantages) and the rollout's
        ``train/...`` metrics (reward, length, KL, the online rewards' stats)."""
        rt = self.runtime
        self.check_reward_scale(batch.scores)
        mean = rt.mean  # over the episodes of every process
        metrics: dict[str, float] = {
            "train/reward": mean(batch.scores),
            "train/reward_std": (mean(batch.scores**2) - mean(batch.scores) ** 2) ** 0.5,
            "train/length": mean(batch.lengths),
        }
        if len(batch.components) > 1:
            for name, values in batch.components.items():
                metrics[f"train/reward/{name}"] = mean(torch.as_tensor(values, device=rt.device))
        if batch.ref_logprobs is not None:
            metrics["train/kl"] = mean(((batch.logprobs - batch.ref_logprobs) * batch.mask).sum(-1))
        metrics["train/kl_coef"] = self.kl.value
        metrics.update(self.train_online_rewards(batch))
        targets, stats = self.algorithm.targets(batch, self.kl.value, rt)
        metrics.update(stats)
        return targets, metrics

    def train_online_rewards(self, batch: Rollout) -> dict[str, float]:
        """Let the rewards that learn online (a discriminator) learn from the rollout; only
        their own parameters change. Returns their stats as ``train/...`` metrics."""
        metrics: dict[str, float] = {}
        for label, reward in self.online_rewards:
            stats = reward.observe(batch.prompts, batch.completions, batch.references)
            prefix = "train/" if len(self.online_rewards) == 1 else f"train/{label}/"
            metrics.update({prefix + key: value for key, value in stats.items()})
        return metrics

    def update(self, batch: Rollout, targets: dict[str, torch.Tensor]) -> dict[str, float]:
        """``num_epochs`` x ``num_minibatches`` optimizer steps, each over ``grad_accum_steps``
        micro-batches; losses are token means over the whole minibatch."""
        cfg, rt = self.config, self.runtime
        B = cfg.batch_size
        mb_size = B // cfg.num_minibatches
        micro = mb_size // cfg.grad_accum_steps
        old = {"mask": batch.mask, "logprobs": batch.logprobs, **targets}
        if batch.values is not None:
            old["values"] = batch.values
        sums: dict[str, torch.Tensor] = {}
        tokens = 0.0
        grad_norms = []
        self.policy.train(False)
        for _ in range(cfg.num_epochs):
            order = torch.as_tensor(self.rng.permutation(B), device=rt.device)
            for m in range(cfg.num_minibatches):
                rows = order[m * mb_size : (m + 1) * mb_size]
                denom = float(rt.sum(batch.mask[rows].sum()).clamp(min=1))
                tokens += denom
                parts = (rows[a * micro : (a + 1) * micro] for a in range(cfg.grad_accum_steps))
                norm = self.optimizer_step(
                    (functools.partial(self._micro_loss, batch, old, idx, denom) for idx in parts),
                    sums,
                )
                if norm is not None:
                    grad_norms.append(norm)
        self.scheduler.step()
        out = {f"train/{key}": float(rt.sum(value)) / tokens for key, value in sums.items()}
        out["train/lr"] = self.scheduler.get_last_lr()[0]
        if grad_norms:
            out["train/grad_norm"] = float(np.mean(grad_norms))
        return out

    def _micro_loss(
        self, batch: Rollout, old: dict[str, torch.Tensor], idx: torch.Tensor, denom: float
    ) -> LossAndStats:
        """The loss of rows ``idx`` (one no-cache forward) and its stats, entropy included."""
        with self.runtime.autocast():
            logprobs, values, entropy = evaluate_tokens(
                self.train_policy,
                batch.prompt_ids[idx],
                batch.prompt_mask[idx],
                batch.tokens[idx],
                self.sampling.scale,
                with_entropy=True,
            )
        part = {key: value[idx] for key, value in old.items()}
        loss, stats = self.algorithm.loss(logprobs, values, part, denom)
        assert entropy is not None
        stats["entropy"] = (entropy * part["mask"]).sum()
        return loss, stats

    def _line(self, m: dict[str, float]) -> str:
        parts = [
            f"iter {self.iteration:4d}/{self.config.iterations}",
            f"reward {m['train/reward']:.3f}",
        ]
        for key, label in (
            ("train/kl", "kl"),
            ("train/entropy", "entropy"),
            ("eval/reward", "eval"),
        ):
            if key in m:
                parts.append(f"{label} {m[key]:.3f}")
        parts.append(f"{m['time/tokens_per_s']:.0f} tok/s")
        return " | ".join(parts)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        online = {label: reward.state_dict() for label, reward in self.online_rewards}
        return {**super().state_dict(), "kl": self.kl.state_dict(), "online_rewards": online}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.kl.load_state_dict(state["kl"])
        saved = state.get("online_rewards", {})
        labels = [label for label, _ in self.online_rewards]
        if sorted(saved) != sorted(labels):
            raise ValueError(
                f"the checkpoint holds the online rewards {sorted(saved)}, this run has {labels}; "
                "resume with the reward it was trained with"
            )
        for label, reward in self.online_rewards:
            reward.load_state_dict(saved[label])

    def _rng_state(self) -> dict[str, Any]:
        return {
            **super()._rng_state(),
            "sampler": self.generator.get_state(),
            "numpy": self.rng.bit_generator.state,
            "env": self.envs.np_random.bit_generator.state,
        }

    def _set_rng_state(self, rng: dict[str, Any]) -> None:
        super()._set_rng_state(rng)
        self.generator.set_state(rng["sampler"])
        self.rng.bit_generator.state = rng["numpy"]
        self.envs.np_random.bit_generator.state = rng["env"]


Trainer = OnPolicyTrainer
"""The on-policy trainer under the name the README, the examples and earlier code use."""

__all__ = ["OnPolicyTrainer", "Trainer"]
