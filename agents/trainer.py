"""The base of every trainer: model, LoRA, reference, optimiser, schedule, gradient
accumulation, evaluation, logging, checkpoints and the run directory.

What it trains on is the subclass's: :class:`agents.onpolicy.OnPolicyTrainer` collects rollouts
(PPO, RLOO, GRPO, REINFORCE), :class:`agents.offline.OfflineTrainer` reads a fixed data set
(SFT, DPO). Around their ``step``: periodic greedy evaluation on the validation split with a
table of samples, metrics to CSV and the experiment trackers (TensorBoard, trackio, wandb,
mlflow, ... through accelerate), atomic checkpoints with every RNG state so
that a resumed run reproduces an unbroken one, and at the end a reward plot and the policy in
Hugging Face format.
"""

from __future__ import annotations

import abc
import json
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from agents import registry
from agents.algorithm import Algorithm, LossAndStats
from agents.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from agents.config import TrainConfig
from agents.hub import MODEL_CARD, model_card
from agents.models import build_model
from agents.policy import Sampling, TransformerPolicy, load_value_head, policy_dir, rollout
from agents.runtime import make_runtime
from agents.tracking import (
    MetricsLogger,
    atomic_write,
    parse_report_to,
    plot_rewards,
    samples_table,
)
from textgym.models import SMOLLM2_ALIAS, load_tokenizer
from textgym.rewards.base import RewardSpec
from textgym.rewards.online import OnlineReward
from textgym.tasks import make_task
from textgym.vector import TextGenVectorEnv

# Changing these between a checkpoint and its resume does not change what is computed.
RUN_CONTROL_FIELDS = {"iterations", "progress", "report_to", "project", "save_every", "device"}


class TrainerOptions(TypedDict, total=False):
    """The keyword arguments of every trainer beyond its config (see :class:`BaseTrainer`);
    subclasses that take data of their own pass these through unchanged."""

    model: nn.Module | None
    tokenizer: PreTrainedTokenizerBase | None
    reward: RewardSpec | None
    resume: bool


class TrainingStopped(RuntimeError):
    """Training stopped on an error; the last checkpoint is intact."""


class BaseTrainer(abc.ABC):
    """What every trainer shares; a subclass adds its data and its :meth:`step`.

    Args:
        config: the config of a registered algorithm (:func:`agents.registry.make_config`)
            whose registry row names this trainer class.
        model: a causal LM to train instead of loading ``config.model``.
        tokenizer: its tokenizer (default: loaded from ``config.tokenizer`` / ``config.model``).
        reward: a reward callable or spec overriding ``config.reward`` (e.g. a Python function).
        resume: continue from the latest checkpoint in the run directory.

    Subclasses implement :meth:`_uses_reference`, :meth:`_setup` (their own state, built
    before the optimizer), :meth:`step` and :meth:`_line`, and extend :meth:`state_dict`,
    :meth:`_load_state`, :meth:`_rng_state` and :meth:`_set_rng_state` with what a resume of
    their state needs.
    """

    algorithm: Algorithm
    env_class: type[Any] = TextGenVectorEnv
    """The vector env the evaluation plays (built on ``env_kwargs``)."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        reward: RewardSpec | None = None,
        resume: bool = False,
    ) -> None:
        entry = registry.entry(config.algo)
        if type(config) is not entry.config or not isinstance(self, entry.trainer):
            raise TypeError(
                f"{type(self).__name__} cannot train a {type(config).__name__}: {config.algo!r} "
                f"trains a {entry.config.__name__} with {entry.trainer.__name__}"
            )
        self.config = config
        self.algorithm = entry.algorithm(config)
        self.runtime = make_runtime(config.device, config.mixed_precision, config.cpu_bf16)
        self.run_dir = Path(config.output_dir)
        if tokenizer is None:
            name = config.tokenizer or (SMOLLM2_ALIAS if config.model == "tiny" else config.model)
            tokenizer = load_tokenizer(name)
        self.tokenizer = tokenizer
        torch.manual_seed(config.seed)
        if model is None:
            name = policy_dir(config.init, "init") if config.init else config.model
            model = build_model(name, tokenizer, config.seed)
        model.eval()  # no dropout: rollout and update must see the same function
        reference: str | None = "copy"
        if config.lora_r:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
            reference = "adapters"
        if not self._uses_reference():
            reference = None
        self.policy = TransformerPolicy(model, reference, vocab_size=len(tokenizer))
        if config.init:  # the warm start's value head too (zero when it never trained one)
            load_value_head(self.policy, policy_dir(config.init, "init"))
        if not self.algorithm.uses_value_head:  # critic-free: the value head is not trained
            self.policy.value_head.requires_grad_(False)
        self.policy = self.runtime.prepare(self.policy)  # type: ignore[assignment]

        vocab = model.get_output_embeddings().weight.shape[0]
        self.task = make_task(config.task)  # built once, shared by the training and eval envs
        self.env_kwargs: dict[str, Any] = {
            "task": self.task,
            "tokenizer": tokenizer,
            "reward": reward if reward is not None else config.reward,
            "max_prompt_tokens": config.max_prompt_tokens,
            "max_new_tokens": config.max_new_tokens,
            "chat_template": config.chat_template,
            "vocab_size": max(vocab, len(tokenizer)),
            "autoreset_mode": "disabled",
            "copy": False,
        }
        self._eval_envs: Any = None
        # (label, reward) of the rewards that learn beside the policy: a subclass that trains
        # them (the on-policy trainer) fills this in _setup; evaluate() reports them.
        self.online_rewards: list[tuple[str, OnlineReward]] = []
        self._setup(self.runtime.process_seed(config.seed))  # each process its own shard

        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        total = config.iterations
        schedule = (
            (lambda i: 1.0)
            if config.lr_schedule == "constant"
            else (lambda i: max(0.0, 1.0 - i / total))
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        # Training forwards go through train_policy (a DDP/FSDP wrapper under accelerate);
        # rollouts and evaluation use the plain policy.
        self.train_policy, self.optimizer = self.runtime.prepare_training(
            self.policy, self.optimizer
        )
        self.iteration = 0
        rows: list[dict[str, Any]] = []
        if resume:
            rows = self._restore()
        elif latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(
                f"{self.run_dir} already holds a checkpoint; pass resume=True (--resume) to "
                "continue it, or choose another run_dir"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.runtime.is_main_process:
            atomic_write(
                self.run_dir / "config.json",
                json.dumps(config.to_dict(), indent=2, default=str) + "\n",
            )
        main = self.runtime.is_main_process  # only process 0 writes logs
        self.logger = MetricsLogger(
            self.run_dir,
            parse_report_to(config.report_to) if main else (),
            rows,
            write=main,
            project=config.project,
            config=config.to_dict(),
        )

    # -- what a subclass adds ----------------------------------------------------------------
    @abc.abstractmethod
    def _uses_reference(self) -> bool:
        """Whether the policy needs the frozen reference model (asked before it is built)."""

    @abc.abstractmethod
    def _setup(self, seed: int) -> None:
        """Build the subclass's state (envs, samplers, data); ``seed`` is this process's."""

    @abc.abstractmethod
    def step(self) -> dict[str, float]:
        """One training iteration; returns its metrics and advances ``self.iteration``."""

    @abc.abstractmethod
    def _line(self, metrics: dict[str, float]) -> str:
        """The progress line of an iteration's metrics."""

    # -- one optimizer step ------------------------------------------------------------------
    def optimizer_step(
        self, micro_batches: Iterable[Callable[[], LossAndStats]], sums: dict[str, torch.Tensor]
    ) -> float | None:
        """One optimizer step over gradient-accumulated micro-batches.

        Each item of ``micro_batches`` computes one micro-batch's loss (already divided by the
        step's denominator) and stat sums; the stats are added to ``sums``. Returns the gradient
        norm before clipping, or None when ``max_grad_norm`` is 0.
        """
        rt = self.runtime
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros((), device=rt.device)
        for micro_batch in micro_batches:
            loss, stats = micro_batch()
            rt.backward(loss)
            total_loss += loss.detach()
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value.detach()
        # The norm is taken even unclipped (max_norm inf): a non-finite one must stop the run
        # before optimizer.step() writes NaN into every weight.
        max_norm = self.config.max_grad_norm or float("inf")
        norm = float(rt.clip_grad_norm(self.params, max_norm))
        if not (math.isfinite(float(total_loss)) and math.isfinite(norm)):
            raise FloatingPointError(
                f"non-finite loss ({float(total_loss)}) or gradient norm ({norm}) at iteration "
                f"{self.iteration + 1}; the weights were not updated. Lower --learning-rate, "
                "check the reward's scale, or set --max-grad-norm"
            )
        self.optimizer.step()
        return norm if self.config.max_grad_norm > 0 else None

    # -- evaluation --------------------------------------------------------------------------
    @property
    def eval_envs(self) -> Any:
        if self._eval_envs is None:
            task_splits = self.task.splits
            split = self.config.eval_split
            if split not in task_splits and split == "validation" and "test" in task_splits:
                split = "test"
            n = min(self.config.eval_samples, len(self.task.split(split)))
            self._eval_envs = self.env_class(num_envs=n, split=split, **self.env_kwargs)
        return self._eval_envs

    def evaluate(self) -> tuple[dict[str, float], str]:
        """Greedy completions for the first ``eval_samples`` prompts of the eval split.

        Returns ``(metrics, markdown table of samples)``; touches no training RNG.
        """
        envs = self.eval_envs
        batch = rollout(
            self.policy,
            envs,
            Sampling(temperature=0),
            options={"index": list(range(envs.num_envs))},
            record_values=False,
            autocast=self.runtime.autocast(),
        )
        metrics = {"eval/reward": float(batch.scores.mean())}
        for name, values in batch.components.items():
            metrics[f"eval/{name}"] = float(np.mean(values))
        metrics["eval/length"] = float(batch.lengths.mean())
        for label, reward in self.online_rewards:  # e.g. a discriminator's held-out accuracy
            stats = reward.evaluate(batch.prompts, batch.completions, batch.references)
            prefix = "eval/" if len(self.online_rewards) == 1 else f"eval/{label}/"
            metrics.update({prefix + key: value for key, value in stats.items()})
        table = samples_table(batch.prompts, batch.completions, batch.scores.tolist())
        return metrics, table

    def _evaluate_and_log(self, metrics: dict[str, float]) -> str:
        eval_metrics, table = self.evaluate()
        metrics.update(eval_metrics)
        path = self.run_dir / "samples" / f"iter_{self.iteration:06d}.md"
        atomic_write(path, f"# Samples at iteration {self.iteration}\n\n{table}\n")
        self.logger.text("eval/samples", table, self.iteration)
        return table

    # -- the run -----------------------------------------------------------------------------
    def train(self, num_iterations: int | None = None) -> list[dict[str, Any]]:
        """Run until ``config.iterations`` (or ``num_iterations`` more); returns the metric rows.

        A failure (for example a reward that raises) stops the run with
        :class:`TrainingStopped`, which names the error and the intact last checkpoint.
        """
        cfg = self.config
        stop = cfg.iterations
        if num_iterations is not None:
            stop = min(stop, self.iteration + num_iterations)
        bar = tqdm(
            total=cfg.iterations, initial=self.iteration, disable=not cfg.progress, desc=cfg.algo
        )
        try:
            main = self.runtime.is_main_process  # evaluation and checkpoints: process 0
            if self.iteration == 0 and cfg.eval_every and not self.logger.rows and main:
                metrics: dict[str, float] = {}
                table = self._evaluate_and_log(metrics)
                self.logger.log(0, metrics)
                self._say(f"before training: eval/reward {metrics['eval/reward']:.3f}\n{table}")
            while self.iteration < stop:
                metrics = self.step()
                i = self.iteration
                if main and cfg.eval_every and (i % cfg.eval_every == 0 or i == cfg.iterations):
                    self._evaluate_and_log(metrics)
                self.logger.log(i, metrics)
                if (cfg.save_every and i % cfg.save_every == 0) or i == cfg.iterations:
                    self.save_checkpoint()
                bar.update(1)
                if "train/reward" in metrics:  # offline algorithms (sft, dpo) have no rollouts
                    bar.set_postfix(reward=f"{metrics['train/reward']:.3f}")
                self._say(self._line(metrics))
        except Exception as exc:
            self.logger.close()  # flush the trackers; a resume reopens them
            checkpoint = latest_checkpoint(self.run_dir)
            where = (
                f"the last checkpoint {checkpoint} is intact; continue with resume=True / --resume"
                if checkpoint
                else "no checkpoint was written yet; start again without --resume"
            )
            raise TrainingStopped(
                f"training stopped at iteration {self.iteration + 1}: {type(exc).__name__}: {exc} "
                f"({where})"
            ) from exc
        finally:
            bar.close()
        if self.iteration >= cfg.iterations:
            self.finish()
        return self.logger.rows

    def _say(self, text: str) -> None:
        if self.config.progress and self.runtime.is_main_process:
            tqdm.write(text)

    def finish(self) -> None:
        """Write the reward plot and the policy in Hugging Face format (process 0)."""
        self.logger.close()
        if not self.runtime.is_main_process:
            return
        plot_rewards(
            self.logger.rows,
            self.run_dir / "reward.png",
            f"{self.config.algo} on {self.config.task}",
        )
        self.save_pretrained(self.run_dir / "policy")
        first = self.run_dir / "samples" / "iter_000000.md"
        last = self.run_dir / "samples" / f"iter_{self.iteration:06d}.md"
        if first.is_file() and last.is_file() and first != last:
            self._say(f"after training:\n{last.read_text().split(chr(10), 2)[2]}")
        self._say(f"run directory: {self.run_dir} (metrics.csv, reward.png, samples/, policy/)")

    def save_pretrained(self, path: str | Path) -> None:
        """The LM (or its LoRA adapters), tokenizer and value head via
        :meth:`TransformerPolicy.save_pretrained`, with a model card (``README.md``)."""
        path = self.policy.save_pretrained(path, self.tokenizer)
        atomic_write(path / MODEL_CARD, model_card(self.config, self.logger.rows))

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; collective under accelerate (every process calls it)."""
        trainable = {n for n, p in self.policy.named_parameters() if p.requires_grad}
        return {
            "iteration": self.iteration,
            "config": self.config.to_dict(),
            "policy": {k: v for k, v in self.policy.state_dict().items() if k in trainable},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.runtime.gather_object(self._rng_state()),  # one per process
            "metrics": self.logger.rows,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` holds beyond the policy, optimizer and RNGs."""
        self.scheduler.load_state_dict(state["scheduler"])

    def _rng_state(self) -> dict[str, Any]:
        return {"runtime": self.runtime.rng_state(), "python": random.getstate()}

    def _set_rng_state(self, rng: dict[str, Any]) -> None:
        self.runtime.set_rng_state(rng["runtime"])
        random.setstate(rng["python"])

    def save_checkpoint(self) -> Path:
        """Write a checkpoint (process 0) once every process has handed in its RNG state."""
        state = self.state_dict()
        path = self.run_dir / "checkpoints"
        if self.runtime.is_main_process:
            path = save_checkpoint(self.run_dir, self.iteration, state)
        self.runtime.barrier()
        return path

    def _restore(self) -> list[dict[str, Any]]:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise FileNotFoundError(f"no checkpoint to resume in {self.run_dir}/checkpoints")
        state = load_checkpoint(path)
        saved, current = state["config"], self.config.to_dict()
        changed = sorted(
            k for k in current if k not in RUN_CONTROL_FIELDS and saved.get(k) != current[k]
        )
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(f"cannot resume {self.run_dir} with a different config ({diffs})")
        missing, unexpected = self.policy.load_state_dict(state["policy"], strict=False)
        trainable = {n for n, p in self.policy.named_parameters() if p.requires_grad}
        if unexpected or trainable & set(missing):
            raise ValueError(
                f"checkpoint {path} does not match the policy: {unexpected or missing}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_state(state)
        if len(state["rng"]) != self.runtime.num_processes:
            raise ValueError(
                f"{path} was written by {len(state['rng'])} process(es); resume it with the "
                f"same number (this run has {self.runtime.num_processes})"
            )
        self._set_rng_state(state["rng"][self.runtime.process_index])
        self.iteration = int(state["iteration"])
        return state["metrics"]


__all__ = ["BaseTrainer", "TrainerOptions", "TrainingStopped"]
