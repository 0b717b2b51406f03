"""PPO, RLOO, GRPO and REINFORCE on whole dialogues through the package's trainer.

:class:`DialogueTrainer` is the :class:`~agents.onpolicy.OnPolicyTrainer` of a conversation task
(``textgym train --algo rloo --task hidden_item``; :func:`agents.registry.build_trainer` picks
it): the rollout is :func:`agents.dialogue.rollout_dialogues` over a
:class:`~textgym.conversation.vector.ConversationVectorEnv` (groups of ``group_size`` dialogues
share one goal), the targets and the loss are :mod:`agents.dialogue`'s (masked to agent tokens,
per-turn rewards at their turn's last token), and everything else is the on-policy trainer's:
minibatches and gradient accumulation, KL control, evaluation, metrics, checkpoints with every
RNG state (a resumed run equals an unbroken one), the saved policy.

The env's sizes come from the config: ``max_prompt_tokens`` is the context budget C of the
whole dialogue, ``max_new_tokens`` the cap on tokens per agent turn, and ``max_turns``,
``max_total_tokens`` and ``user`` are the conversation's own settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from agents.algorithm import LossAndStats
from agents.dialogue import (
    DIALOGUE_ALGOS,
    DialogueConfig,
    DialogueRollout,
    dialogue_loss,
    dialogue_metrics,
    dialogue_targets,
    rollout_dialogues,
)
from agents.dialogue_eval import play_goals
from agents.onpolicy import OnPolicyTrainer
from agents.tracking import samples_table
from textgym.conversation.vector import ConversationVectorEnv
from textgym.lm import Sampling


def dialogue_config(config: Any) -> DialogueConfig:
    """The :class:`~agents.dialogue.DialogueConfig` of an on-policy algorithm's config: the
    fields the two share (``clip_range``, ``gamma``, ``vf_coef``, ...) carried over; the
    trainer's ``num_epochs`` replaces ``epochs``."""
    shared = {f.name for f in dataclasses.fields(DialogueConfig)} - {"epochs"}
    return DialogueConfig(
        **{name: getattr(config, name) for name in shared if hasattr(config, name)}
    )


class DialogueTrainer(OnPolicyTrainer):
    """Trains a policy on whole dialogues of a conversation task; arguments as for
    :class:`~agents.trainer.BaseTrainer`.

    >>> from agents import registry
    >>> cfg = registry.make_config("rloo", model="tiny", task="hidden_item", batch_size=4,
    ...     completions_per_prompt=2, max_prompt_tokens=160, max_new_tokens=3, max_turns=2,
    ...     iterations=1, eval_every=0, save_every=0, progress=False, report_to="none",
    ...     run_dir=getfixture("tmp_path").as_posix())
    >>> trainer = registry.build_trainer(cfg)
    >>> type(trainer).__name__, trainer.train()[-1]["train/turns"]
    ('DialogueTrainer', 2.0)
    """

    env_class = ConversationVectorEnv

    def _setup(self, seed: int) -> None:
        cfg = self.config
        if self.runtime.num_processes > 1:
            raise ValueError(
                "training on whole dialogues runs in one process; launch without accelerate's "
                "multi-process launcher"
            )
        if not cfg.chat_template:
            raise ValueError(
                "a conversation task's state is the dialogue in the chat template; "
                "chat_template=False (--no-chat-template) does not apply"
            )
        self.dialogue = dialogue_config(cfg)
        self.sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p)
        single_turn = self.env_kwargs
        self.env_kwargs = {
            "task": self.task,
            "tokenizer": single_turn["tokenizer"],
            "user": cfg.user,
            "reward": single_turn["reward"],
            "max_context_tokens": cfg.max_prompt_tokens,
            "max_turn_tokens": cfg.max_new_tokens,
            "max_turns": cfg.max_turns,
            "max_total_tokens": cfg.max_total_tokens or None,
            "vocab_size": single_turn["vocab_size"],
            "autoreset_mode": "disabled",
            "copy": False,
        }
        self.envs = ConversationVectorEnv(
            num_envs=cfg.batch_size, split=cfg.split, **self.env_kwargs
        )
        self.envs.reset(seed=seed)
        self.kl = self.algorithm.kl_controller()
        self.generator = self.runtime.generator(seed)
        self.rng = np.random.default_rng(seed)  # minibatch shuffling

    # -- one iteration -----------------------------------------------------------------------
    def collect(self) -> DialogueRollout:  # type: ignore[override]
        """``batch_size`` whole dialogues; groups of ``group_size`` share a goal."""
        return rollout_dialogues(
            self.policy,
            self.envs,
            self.sampling,
            self.generator,
            options={"index": self.draw_indices()},
            record_values=self.dialogue.uses_values,
            autocast=self.runtime.autocast(),
        )

    def batch_targets(  # type: ignore[override]
        self, batch: DialogueRollout
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """:func:`~agents.dialogue.dialogue_targets` at the current KL coefficient, and the
        dialogues' ``train/...`` metrics (:func:`~agents.dialogue.dialogue_metrics`)."""
        self.check_reward_scale(batch.returns)
        self.dialogue = dataclasses.replace(self.dialogue, kl_coef=self.kl.value)
        with self.runtime.autocast():
            targets = dialogue_targets(
                self.policy, batch, self.dialogue, self.config.group_size, self.sampling.scale
            )
        metrics = dialogue_metrics(batch, "train")
        metrics["train/reward_std"] = float(batch.returns.std(unbiased=False))
        if "kl" in targets:
            metrics["train/kl"] = float(targets["kl"].sum(-1).mean())
        metrics["train/kl_coef"] = self.kl.value
        return targets, metrics

    def _micro_loss(  # type: ignore[override]
        self,
        batch: DialogueRollout,
        old: dict[str, torch.Tensor],
        idx: torch.Tensor,
        denom: float,
    ) -> LossAndStats:
        """The loss of dialogues ``idx`` (one no-cache forward over them), over ``denom``."""
        part = {key: value[idx] for key, value in old.items()}
        with self.runtime.autocast():
            return dialogue_loss(
                self.policy, batch.select(idx), part, self.dialogue, self.sampling.scale, denom
            )

    def _line(self, m: dict[str, float]) -> str:
        parts = [
            f"iter {self.iteration:4d}/{self.config.iterations}",
            f"reward {m['train/reward']:.3f}",
            f"success {m['train/success']:.3f}",
            f"turns {m['train/turns']:.2f}",
        ]
        for key, label in (("train/kl", "kl"), ("eval/success", "eval success")):
            if key in m:
                parts.append(f"{label} {m[key]:.3f}")
        parts.append(f"{m['time/tokens_per_s']:.0f} tok/s")
        return " | ".join(parts)

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self) -> tuple[dict[str, float], str]:
        """Greedy dialogues for the first ``eval_samples`` goals of the eval split.

        Returns ``(eval/... metrics, markdown table of dialogues)``; touches no training RNG.
        """
        envs = self.eval_envs
        batch, records = play_goals(
            self.policy, envs, list(range(envs.num_envs)), autocast=self.runtime.autocast()
        )
        table = samples_table(
            [r["prompt"] for r in records],
            [r["completion"] for r in records],
            [r["reward"] for r in records],
        )
        return dialogue_metrics(batch, "eval"), table


def dialogue_trainer(algo: str, registered: type) -> type[DialogueTrainer]:
    """The trainer of ``algo`` on a conversation task, whose registered trainer is
    ``registered``; only the built-in on-policy algorithms play whole dialogues."""
    if registered is not OnPolicyTrainer or algo not in DIALOGUE_ALGOS:
        raise ValueError(
            f"{algo} does not train on conversation tasks; choose one of "
            f"{', '.join(DIALOGUE_ALGOS)} (they play whole dialogues), or a single-turn task"
        )
    return DialogueTrainer


__all__ = ["DialogueTrainer", "dialogue_config", "dialogue_trainer"]
