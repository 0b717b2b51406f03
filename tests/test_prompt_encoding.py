"""Batched prompt encoding gives exactly the ids of the chat template plus the tokenizer."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from textgym.episode import PromptEncoder, SegmentCache
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
