"""The measurement behind the keywords task's default reward: sentences against degenerate text.

For 8 keyword prompts of the task's test split, scores a real sentence using the words, what
the model itself writes (greedy), and degenerate texts with the same words (lists, filler,
loops, a sentence cut mid-way, a list followed by a sentence) under SmolLM2-135M-Instruct.
Columns (nats): the completion's mean log-prob per token given the prompt (``cond/tok``) and
as a lone assistant message (``msg/tok``), the latter per word with the end token
(``msg/word``) and the end token's log-prob (``end``), the two that
:class:`~textgym.rewards.fluency.LMFluency` ramps, then ``lm_fluency`` and the
``keyword_sentence`` reward. Prints one row per text with ``--rows``, else min/mean/max
per kind.

    .venv/bin/python benchmarks/keyword_fluency.py   # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import collections
import re

import numpy as np

from textgym.rewards.fluency import KeywordSentence
from textgym.tasks.embedded import KEYWORDS_TEMPLATE

SENTENCES = {  # one hand-written sentence per keyword set
    ("orange", "kite", "teach"): "The teacher showed us how to fly an orange kite.",
    ("carry", "bag", "candle"): "She had to carry a candle in her bag all night.",
    ("listen", "water", "mouse"): "The mouse stopped to listen to the running water.",
    ("sky", "pencil", "eat"): "We ate lunch under a blue sky and drew it with a pencil.",
    ("plant", "basket", "rope"): "She tied the plant to the basket with a rope.",
    ("stone", "ball", "catch"): "He threw a stone at the ball but could not catch it.",
    ("friend", "girl", "laugh"): "The girl began to laugh when her friend fell over.",
    ("duck", "lion", "cook"): "The cook fed the duck while the lion slept.",
}


def degenerate(words: tuple[str, ...], sentence: str) -> dict[str, str]:
    """Texts that use ``words`` without being a sentence, by kind."""
    a, b, c = words
    half = sentence.split()[: max(3, len(sentence.split()) // 2)]
    return {
        "list_caps": ", ".join(w.capitalize() for w in words),
        "list": f"{a}, {b}, {c}.",
        "list_spaces": f"{a} {b} {c}",
        "list_article": f"A {a}, {b}, {c}.",
        "list_and": f"{a.capitalize()}, {b} and {c}.",
        "filler": f"The {a} and the {b} and the {c}.",
        "repeat": " ".join([a] * 8),
        "repeat_kw": " ".join(words * 3),
        "cut": " ".join(half),
        "list_then_sentence": f"{a}, {b}, {c}. It is a nice day.",
        "empty": "",
    }


def greedy(reward: KeywordSentence, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
    """What the reference model writes for each prompt (greedy, chat template)."""
    tok, model = reward.fluency.tokenizer, reward.fluency.model
    out = []
    for prompt in prompts:
        chat = [{"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
        ids = ids if not hasattr(ids, "input_ids") else ids["input_ids"]
        new = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)[0, ids.shape[1] :]
        out.append(tok.decode(new, skip_special_tokens=True))
    return out


def make_table(with_model: bool = True) -> list[dict[str, object]]:
    """One row per (prompt, kind): the text and its scores."""
    reward = KeywordSentence()
    fluency = reward.fluency
    tok = fluency.tokenizer
    keyword_sets = list(SENTENCES)
    prompts = [KEYWORDS_TEMPLATE.format(keywords=", ".join(w)) for w in keyword_sets]
    written = greedy(reward, prompts) if with_model else [None] * len(prompts)
    rows: list[dict[str, object]] = []
    for words, prompt, own in zip(keyword_sets, prompts, written, strict=True):
        texts = {"sentence": SENTENCES[words], **degenerate(words, SENTENCES[words])}
        if own is not None:
            texts = {"model_greedy": own, **texts}
        kinds, batch = list(texts), list(texts.values())
        n = len(batch)
        parts = reward.components(["p"] * n, batch, None, keywords=[list(words)] * n)
        total = reward.combine(parts)
        per_word, end = fluency.measure(batch)
        message = fluency.message_logprobs([t.strip() for t in batch])
        header = fluency.header
        chat = [{"role": "user", "content": prompt}]
        fluency.header = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        fluency.header = tok(fluency.header, add_special_tokens=False)["input_ids"]
        given_prompt = fluency.message_logprobs([t.strip() for t in batch])
        fluency.header = header
        for i, kind in enumerate(kinds):
            has_words = bool(re.search(r"[^\W_]", batch[i]))
            rows.append(
                {
                    "kind": kind,
                    "text": batch[i],
                    # mean over the text's tokens (the end token excluded), NaN when empty
                    "cond/tok": given_prompt[i][:-1].mean() if has_words else np.nan,
                    "msg/tok": message[i][:-1].mean() if has_words else np.nan,
                    "msg/word": per_word[i],
                    "end": end[i],
                    "lm_fluency": float(parts["lm_fluency"][i]),
                    "keyword_sentence": float(total[i]),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", action="store_true", help="print every text, not a summary")
    parser.add_argument("--no-model", action="store_true", help="skip the model's own sentences")
    args = parser.parse_args()
    rows = make_table(with_model=not args.no_model)
    columns = ["cond/tok", "msg/tok", "msg/word", "end", "lm_fluency", "keyword_sentence"]
    if args.rows:
        for row in rows:
            values = " ".join(f"{row[c]:8.2f}" for c in columns)
            print(f"{row['kind']:20s} {values}  {row['text']!r}")
        return
    by_kind: dict[str, list[list[float]]] = collections.defaultdict(list)
    for row in rows:
        by_kind[str(row["kind"])].append([float(row[c]) for c in columns])  # type: ignore[arg-type]
    print(f"{'kind':20s} " + " ".join(f"{c:>22s}" for c in columns) + "   (min / mean / max)")
    for kind, values in by_kind.items():
        v = np.array(values)
        cells = [
            f"{np.nanmin(v[:, j]):6.2f} {np.nanmean(v[:, j]):6.2f} {np.nanmax(v[:, j]):6.2f}"
            for j in range(len(columns))
        ]
        print(f"{kind:20s} " + " ".join(f"{c:>22s}" for c in cells))


if __name__ == "__main__":
    main()
