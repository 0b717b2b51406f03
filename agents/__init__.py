"""Agents that learn against textgym: a GPU-batched transformer policy and its trainers.

>>> from agents import make_config
>>> make_config("ppo", batch_size=8).gae_lambda
0.95
"""

from agents.config import TrainConfig
from agents.dpo import DPOConfig, DPOTrainer  # registers "dpo" (and, through agents.sft, "sft")
from agents.grpo import GRPOConfig
from agents.policy import Rollout, Sampling, TransformerPolicy, rollout
from agents.ppo import PPOConfig
from agents.reinforce import REINFORCEConfig
from agents.rloo import RLOOConfig
from agents.sft import SFTConfig, SFTTrainer
from agents.trainer import ALGORITHMS, TRAINERS, Trainer, TrainingStopped, make_config, train

__all__ = [
    "ALGORITHMS",
    "DPOConfig",
    "DPOTrainer",
    "GRPOConfig",
    "PPOConfig",
    "REINFORCEConfig",
    "RLOOConfig",
    "Rollout",
    "SFTConfig",
    "SFTTrainer",
    "Sampling",
    "TRAINERS",
    "TrainConfig",
    "Trainer",
    "TrainingStopped",
    "TransformerPolicy",
    "make_config",
    "rollout",
    "train",
]
