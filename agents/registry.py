"""The one registry of training algorithms: name -> (config class, algorithm class, trainer class).

The command line (``textgym train --algo NAME``, its options are the config's fields),
:func:`make_config`, :func:`train`, :func:`build_trainer` and the bench
(:mod:`agents.bench`, which runs every on-policy row under a token budget) all read it.
Entries are ``"module:attribute"`` strings, imported when first used, so the table is complete
without importing any algorithm (and without relying on what ``agents/__init__`` imports).

Adding an algorithm is one new file (its config dataclass with ``algo = "name"``, its
algorithm object, and for an offline one its trainer subclass) plus one :data:`BUILTIN` line,
or a :func:`register` call for one that lives outside this package:

>>> register("toy", config="mypackage.toy:ToyConfig", algorithm="mypackage.toy:Toy")
>>> names()[-1]  # nothing imported yet: mypackage need not exist until "toy" is used
'toy'
>>> unregister("toy")
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; annotations only (3.10 runs this file too)

    from agents.config import TrainConfig
    from agents.trainer import BaseTrainer, TrainerOptions
    from textgym.rewards.base import RewardSpec

ON_POLICY = "agents.onpolicy:OnPolicyTrainer"
"""The trainer of every algorithm that learns from its own rollouts."""


@dataclass(frozen=True)
class Row:
    """One registered algorithm; each part a class or its ``"module:attribute"`` path."""

    config: str | type
    algorithm: str | type
    trainer: str | type = ON_POLICY


@dataclass(frozen=True)
class Entry:
    """A :class:`Row` with its classes imported."""

    name: str
    config: type[TrainConfig]
    algorithm: type
    trainer: type[BaseTrainer]


BUILTIN: dict[str, Row] = {
    "ppo": Row("agents.ppo:PPOConfig", "agents.ppo:PPO"),
    "rloo": Row("agents.rloo:RLOOConfig", "agents.rloo:RLOO"),
    "grpo": Row("agents.grpo:GRPOConfig", "agents.grpo:GRPO"),
    "reinforce": Row("agents.reinforce:REINFORCEConfig", "agents.reinforce:REINFORCE"),
    "sft": Row("agents.sft:SFTConfig", "agents.sft:SFT", "agents.sft:SFTTrainer"),
    "dpo": Row("agents.dpo:DPOConfig", "agents.dpo:DPO", "agents.dpo:DPOTrainer"),
}

_rows: dict[str, Row] = dict(BUILTIN)


def register(
    name: str, config: str | type, algorithm: str | type, trainer: str | type = ON_POLICY
) -> None:
    """Add algorithm ``name``; its config class must set ``algo = name``."""
    if name in _rows:
        raise ValueError(f"algorithm {name!r} is already registered")
    _rows[name] = Row(config, algorithm, trainer)


def unregister(name: str) -> None:
    """Remove an algorithm added with :func:`register` (the built-in ones stay)."""
    if name in BUILTIN:
        raise ValueError(f"{name!r} is a built-in algorithm")
    del _rows[name]


def names() -> list[str]:
    """The registered algorithm names, built-in ones first; imports nothing."""
    return list(_rows)


def _load(target: str | type) -> Any:
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def entry(name: str) -> Entry:
    """The classes of algorithm ``name`` (imported now); unknown names list the valid ones.

    >>> entry("sft").trainer.__name__, entry("grpo").config.__name__
    ('SFTTrainer', 'GRPOConfig')
    >>> entry("sac")
    Traceback (most recent call last):
    ...
    ValueError: unknown algorithm 'sac'; choose one of: ppo, rloo, grpo, reinforce, sft, dpo
    """
    if name not in _rows:
        raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(_rows)}")
    row = _rows[name]
    config = _load(row.config)
    if config.algo != name:
        raise TypeError(
            f"{config.__name__}.algo is {config.algo!r}, but it is registered as {name!r}"
        )
    return Entry(name, config, _load(row.algorithm), _load(row.trainer))


def make_config(algo: str, **options: Any) -> TrainConfig:
    """The config dataclass of ``algo`` with ``options``; unknown names list the valid ones.

    >>> make_config("grpo", batch_size=8).completions_per_prompt
    4
    >>> make_config("sft", top_k=8)
    Traceback (most recent call last):
    ...
    ValueError: unknown option(s) ['top_k'] for sft; valid options: model, tokenizer, task, reward, split, eval_split, chat_template, batch_size, max_prompt_tokens, max_new_tokens, iterations, learning_rate, lr_schedule, weight_decay, grad_accum_steps, max_grad_norm, kl_coef, init, lora_r, lora_alpha, lora_dropout, device, mixed_precision, cpu_bf16, seed, run_dir, eval_every, eval_samples, save_every, report_to, project, progress, data, packing, max_examples
    """
    cls = entry(algo).config
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {algo}; valid options: {', '.join(valid)}"
        )
    return cls(**options)


def trainer_class(config: TrainConfig) -> type[BaseTrainer]:
    """The trainer of ``config``: its algorithm's registered one, or on a conversation task
    (``hidden_item``, ``taskmaster4_order``, ...) the one that plays whole dialogues
    (:func:`agents.dialogue_trainer.dialogue_trainer` says which algorithms can)."""
    trainer = entry(config.algo).trainer
    from textgym.conversation.tasks import list_conversation_tasks

    if config.task.lower() in list_conversation_tasks():
        from agents.dialogue_trainer import dialogue_trainer

        return dialogue_trainer(config.algo, trainer)
    return trainer


def build_trainer(config: TrainConfig, **options: Unpack[TrainerOptions]) -> BaseTrainer:
    """The trainer of ``config`` (:func:`trainer_class`), built on it."""
    return trainer_class(config)(config, **options)


def train(
    algo: str = "ppo", resume: bool = False, reward: RewardSpec | None = None, **options: Any
) -> BaseTrainer:
    """Train from Python: ``train("ppo", task="keywords", model="smollm2-135m", iterations=20)``.

    Options are the fields of the algorithm's config; ``reward`` (a callable or spec)
    overrides the config's. Returns the finished trainer.
    """
    trainer = build_trainer(make_config(algo, **options), reward=reward, resume=resume)
    trainer.train()
    return trainer


__all__ = [
    "BUILTIN",
    "Entry",
    "Row",
    "build_trainer",
    "entry",
    "make_config",
    "names",
    "register",
    "train",
    "trainer_class",
    "unregister",
]
