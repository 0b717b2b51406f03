"""Close the human-feedback loop: sample, label, train a reward model, train a policy on it.

    python examples/feedback_loop.py                      # a simulated rater labels (offline)
    python examples/feedback_loop.py --label web          # people label at the printed address
    python examples/feedback_loop.py --label console      # you label on this terminal
    python examples/feedback_loop.py --quick              # tiny policy, minutes on a CPU

1. PPO trains the policy with :class:`~textgym.feedback.HumanReward`: every episode goes to the
   feedback store as a "rate" task and the reward waits for its 1-to-5 rating. With
   ``--label auto`` a *simulated* rater (``rater="simulated:keywords"``, clearly not a person)
   rates each completion by how many of the prompt's keywords it uses, so the example runs
   unattended; ``--label web`` serves the labeling page instead.
2. A reward model (MiniLM + scalar head, MSE on the ratings) is fine-tuned on the store.
3. PPO trains the policy again, now against the learned reward model, with no one labeling;
   its evaluation reward (the reward model's score) is printed at the first and last
   evaluation.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

import numpy as np

from agents import train
from textgym.feedback import FeedbackStore
from textgym.feedback.human import HumanReward
from textgym.feedback.reward_model import (
    LearnedReward,
    RewardModelConfig,
    examples_from_store,
    train_reward_model,
)
from textgym.rewards import KeywordCoverage

SIMULATED_RATER = "simulated:keywords"


def simulated_rater(store: FeedbackStore, stop: threading.Event) -> None:
    """Rate each open task 1 + 4 * (share of the sample's keywords its completion uses)."""
    coverage = KeywordCoverage()
    while not stop.is_set():
        task = store.next_task(SIMULATED_RATER, kinds=["rate"])
        if task is None:
            stop.wait(0.05)
            continue
        sample = store.sample(task.sample_ids[0])
        keywords = sample.meta.get("keywords", [])
        share = coverage([sample.prompt], [sample.completion], None, keywords=[keywords])[0]
        score = 1 + int(round(4 * float(share)))
        store.add_rating(sample.id, score, rater=SIMULATED_RATER, task_id=task.id)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", choices=["auto", "web", "console"], default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny random policy, few steps")
    parser.add_argument("--dir", default=None, help="where the store, models and runs go")
    parser.add_argument("--port", type=int, default=8765, help="labeling page port (--label web)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    out = Path(args.dir or tempfile.mkdtemp(prefix="feedback-loop-"))
    policy = dict(
        model="tiny" if args.quick else "smollm2-135m",
        task="keywords",
        batch_size=4 if args.quick else 8,
        max_new_tokens=8 if args.quick else 16,
        top_k=50,
        learning_rate=1e-3 if args.quick else 2e-5,
        eval_every=0,
        eval_samples=4 if args.quick else 8,
        report_to="none",
        progress=not args.quick,
        device="cpu",
    )
    store = FeedbackStore(out / "feedback.sqlite")

    # 1. Episodes go to the store; people (or the simulated rater) rate them.
    human = HumanReward(
        store,
        mode="console" if args.label == "console" else "web",
        serve=args.label == "web",
        port=args.port,
        timeout=3600 if args.label == "web" else 60,
        task="keywords",
    )
    stop = threading.Event()
    rater = threading.Thread(target=simulated_rater, args=(store, stop), daemon=True)
    if args.label == "auto":
        rater.start()
    try:
        train(
            "ppo",
            reward=human,
            iterations=2 if args.quick else 6,
            run_dir=str(out / "ppo-human"),
            **policy,
        )
    finally:
        stop.set()
        human.close()
    ratings = examples_from_store(store, "ratings")
    print(f"{len(ratings)} ratings in {store.path}")

    # 2. A reward model learned from those ratings.
    config = RewardModelConfig(
        kind="ratings",
        epochs=1 if args.quick else 4,
        batch_size=16,
        max_length=96,
        learning_rate=1e-4,
        eval_fraction=0.2,
    )
    reward_model, metrics = train_reward_model(ratings, config=config)
    rm_path = reward_model.save(out / "reward-model")
    print("reward model:", {k: round(float(v), 3) for k, v in metrics.items()})

    # 3. The policy trains against the learned reward; nobody labels any more.
    trainer = train(
        "ppo",
        reward=LearnedReward(rm_path),
        iterations=2 if args.quick else 20,
        run_dir=str(out / "ppo-reward-model"),
        **{**policy, "eval_every": 1 if args.quick else 10},
    )
    rows = [r for r in trainer.logger.rows if "eval/reward" in r]
    summary = {
        "ratings": float(len(ratings)),
        "rm/eval_pearson": float(metrics.get("eval/pearson", np.nan)),
        "policy/eval_reward_first": float(rows[0]["eval/reward"]),
        "policy/eval_reward_last": float(rows[-1]["eval/reward"]),
    }
    print("summary:", summary)
    store.close()
    return summary


if __name__ == "__main__":
    main()
