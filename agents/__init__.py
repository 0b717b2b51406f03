"""Agents that learn against textgym: a GPU-batched transformer policy and its trainers.

Algorithms are rows of :mod:`agents.registry` (name -> config, algorithm, trainer);
:func:`make_config` and :func:`train` read it.

>>> from agents import make_config
>>> make_config("ppo", batch_size=8).gae_lambda
0.95
"""

from agents.config import OfflineConfig, OnPolicyConfig, TrainConfig
from agents.dpo import DPOConfig, DPOTrainer
from agents.grpo import GRPOConfig
from agents.hub import push_to_hub
from agents.offline import OfflineTrainer
from agents.onpolicy import OnPolicyTrainer, Trainer
from agents.policy import Rollout, Sampling, TransformerPolicy, load_policy, rollout
from agents.ppo import PPOConfig
from agents.registry import build_trainer, make_config, register, train
from agents.reinforce import REINFORCEConfig
from agents.rloo import RLOOConfig
from agents.sft import SFTConfig, SFTTrainer
from agents.trainer import BaseTrainer, TrainingStopped

__all__ = [
    "BaseTrainer",
    "DPOConfig",
    "DPOTrainer",
    "GRPOConfig",
    "OfflineConfig",
    "OfflineTrainer",
    "OnPolicyConfig",
    "OnPolicyTrainer",
    "PPOConfig",
    "REINFORCEConfig",
    "RLOOConfig",
    "Rollout",
    "SFTConfig",
    "SFTTrainer",
    "Sampling",
    "TrainConfig",
    "Trainer",
    "TrainingStopped",
    "TransformerPolicy",
    "build_trainer",
    "load_policy",
    "make_config",
    "push_to_hub",
    "register",
    "rollout",
    "train",
]
