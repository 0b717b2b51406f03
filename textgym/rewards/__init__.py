"""Rewards for textgym: the batched reward protocol, a registry by name, and the reward families.

``make_reward("rouge_l")``, ``make_reward({"keyword_coverage": 1.0, "repetition": 0.5})`` or
``make_reward("my_package.module:my_reward")`` give a callable
``reward(prompts, completions, references, **meta) -> np.ndarray (float32, (B,))``;
:func:`score` returns its total and per-component values, validated. :func:`list_rewards`
names every built-in reward; a family's module (metrics, judge, safety, the human and learned
rewards) is imported only when one of its rewards is first built or one of its classes is
first read from this package (``textgym.rewards.JudgeReward``). :func:`to_trl` and
:func:`from_trl` convert rewards to and from TRL's reward-function convention.
"""

from __future__ import annotations

import importlib
from typing import Any

from textgym.rewards.base import (
    BUILTIN_REWARDS,
    ComponentReward,
    RewardBuilder,
    RewardFn,
    RewardSpec,
    WeightedSum,
    list_rewards,
    make_reward,
    register_reward,
    reward_name,
    score,
    validate_rewards,
)

_METRICS = "textgym.rewards.metrics"
_REWARD_MODEL = "textgym.feedback.reward_model"
_JUDGE = "textgym.rewards.judge"
_TRL = "textgym.rewards.trl"
# Attribute -> the module that defines it, imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    "Bleu": _METRICS,
    "Chrf": _METRICS,
    "KeywordCoverage": _METRICS,
    "LengthReward": _METRICS,
    "RepetitionPenalty": _METRICS,
    "Rouge": _METRICS,
    "SemanticSimilarity": _METRICS,
    "SoftKeywordCoverage": _METRICS,
    "SourceNovelty": _METRICS,
    "keyword_found": _METRICS,
    "HumanReward": "textgym.feedback.human",
    "ClassifierReward": _REWARD_MODEL,
    "LearnedReward": _REWARD_MODEL,
    "JudgeReward": _JUDGE,
    "LocalJudge": _JUDGE,
    "RemoteJudge": _JUDGE,
    "SafetyPenalty": "textgym.rewards.safety",
    "TRLReward": _TRL,
    "from_trl": _TRL,
    "to_trl": _TRL,
}
_SUBMODULES = ("judge", "metrics", "safety", "trl")


def __getattr__(name: str) -> Any:
    """Import a reward family the first time one of its names is read from this package."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later reads skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY.keys() | set(_SUBMODULES))


__all__ = [
    "BUILTIN_REWARDS",
    "Bleu",
    "Chrf",
    "ClassifierReward",
    "ComponentReward",
    "HumanReward",
    "JudgeReward",
    "KeywordCoverage",
    "LearnedReward",
    "LengthReward",
    "LocalJudge",
    "RemoteJudge",
    "RepetitionPenalty",
    "RewardBuilder",
    "RewardFn",
    "RewardSpec",
    "Rouge",
    "SafetyPenalty",
    "SemanticSimilarity",
    "SoftKeywordCoverage",
    "SourceNovelty",
    "TRLReward",
    "WeightedSum",
    "from_trl",
    "keyword_found",
    "list_rewards",
    "make_reward",
    "register_reward",
    "reward_name",
    "score",
    "to_trl",
    "validate_rewards",
]
