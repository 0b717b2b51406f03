"""Issue 17, item 1: SB3's standard entry point, ``make_vec_env("TextGen-v0", ...)``, which
passes ``render_mode="rgb_array"``, builds working envs for PPO, A2C and MaskablePPO."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import agents.sb3  # noqa: F401  (registers "LMPolicy")
from textgym.models import tiny_model
from textgym.reference import ReferenceLM
from textgym.wrappers import ReferenceActionMask

from .test_sb3 import keyword_task, word_tokenizer

ALGOS = {
    "PPO": lambda venv, lm: PPO("LMPolicy", venv, n_steps=16, batch_size=32, n_epochs=1,
                                policy_kwargs={"model": lm}),
    "A2C": lambda venv, lm: A2C("LMPolicy", venv, n_steps=8, policy_kwargs={"model": lm}),
    "MaskablePPO": lambda venv, lm: MaskablePPO("LMPolicy", venv, n_steps=16, batch_size=32,
                                                n_epochs=1, policy_kwargs={"model": lm}),
}  # fmt: skip


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_make_vec_env_trains(algo, vec_env_cls):
    torch.set_num_threads(1)
    tokenizer = word_tokenizer()
    env_kwargs = dict(task=keyword_task(), tokenizer=tokenizer, chat_template=False,
                      max_prompt_tokens=4, max_new_tokens=3)  # fmt: skip
    masked = algo == "MaskablePPO"
    wrapper = dict(
        wrapper_class=ReferenceActionMask,
        wrapper_kwargs={"reference": ReferenceLM(tiny_model(tokenizer, seed=1)), "top_k": 4},
    )
    vec_kwargs = {"start_method": "fork"} if vec_env_cls is SubprocVecEnv else None
    # SB3's default mode is warned about, not refused (in the child process for Subproc).
    expect = pytest.warns(UserWarning, match="rgb_array") if vec_kwargs is None else nullcontext()
    with expect:
        venv = make_vec_env("TextGen-v0", n_envs=2, seed=0, env_kwargs=env_kwargs,
                            vec_env_cls=vec_env_cls, vec_env_kwargs=vec_kwargs,
                            **(wrapper if masked else {}))  # fmt: skip
    try:
        assert venv.render_mode is None and venv.num_envs == 2
        model = ALGOS[algo](venv, tiny_model(tokenizer))
        model.learn(64)
        assert model.num_timesteps == 64
        obs = venv.reset()
        masks = {"action_masks": get_action_masks(venv)} if masked else {}
        action, _ = model.predict(obs, **masks)
        _, rewards, dones, infos = venv.step(action)
        assert rewards.shape == (2,) and np.isfinite(rewards).all()
        if masked:
            assert sum(venv.get_attr("masked_actions_taken")) == 0
    finally:
        venv.close()
