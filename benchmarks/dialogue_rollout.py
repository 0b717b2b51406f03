"""Multi-turn rollout: our KV-cache dialogue rollout against a plain ``generate``-per-turn loop.

Both play B dialogues of ``--turns`` agent turns of at most ``--turn-tokens`` tokens, sampling
at temperature 1 over the whole vocabulary, a turn ending at the end-of-turn token. The user
is the same deterministic function in both (it answers every turn with a fixed message), so the
work per turn is alike.

- ``generate`` loop: per turn, render every conversation with the chat template, tokenize the
  batch left-padded, call ``model.generate`` once, decode, append the reply and the user turn.
  The whole conversation is re-encoded (and re-run through the model) every turn.
- ours: :func:`agents.dialogue.rollout_dialogues` through ``TextGen-Conversation-v0``: one
  prefill of the openings, then one KV-cache forward per step; the env's inserted tokens (the
  user turn and the next header) are prefilled into the cache as they arrive. It includes all
  of the env's work (turn logic, simulator calls, rewards).

Reported: median seconds per batch of dialogues over ``--repeats`` timed runs after a warm-up
(the two interleaved), agent tokens per second, and the ratio.

    python benchmarks/dialogue_rollout.py [--models tiny,smollm2-135m] [--batch 16]
        [--turns 4] [--turn-tokens 24] [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from agents.dialogue import rollout_dialogues
from agents.policy import Sampling, TransformerPolicy
from textgym.conversation.vector import ConversationVectorEnv
from textgym.models import load_model, load_tokenizer, tiny_model

USER_REPLY = "Interesting. Tell me one more thing about it, please."


def fixed_user(conversations, goals, **meta):
    return [USER_REPLY] * len(conversations)


def timed_pair(
    first: Callable[[], int], second: Callable[[], int], repeats: int
) -> tuple[tuple[float, int], tuple[float, int]]:
    """Median seconds and token count of each function over ``repeats`` runs after a warm-up,
    the two interleaved so that a change in the machine's load hits both alike."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    tokens = [0, 0]
    for _ in range(repeats):
        for k, fn in enumerate((first, second)):
            start = time.perf_counter()
            tokens[k] = fn()
            times[k].append(time.perf_counter() - start)
    return (statistics.median(times[0]), tokens[0]), (statistics.median(times[1]), tokens[1])


def generate_loop(
    model, tokenizer, openings, turns: int, turn_tokens: int, eot: int, device
) -> int:
    """Agent tokens of B dialogues played with one ``generate`` call per turn."""
    conversations = [list(o) for o in openings]
    tokens = 0
    tokenizer.padding_side = "left"
    for _ in range(turns):
        texts = [
            tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=turn_tokens, do_sample=True, temperature=1.0,
                top_k=0, top_p=1.0, eos_token_id=eot, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        new = out[:, batch["input_ids"].shape[1] :]
        ended = (new == eot).cumsum(-1) - (new == eot).long()
        tokens += int((ended == 0).sum())
        for c, reply in zip(
            conversations, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True
        ):
            c += [{"role": "assistant", "content": reply}, {"role": "user", "content": USER_REPLY}]
    return tokens


def compare(
    name: str, batch: int, turns: int, turn_tokens: int, repeats: int, device: str
) -> float:
    tokenizer = load_tokenizer()
    model = tiny_model(tokenizer) if name == "tiny" else load_model(name)
    model = model.to(device).eval()
    envs = ConversationVectorEnv(
        num_envs=batch, tokenizer=tokenizer, user=fixed_user, max_turns=turns,
        max_turn_tokens=turn_tokens, max_context_tokens=96 + turns * (turn_tokens + 24),
        autoreset_mode="disabled", copy=False,
    )  # fmt: skip
    policy = TransformerPolicy(model, reference=None).to(device)
    sampling = Sampling(temperature=1.0)
    generator = torch.Generator(device=device).manual_seed(0)
    openings = [s.prompt for s in envs.task.split("train")[:batch]]
    openings = [[{"role": "user", "content": o}] if isinstance(o, str) else o for o in openings]
    options = {"index": list(range(batch))}

    def ours() -> int:
        result = rollout_dialogues(policy, envs, sampling, generator, options=options)
        return int(result.action_mask.sum())

    def baseline() -> int:
        return generate_loop(
            model, tokenizer, openings, turns, turn_tokens, envs.end_of_turn_token_id, device
        )

    (ours_s, ours_tokens), (base_s, base_tokens) = timed_pair(ours, baseline, repeats)
    ratio = (ours_tokens / ours_s) / (base_tokens / base_s)
    print(
        f"{name:>14} B={batch} turns={turns} N={turn_tokens}: rollout {ours_s:.2f} s "
        f"({ours_tokens / ours_s:,.0f} agent tok/s) | generate per turn {base_s:.2f} s "
        f"({base_tokens / base_s:,.0f} agent tok/s) | {ratio:.2f}x"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny", help="comma-separated: tiny, smollm2-135m, ...")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--turn-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        compare(name, args.batch, args.turns, args.turn_tokens, args.repeats, args.device)


if __name__ == "__main__":
    main()
