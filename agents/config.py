"""Training configuration: the settings every trainer shares (:class:`TrainConfig`), those of
the on-policy algorithms (:class:`OnPolicyConfig`: sampling and rollout reuse) and those of the
offline ones (:class:`OfflineConfig`: the data set); each algorithm's module extends one.

Every field has a docstring (the string right below it); :func:`field_docs` reads them, so the
command line's ``--help`` and the code say the same thing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from agents.tracking import parse_report_to
from textgym.conversation.simulators import USERS
from textgym.fields import field_docs as field_docs  # re-exported: agents.cli reads it here
from textgym.tasks.base import SPLITS

LR_SCHEDULES = ("constant", "linear")
MIN_PROMPT_TOKENS = 32
"""The smallest prompt budget P a run accepts: SmolLM2's chat template alone takes 30 tokens
(its system prompt and the role markers), and a budget that cannot hold the template keeps
only the template's tail, so the policy never sees the task."""
MAX_SEED = 2**32 - 1
"""The largest seed (NumPy's and Gymnasium's seeding range starts at 0)."""


def check_ints(config: object, names: tuple[str, ...], minimum: int) -> None:
    """Raise unless each named field of ``config`` is an int >= ``minimum``."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
            raise ValueError(f"{name} must be {kind}, got {value!r}")


def check_real(
    config: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """Raise unless field ``name`` of ``config`` is a finite number in the given interval
    (``open_low`` / ``open_high`` exclude the bound); ``nan`` and ``inf`` are never accepted.

    >>> from types import SimpleNamespace
    >>> check_real(SimpleNamespace(gamma=float("nan")), "gamma", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: gamma must be a finite number in [0, 1], got nan
    """
    value = getattr(config, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if ok:
        return
    if low is not None and high is not None:
        where = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    elif low is not None:
        where = f"{'>' if open_low else '>='} {low:g}"
    elif high is not None:
        where = f"{'<' if open_high else '<='} {high:g}"
    else:
        where = ""
    raise ValueError(f"{name} must be a finite number {where}".rstrip() + f", got {value!r}")


@dataclass
class TrainConfig:
    """Settings every trainer shares; :class:`OnPolicyConfig` and :class:`OfflineConfig` add
    the on-policy (rollout) and the offline (data set) ones, each algorithm's module the rest."""

    algo: ClassVar[str] = ""

    # -- what is trained on what
    model: str = "smollm2-135m"
    """Policy LM: Hugging Face id, local directory, alias ("smollm2-135m"), or "tiny" (a random 2-layer model over the tokenizer's vocabulary, for tests)."""
    tokenizer: str | None = None
    """Tokenizer name or path; default: the model's ("smollm2-135m" for "tiny")."""
    task: str = "keywords"
    """Registered task name (``textgym info`` lists them)."""
    reward: str | None = None
    """Reward spec (registered name or "module:function"); default: the task's own reward."""
    split: str = "train"
    """Task split the training prompts are drawn from: "train", "validation" or "test"."""
    eval_split: str = "validation"
    """Task split for periodic evaluation: "train", "validation" or "test" (falls back to "test" when the task has no validation split)."""
    chat_template: bool = True
    """Wrap prompts in the tokenizer's chat template."""

    # -- sizes
    batch_size: int = 16
    """Episodes (completions) per iteration, all generated in one lockstep batch."""
    max_prompt_tokens: int = 128
    """Prompt budget P (longer prompts keep their end); at least 32, which holds SmolLM2's chat template (30 tokens) and a little text. On conversation tasks: the context budget of the whole dialogue."""
    max_new_tokens: int = 32
    """Completion budget N: an episode ends at EOS or after N tokens. On conversation tasks: the cap on tokens per agent turn."""

    # -- optimisation
    iterations: int = 100
    """Training iterations (one rollout + one update each)."""
    learning_rate: float = 1e-5
    """AdamW learning rate (finite, > 0)."""
    lr_schedule: str = "constant"
    """"constant" or "linear" (decay to 0 over ``iterations``)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_accum_steps: int = 1
    """Micro-batches per minibatch whose gradients are accumulated (bounds activation memory)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold (0 = off)."""
    kl_coef: float = 0.05
    """Weight beta of the KL to the frozen reference (0 = no reference model at all)."""

    # -- model setup
    init: str | None = None
    """Warm start: the weights of a finished run (its run_dir, or run_dir/policy), e.g. an SFT run, replace ``model``'s ("SFT then PPO"); the reference is then that model too."""
    lora_r: int = 0
    """LoRA rank; 0 trains every weight. With LoRA the reference is the base model with adapters off."""
    lora_alpha: int = 16
    """LoRA scaling numerator (alpha / r scales the adapters)."""
    lora_dropout: float = 0.0
    """Dropout inside the LoRA adapters."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu", "cuda" or "cuda:N"."""
    mixed_precision: bool = True
    """bf16 autocast on CUDA (weights stay float32); on CPU only with ``cpu_bf16``."""
    cpu_bf16: bool = False
    """With ``mixed_precision``, bf16 autocast on CPU too: faster batched forwards and backwards
    on CPUs with native bf16 matmuls (AVX512-BF16, AMX); log-probs then differ from float32 by
    up to about 0.1 nats, so runs are not comparable bit for bit with float32 ones."""
    seed: int = 0
    """Seed of prompt sampling, token sampling and minibatch shuffling (0 to 2**32 - 1)."""

    # -- run management
    run_dir: str | None = None
    """Output directory; default runs/<algo>-<task>-seed<seed>."""
    eval_every: int = 10
    """Evaluate on ``eval_split`` every this many iterations, before training and at the end (0 = never)."""
    eval_samples: int = 16
    """Validation prompts per evaluation (greedy decoding, fixed order)."""
    save_every: int = 10
    """Write a checkpoint every this many iterations and at the end (0 = only at the end)."""
    report_to: str = "tensorboard"
    """Experiment trackers that get the metrics besides run_dir/metrics.csv (always written; what a resume restores), comma-separated, through accelerate's trackers: tensorboard (run_dir/tb), trackio, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab; "all" (every installed one) or "none"."""
    project: str = "textgym"
    """Project (experiment, for mlflow) the trackers other than TensorBoard file the run under; the run is named after run_dir."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        positive = ("batch_size", "max_new_tokens", "iterations", "grad_accum_steps",
                    "eval_samples", "lora_alpha")  # fmt: skip
        check_ints(self, positive, 1)
        check_ints(self, ("eval_every", "save_every", "lora_r", "seed"), 0)
        check_ints(self, ("max_prompt_tokens",), MIN_PROMPT_TOKENS)
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be an int from 0 to 2**32 - 1, got {self.seed!r}")
        check_real(self, "learning_rate", 0, open_low=True)
        for name in ("max_grad_norm", "kl_coef", "weight_decay"):
            check_real(self, name, 0)
        check_real(self, "lora_dropout", 0, 1, open_high=True)
        parse_report_to(self.report_to)
        if self.cpu_bf16 and not self.mixed_precision:
            raise ValueError(
                "cpu_bf16=True needs mixed_precision=True (it extends bf16 autocast to the CPU); "
                "set mixed_precision=True or cpu_bf16=False"
            )
        if not isinstance(self.project, str) or not self.project.strip():
            raise ValueError(f"project must be a non-empty name, got {self.project!r}")
        for name in ("split", "eval_split"):
            if getattr(self, name) not in SPLITS:
                raise ValueError(
                    f"{name} must be one of {list(SPLITS)}, got {getattr(self, name)!r}"
                )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum_steps = "
                f"{self.grad_accum_steps}"
            )

    @property
    def output_dir(self) -> str:
        return self.run_dir or f"runs/{self.algo}-{self.task}-seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, **dataclasses.asdict(self)}


@dataclass
class OnPolicyConfig(TrainConfig):
    """Settings of the algorithms that learn from their own rollouts (PPO, RLOO, GRPO, REINFORCE)."""

    # -- rollout
    temperature: float = 1.0
    """Sampling temperature; log-probs and KL use softmax(logits / temperature)."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0 = whole vocabulary)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off)."""
    num_epochs: int = 1
    """Passes over each rollout batch."""
    num_minibatches: int = 1
    """Optimizer steps per epoch; the batch is shuffled and split into this many minibatches."""
    max_abs_reward: float = 1e6
    """Stop the run when a reward's magnitude exceeds this (finite, > 0): such a reward is almost always a broken one, it drowns the KL term and overflows float32 losses."""

    # -- conversation tasks (TextGen-Conversation-v0): max_prompt_tokens is then the context
    # budget C of the whole dialogue and max_new_tokens the cap on tokens per agent turn.
    max_turns: int = 8
    """Conversation tasks: agent turns per dialogue at most (the dialogue ends there)."""
    max_total_tokens: int = 0
    """Conversation tasks: agent tokens per dialogue at most, over all its turns (0 = no cap beyond max_turns * max_new_tokens)."""
    user: str | None = None
    """Conversation tasks: the user simulator, "scripted", "replay", "lm", "remote" or "human" (default: the task's own)."""

    @property
    def group_size(self) -> int:
        """Completions per prompt (1 except for the group-baseline algorithms)."""
        return 1

    def __post_init__(self) -> None:
        check_ints(self, ("num_epochs", "num_minibatches", "max_turns"), 1)
        check_ints(self, ("top_k", "max_total_tokens"), 0)
        if self.user is not None and self.user not in USERS:
            raise ValueError(f"user must be one of {list(USERS)} or None, got {self.user!r}")
        check_real(self, "temperature", 0, open_low=True)
        check_real(self, "max_abs_reward", 0, open_low=True)
        check_real(self, "top_p", 0, 1, open_low=True)
        super().__post_init__()
        if self.batch_size % self.group_size:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of group_size={self.group_size}"
            )
        per_step = self.num_minibatches * self.grad_accum_steps
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by num_minibatches * "
                f"grad_accum_steps = {self.num_minibatches} * {self.grad_accum_steps}"
            )


@dataclass
class OfflineConfig(TrainConfig):
    """Settings of the algorithms that learn from a fixed data set (SFT, DPO); evaluation is
    greedy, so they have no sampling or rollout settings."""

    data: str = ""
    """Training data. dpo: a feedback store (SQLite file or JSONL export) whose preference pairs are learned. sft: "task" (the task's references, the default) or a store whose demonstrations and edits are imitated."""
    batch_size: int = 8
    """Training items (examples, packed rows or preference pairs) per optimizer step."""
    iterations: int = 100
    """Optimizer steps; the data are reshuffled every pass over them."""
