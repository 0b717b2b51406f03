"""Batched prompt encoding gives exactly the ids of the chat template plus the tokenizer."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from textgym.episode import PromptEncoder, SegmentCache, byte_table, decode_batch
from textgym.tasks import make_task


def reference_ids(tokenizer, prompt, chat_template=True) -> list[int]:
    """What the slow path does: Jinja per prompt, then the tokenizer on the whole text."""
    if chat_template:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(
        prompt
        if isinstance(prompt, str)
        else "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    )


PROMPTS = [
    "Hi there",
    "  leading and trailing spaces  \n",
    "Special tokens inside: <|im_end|> and <|im_start|>assistant",
    "Unicode: café, naïve, 漢字, emoji 🙂",
    "\n\nnewlines first",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
    [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": " Book a table for two. "},
    ],
]


@pytest.mark.parametrize("chat_template", [True, False])
def test_batch_equals_the_slow_path(tokenizer, chat_template):
    encoder = PromptEncoder(tokenizer, max_prompt_tokens=256, chat_template=chat_template)
    got = encoder.encode_batch(PROMPTS)
    for prompt, ids in zip(PROMPTS, got, strict=True):
        assert ids.tolist() == reference_ids(tokenizer, prompt, chat_template), prompt


def test_task_prompts_equal_the_slow_path(tokenizer):
    prompts = [
        s.prompt
        for name in ("keywords", "dialogue", "summarize")
        for s in make_task(name).split("train")[:40]
    ]
    encoder = PromptEncoder(tokenizer, max_prompt_tokens=512)
    for _ in range(2):  # the second pass reads the stretch cache
        for prompt, ids in zip(prompts, encoder.encode_batch(prompts), strict=True):
            assert ids.tolist() == reference_ids(tokenizer, prompt)


def test_segments_equal_whole_texts_on_random_text(tokenizer):
    """Word cuts and added-token cuts give the ids of the whole text, on text built to find
    a cut the tokenizer does not make: runs of mixed white space, contractions, digits,
    punctuation, non-Latin scripts and added tokens next to spaces."""
    backend = tokenizer.backend_tokenizer
    cache = SegmentCache.build(tokenizer, backend.encode_batch)
    assert cache.cuts_words  # SmolLM2's stretches are cut word by word
    pieces = ["a", "dog", "'s", "'ll", "12", "3", ",", "!?", "é", "漢字", "🙂", "<|im_end|>"]
    pieces += [" ", "  ", "\n", " \n", "\t", "\u00a0", "\u3000", "\x1c", "\r\n"]
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(pieces, size=rng.integers(1, 30))) for _ in range(400)]
    whole = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    assert cache(texts) == whole
    assert cache(texts) == whole  # from the cache
    assert cache([t + "x" for t in texts]) == [  # new stretches of known words
        e.ids for e in backend.encode_batch([t + "x" for t in texts], add_special_tokens=False)
    ]


def test_word_cuts_only_for_gpt2_style_pre_tokenizers(tokenizer):
    from tokenizers import normalizers, pre_tokenizers

    for change in (
        lambda b: setattr(b, "normalizer", normalizers.NFKC()),
        lambda b: setattr(b, "pre_tokenizer", pre_tokenizers.Metaspace()),
        lambda b: setattr(b, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True)),
    ):
        other = copy.deepcopy(tokenizer)
        change(other.backend_tokenizer)
        cache = SegmentCache.build(other, other.backend_tokenizer.encode_batch)
        assert cache is None or not cache.cuts_words
        encoder = PromptEncoder(other, max_prompt_tokens=256)
        for prompt, ids in zip(PROMPTS, encoder.encode_batch(PROMPTS), strict=True):
            assert ids.tolist() == reference_ids(other, prompt), prompt


def test_padded_batch_left_pads_truncates_and_caches(tokenizer):
    P = 48
    encoder = PromptEncoder(tokenizer, max_prompt_tokens=P, pad_token_id=7)
    long, short = "word " * 60, "Hi"
    ids, mask = encoder.padded_batch([long, short], cache_keys=[("train", 0), None])
    assert ids.shape == mask.shape == (2, P)
    assert ids[0].tolist() == reference_ids(tokenizer, long)[-P:] and mask[0].all()
    n = len(reference_ids(tokenizer, short))
    assert n < P
    assert ids[1, P - n :].tolist() == reference_ids(tokenizer, short)
    assert (ids[1, : P - n] == 7).all() and mask[1].sum() == n
    cached, _ = encoder.padded_batch(["ignored: the key is cached"], cache_keys=[("train", 0)])
    np.testing.assert_array_equal(cached[0], ids[0])
    with pytest.raises(ValueError, match="the prompt is empty"):
        encoder.padded_batch(["ok", "  "])


def test_a_template_that_rewrites_content_falls_back_to_jinja(tokenizer):
    trimming = copy.copy(tokenizer)
    trimming.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant\n"
    )
    encoder = PromptEncoder(trimming, max_prompt_tokens=64)
    prompt = "  padded  "
    assert encoder.text(prompt).startswith("<|im_start|>user\npadded<|im_end|>")
    assert encoder._layout([{"role": "user", "content": prompt}]) is None


def test_stretch_cache_refuses_tokenizers_whose_added_tokens_strip(tokenizer):
    from tokenizers import AddedToken

    stripping = copy.deepcopy(tokenizer)
    stripping.add_special_tokens({"additional_special_tokens": [AddedToken("<x>", lstrip=True)]})
    backend = stripping.backend_tokenizer
    assert SegmentCache.build(stripping, backend.encode_batch) is None
    encoder = PromptEncoder(stripping, max_prompt_tokens=64)
    assert encoder.encode("a <x> b").tolist() == reference_ids(stripping, "a <x> b")


# ----------------------------------------------------------------------------- decoding


def test_decode_batch_equals_the_tokenizer(tokenizer):
    """The byte table decodes exactly as the Rust tokenizer: special tokens dropped, tokens
    that split a character joined first, invalid UTF-8 replaced as Rust replaces it."""
    rng = np.random.default_rng(0)
    rows = rng.integers(len(tokenizer), size=(300, 24)).tolist()
    rows += [[0, 1, 2], [], [tokenizer.encode("é")[0]] * 3, tokenizer.encode("漢字 🙂 x")]
    assert byte_table(tokenizer, tokenizer.backend_tokenizer) is not None  # the fast path
    expected = tokenizer.batch_decode(rows, skip_special_tokens=True)
    assert decode_batch(tokenizer, rows) == expected
    assert decode_batch(tokenizer, [np.array(row, dtype=np.int64) for row in rows]) == expected
    assert sum("\ufffd" in text for text in expected) > 30  # invalid sequences were covered
    # An id the tokenizer does not know goes to the tokenizer, which skips it.
    assert decode_batch(tokenizer, [[tokenizer.encode("hi")[0], 10**6]]) == ["hi"]


def test_decode_batch_with_added_words_and_other_decoders(tokenizer):
    from tokenizers import decoders

    added = copy.deepcopy(tokenizer)
    added.add_tokens(["naïve word", "<mark>"])
    added.add_special_tokens({"additional_special_tokens": ["<secret>"]})
    rows = [added.encode("a naïve word <mark> b <secret> c", add_special_tokens=False)]
    assert decode_batch(added, rows) == ["a naïve word <mark> b  c"]
    assert decode_batch(added, rows) == added.batch_decode(rows, skip_special_tokens=True)
    other = copy.deepcopy(tokenizer)
    other.backend_tokenizer.decoder = decoders.Metaspace()
    assert byte_table(other, other.backend_tokenizer) is None  # the Rust tokenizer decodes
    rows = [tokenizer.encode("Hello there, world")]
    assert decode_batch(other, rows) == other.batch_decode(rows, skip_special_tokens=True)
