"""Rewards for textgym: the batched reward protocol, a registry by name, and the reward families.

``make_reward("rouge_l")``, ``make_reward({"keyword_coverage": 1.0, "repetition": 0.5})`` or
``make_reward("my_package.module:my_reward")`` give a callable
``reward(prompts, completions, references, **meta) -> np.ndarray (float32, (B,))``;
:func:`score` returns its total and per-component values, validated. Importing this package
registers every built-in reward; :func:`list_rewards` names them.
"""

from textgym.rewards.base import (
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
from textgym.rewards.metrics import (
    Bleu,
    Chrf,
    KeywordCoverage,
    LengthReward,
    RepetitionPenalty,
    Rouge,
    SemanticSimilarity,
    SoftKeywordCoverage,
    keyword_found,
)

# Other reward families register themselves on import: add one import line per module here.
# isort: split
from textgym.feedback.human import HumanReward
from textgym.feedback.reward_model import ClassifierReward, LearnedReward
from textgym.rewards.judge import JudgeReward, LocalJudge, RemoteJudge
from textgym.rewards.safety import SafetyPenalty

__all__ = [
    "Bleu",
    "Chrf",
    "ClassifierReward",
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
    "WeightedSum",
    "keyword_found",
    "list_rewards",
    "make_reward",
    "register_reward",
    "reward_name",
    "score",
    "validate_rewards",
]
