"""textgym: token-level text generation as a Gymnasium environment.

``gym.make("TextGen-v0")`` gives a :class:`~textgym.env.TextGenEnv`;
``gym.make_vec("TextGen-v0", num_envs=B)`` gives a native :class:`~textgym.vector.TextGenVectorEnv`.
"""

from gymnasium.envs.registration import register, registry

from textgym import conversation, rewards, tasks
from textgym.env import TextGenEnv
from textgym.rewards import RewardFn, WeightedSum, list_rewards, make_reward, register_reward
from textgym.tasks import Sample, Task, list_tasks, make_task, register_task
from textgym.vector import TextGenVectorEnv

__version__ = "0.2.0"

# TextGen-v0 takes any task; the variants fix one (e.g. gym.make("TextGen-DialogSum-v0")).
TASK_VARIANTS = {
    "": None,
    "Keywords": "keywords",
    "Summarize": "summarize",
    "Dialogue": "dialogue",
    "DialogSum": "dialogsum",
    "SAMSum": "samsum",
    "SciTLDR": "scitldr",
    "Taskmaster4": "taskmaster4",
    "DailyDialog": "dailydialog",
    "CNNDailyMail": "cnn_dailymail",
    "XSum": "xsum",
    "IMDB": "imdb",
}
for _variant, _task in TASK_VARIANTS.items():
    _id = f"TextGen-{_variant}-v0" if _variant else "TextGen-v0"
    if _id not in registry:
        register(
            id=_id,
            entry_point="textgym.env:TextGenEnv",
            vector_entry_point="textgym.vector:TextGenVectorEnv",
            kwargs={"task": _task} if _task else {},
        )

# A whole dialogue with a simulated user (TextGen-Dialogue-v0 is the single-turn task).
if "TextGen-Conversation-v0" not in registry:
    register(
        id="TextGen-Conversation-v0",
        entry_point="textgym.conversation.env:ConversationEnv",
        vector_entry_point="textgym.conversation.vector:ConversationVectorEnv",
    )

__all__ = [
    "RewardFn",
    "Sample",
    "Task",
    "TextGenEnv",
    "TextGenVectorEnv",
    "WeightedSum",
    "conversation",
    "list_rewards",
    "list_tasks",
    "make_reward",
    "make_task",
    "register_reward",
    "register_task",
    "rewards",
    "tasks",
]
