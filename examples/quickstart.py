"""Quickstart: one episode of TextGen-v0 with SmolLM2 choosing tokens greedily, then a batch.

Run: ``python examples/quickstart.py``
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.models import load_model


def main() -> None:
    env = gym.make("TextGen-v0", task="keywords", max_new_tokens=24)
    model = load_model("smollm2-135m")
    obs, info = env.reset(seed=0)
    print("prompt:", info["prompt"])
    terminated = False
    while not terminated:
        ids = torch.as_tensor(obs["input_ids"])[None]  # (1, P+N)
        mask = torch.as_tensor(obs["attention_mask"], dtype=torch.long)[None]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        last = int(mask[0].nonzero().max())  # the newest token's slot
        obs, reward, terminated, truncated, info = env.step(int(logits[0, last].argmax()))
    print("completion:", info["completion"])
    print("reward:", reward, info["reward_components"])

    # A vector env scores all episodes that end in one step with one batched reward call.
    envs = gym.make_vec("TextGen-v0", num_envs=4, max_new_tokens=8, reward={"length": 1.0})
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(8):
        _, rewards, terminated, _, info = envs.step(rng.integers(300, 20000, size=4))
    print("random-token rewards:", rewards, "ended:", terminated)


if __name__ == "__main__":
    main()
