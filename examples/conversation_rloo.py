"""RL on whole hidden_item dialogues: RLOO by default, ``--algo`` ppo, grpo or reinforce.

SmolLM2-135M-Instruct plays the embedded ``hidden_item`` task. A scripted user hides one of
``--choices`` animals and answers yes/no questions; the agent wins when its last turn names the
animal alone (reward: success minus 0.1 a turn). Each iteration plays ``--goals`` goals
``--group`` times each through ``TextGen-Conversation-v0`` with
:func:`agents.dialogue.train_step` (one KV-cache forward per step, the env's inserted tokens
prefilled, the loss masked to agent tokens; RLOO's leave-one-out baseline within a group) and
updates the last ``--layers`` transformer blocks (and the value head for PPO and REINFORCE,
whose GAE runs over agent tokens). Success on the validation split (every validation goal
played the same number of times, the same sampling seed) is measured before and after.

    OMP_NUM_THREADS=2 python examples/conversation_rloo.py [--iterations 40] [--lr 1e-4] [--algo ppo]

Measured once with the defaults (RLOO; 2026-12-04, a 2-core CPU shared with other jobs, 1757 s in
all; 32 dialogues an iteration): validation success (32 dialogues, 8 goals x 4) rose from 0.125
to 0.469; training success averaged 0.106 over iterations 0-4 and 0.444 over 35-39, with
turns per dialogue falling from 2.9 to 2.4 (the agent guesses sooner). ``--algo grpo``, the
same defaults otherwise (2026-12-04, the 2-core CPU otherwise idle, 2032 s): validation success
0.125 -> 0.438; training success 0.081 over iterations 0-4 and 0.450 over 35-39, turns per
dialogue 2.9 -> 2.4. One seed each: the two algorithms are not told apart by these runs.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import textgym  # noqa: F401 - registers TextGen-Conversation-v0
from agents.dialogue import DIALOGUE_ALGOS, DialogueConfig, rollout_dialogues, train_step
from agents.policy import TransformerPolicy
from textgym.lm import Sampling
from textgym.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=DIALOGUE_ALGOS, default="rloo")
    parser.add_argument("--epochs", type=int, default=1, help="gradient steps per rollout")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--goals", type=int, default=8, help="goals per iteration")
    parser.add_argument("--group", type=int, default=4, help="dialogues per goal")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--layers", type=int, default=4, help="trained transformer blocks")
    parser.add_argument("--choices", type=int, default=2, help="animals to choose from")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--turn-tokens", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = DialogueConfig(algo=args.algo, epochs=args.epochs)
    torch.manual_seed(args.seed)

    model = load_model("smollm2-135m")
    model.requires_grad_(False)
    trained = [*model.model.layers[-args.layers :], model.model.norm]
    for module in trained:
        module.requires_grad_(True)
    policy = TransformerPolicy(model, reference=None)
    if config.uses_values:
        trained.append(policy.value_head)
    batch = args.goals * args.group
    kwargs = dict(
        num_envs=batch, task_kwargs={"num_choices": args.choices}, max_turns=args.turns,
        max_turn_tokens=args.turn_tokens, max_context_tokens=200 + args.turns * 40,
        autoreset_mode="disabled",
    )  # fmt: skip
    train_envs = gym.make_vec("TextGen-Conversation-v0", **kwargs)
    eval_envs = gym.make_vec("TextGen-Conversation-v0", split="validation", **kwargs)
    num_eval = len(eval_envs.unwrapped.task.split("validation"))
    num_train = len(train_envs.unwrapped.task.split("train"))
    sampling = Sampling(temperature=1.0)

    def evaluate() -> float:
        goals = [i % num_eval for i in range(batch)]
        played = rollout_dialogues(
            policy,
            eval_envs,
            sampling,
            torch.Generator().manual_seed(123),
            options={"index": goals},
        )
        return float(played.success.mean())

    start = time.time()
    print(f"validation success before: {evaluate():.3f}")
    optimizer = torch.optim.Adam([p for m in trained for p in m.parameters()], lr=args.lr)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    for iteration in range(args.iterations):
        goals = rng.choice(num_train, size=args.goals, replace=False).tolist()
        metrics = train_step(
            policy, optimizer, train_envs, sampling, args.group, generator, goals, config
        )
        shown = " ".join(f"{k}={v:.3f}" for k, v in metrics.items())
        print(f"{iteration:3d} {shown} ({time.time() - start:.0f} s)", flush=True)
    print(f"validation success after: {evaluate():.3f} ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
