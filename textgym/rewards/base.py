"""The reward protocol, its validation, weighted mixes and the registry by name.

A reward is any batched callable::

    fn(prompts: list[str], completions: list[str], references: list[list[str]] | None, **meta)
        -> np.ndarray  # float32, shape (B,)

``meta`` holds per-sample task metadata, batched: ``meta["keywords"][i]`` belongs to sample ``i``.
Rewards must accept and ignore meta keys they do not use (``**meta``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RewardFn(Protocol):
    """A batched reward: one float per (prompt, completion) pair."""

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray: ...


RewardSpec = str | RewardFn | Mapping[str, float] | Sequence[tuple[Any, float]]
"""What :func:`make_reward` accepts: a name, ``"module:function"``, a callable, or a weighted mix."""


def reward_name(fn: Any) -> str:
    """A readable name for a reward callable (its ``name`` attribute, function or class name)."""
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return str(name)


def validate_rewards(values: Any, batch_size: int, name: str) -> np.ndarray:
    """Return ``values`` as float32 of shape (batch_size,), or raise an error naming the reward."""
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: torch tensor with grad
        raise TypeError(
            f"reward {name!r} returned {type(values).__name__}, not an array of floats ({exc})"
        ) from exc
    if arr.shape != (batch_size,):
        raise ValueError(
            f"reward {name!r} returned shape {arr.shape}; expected ({batch_size},), one float per completion"
        )
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr)).tolist()
        raise ValueError(f"reward {name!r} returned NaN or inf at batch positions {bad}")
    return arr


def score(
    fn: RewardFn,
    prompts: list[str],
    completions: list[str],
    references: list[list[str]] | None,
    **meta: Any,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Call a reward and return ``(total, components)``, all validated float32 arrays.

    A reward with a ``components(...)`` method (such as :class:`WeightedSum`) reports each
    term; any other reward reports itself as the single component.
    """
    batch = len(completions)
    name = reward_name(fn)
    components_fn = getattr(fn, "components", None)
    if callable(components_fn):
        parts = components_fn(prompts, completions, references, **meta)
        parts = {k: validate_rewards(v, batch, k) for k, v in parts.items()}
        total = validate_rewards(fn.combine(parts), batch, name)  # type: ignore[attr-defined]
        return total, parts
    total = validate_rewards(fn(prompts, completions, references, **meta), batch, name)
    return total, {name: total}


class ComponentReward:
    """A reward built from named parts, each reported as a component by :func:`score`.

    Subclasses define ``components`` (name -> (B,) array) and ``combine`` (the parts -> the
    total); calling the reward is ``combine(components(...))``.
    """

    def components(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None = None,
        **meta: Any,
    ) -> np.ndarray:
        return self.combine(self.components(prompts, completions, references, **meta))


class WeightedSum(ComponentReward):
    """``sum_i w_i * r_i`` over named rewards; each term is reported as a component.

    >>> def one(p, c, r, **m): return np.ones(len(c))
    >>> def length(p, c, r, **m): return np.array([len(x) for x in c], dtype=float)
    >>> mix = WeightedSum([(one, 0.5), (length, 2.0)])
    >>> mix(["p", "p"], ["ab", "abc"], None).tolist()
    [4.5, 6.5]

    Component labels default to each reward's name; ``labels`` overrides them (a mix built
    from ``{"my_reward": 1.0}`` is labelled by the names the user wrote).
    """

    name = "weighted_sum"

    def __init__(
        self, terms: Sequence[tuple[RewardFn, float]], labels: Sequence[str] | None = None
    ) -> None:
        if not terms:
            raise ValueError("WeightedSum needs at least one (reward, weight) term")
        if labels is not None and len(labels) != len(terms):
            raise ValueError(f"WeightedSum got {len(labels)} labels for {len(terms)} terms")
        self.terms: list[tuple[str, RewardFn, float]] = []
        seen: dict[str, int] = {}
        for k, (fn, weight) in enumerate(terms):
            if not callable(fn):
                raise TypeError(f"WeightedSum term {fn!r} is not callable")
            base = labels[k] if labels is not None else reward_name(fn)
            seen[base] = seen.get(base, 0) + 1
            label = base if seen[base] == 1 else f"{base}_{seen[base]}"
            self.terms.append((label, fn, float(weight)))

    def components(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> dict[str, np.ndarray]:
        return {
            label: validate_rewards(
                fn(prompts, completions, references, **meta), len(completions), label
            )
            for label, fn, _ in self.terms
        }

    def combine(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return sum(w * parts[label] for label, _, w in self.terms).astype(np.float32)

    def __repr__(self) -> str:
        return "WeightedSum(" + ", ".join(f"{label}*{w:g}" for label, _, w in self.terms) + ")"


RewardBuilder = Callable[..., RewardFn]
_REWARDS: dict[str, RewardBuilder] = {}

_METRICS = "textgym.rewards.metrics"
_REWARD_MODEL = "textgym.feedback.reward_model"
BUILTIN_REWARDS: Mapping[str, str] = {
    "bleu": _METRICS,
    "chrf": _METRICS,
    "keyword_coverage": _METRICS,
    "keyword_coverage_soft": _METRICS,
    "length": _METRICS,
    "novelty": _METRICS,
    "repetition": _METRICS,
    "rouge1": _METRICS,
    "rouge2": _METRICS,
    "rouge_l": _METRICS,
    "semantic_similarity": _METRICS,
    "judge": "textgym.rewards.judge",
    "safety": "textgym.rewards.safety",
    "human": "textgym.feedback.human",
    "hf_classifier": _REWARD_MODEL,
    "reward_model": _REWARD_MODEL,
    "discriminator": "textgym.rewards.discriminator",
    "lm_fluency": "textgym.rewards.fluency",
    "keyword_sentence": "textgym.rewards.fluency",
    "sst2_sentiment": "textgym.feedback.recipes",
    "sst2_positive": "textgym.feedback.recipes",
    "taskmaster4_rm": "textgym.feedback.recipes",
    "reference_length": "textgym.rewards.summary",
    "rouge_minilm": "textgym.rewards.summary",
}
"""Built-in reward name -> the module whose import registers it.

A family is imported when one of its names is first built, so ``import textgym`` pays for none
of them (the judge, safety and reward-model families pull in HTTP clients, SQLite or torch).
"""


def register_reward(name: str, builder: RewardBuilder) -> None:
    """Register ``builder(**kwargs) -> RewardFn`` under ``name`` (lower case)."""
    _REWARDS[name.lower()] = builder


def list_rewards() -> list[str]:
    """Names accepted by :func:`make_reward` (besides ``"module:function"``); imports nothing.

    >>> {"rouge_l", "judge", "reward_model"} <= set(list_rewards())
    True
    """
    return sorted(_REWARDS.keys() | BUILTIN_REWARDS.keys())


def _builder(key: str) -> RewardBuilder | None:
    """The builder registered under ``key``, importing its built-in family on first use."""
    if key not in _REWARDS and key in BUILTIN_REWARDS:
        # The import registers the whole family; names registered before it (a user's own
        # builder under a built-in name) keep winning, as when every family loaded up front.
        before = dict(_REWARDS)
        importlib.import_module(BUILTIN_REWARDS[key])
        _REWARDS.update(before)
        if key not in _REWARDS:
            raise RuntimeError(
                f"importing {BUILTIN_REWARDS[key]} did not register the reward {key!r}"
            )
    return _REWARDS.get(key)


def _from_import_path(path: str) -> RewardFn:
    module_name, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"reward {path!r}: cannot import {attr!r} from module {module_name!r} ({exc})"
        ) from exc
    if not callable(obj):
        raise TypeError(f"reward {path!r} is not callable")
    return obj


def _mix(pairs: list[tuple[Any, float]]) -> WeightedSum:
    """A weighted sum labelled by the registered names the user wrote (else the reward's name)."""
    fns = [make_reward(k) for k, _ in pairs]
    labels = [
        k.lower() if isinstance(k, str) and ":" not in k else reward_name(fn)
        for (k, _), fn in zip(pairs, fns, strict=True)
    ]
    return WeightedSum([(fn, float(w)) for fn, (_, w) in zip(fns, pairs, strict=True)], labels)


def _adapt(fn: Any) -> RewardFn:
    """``fn`` itself, or wrapped by :func:`~textgym.rewards.trl.from_trl` when it is TRL-style."""
    from textgym.rewards.trl import from_trl, is_trl_style

    return from_trl(fn) if is_trl_style(fn) else fn


def make_reward(spec: RewardSpec, **kwargs: Any) -> RewardFn:
    """Resolve a reward specification.

    Accepts a registered name (``"rouge_l"``), ``"package.module:function"``, any callable,
    a mapping ``{spec: weight}`` or a list of ``(spec, weight)`` pairs (a :class:`WeightedSum`).
    ``kwargs`` go to the builder of a registered name.

    A callable (or imported function) in TRL's convention is wrapped with
    :func:`textgym.rewards.trl.from_trl`. The rule: its signature has a parameter named
    ``completions`` and none named ``references``. So ``f(completions, **kwargs)`` and
    ``f(prompts, completions, solution, **kwargs)`` are TRL-style, while
    ``f(prompts, completions, references, **meta)`` and ``f(p, c, r, **m)`` are textgym-style;
    call :func:`~textgym.rewards.trl.from_trl` yourself for other column names or options.

    >>> make_reward({"length": 1.0, "repetition": 0.5})
    WeightedSum(length*1, repetition*0.5)
    """
    if isinstance(spec, str):
        builder = _builder(spec.lower())
        if builder is not None:
            return builder(**kwargs)
        if ":" in spec:
            if kwargs:
                raise TypeError(
                    f"reward {spec!r}: options {sorted(kwargs)} only apply to registered names"
                )
            return _adapt(_from_import_path(spec))
        raise ValueError(
            f"unknown reward {spec!r}; registered rewards: {', '.join(list_rewards())}, "
            "or 'package.module:function', a callable, or a {name: weight} mix"
        )
    if kwargs:
        raise TypeError(f"reward options {sorted(kwargs)} only apply to a registered reward name")
    if isinstance(spec, Mapping):
        return _mix(list(spec.items()))
    if callable(spec):
        return _adapt(spec)
    if isinstance(spec, Sequence) and all(isinstance(t, tuple) and len(t) == 2 for t in spec):
        return _mix(list(spec))
    raise TypeError(
        f"reward must be a name, 'module:function', a callable or a weighted mix, got {type(spec).__name__}"
    )
