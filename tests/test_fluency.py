"""The keywords task's default reward: keyword lists, loops and cut sentences score far below
real sentences that use the same words (SmolLM2-135M-Instruct), and the fluency's plumbing."""

from __future__ import annotations

import numpy as np
import pytest

from textgym.models import shared_tokenizer, tiny_model
from textgym.rewards import make_reward, score
from textgym.rewards.fluency import KeywordSentence, LMFluency
from textgym.rewards.metrics import SoftKeywordCoverage
from textgym.tasks import make_task

KEYWORDS = [
    ["duck", "lion", "cook"],
    ["orange", "kite", "teach"],
    ["stone", "ball", "catch"],
    ["carry", "bag", "candle"],
]
SENTENCES = [
    "The cook fed the duck while the lion slept.",
    "She will teach us to fly an orange kite.",
    "He threw a stone at the ball but could not catch it.",
    "She had to carry a candle in her bag all night.",
]


def degenerate(words: list[str], sentence: str) -> list[str]:
    a, b, c = words
    return [
        f"{a.capitalize()}, {b.capitalize()}, {c.capitalize()}",  # what PPO learned to write
        f"A {a}, {b}, {c}.",
        f"{a.capitalize()}, {b} and {c}.",
        f"{a} {b} {c}",
        " ".join([a, b, c] * 3),  # a loop
        " ".join(sentence.split()[:4]),  # a sentence cut mid-way
    ]


@pytest.fixture(scope="module")
def tokenizer():
    return shared_tokenizer("smollm2-135m")


def test_keyword_lists_score_far_below_sentences_with_the_same_words():
    reward = KeywordSentence()  # SmolLM2-135M-Instruct, loaded on first use
    table = [[s, *degenerate(w, s)] for w, s in zip(KEYWORDS, SENTENCES, strict=True)]
    per_word = reward.fluency.per_word([t for row in table for t in row[:5]]).reshape(4, 5)
    # Sentences: -7.1 to -4.2 nats per word; lists of the same words: -11.3 or lower (measured
    # in benchmarks/keyword_fluency.py). The ramp's floor, -9, lies between them.
    assert per_word[:, 0].min() > -7.5, per_word[:, 0]
    assert per_word[:, 1:].max() < -10.5, per_word[:, 1:]
    assert per_word[:, 0].min() - per_word[:, 1:].max() > 3.5  # the margin per word

    # The whole reward in one call: sentences and lists both cover every keyword; the lists
    # and the empty completion earn nothing, loops and cut sentences little.
    texts = [row[i] for i in (0, 1, 5, 6) for row in table] + [""]  # sentence, list, loop, cut
    keywords = KEYWORDS * 4 + [KEYWORDS[0]]
    total, parts = score(reward, ["p"] * len(texts), texts, None, keywords=keywords)
    np.testing.assert_array_equal(parts["keyword_coverage_soft"][:12], 1.0)
    assert total[:4].min() > 0.6, total[:4]
    np.testing.assert_array_equal(total[4:8], 0.0)
    assert total[8:16].max() < 0.3, total[8:16]
    assert total[16] == 0.0


def test_keywords_task_defaults_to_it_and_keeps_plain_coverage_by_name():
    task = make_task("keywords", num_train=4)
    assert task.default_reward == "keyword_sentence"
    assert isinstance(make_reward(task.default_reward), KeywordSentence)
    assert isinstance(make_reward("keyword_coverage_soft"), SoftKeywordCoverage)
    assert isinstance(make_reward("lm_fluency", floor=-8.0, full=-5.0), LMFluency)


def test_one_forward_scores_the_batch_as_row_by_row(tokenizer):
    model = tiny_model(tokenizer)
    batched = LMFluency(model=model, tokenizer=tokenizer)
    single = LMFluency(model=model, tokenizer=tokenizer, batch_size=1)
    texts = ["a b c d e f g", "short one", "x", "  ", "Hello, world. How are you today?"]
    a, b = batched.per_word(texts), single.per_word(texts)
    assert a[3] == b[3] == -np.inf  # no word: no forward, scores 0
    np.testing.assert_allclose(np.delete(a, 3), np.delete(b, 3), rtol=1e-4)
    # The message is scored with its end token: tokens + 1 log-probs per text.
    logprobs = batched.message_logprobs(["a b", "c"])
    assert [len(lp) for lp in logprobs] == [len(tokenizer("a b")["input_ids"]) + 1, 2]


def test_the_ramp_maps_per_word_logprob_onto_0_1(tokenizer, monkeypatch):
    fluency = LMFluency(model=tiny_model(tokenizer), tokenizer=tokenizer, floor=-9, full=-6)
    per_word, end = np.array([-12.0, -7.5, -6.0, -2.0, -6.0]), np.array([-1, -1, -9, -1, -20.0])
    monkeypatch.setattr(fluency, "measure", lambda c: (per_word, end))
    assert fluency(["p"] * 5, ["w"] * 5, None).tolist() == [0.0, 0.5, 0.5, 1.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"floor": -5.0, "full": -6.0}, ValueError, r"need finite floor < full .*floor=-5.0"),
        ({"end_floor": -5.0}, ValueError, r"need finite end_floor < end_full .*end_floor=-5.0"),
        ({"full": float("inf")}, ValueError, "full=inf"),
        ({"floor": "low"}, TypeError, "floor must be a number of nats, got 'low'"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1 or None, got 0"),
    ],
)
def test_bad_options_name_the_value(tokenizer, kwargs, error, match):
    with pytest.raises(error, match=match):
        LMFluency(model="smollm2-135m", **kwargs)


def test_a_module_needs_its_tokenizer(tokenizer):
    with pytest.raises(ValueError, match="pass tokenizer= when model is a module"):
        LMFluency(model=tiny_model(tokenizer))
