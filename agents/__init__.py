"""Agents that learn against textgym: a GPU-batched transformer policy and its trainers.

>>> from agents import make_config
>>> make_config("ppo", batch_size=8).gae_lambda
0.95
"""

from agents.config import TrainConfig
from agents.grpo import GRPOConfig
from agents.policy import Rollout, Sampling, TransformerPolicy, rollout
from agents.ppo import PPOConfig
from agents.reinforce import REINFORCEConfig
from agents.rloo import RLOOConfig
from agents.trainer import ALGORITHMS, Trainer, TrainingStopped, make_config, train

__all__ = [
    "ALGORITHMS",
    "GRPOConfig",
    "PPOConfig",
    "REINFORCEConfig",
    "RLOOConfig",
    "Rollout",
    "Sampling",
    "TrainConfig",
    "Trainer",
    "TrainingStopped",
    "TransformerPolicy",
    "make_config",
    "rollout",
    "train",
]
