"""Plug in your own reward: any batched function works, alone or in a weighted mix.

Run: ``python examples/custom_reward.py``
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import textgym


def mentions_all_keywords_politely(prompts, completions, references, **meta):
    """1 per keyword found, +1 for 'please'; ``meta["keywords"]`` comes from the task."""
    scores = []
    for completion, keywords in zip(completions, meta["keywords"], strict=True):
        words = completion.lower().split()
        scores.append(sum(k in words for k in keywords) + ("please" in words))
    return np.asarray(scores, dtype=np.float32)


def main() -> None:
    textgym.register_reward("polite_keywords", lambda: mentions_all_keywords_politely)
    env = gym.make(
        "TextGen-v0",
        task="keywords",
        reward={"polite_keywords": 1.0, "repetition": 0.5},  # components are reported apart
        max_new_tokens=16,
    )
    obs, info = env.reset(seed=1)
    keywords = env.unwrapped.task.split("train")[info["index"]].meta["keywords"]
    text = "please " + " ".join(keywords)
    for token in env.unwrapped.tokenizer.encode(text, add_special_tokens=False):
        obs, reward, terminated, truncated, info = env.step(token)
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.eos_token_id)
    print(f"{info['completion']!r}: reward {reward} = {info['reward_components']}")


if __name__ == "__main__":
    main()
