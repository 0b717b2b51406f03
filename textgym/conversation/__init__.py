"""Multi-turn dialogue: ``TextGen-Conversation-v0``, its user simulators and conversation tasks.

``gym.make("TextGen-Conversation-v0")`` gives a :class:`~textgym.conversation.env.ConversationEnv`;
``gym.make_vec("TextGen-Conversation-v0", num_envs=B)`` a native
:class:`~textgym.conversation.vector.ConversationVectorEnv`. See docs/conversation.md.
"""

from textgym.conversation.simulators import (
    USERS,
    HumanUser,
    LMUser,
    RemoteUser,
    ReplayUser,
    ScriptedUser,
    UserSimulator,
    make_user,
)
from textgym.conversation.tasks import (
    ConversationTask,
    hidden_item_task,
    list_conversation_tasks,
)

__all__ = [
    "USERS",
    "ConversationTask",
    "HumanUser",
    "LMUser",
    "RemoteUser",
    "ReplayUser",
    "ScriptedUser",
    "UserSimulator",
    "hidden_item_task",
    "list_conversation_tasks",
    "make_user",
]
