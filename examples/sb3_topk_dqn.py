"""DQN or QR-DQN choose among the reference LM's k most likely next tokens (value-based agents).

``TopKActions`` turns the 49,152-token choice into ``Discrete(k)`` with a small float
observation (the candidates' reference log-probabilities, their similarity to the prompt,
whether they were used already, progress, and the reference's last hidden state), so a plain
MLP Q-network learns which candidate to write.

    python examples/sb3_topk_dqn.py                  # SmolLM2-135M reference, DQN
    python examples/sb3_topk_dqn.py --algo qrdqn --tiny
"""

from __future__ import annotations

import argparse

from sb3_contrib import QRDQN
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.models import load_model, shared_tokenizer, tiny_model
from textgym.reference import ReferenceLM
from textgym.wrappers import TopKActions


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["dqn", "qrdqn"], default="dqn")
    parser.add_argument("--timesteps", type=int, default=2000, help="env steps (tokens) to train")
    parser.add_argument("--k", type=int, default=8, help="candidate tokens per step")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="a tiny random reference LM")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = shared_tokenizer("smollm2-135m")
    reference = ReferenceLM(tiny_model(tokenizer) if args.tiny else load_model("smollm2-135m"))
    env = make_vec_env(
        "TextGen-v0",
        n_envs=1,
        seed=args.seed,
        # render_mode: make_vec_env asks for "rgb_array" unless told; TextGen renders text.
        env_kwargs={
            "task": "keywords",
            "max_new_tokens": args.max_new_tokens,
            "render_mode": "ansi",
        },
        wrapper_class=TopKActions,
        wrapper_kwargs={"reference": reference, "k": args.k},
    )
    algo = DQN if args.algo == "dqn" else QRDQN
    learning_starts = min(200, args.timesteps // 4)
    model = algo("MlpPolicy", env, learning_rate=5e-4, buffer_size=20_000,
                 learning_starts=learning_starts, batch_size=64, train_freq=4,
                 target_update_interval=250, exploration_fraction=0.3, gamma=1.0,
                 seed=args.seed, verbose=1)  # fmt: skip
    before, _ = evaluate_policy(model, env, n_eval_episodes=8)
    model.learn(args.timesteps, progress_bar=True)
    after, _ = evaluate_policy(model, env, n_eval_episodes=8)
    print(f"mean episode reward (greedy): {before:.3f} before, {after:.3f} after")
    return after


if __name__ == "__main__":
    main()
