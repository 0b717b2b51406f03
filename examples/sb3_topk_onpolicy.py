"""PPO/A2C with an MLP, TRPO and RecurrentPPO (LSTM) pick among the reference LM's top-k tokens.

The same ``TopKActions`` wrapper as ``sb3_topk_dqn.py``, with on-policy agents: the policy is a
small network over candidate features, so training costs little beyond the reference LM's
forward (one incremental token per step, through its prefix KV cache).

    python examples/sb3_topk_onpolicy.py --algo trpo
    python examples/sb3_topk_onpolicy.py --algo recurrentppo --tiny
"""

from __future__ import annotations

import argparse

from sb3_contrib import TRPO, RecurrentPPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.models import load_model, shared_tokenizer, tiny_model
from textgym.reference import ReferenceLM
from textgym.wrappers import TopKActions

ALGOS = {
    "ppo": (PPO, "MlpPolicy"),
    "a2c": (A2C, "MlpPolicy"),
    "trpo": (TRPO, "MlpPolicy"),
    "recurrentppo": (RecurrentPPO, "MlpLstmPolicy"),
}


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=sorted(ALGOS), default="ppo")
    parser.add_argument("--timesteps", type=int, default=2048, help="env steps (tokens) to train")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--k", type=int, default=8, help="candidate tokens per step")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="a tiny random reference LM")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = shared_tokenizer("smollm2-135m")
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
        wrapper_class=TopKActions,
        wrapper_kwargs={"reference": reference, "k": args.k},
    )
    algo, policy = ALGOS[args.algo]
    n_steps = min(64, max(2, args.timesteps // args.num_envs))
    model = algo(policy, envs, n_steps=n_steps, gamma=1.0, seed=args.seed, verbose=1)
    before, _ = evaluate_policy(model, envs, n_eval_episodes=8, deterministic=False)
    model.learn(args.timesteps, progress_bar=True)
    after, _ = evaluate_policy(model, envs, n_eval_episodes=8, deterministic=False)
    print(f"mean episode reward: {before:.3f} before, {after:.3f} after {args.timesteps} steps")
    return after


if __name__ == "__main__":
    main()
