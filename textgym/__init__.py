"""textgym: token-level text generation as a Gymnasium environment.

``gym.make("TextGen-v0")`` gives a :class:`~textgym.env.TextGenEnv`;
``gym.make_vec("TextGen-v0", num_envs=B)`` gives a native :class:`~textgym.vector.TextGenVectorEnv`.
"""

from gymnasium.envs.registration import register, registry

from textgym import rewards, tasks
from textgym.env import TextGenEnv
from textgym.rewards import RewardFn, WeightedSum, list_rewards, make_reward, register_reward
from textgym.tasks import Sample, Task, list_tasks, make_task, register_task
from textgym.vector import TextGenVectorEnv

__version__ = "0.1.0"

if "TextGen-v0" not in registry:
    register(
        id="TextGen-v0",
        entry_point="textgym.env:TextGenEnv",
        vector_entry_point="textgym.vector:TextGenVectorEnv",
    )

__all__ = [
    "RewardFn",
    "Sample",
    "Task",
    "TextGenEnv",
    "TextGenVectorEnv",
    "WeightedSum",
    "list_rewards",
    "list_tasks",
    "make_reward",
    "make_task",
    "register_reward",
    "register_task",
    "rewards",
    "tasks",
]
