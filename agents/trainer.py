"""The training loop shared by PPO, RLOO, GRPO and REINFORCE, and its run management.

One iteration: a lockstep rollout of ``batch_size`` episodes through the vector env (the
policy records log-probs, values and reference log-probs as it goes), the algorithm's
advantage targets, then ``num_epochs`` x ``num_minibatches`` optimizer steps on full no-cache
forwards. Around it: periodic greedy evaluation on the validation split with a table of
samples, metrics to CSV and TensorBoard, atomic checkpoints with every RNG state so that a
resumed run reproduces an unbroken one, and at the end a reward plot and the policy in
Hugging Face format.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from agents.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from agents.config import TrainConfig
from agents.grpo import GRPO, GRPOConfig
from agents.policy import Rollout, Sampling, TransformerPolicy, evaluate_tokens, rollout
from agents.ppo import PPO, KLController, PPOConfig
from agents.reinforce import REINFORCE, REINFORCEConfig
from agents.rloo import RLOO, RLOOConfig
from agents.runtime import make_runtime
from agents.tracking import MetricsLogger, atomic_write, plot_rewards, samples_table
from textgym.models import SMOLLM2_ALIAS, load_model, load_tokenizer, tiny_model
from textgym.rewards.base import RewardSpec
from textgym.vector import TextGenVectorEnv

ALGORITHMS: dict[str, tuple[type[TrainConfig], type]] = {
    "ppo": (PPOConfig, PPO),
    "rloo": (RLOOConfig, RLOO),
    "grpo": (GRPOConfig, GRPO),
    "reinforce": (REINFORCEConfig, REINFORCE),
}
# Algorithms that learn from a fixed data set instead of rollouts (agents.sft, agents.dpo)
# register their Trainer subclass here; train() and the command line build the right one.
TRAINERS: dict[str, type[Trainer]] = {}
# Changing these between a checkpoint and its resume does not change what is computed.
RUN_CONTROL_FIELDS = {"iterations", "progress", "tensorboard", "save_every", "device"}


class TrainingStopped(RuntimeError):
    """Training stopped on an error; the last checkpoint is intact."""


def make_config(algo: str, **options: Any) -> TrainConfig:
    """The config dataclass of ``algo`` with ``options``; unknown names list the valid ones.

    >>> make_config("grpo", batch_size=8).completions_per_prompt
    4
    >>> make_config("sac")
    Traceback (most recent call last):
    ...
    ValueError: unknown algorithm 'sac'; choose one of: ppo, rloo, grpo, reinforce, sft, dpo
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; choose one of: {', '.join(ALGORITHMS)}")
    cls = ALGORITHMS[algo][0]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {algo}; valid options: {', '.join(valid)}"
        )
    return cls(**options)


def build_model(name: str, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> nn.Module:
    """The policy LM: ``"tiny"`` is a random 2-layer model over the tokenizer's vocabulary."""
    if name == "tiny":
        return tiny_model(tokenizer, seed=seed)
    return load_model(name)


def init_weights(path: str) -> str:
    """The policy directory of ``init``: a run directory (its ``policy/``) or a policy directory.

    >>> init_weights("no/such/run")
    Traceback (most recent call last):
    ...
    FileNotFoundError: init='no/such/run' is not a finished run: expected no/such/run/policy/config.json or no/such/run/config.json (a directory written by save_pretrained)
    """
    run = Path(path)
    for candidate in (run / "policy", run):
        if (candidate / "adapter_config.json").is_file():
            raise ValueError(
                f"init={path!r} holds LoRA adapters, not full weights; warm-start from a run "
                "trained without lora_r, or merge the adapters into the model first"
            )
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"init={path!r} is not a finished run: expected {run / 'policy' / 'config.json'} or "
        f"{run / 'config.json'} (a directory written by save_pretrained)"
    )


class Trainer:
    """Trains a :class:`TransformerPolicy` on a textgym task with one of PPO/RLOO/GRPO/REINFORCE.

    Args:
        config: a :class:`PPOConfig`, :class:`RLOOConfig`, :class:`GRPOConfig` or
            :class:`REINFORCEConfig` (or :func:`make_config`).
        model: a causal LM to train instead of loading ``config.model``.
        tokenizer: its tokenizer (default: loaded from ``config.tokenizer`` / ``config.model``).
        reward: a reward callable or spec overriding ``config.reward`` (e.g. a Python function).
        resume: continue from the latest checkpoint in the run directory.

    >>> from agents import PPOConfig, Trainer
    >>> cfg = PPOConfig(model="tiny", batch_size=2, max_new_tokens=2, iterations=1, top_k=8,
    ...                 eval_every=0, save_every=0, progress=False, tensorboard=False,
    ...                 run_dir=getfixture("tmp_path").as_posix())
    >>> rows = Trainer(cfg).train()
    >>> rows[-1]["iteration"], "train/reward" in rows[-1]
    (1, True)
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        reward: RewardSpec | None = None,
        resume: bool = False,
    ) -> None:
        if type(config).algo not in ALGORITHMS:
            raise TypeError(
                f"config must be one of {[c.__name__ for c, _ in ALGORITHMS.values()]}, got {type(config).__name__}"
            )
        self.config = config
        self.runtime = make_runtime(config.device, config.mixed_precision)
        self.run_dir = Path(config.output_dir)
        if tokenizer is None:
            name = config.tokenizer or (SMOLLM2_ALIAS if config.model == "tiny" else config.model)
            tokenizer = load_tokenizer(name)
        self.tokenizer = tokenizer
        torch.manual_seed(config.seed)
        if model is None:
            name = init_weights(config.init) if config.init else config.model
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
        adaptive = isinstance(config, PPOConfig) and config.adaptive_kl
        if config.kl_coef == 0 and not adaptive:
            reference = None
        self.policy = TransformerPolicy(model, reference, vocab_size=len(tokenizer))
        self.algorithm = ALGORITHMS[type(config).algo][1](config)
        if not self.algorithm.needs_values:  # critic-free: the value head is not trained
            self.policy.value_head.requires_grad_(False)
        self.policy = self.runtime.prepare(self.policy)  # type: ignore[assignment]
        self.sampling = Sampling(config.temperature, config.top_k, config.top_p)

        vocab = model.get_output_embeddings().weight.shape[0]
        self.env_kwargs: dict[str, Any] = {
            "task": config.task,
            "tokenizer": tokenizer,
            "reward": reward if reward is not None else config.reward,
            "max_prompt_tokens": config.max_prompt_tokens,
            "max_new_tokens": config.max_new_tokens,
            "chat_template": config.chat_template,
            "vocab_size": max(vocab, len(tokenizer)),
            "autoreset_mode": "disabled",
            "copy": False,
        }
        self.envs = TextGenVectorEnv(
            num_envs=config.batch_size, split=config.split, **self.env_kwargs
        )
        seed = self.runtime.process_seed(config.seed)  # each process samples its own shard
        self.envs.reset(seed=seed)
        self._eval_envs: TextGenVectorEnv | None = None

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
        self.kl = KLController(
            config.kl_coef,
            target=config.kl_target if adaptive else None,  # type: ignore[attr-defined]
            horizon=getattr(config, "kl_horizon", 10000),
        )
        self.generator = self.runtime.generator(seed)
        self.rng = np.random.default_rng(seed)  # minibatch shuffling
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
            atomic_write(self.run_dir / "config.json", _json(config.to_dict()))
        main = self.runtime.is_main_process  # only process 0 writes logs
        self.logger = MetricsLogger(self.run_dir, config.tensorboard and main, rows, write=main)

    # -- one iteration -----------------------------------------------------------------------
    def collect(self) -> Rollout:
        """A lockstep rollout of ``batch_size`` episodes; groups of k share a prompt.

        The reference's log-probs come from one no-cache forward over the finished batch
        rather than a reference step per token: a single wide forward uses the matmul units
        far better than N narrow decode steps (on 2 CPU cores with SmolLM2 at batch 16 and
        32 tokens it takes about a quarter of their time).
        """
        k = self.config.group_size
        n = len(self.envs.task.split(self.config.split))
        index = np.repeat(self.envs.np_random.integers(n, size=self.config.batch_size // k), k)
        batch = rollout(
            self.policy,
            self.envs,
            self.sampling,
            self.generator,
            options={"index": index.tolist()},
            record_values=self.algorithm.needs_values,
            record_reference=False,
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
                )
            batch.ref_logprobs = ref_logprobs * batch.mask
        return batch

    def step(self) -> dict[str, float]:
        """Rollout, advantages and update; returns the iteration's metrics."""
        cfg, rt = self.config, self.runtime
        start = time.perf_counter()
        batch = self.collect()
        rollout_s = time.perf_counter() - start
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
        targets, stats = self.algorithm.targets(batch, self.kl.value, rt)
        metrics.update(stats)
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
                self.optimizer.zero_grad(set_to_none=True)
                for a in range(cfg.grad_accum_steps):
                    idx = rows[a * micro : (a + 1) * micro]
                    with rt.autocast():
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
                    rt.backward(loss)
                    assert entropy is not None
                    stats["entropy"] = (entropy * part["mask"]).sum()
                    for key, value in stats.items():
                        sums[key] = sums.get(key, 0.0) + value.detach()
                if cfg.max_grad_norm > 0:
                    grad_norms.append(float(rt.clip_grad_norm(self.params, cfg.max_grad_norm)))
                self.optimizer.step()
        self.scheduler.step()
        out = {f"train/{key}": float(rt.sum(value)) / tokens for key, value in sums.items()}
        out["train/lr"] = self.scheduler.get_last_lr()[0]
        if grad_norms:
            out["train/grad_norm"] = float(np.mean(grad_norms))
        return out

    # -- evaluation --------------------------------------------------------------------------
    @property
    def eval_envs(self) -> TextGenVectorEnv:
        if self._eval_envs is None:
            task_splits = self.envs.task.splits
            split = self.config.eval_split
            if split not in task_splits and split == "validation" and "test" in task_splits:
                split = "test"
            n = min(self.config.eval_samples, len(self.envs.task.split(split)))
            self._eval_envs = TextGenVectorEnv(num_envs=n, split=split, **self.env_kwargs)
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
            record_reference=False,
            autocast=self.runtime.autocast(),
        )
        metrics = {"eval/reward": float(batch.scores.mean())}
        for name, values in batch.components.items():
            metrics[f"eval/{name}"] = float(np.mean(values))
        metrics["eval/length"] = float(batch.lengths.mean())
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
            checkpoint = latest_checkpoint(self.run_dir)
            where = (
                f"the last checkpoint {checkpoint} is intact"
                if checkpoint
                else "no checkpoint was written yet"
            )
            raise TrainingStopped(
                f"training stopped at iteration {self.iteration + 1}: {type(exc).__name__}: {exc} "
                f"({where}; continue with resume=True / --resume)"
            ) from exc
        finally:
            bar.close()
        if self.iteration >= cfg.iterations:
            self.finish()
        return self.logger.rows

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
        """The LM (or its LoRA adapters) and tokenizer via ``save_pretrained``, plus the value head."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        self.policy.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        head = {
            k: v.detach().cpu().contiguous() for k, v in self.policy.value_head.state_dict().items()
        }
        save_file(head, str(tmp / "value_head.safetensors"))
        if path.exists():
            import shutil

            shutil.rmtree(path)
        tmp.rename(path)

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
            "kl": self.kl.state_dict(),
            "rng": self.runtime.gather_object(self._rng_state()),  # one per process
            "metrics": self.logger.rows,
        }

    def _rng_state(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime.rng_state(),
            "sampler": self.generator.get_state(),
            "numpy": self.rng.bit_generator.state,
            "env": self.envs.np_random.bit_generator.state,
            "python": random.getstate(),
        }

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
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl.load_state_dict(state["kl"])
        if len(state["rng"]) != self.runtime.num_processes:
            raise ValueError(
                f"{path} was written by {len(state['rng'])} process(es); resume it with the "
                f"same number (this run has {self.runtime.num_processes})"
            )
        rng = state["rng"][self.runtime.process_index]
        self.runtime.set_rng_state(rng["runtime"])
        self.generator.set_state(rng["sampler"])
        self.rng.bit_generator.state = rng["numpy"]
        self.envs.np_random.bit_generator.state = rng["env"]
        random.setstate(rng["python"])
        self.iteration = int(state["iteration"])
        return state["metrics"]


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, default=str) + "\n"


def train(
    algo: str = "ppo",
    resume: bool = False,
    reward: RewardSpec | None = None,
    **options: Any,
) -> Trainer:
    """Train from Python: ``train("ppo", task="keywords", model="smollm2-135m", iterations=20)``.

    Options are the fields of the algorithm's config; returns the finished :class:`Trainer`.
    """
    config = make_config(algo, **options)
    trainer = TRAINERS.get(algo, Trainer)(config, reward=reward, resume=resume)
    trainer.train()
    return trainer


__all__ = ["ALGORITHMS", "TRAINERS", "Trainer", "TrainingStopped", "make_config", "train"]
