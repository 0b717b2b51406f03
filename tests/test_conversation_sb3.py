"""stable-baselines3 / sb3-contrib on TextGen-Conversation-v0 with the LM policy."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

import agents.sb3  # noqa: F401 - registers the "LMPolicy" alias
import textgym  # noqa: F401 - registers the env ids
from textgym.models import tiny_model
from textgym.reference import ReferenceLM
from textgym.wrappers import ReferenceActionMask

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_env(tokenizer) -> gym.Env:
    return gym.make(
        "TextGen-Conversation-v0",
        tokenizer=tokenizer,
        max_context_tokens=128,
        max_turn_tokens=3,
        max_turns=2,
    )


class Episodes(BaseCallback):
    """Counts finished dialogues and the turns that ended with a user reply."""

    def __init__(self) -> None:
        super().__init__()
        self.finished = self.replies = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self.finished += "finish_reason" in info
            self.replies += "user_message" in info
        return True


@pytest.mark.parametrize("algo", ["PPO", "MaskablePPO"])
def test_lm_policy_trains_on_whole_dialogues(tokenizer, algo):
    if algo == "PPO":
        venv = DummyVecEnv([lambda: make_env(tokenizer)] * 2)
        model = PPO("LMPolicy", venv, n_steps=12, batch_size=12, n_epochs=1,
                    policy_kwargs={"model": tiny_model(tokenizer)})  # fmt: skip
    else:
        reference = ReferenceLM(tiny_model(tokenizer, seed=1))
        venv = DummyVecEnv(
            [lambda: ReferenceActionMask(make_env(tokenizer), reference, top_k=5)] * 2
        )
        model = MaskablePPO("LMPolicy", venv, n_steps=12, batch_size=12, n_epochs=1,
                            policy_kwargs={"model": tiny_model(tokenizer)})  # fmt: skip
    before = [p.detach().clone() for p in model.policy.parameters()]
    episodes = Episodes()
    model.learn(24, callback=episodes)
    # At most 3 tokens a turn and 2 turns: each sub-env finishes at least 2 dialogues in its 12
    # steps, and a user reply comes between the turns of a dialogue unless the user ended it.
    assert episodes.finished >= 4 and episodes.replies >= 2
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)
    )
