"""AI feedback (RLAIF): an LM judge as the reward, a safety term, and AI preferences stored as
training labels for a reward model.

    python examples/ai_judge.py                       # local judge: SmolLM2-135M-Instruct
    python examples/ai_judge.py --serve-local         # the same model behind a local HTTP endpoint
    OPENAI_API_KEY=... python examples/ai_judge.py --url https://host/v1 --model my-judge

1. The env's reward mixes a judge (a constitution of two principles) with the safety penalty;
   ``info["reward_components"]`` shows each term.
2. The judge compares two completions of each prompt; the preferences go to a feedback store
   as rankings by rater ``"ai:<judge>"``, where the reward-model trainer reads them exactly as
   it reads human rankings.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import gymnasium as gym

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.feedback import FeedbackStore
from textgym.rewards import JudgeReward, LocalJudge, RemoteJudge, SafetyPenalty
from textgym.rewards.judge import add_preferences_to_store, judge_rater

CONSTITUTION = ["The response answers the question correctly.", "The response is polite."]
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "Go away, idiot."),
    ("How many legs does a spider have?", "asdf qwer zxcv", "A spider has eight legs."),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an OpenAI-compatible endpoint (default: a local judge)")
    parser.add_argument("--model", default="smollm2-135m", help="judge model name or path")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable with the key")
    parser.add_argument(
        "--serve-local", action="store_true", help="serve --model on 127.0.0.1 and judge remotely"
    )
    parser.add_argument("--db", help="feedback store file (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.serve_local:
            # The test server (tests/openai_server.py) serves the judge model locally.
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.openai_server import OpenAIServer, model_responder
            from textgym.models import load_model, load_tokenizer

            responder = model_responder(load_model(args.model), load_tokenizer(args.model))
            server = stack.enter_context(OpenAIServer(responder))
            # One generation at a time on CPU: send one request at a time, with time to spare,
            # and ask for a short answer (the verdict comes first).
            backend = RemoteJudge(
                server.url,
                model=args.model,
                api_key_env=None,
                max_concurrency=1,
                timeout=120.0,
                max_tokens=16,
            )
            judge = JudgeReward(CONSTITUTION, backend, scale={"Yes": 1.0, "No": 0.0})
        elif args.url:
            backend = RemoteJudge(args.url, model=args.model, api_key_env=args.api_key_env)
            judge = JudgeReward(CONSTITUTION, backend)  # a served model rates 1-10
        else:
            judge = JudgeReward(CONSTITUTION, LocalJudge(args.model))

        # 1. The judge and the safety penalty as the env's reward.
        env = gym.make(
            "TextGen-v0", reward=[(judge, 1.0), (SafetyPenalty(), 1.0)], max_new_tokens=16
        )
        tokenizer = env.unwrapped.tokenizer
        for prompt, *completions in PAIRS[:1]:
            for completion in completions:
                env.reset(options={"prompt": prompt})
                for token in tokenizer.encode(completion, add_special_tokens=False):
                    *_, info = env.step(token)
                _, reward, _, _, info = env.step(env.unwrapped.eos_token_id)
                parts = {k: round(v, 3) for k, v in info["reward_components"].items()}
                print(f"{completion!r}: reward {reward:.3f} {parts}")

        # 2. Pairwise AI preferences into the feedback store. A small local judge compares by
        # its pointwise scores (no position bias); a served one sees both orders of each pair.
        prompts, a, b = (list(x) for x in zip(*PAIRS, strict=True))
        method = "scores" if isinstance(judge.backend, LocalJudge) else "compare"
        prefs = judge.pairwise_preferences(prompts, a, b, method=method)
        for pref in prefs:
            print(
                f"{pref.prompt!r}: winner {pref.winner} (p_a {pref.p_a:.2f}, "
                f"position bias {pref.position_bias:+.2f})"
            )
        db = Path(args.db or stack.enter_context(tempfile.TemporaryDirectory()) + "/feedback.db")
        with FeedbackStore(db) as store:
            rater = judge_rater(judge)
            ids = add_preferences_to_store(store, prefs, rater=rater, task="qa", model="example")
            print(f"{len(ids)} rankings by {rater} in {db} (ties are not stored)")
            for pair in store.preference_pairs(rater=rater):
                print(f"{pair.rater} prefers {pair.chosen!r} over {pair.rejected!r}")
        print("judge stats:", dict(judge.stats))


if __name__ == "__main__":
    main()
