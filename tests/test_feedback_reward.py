"""HumanReward (console, web, timeout policies, in the env) and learned reward models."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from textgym.feedback import FeedbackStore
from textgym.feedback.human import HumanReward
from textgym.feedback.reward_model import (
    ClassifierReward,
    LearnedReward,
    RewardModel,
    RewardModelConfig,
    ScoredText,
    context_accuracy,
    context_negatives,
    evaluate,
    examples_from_store,
    train_reward_model,
)
from textgym.feedback.store import PreferencePair
from textgym.rewards import make_reward, score

from .conftest import make_small_task

# ----------------------------------------------------------------------------- HumanReward


def quiet(*args):
    pass


def test_console_ratings_become_rewards_and_reach_the_store(tmp_path):
    answers = iter(["9", "5", "", "2"])  # 9 is asked again; "" skips the second completion
    reward = HumanReward(
        tmp_path / "fb.sqlite",
        mode="console",
        rater="me",
        task="t",
        input_fn=lambda prompt: next(answers),
        output_fn=quiet,
        default=-0.25,
    )
    total, parts = score(reward, ["p"] * 3, ["good", "skipped", "meh"], None)
    assert total.tolist() == [1.0, -0.25, -0.5]
    assert parts["human_labeled"].tolist() == [1.0, 0.0, 1.0]
    assert [(r.score, r.rater) for r in reward.store.ratings()] == [(5, "me"), (2, "me")]
    assert {s.task for s in reward.store.samples()} == {"t"}
    assert reward.store.progress()["open"] == 1  # the skipped item stays in the queue


def test_web_mode_waits_for_raters_on_its_own_server(tmp_path):
    reward = HumanReward(
        tmp_path / "fb.sqlite", serve=True, port=0, raters_per_item=2, timeout=30, output_fn=quiet
    )
    url = reward.server.url

    def rater(name: str, scores: dict[str, int]) -> None:
        done = 0
        while done < 2:
            with urllib.request.urlopen(f"{url}api/next?rater={name}") as resp:
                task = json.load(resp)["task"]
            if task is None:
                continue
            body = {"rater": name, "task_id": task["id"]}
            body["score"] = scores[task["samples"][0]["completion"]]
            req = urllib.request.Request(
                url + "api/label",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req).close()
            done += 1

    threads = [
        threading.Thread(target=rater, args=("a", {"yes": 5, "no": 1})),
        threading.Thread(target=rater, args=("b", {"yes": 4, "no": 2})),
    ]
    for t in threads:
        t.start()
    try:
        values = reward(["q", "q"], ["yes", "no"], None)
    finally:
        for t in threads:
            t.join()
        reward.close()
    assert values.tolist() == [0.75, -0.75]  # means 4.5 and 1.5 mapped to [-1, 1]


def test_timeout_policies(tmp_path):
    db = FeedbackStore(tmp_path / "fb.sqlite")
    common = {"timeout": 0.05, "poll_interval": 0.01}
    assert HumanReward(db, default=0.5, **common)(["p"], ["c"], None).tolist() == [0.5]
    fallback = HumanReward(
        db,
        on_timeout="fallback",
        fallback=lambda p, c, r, **m: np.array([len(x) for x in c], dtype=float),
        **common,
    )
    total, parts = score(fallback, ["p", "p"], ["abc", "de"], None)
    assert total.tolist() == [3.0, 2.0]
    assert parts["human_labeled"].tolist() == [0.0, 0.0]
    with pytest.raises(
        TimeoutError, match=r"reward 'human': 1 of 1 completions unrated after 0.05 s"
    ):
        HumanReward(db, on_timeout="raise", **common)(["p"], ["new"], None)
    assert db.progress()["open"] == 4  # unlabeled tasks stay queued for later


def test_bad_options_are_refused(tmp_path):
    db = tmp_path / "fb.sqlite"
    with pytest.raises(ValueError, match=r"on_timeout must be one of \['default', 'fallback'"):
        HumanReward(db, on_timeout="skip")
    with pytest.raises(ValueError, match="needs fallback= a reward"):
        HumanReward(db, on_timeout="fallback")
    with pytest.raises(ValueError, match="mode must be one of"):
        HumanReward(db, mode="email")
    with pytest.raises(ValueError, match="serve=True only applies to mode='web'"):
        HumanReward(db, mode="console", serve=True)


def test_human_reward_in_textgen_env(tmp_path, tokenizer):
    answers = iter(["4"])
    env = gym.make(
        "TextGen-v0",
        task=make_small_task(),
        tokenizer=tokenizer,
        reward="human",
        reward_kwargs={
            "db": str(tmp_path / "fb.sqlite"),
            "mode": "console",
            "input_fn": lambda prompt: next(answers),
            "output_fn": quiet,
        },
        max_new_tokens=2,
    )
    env.reset(seed=0)
    terminated = False
    while not terminated:
        _, reward, terminated, _, info = env.step(int(tokenizer.encode(" hi")[0]))
    assert reward == pytest.approx(0.5)
    assert info["reward_components"]["human_labeled"] == 1.0
    store = env.unwrapped.reward_fn.store
    assert store.samples()[0].completion == info["completion"]


# ----------------------------------------------------------------------------- reward models


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


GOOD = ["great", "lovely", "excellent", "wonderful", "superb", "fine"]
BAD = ["awful", "terrible", "horrid", "dreadful", "poor", "nasty"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A small random BERT with a word-level vocabulary, saved like a hub model (fast to train)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["the", "meal", "film", "hotel", "book", "was", "review", "rate", "okay", "it"]
    vocab = {w: i for i, w in enumerate(special + GOOD + BAD + words + [".", ":"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    return str(path)


def _phrase(rng, words):
    return f"the {rng.choice(['meal', 'film', 'hotel', 'book'])} was {rng.choice(words)}"


def tiny_config(kind: str, **kw) -> RewardModelConfig:
    options = dict(
        kind=kind,
        max_length=16,
        batch_size=16,
        epochs=6,
        learning_rate=3e-3,
        head_learning_rate=3e-3,
        warmup_fraction=0.0,
        device="cpu",
    )
    return RewardModelConfig(**{**options, **kw})


def test_bradley_terry_learns_preferences_and_round_trips(one_thread, tiny_encoder, tmp_path):
    rng = np.random.default_rng(0)
    pairs = [
        PreferencePair("Review it.", _phrase(rng, GOOD), _phrase(rng, BAD), "r") for _ in range(160)
    ]
    model, metrics = train_reward_model(
        pairs, config=tiny_config("pairs", base_model=tiny_encoder, eval_fraction=0.25)
    )
    assert metrics["eval/size"] == 40
    assert metrics["eval/accuracy"] >= 0.9
    saved = model.save(tmp_path / "rm")
    assert {"config.json", "model.safetensors", "reward_head.safetensors", "reward_model.json"} <= {
        p.name for p in saved.iterdir()
    }
    assert json.loads((saved / "reward_model.json").read_text())["kind"] == "pairs"
    texts = ["the book was lovely", "the film was awful"]
    before = model.score(["Review it."] * 2, texts)
    reward = make_reward("reward_model", path=str(saved), device="cpu")
    assert isinstance(reward, LearnedReward)
    after = reward(["Review it."] * 2, texts, None)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    assert after[0] > after[1]
    with pytest.raises(ValueError, match="output='prob' needs a 'binary' reward model"):
        LearnedReward(saved, output="prob")


def test_regression_on_ratings_correlates(one_thread, tiny_encoder):
    rng = np.random.default_rng(1)
    data = []
    for _ in range(200):
        score_ = int(rng.integers(1, 6))
        words = GOOD if score_ >= 4 else BAD if score_ <= 2 else ["okay"]
        data.append(ScoredText("Rate:", _phrase(rng, words), float(score_)))
    model, metrics = train_reward_model(
        data, config=tiny_config("ratings", base_model=tiny_encoder)
    )
    assert metrics["eval/pearson"] > 0.8
    assert metrics["eval/spearman"] > 0.8
    assert 1.0 < model.target_mean < 5.0  # scores come back in rating units
    assert model.score(["Rate:"], ["the meal was superb"])[0] > 3.5


def test_binary_labels_with_bce(one_thread, tiny_encoder, tmp_path):
    rng = np.random.default_rng(2)
    data = [
        ScoredText("", _phrase(rng, GOOD if y else BAD), float(y))
        for y in rng.integers(0, 2, size=200)
    ]
    model, metrics = train_reward_model(data, config=tiny_config("binary", base_model=tiny_encoder))
    assert metrics["eval/accuracy"] >= 0.9
    assert metrics["eval/auc"] >= 0.95
    assert 0.5 <= metrics["eval/majority_baseline"] < 0.8
    assert "eval/context_accuracy" not in metrics  # one prompt for all: no other context
    path = model.save(tmp_path / "bin")
    probs = LearnedReward(path, output="prob")(
        ["", ""], ["the hotel was superb", "it was nasty"], None
    )
    assert 0 < probs[1] < 0.5 < probs[0] < 1


class _ScoringRule:
    """A stand-in reward model: a reply scores 1 when its first word is in the prompt, or
    (``reads_prompt=False``) by its length alone."""

    def __init__(self, kind: str, reads_prompt: bool) -> None:
        self.kind, self.reads_prompt = kind, reads_prompt

    def score(self, prompts, completions, *, batch_size=128):
        if not self.reads_prompt:
            return np.array([len(c) for c in completions], dtype=np.float32)
        return np.array(
            [float(c.split()[0] in p) for p, c in zip(prompts, completions, strict=True)],
            dtype=np.float32,
        )


def test_context_accuracy_tells_a_model_that_reads_the_prompt_from_one_that_does_not():
    prompts = ["user: a latte", "user: a mocha", "user: a tea"]
    replies = ["latte coming up", "mocha coming up", "tea coming up"]
    assert context_accuracy(_ScoringRule("binary", True), prompts, replies) == 1.0
    assert context_accuracy(_ScoringRule("binary", False), prompts, replies) == 0.5
    assert context_accuracy(_ScoringRule("binary", True), ["same"] * 3, replies) is None
    # evaluate reports it over the good (binary), chosen (pairs) or above-median (ratings)
    # replies; a bad reply that fits no prompt does not count.
    labelled = [ScoredText(p, r, 1.0) for p, r in zip(prompts, replies, strict=True)]
    labelled.append(ScoredText("user: a tea", "nothing, ever", 0.0))
    metrics = evaluate(_ScoringRule("binary", True), labelled)
    assert metrics["eval/context_accuracy"] == 1.0 and metrics["eval/size"] == 4
    assert evaluate(_ScoringRule("binary", False), labelled)["eval/context_accuracy"] == 0.5
    pairs = [PreferencePair(p, r, "no", "r") for p, r in zip(prompts, replies, strict=True)]
    assert evaluate(_ScoringRule("pairs", True), pairs)["eval/context_accuracy"] == 1.0
    ratings = [5.0, 4.0, 3.0, 1.0]
    rated = [ScoredText(e.prompt, e.completion, t) for e, t in zip(labelled, ratings, strict=True)]
    assert evaluate(_ScoringRule("ratings", True), rated)["eval/context_accuracy"] == 1.0


def test_context_negatives_move_good_replies_to_other_prompts(one_thread, tiny_encoder):
    # Each good reply (and only a good one) comes back after another prompt, labelled bad;
    # training sees them beside the originals.
    rng = np.random.default_rng(3)
    data = [
        ScoredText(f"review the {thing} :", f"the {thing} was {rng.choice(GOOD if y else BAD)}", y)
        for thing, y in zip(rng.choice(["meal", "film", "hotel"], 40), [1.0, 0.0] * 20, strict=True)
    ]
    negatives = context_negatives(data, 1.0, seed=1)
    good = [(e.prompt, e.completion) for e in data if e.target == 1.0]
    assert len(negatives) == 20 and all(n.target == 0.0 for n in negatives)
    assert sorted(n.completion for n in negatives) == sorted(c for _, c in good)
    assert all((n.prompt, n.completion) not in good for n in negatives)  # a prompt of another thing
    assert len(context_negatives(data, 0.5, seed=1)) == 10
    assert context_negatives(data, 1.0, seed=1) == negatives  # seeded
    _, metrics = train_reward_model(
        data, data, tiny_config("binary", base_model=tiny_encoder, epochs=1, context_negatives=1.0)
    )
    assert metrics["train/size"] == 60 and "eval/context_accuracy" in metrics
    with pytest.raises(ValueError, match=r"context_negatives must be in \[0, 1\], got 2"):
        RewardModelConfig(kind="binary", context_negatives=2)
    with pytest.raises(ValueError, match="context_negatives needs kind='binary'.*'pairs'"):
        RewardModelConfig(kind="pairs", context_negatives=0.5)
    with pytest.raises(ValueError, match="two distinct prompts or more"):
        context_negatives([ScoredText("p", "a", 1.0), ScoredText("p", "b", 0.0)], 1.0)


def test_training_input_is_validated(tiny_encoder):
    with pytest.raises(ValueError, match=r"kind must be one of \['pairs', 'ratings', 'binary'\]"):
        RewardModelConfig(kind="listwise")
    with pytest.raises(TypeError, match=r"train\[0\] is .*kind='pairs' trains on PreferencePair"):
        train_reward_model([ScoredText("p", "c", 1.0)], config=tiny_config("pairs"))
    with pytest.raises(ValueError, match=r"train\[0\] has target 3.0; binary labels are 0 or 1"):
        train_reward_model([ScoredText("p", "c", 3.0)], config=tiny_config("binary"))
    with pytest.raises(FileNotFoundError, match="is not a textgym reward model"):
        RewardModel.load(tiny_encoder)


def test_examples_from_store(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        a, b = store.add_sample("p", "a"), store.add_sample("p", "b")
        store.add_ranking([b, a], rater="ai:judge")
        store.add_rating(a, 4, rater="x")
        store.add_label(b, 0, rater="y")
        assert examples_from_store(store, "pairs") == [PreferencePair("p", "b", "a", "ai:judge")]
        assert examples_from_store(store, "ratings") == [ScoredText("p", "a", 4.0)]
        assert examples_from_store(store, "binary", rater="y") == [ScoredText("p", "b", 0.0)]
        assert examples_from_store(store, "binary", rater="x") == []


def test_train_rm_command_line(one_thread, tiny_encoder, tmp_path, capsys):
    from textgym import cli

    db = tmp_path / "fb.sqlite"
    rng = np.random.default_rng(3)
    with FeedbackStore(db) as store:
        for _ in range(40):
            good = store.add_sample("Review it.", _phrase(rng, GOOD))
            bad = store.add_sample("Review it.", _phrase(rng, BAD))
            store.add_ranking([good, bad], rater="r")
    out = tmp_path / "rm"
    argv = ["feedback", "train-rm", "--db", str(db), "--out", str(out), "--kind", "pairs"]
    argv += ["--base-model", tiny_encoder, "--max-length", "16", "--epochs", "1", "--device", "cpu"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{") :])
    assert report["saved"] == str(out)
    assert report["eval/size"] == 4  # eval_fraction 0.1 of 40 pairs
    assert 0.0 <= report["eval/accuracy"] <= 1.0
    assert RewardModel.load(out).kind == "pairs"


def test_hf_sequence_classifier_as_reward(one_thread, tiny_encoder, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(tiny_encoder, num_labels=2)
    config.id2label, config.label2id = {0: "NEG", 1: "POS"}, {"NEG": 0, "POS": 1}
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "clf")
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(tmp_path / "clf")
    texts = ["one", "two words", "three words here"]
    prob = make_reward("hf_classifier", model=str(tmp_path / "clf"), label="POS", device="cpu")
    neg = ClassifierReward(str(tmp_path / "clf"), label=0, device="cpu", batch_size=2)
    logit = ClassifierReward(str(tmp_path / "clf"), label=1, output="logit", device="cpu")
    p1, p0 = prob(["x"] * 3, texts, None), neg(["x"] * 3, texts, None)
    np.testing.assert_allclose(p1 + p0, np.ones(3), atol=1e-5)
    assert logit(["x"] * 3, texts, None).shape == (3,)
    # A sequence classifier also serves as the base of a new reward model (its head is dropped).
    pairs = [PreferencePair("q", "the book was great", "the book was awful", "r")] * 8
    model, _ = train_reward_model(
        pairs, pairs[:2], tiny_config("pairs", base_model=str(tmp_path / "clf"), epochs=1)
    )
    assert type(model.encoder).__name__ == "BertModel"
    with pytest.raises(ValueError, match=r"label 'MAYBE' is not one of the model's labels"):
        ClassifierReward(str(tmp_path / "clf"), label="MAYBE")
    with pytest.raises(ValueError, match="label index 5 out of range for 2 labels"):
        ClassifierReward(str(tmp_path / "clf"), label=5)


@pytest.mark.slow
def test_minilm_reward_model_on_an_sst2_slice_beats_chance(shared_data, monkeypatch):
    """Real data, real encoder: 512 SST-2 sentences, one epoch; 200 dev sentences."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from reward_data import sst2

    everything = sst2("train")
    pick = np.random.default_rng(0).choice(len(everything), 512, replace=False)
    train = [everything[i] for i in pick]
    dev = sst2("dev")[:200]
    _, metrics = train_reward_model(
        train,
        dev,
        RewardModelConfig(kind="binary", max_length=48, learning_rate=1e-4, device="cpu"),
    )
    assert metrics["eval/auc"] > 0.75
    assert metrics["eval/accuracy"] > 0.65
