"""MaskablePPO fine-tunes an LM whose next token is restricted to the reference LM's top-k (NLPO).

``ReferenceActionMask`` exposes ``action_masks()``: the k tokens the frozen reference model
finds most likely after the current prefix. sb3-contrib's MaskablePPO reads the masks through
the vector env and never emits a masked token. As in NLPO, ``KLPenalty`` and
``KLRewardCallback`` also charge each token its KL to the reference: within the top k the
policy can still drift (to repeating the prompt, on sentiment control) without it.

    python examples/sb3_maskable_ppo.py          # SmolLM2-135M policy and reference
    python examples/sb3_maskable_ppo.py --tiny   # tiny random LMs: a quick check
"""

from __future__ import annotations

import argparse

import gymnasium as gym
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401  (registers TextGen-v0)
from agents.sb3 import KLRewardCallback  # importing agents.sb3 registers "LMPolicy"
from textgym.models import load_model, shared_tokenizer, tiny_model
from textgym.reference import ReferenceLM
from textgym.wrappers import KLPenalty, ReferenceActionMask


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=256, help="env steps (tokens) to train")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=16, help="allowed tokens per step")
    parser.add_argument("--kl-coef", type=float, default=0.05, help="KL penalty per token")
    parser.add_argument("--tiny", action="store_true", help="tiny random LMs instead of SmolLM2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = shared_tokenizer("smollm2-135m")
    policy_lm = tiny_model(tokenizer) if args.tiny else load_model("smollm2-135m")
    # One ReferenceLM shared by all envs and both wrappers: one batched forward per vector step.
    reference = ReferenceLM(tiny_model(tokenizer) if args.tiny else load_model("smollm2-135m"))

    def nlpo(env: gym.Env) -> gym.Env:
        masked = ReferenceActionMask(env, reference, top_k=args.top_k)
        return KLPenalty(masked, reference, beta=args.kl_coef)

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
        wrapper_class=nlpo,
    )
    n_steps = args.max_new_tokens  # one episode per env a rollout, in two minibatches of them
    model = MaskablePPO(
        "LMPolicy",
        envs,
        learning_rate=1e-5,
        n_steps=n_steps,
        batch_size=max(1, n_steps * args.num_envs // 2),  # each episode prefilled once in each
        n_epochs=2,
        gamma=1.0,
        seed=args.seed,
        verbose=1,
        policy_kwargs={"model": policy_lm},
    )
    before, _ = evaluate_policy(model, envs, n_eval_episodes=8, deterministic=False)
    model.learn(args.timesteps, callback=KLRewardCallback(), progress_bar=True)
    after, _ = evaluate_policy(model, envs, n_eval_episodes=8, deterministic=False)
    masked = sum(envs.get_attr("masked_actions_taken"))
    print(f"mean episode reward: {before:.3f} before, {after:.3f} after {args.timesteps} steps")
    print(f"masked tokens emitted: {masked}")
    return after


if __name__ == "__main__":
    main()
