"""Supervised fine-tuning (SFT): imitate demonstrations, edits or a task's reference outputs.

The same trainer machinery as the RL algorithms (:class:`~agents.offline.OfflineTrainer` on
:class:`~agents.trainer.BaseTrainer`: model loading, LoRA, device and mixed precision, greedy
evaluation on the validation split with the task's reward, metrics to CSV and TensorBoard,
exact-resume checkpoints, the policy in Hugging Face format) runs a different step: a
teacher-forced cross-entropy on completion tokens only.

Examples are encoded exactly as the env presents them
(:class:`~agents.offline.ExampleEncoder`), so a fine-tuned policy sees at rollout time what it
saw in training. With ``packing`` several short examples share one row; a
block-diagonal attention mask and positions that restart at 0 keep them independent, so a
packed batch has exactly the loss of the unpacked one, with less padding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from agents.algorithm import LossAndStats
from agents.config import OfflineConfig
from agents.offline import OfflineTrainer, open_store
from agents.policy import TransformerPolicy
from agents.trainer import TrainerOptions
from textgym.feedback.store import FeedbackStore
from textgym.lm import sequence_logprobs
from textgym.tasks.base import Prompt, Task

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; annotations only (3.10 runs this file too)

TASK_DATA = "task"


@dataclass(frozen=True)
class Example:
    """One supervised target: a prompt (text or chat messages) and the completion to imitate."""

    prompt: Prompt
    completion: str


@dataclass
class SFTConfig(OfflineConfig):
    """SFT settings; evaluation is greedy."""

    algo: ClassVar[str] = "sft"

    data: str = TASK_DATA
    """"task": the references of the task's ``split`` (instruction tuning); else a feedback store (SQLite or JSONL export) whose demonstrations and edits are imitated."""
    batch_size: int = 8
    """Rows per optimizer step (one example each, or several with ``packing``)."""
    learning_rate: float = 5e-5
    """AdamW learning rate."""
    kl_coef: float = 0.0
    """SFT holds no reference model; must stay 0."""
    packing: bool = True
    """Pack several examples into rows of ``max_prompt_tokens + max_new_tokens`` tokens (attention stays within each example)."""
    max_examples: int = 0
    """Train on the first this many examples only (0 = all)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_coef != 0:
            raise ValueError(
                f"sft has no reference model, so kl_coef must be 0, got {self.kl_coef!r}; "
                "for a KL-regularised objective use dpo or ppo"
            )
        if not isinstance(self.max_examples, int) or self.max_examples < 0:
            raise ValueError(f"max_examples must be an int >= 0, got {self.max_examples!r}")
        if not self.data:
            raise ValueError(f"data must be {TASK_DATA!r} or the path of a feedback store")


# -- data ------------------------------------------------------------------------------------


def task_examples(task: Task, split: str = "train") -> list[Example]:
    """One example per reference of every sample of ``split`` (samples without any are skipped).

    >>> from textgym.tasks import make_task
    >>> examples = task_examples(make_task("summarize"), "train")
    >>> len(examples) > 20, isinstance(examples[0].completion, str)
    (True, True)
    """
    return [Example(s.prompt, ref) for s in task.split(split) for ref in s.references if ref]


def feedback_examples(store: FeedbackStore) -> list[Example]:
    """The store's demonstrations, then its edits (the corrected text for the edited sample's
    prompt), as prompts with targets.

    >>> from textgym.feedback.store import FeedbackStore
    >>> store = FeedbackStore(":memory:")
    >>> sid = store.add_sample("Greet.", "hey")
    >>> _ = store.add_edit(sid, "Hello!", rater="ann")
    >>> _ = store.add_demonstration("Thank.", "Thank you.", rater="bob")
    >>> [(x.prompt, x.completion) for x in feedback_examples(store)]
    [('Thank.', 'Thank you.'), ('Greet.', 'Hello!')]
    """
    examples = [Example(d.prompt, d.text) for d in store.demonstrations()]
    edits = store.edits()
    prompts = {s.id: s.prompt for s in store.samples(ids=sorted({e.sample_id for e in edits}))}
    return examples + [Example(prompts[e.sample_id], e.text) for e in edits]


def load_examples(data: str, task: Task, split: str = "train") -> list[Example]:
    """Examples of ``data``: ``"task"`` for ``task``'s references, else a feedback store path."""
    if data == TASK_DATA:
        examples = task_examples(task, split)
        where = f"task {task.name!r} split {split!r} has no references"
    else:
        examples = feedback_examples(open_store(data))
        where = f"feedback store {data} has no demonstrations or edits"
    if not examples:
        raise ValueError(f"nothing to imitate: {where}")
    return examples


Encoded = tuple[np.ndarray, np.ndarray]  # (prompt_ids, completion_ids)


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group example indices into rows of at most ``capacity`` tokens (first-fit decreasing).

    Deterministic: ties keep index order. Every example fits (lengths are at most P + N).

    >>> pack([5, 3, 4, 2], capacity=7)
    [[0, 3], [2, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


@dataclass
class TokenBatch:
    """Rows of one or more examples each, right-padded to the longest row.

    ``targets[r, t]`` is True where token t is a completion token: the loss predicts it from
    position t - 1. Padding tokens attend only to themselves.
    """

    input_ids: torch.Tensor  # (R, T) int64
    position_ids: torch.Tensor  # (R, T) int64, restart at 0 for each example
    attention: torch.Tensor  # (R, 1, T, T) bool, block-diagonal causal
    targets: torch.Tensor  # (R, T) bool

    @property
    def num_targets(self) -> int:
        return int(self.targets.sum())

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(*(t.to(device) for t in dataclasses.astuple(self)))


def collate(rows: Sequence[Sequence[Encoded]], pad_token_id: int) -> TokenBatch:
    """Build a :class:`TokenBatch` from rows of encoded examples.

    >>> batch = collate([[(np.array([7, 8]), np.array([9]))], [(np.array([5]), np.array([6, 2]))]], 0)
    >>> batch.input_ids.tolist(), batch.targets.int().tolist()
    ([[7, 8, 9], [5, 6, 2]], [[0, 0, 1], [0, 1, 1]])
    """
    T = max(sum(len(p) + len(c) for p, c in row) for row in rows)
    R = len(rows)
    ids = np.full((R, T), pad_token_id, dtype=np.int64)
    pos = np.zeros((R, T), dtype=np.int64)
    segment = np.empty((R, T), dtype=np.int64)
    targets = np.zeros((R, T), dtype=bool)
    for r, row in enumerate(rows):
        t = 0
        for s, (p, c) in enumerate(row):
            n = len(p) + len(c)
            ids[r, t : t + n] = np.concatenate([p, c])
            pos[r, t : t + n] = np.arange(n)
            segment[r, t : t + n] = s
            targets[r, t + len(p) : t + n] = True
            t += n
        segment[r, t:] = -1 - np.arange(T - t)  # each padding token is its own segment
    seg = torch.as_tensor(segment)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    attention = (seg[:, :, None] == seg[:, None, :]) & causal  # (R, T, T)
    return TokenBatch(
        torch.as_tensor(ids), torch.as_tensor(pos), attention[:, None], torch.as_tensor(targets)
    )


def target_logprobs(policy: TransformerPolicy, batch: TokenBatch) -> torch.Tensor:
    """Log-probabilities (K,) of the K target tokens of ``batch`` under the policy's LM.

    :func:`textgym.lm.sequence_logprobs`: the model's own forward (its logit scaling applies),
    the LM head only on the columns that predict a target.
    """
    return sequence_logprobs(
        policy.model,
        batch.input_ids,
        batch.attention,
        batch.targets,
        batch.position_ids,
        policy.vocab_size,
    )


class SFT:
    """Token-mean negative log-likelihood of the completion tokens."""

    uses_value_head = False
    uses_reference = False

    def __init__(self, config: SFTConfig) -> None:
        self.config = config

    def loss(self, policy: TransformerPolicy, batch: TokenBatch, denom: float) -> LossAndStats:
        """Summed NLL of ``batch`` / ``denom`` (the step's target count); stats are sums."""
        nll = -target_logprobs(policy, batch).sum()
        return nll / denom, {"loss": nll.detach()}


# -- training --------------------------------------------------------------------------------


class SFTTrainer(OfflineTrainer):
    """Supervised fine-tuning on a task's references or a feedback store's demonstrations.

    Args:
        config: an :class:`SFTConfig`.
        examples: train on these instead of loading ``config.data``.
        options: ``model``, ``tokenizer``, ``reward``, ``resume`` as for
            :class:`~agents.trainer.BaseTrainer`.

    Metrics: ``train/loss`` (token-mean NLL of completion tokens), ``eval/loss`` (the same on
    the references of the first ``eval_samples`` samples of ``eval_split``), and the task's
    greedy evaluation (``eval/reward``, e.g. ROUGE-L).

    >>> cfg = SFTConfig(model="tiny", task="summarize", batch_size=2, iterations=1,
    ...                 max_prompt_tokens=64, max_new_tokens=8, eval_samples=2, eval_every=1,
    ...                 progress=False, report_to="none", run_dir=getfixture("tmp_path").as_posix())
    >>> rows = SFTTrainer(cfg).train()
    >>> rows[-1]["iteration"], rows[-1]["eval/loss"] < rows[0]["eval/loss"]
    (1, True)
    """

    config: SFTConfig

    def __init__(
        self,
        config: SFTConfig,
        examples: Sequence[Example] | None = None,
        **options: Unpack[TrainerOptions],
    ) -> None:
        super().__init__(config, **options)
        task = self.task
        if examples is None:
            examples = load_examples(config.data, task, config.split)
        if config.max_examples:
            examples = examples[: config.max_examples]
        encoded = [self.encoder(x) for x in examples]
        if config.packing:
            capacity = config.max_prompt_tokens + config.max_new_tokens
            groups = pack([len(p) + len(c) for p, c in encoded], capacity)
        else:
            groups = [[i] for i in range(len(encoded))]
        self.items = [[encoded[i] for i in g] for g in groups]
        split = self.eval_envs.split
        samples = task.split(split)[: config.eval_samples]
        self.eval_rows = [
            [self.encoder(Example(s.prompt, ref))] for s in samples for ref in s.references if ref
        ]

    def weight(self, item: Sequence[Encoded]) -> float:
        return float(sum(len(c) for _, c in item))

    def batch_loss(self, items: Sequence[Sequence[Encoded]], denom: float) -> LossAndStats:
        batch = collate(items, self.pad_token_id).to(self.runtime.device)
        return self.algorithm.loss(self.policy, batch, denom)

    @torch.no_grad()
    def eval_metrics(self) -> dict[str, float]:
        if not self.eval_rows:
            return {}
        total, count = 0.0, 0
        B = self.config.batch_size
        for i in range(0, len(self.eval_rows), B):
            batch = collate(self.eval_rows[i : i + B], self.pad_token_id).to(self.runtime.device)
            with self.runtime.autocast():
                total -= float(target_logprobs(self.policy, batch).sum())
            count += batch.num_targets
        return {"eval/loss": total / count}


__all__ = [
    "Example",
    "SFT",
    "SFTConfig",
    "SFTTrainer",
    "TokenBatch",
    "collate",
    "feedback_examples",
    "load_examples",
    "pack",
    "target_logprobs",
    "task_examples",
]
