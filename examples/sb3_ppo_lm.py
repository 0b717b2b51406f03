"""PPO or A2C fine-tune a language model on TextGen-v0 with the SB3 LM policy and KL shaping.

The actor is the LM itself ("LMPolicy" from ``agents.sb3``), the critic a value head on its last
hidden state. ``KLPenalty`` + ``KLRewardCallback`` keep the policy near the frozen starting
model: every token's reward gets ``-beta * (log pi - log pi_ref)``.

    python examples/sb3_ppo_lm.py                      # SmolLM2-135M, keywords task, PPO
    python examples/sb3_ppo_lm.py --algo a2c --tiny    # a tiny random LM: a quick check
"""

from __future__ import annotations

import argparse

from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import textgym  # noqa: F401  (registers TextGen-v0)
from agents.sb3 import KLRewardCallback
from textgym.models import load_model, shared_tokenizer, tiny_model
from textgym.reference import ReferenceLM
from textgym.wrappers import KLPenalty


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["ppo", "a2c"], default="ppo")
    parser.add_argument("--timesteps", type=int, default=256, help="env steps (tokens) to train")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient")
    parser.add_argument("--tiny", action="store_true", help="tiny random LMs instead of SmolLM2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = shared_tokenizer("smollm2-135m")
    policy_lm = tiny_model(tokenizer) if args.tiny else load_model("smollm2-135m")
    reference = ReferenceLM(tiny_model(tokenizer) if args.tiny else load_model("smollm2-135m"))
    envs = make_vec_env(
        "TextGen-v0",
        n_envs=args.num_envs,
        seed=args.seed,
        # render_mode: make_vec_env asks for "rgb_array" unless told; TextGen renders text.
        env_kwargs={
            "task": "keywords",
            "max_new_tokens": args.max_new_tokens,
            "render_mode": "ansi",
        },
        wrapper_class=KLPenalty,
        wrapper_kwargs={"reference": reference, "beta": args.beta},
    )
    common = {"gamma": 1.0, "seed": args.seed, "verbose": 1, "policy_kwargs": {"model": policy_lm}}
    if args.algo == "ppo":
        # A rollout of one episode per env in two minibatches: each minibatch holds every
        # episode, and the LM policy prefills an episode once for all its steps there.
        n_steps = args.max_new_tokens
        batch = max(1, n_steps * args.num_envs // 2)
        model = PPO("LMPolicy", envs, learning_rate=1e-5, n_steps=n_steps, batch_size=batch,
                    n_epochs=2, **common)  # fmt: skip
    else:
        model = A2C("LMPolicy", envs, learning_rate=1e-5, n_steps=8, **common)

    before, _ = evaluate_policy(model, envs, n_eval_episodes=8, deterministic=False)
    model.learn(args.timesteps, callback=KLRewardCallback(), progress_bar=True)
    after, _ = evaluate_policy(model, envs, n_eval_episodes=8, deterministic=False)
    print(f"mean episode reward: {before:.3f} before, {after:.3f} after {args.timesteps} steps")
    return after


if __name__ == "__main__":
    main()
