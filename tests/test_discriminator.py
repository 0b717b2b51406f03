"""The discriminator reward: its loss, online training beside the policy (custom trainers and
SB3), exact resume, offline pre-training, the command line, and bad input."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import Trainer, TrainingStopped, make_config
from textgym.feedback import cli as feedback_cli
from textgym.rewards import make_reward
from textgym.rewards.discriminator import (
    DiscriminatorReward,
    shuffled_words,
    task_references,
    train_discriminator,
)
from textgym.rewards.online import online_rewards
from textgym.tasks import make_task

SUBJECTS = ["dog", "cat", "boy", "girl", "farmer", "teacher", "bird", "baker"]
VERBS = ["walks", "reads", "paints", "carries", "watches", "finds", "cleans", "draws"]
OBJECTS = ["ball", "book", "river", "tree", "fence", "garden", "letter", "apple"]
PLACES = ["park", "house", "road", "school", "market", "hill"]
FILLER = ["the", "a", "near", "by", "in", "on", "write", "one", "sentence", "with", "words"]


def sentence(rng: np.random.Generator) -> tuple[list[str], str]:
    """Keywords and a fluent sentence that uses them."""
    s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
    return [s, v, o], f"the {s} {v} a {o} near the {rng.choice(PLACES)} ."


def save_tiny_bert(path: Path, words: list[str]) -> str:
    """A small random BERT whose word-level vocabulary is ``words`` (anything else is [UNK]),
    saved like a hub model: fast to train."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(special + words)}
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


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    words = SUBJECTS + VERBS + OBJECTS + PLACES + FILLER + [".", ",", ":"]
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), words)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_disc(path: str, **options) -> DiscriminatorReward:
    defaults = dict(max_length=24, batch_size=8, learning_rate=1e-3, device="cpu")
    return DiscriminatorReward(base_model=path, **{**defaults, **options})


def params(disc: DiscriminatorReward) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in disc.model.state_dict().items()}


# -- the loss and the reward -----------------------------------------------------------------


def test_loss_and_reward_by_hand_on_a_tiny_encoder(one_thread, tiny_encoder):
    disc = tiny_disc(tiny_encoder, label_smoothing=0.1)
    pos = [("write one", "the dog reads a book ."), ("write one", "the cat finds a ball .")]
    neg = [("write one", "dog , reads , book"), ("write one", "cat ball"), ("p", "finds")]
    pairs = pos + neg
    logits = disc.logits([p for p, _ in pairs], [t for _, t in pairs]).astype(np.float64)

    def bce(x: np.ndarray, y: float) -> np.ndarray:
        d = 1 / (1 + np.exp(-x))
        return -(y * np.log(d) + (1 - y) * np.log(1 - d))

    # Each class weighs one half; references have the smoothed target 0.9.
    expected = 0.5 * (bce(logits[:2], 0.9).mean() + bce(logits[2:], 0.0).mean())
    loss, stats = disc.loss(pos, neg)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["disc_loss"] == pytest.approx(expected, rel=1e-5)
    balanced = 0.5 * ((logits[:2] > 0).mean() + (logits[2:] < 0).mean())
    assert stats["disc_accuracy"] == pytest.approx(balanced)
    assert stats["disc_penalty"] == 0.0

    # The reward: log D by default, D with output="prob" (D = sigmoid(logit)).
    prompts, texts = [p for p, _ in pairs], [t for _, t in pairs]
    log_d = -np.log1p(np.exp(-logits))
    np.testing.assert_allclose(disc(prompts, texts, None), log_d, rtol=1e-5)
    prob = tiny_disc(tiny_encoder, output="prob")  # same seed: same weights
    np.testing.assert_allclose(prob(prompts, texts, None), np.exp(log_d), rtol=1e-5)

    # The R1 penalty, gamma/2 * |d logit / d input embeddings|^2 averaged over the references,
    # computed one reference at a time (no padding) against the batched version.
    gamma = 2.0
    penalised = tiny_disc(tiny_encoder, label_smoothing=0.1, gradient_penalty=gamma)
    loss_gp, stats_gp = penalised.loss(pos, neg)
    norms = []
    for prompt, text in pos:
        batch = penalised.model.encode([prompt], [text])
        embeds = penalised.model.encoder.get_input_embeddings()(batch.pop("input_ids"))
        (grad,) = torch.autograd.grad(penalised.model(inputs_embeds=embeds, **batch).sum(), embeds)
        norms.append(grad.pow(2).sum().item())
    assert stats_gp["disc_penalty"] == pytest.approx(gamma / 2 * np.mean(norms), rel=1e-4)
    assert loss_gp.item() == pytest.approx(expected + gamma / 2 * np.mean(norms), rel=1e-4)


# -- online, beside the policy ---------------------------------------------------------------

TINY = {
    "model": "tiny",
    "task": "summarize",
    "batch_size": 4,
    "max_new_tokens": 4,
    "top_k": 8,
    "eval_every": 0,
    "save_every": 0,
    "progress": False,
    "report_to": "none",
}


def tiny_config(algo: str, run_dir: Path, **options):
    return make_config(algo, **{**TINY, "run_dir": str(run_dir), **options})


def test_online_updates_change_only_the_discriminator(one_thread, tiny_encoder, tmp_path):
    disc = tiny_disc(tiny_encoder)
    trainer = Trainer(tiny_config("reinforce", tmp_path), reward=[("rouge_l", 1.0), (disc, 0.5)])
    assert online_rewards(trainer.envs.reward_fn) == [("discriminator", disc)]
    assert trainer.eval_envs.reward_fn is trainer.envs.reward_fn  # evaluated as trained
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in disc.model.parameters()}

    policy_before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    disc_before = params(disc)
    batch = trainer.collect()
    metrics = trainer.train_online_rewards(batch)
    assert set(metrics) == {
        "train/disc_loss", "train/disc_accuracy", "train/disc_steps", "train/disc_buffer"
    }  # fmt: skip
    assert metrics["train/disc_steps"] == 1.0 and metrics["train/disc_buffer"] == 4.0
    for name, value in trainer.policy.state_dict().items():
        assert torch.equal(value, policy_before[name]), name
    changed = [k for k, v in params(disc).items() if not torch.equal(v, disc_before[k])]
    assert "head.weight" in changed and any(k.startswith("encoder.") for k in changed)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [
            {k: v for k, v in r.items() if not k.startswith("time/")} for r in csv.DictReader(f)
        ]


def test_resume_with_the_discriminator_in_the_loop_equals_an_unbroken_run(
    one_thread, tiny_encoder, tmp_path
):
    options = {"iterations": 4, "save_every": 2, "eval_every": 2, "eval_samples": 2}
    # k=3: the checkpoint at iteration 2 holds two pending rollouts; a 6-completion buffer
    # fills at the first update and replaces by the discriminator's RNG after it.
    disc_options = dict(update_every=3, steps=2, buffer_size=6, label_smoothing=0.1)

    def run(run_dir: Path, resume: bool = False) -> tuple[Trainer, DiscriminatorReward]:
        disc = tiny_disc(tiny_encoder, **disc_options)
        reward = [("rouge_l", 1.0), (disc, 0.5)]
        return Trainer(tiny_config("ppo", run_dir, **options), reward=reward, resume=resume), disc

    unbroken, disc_unbroken = run(tmp_path / "unbroken")
    unbroken.train()
    first, _ = run(tmp_path / "broken")
    first.train(num_iterations=2)
    assert len(first.online_rewards[0][1].pending[1]) == 8  # two rollouts wait for k=3
    del first
    resumed, disc_resumed = run(tmp_path / "broken", resume=True)
    assert resumed.iteration == 2 and len(disc_resumed.pending[1]) == 8
    resumed.train()

    rows = _rows(tmp_path / "broken")
    assert rows == _rows(tmp_path / "unbroken")
    assert rows[-2]["train/disc_steps"] != ""  # iteration 3 updated the discriminator
    assert rows[-1]["eval/disc_accuracy"] != "" and rows[-1]["train/reward/discriminator"] != ""
    a, b = disc_unbroken.state_dict(), disc_resumed.state_dict()
    assert a["buffer"] == b["buffer"] and a["rng"] == b["rng"] and a["seen"] == b["seen"] == 12
    assert a["pending"] == b["pending"] and len(a["pending"][1]) == 4  # iteration 4 waits
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for (name, x), y in zip(
        unbroken.policy.state_dict().items(), resumed.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name


def test_sb3_callback_trains_the_discriminator_the_envs_score_with(one_thread, tiny_encoder):
    import gymnasium as gym
    from stable_baselines3 import PPO

    import textgym  # noqa: F401  (registers TextGen-v0)
    from agents.sb3 import OnlineRewardCallback
    from textgym.models import tiny_model

    disc = tiny_disc(tiny_encoder)
    env = gym.make("TextGen-v0", task="summarize", reward=[("rouge_l", 1.0), (disc, 0.5)],
                   max_new_tokens=2)  # fmt: skip
    model = PPO("LMPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0,
                policy_kwargs={"model": tiny_model(env.unwrapped.tokenizer)})  # fmt: skip
    before = params(disc)
    model.learn(16, callback=OnlineRewardCallback(env.unwrapped.reward_fn))
    assert disc.calls == 2 and disc.seen >= 8  # two rollouts, episodes of at most 2 tokens
    assert not torch.equal(params(disc)["head.weight"], before["head.weight"])

    other = tiny_disc(tiny_encoder)
    with pytest.raises(ValueError, match="do not score with this 'discriminator' reward object"):
        model.learn(8, callback=OnlineRewardCallback(other))
    with pytest.raises(ValueError, match="holds no reward that learns online"):
        OnlineRewardCallback(make_reward("rouge_l"))


# -- what a discriminator learns -------------------------------------------------------------


def test_pretrained_on_references_against_shuffled_words_separates_held_out_texts(
    one_thread, shared_data, tmp_path
):
    """DialogSum's 500 validation summaries against the same words shuffled. The tiny encoder
    knows only the words used at least 5 times (the rest are [UNK]), so it cannot memorise
    summaries: it has to learn word order to tell the held-out fifth apart. (On the 92
    references of the packaged tasks a random tiny encoder is too unstable, 0.5 to 1.0 by
    seed; MiniLM reaches 0.91 to 1.0 there but takes 30 s or more on 2 cores.)"""
    pairs = task_references(make_task("dialogsum"), "validation")
    assert len(pairs) == 500
    counts = Counter(w for _, text in pairs for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    encoder = save_tiny_bert(tmp_path, sorted(w for w, c in counts.items() if c >= 5))
    disc, metrics = train_discriminator(
        pairs,
        shuffled_words(pairs, seed=1),
        epochs=3,
        eval_fraction=0.2,
        base_model=encoder,
        learning_rate=3e-3,
        head_learning_rate=3e-3,
        max_length=48,
        batch_size=16,
        device="cpu",
    )
    assert metrics["eval/size"] == 200  # 100 held-out summaries and 100 shuffled ones
    assert metrics["eval/disc_accuracy"] >= 0.9
    assert not disc.online and disc.optimizer is None


def test_a_mix_with_the_discriminator_ranks_fluent_sentences_above_gamed_keyword_lists(
    one_thread, tiny_encoder
):
    """A policy games keyword_coverage by listing the keywords: coverage alone cannot tell
    the list from a sentence; the discriminator, learning online from those lists against
    the references, can, on prompts it never saw."""
    rng = np.random.default_rng(0)
    data = [sentence(rng) for _ in range(96)]
    prompts = [f"write one sentence with the words : {', '.join(k)}" for k, _ in data]
    lists = [", ".join(k) for k, _ in data]
    refs = [[s] for _, s in data]
    disc = tiny_disc(tiny_encoder, batch_size=16, learning_rate=3e-3, head_learning_rate=3e-3)
    for _ in range(4):  # rollouts of 16 gamed completions
        for start in range(0, 64, 16):
            rows = slice(start, start + 16)
            disc.observe(prompts[rows], lists[rows], refs[rows])

    held = slice(64, 96)
    keywords = {"keywords": [k for k, _ in data[held]]}
    fluent = [s for _, s in data[held]]
    coverage = make_reward("keyword_coverage")
    np.testing.assert_array_equal(coverage(prompts[held], fluent, None, **keywords), 1.0)
    np.testing.assert_array_equal(coverage(prompts[held], lists[held], None, **keywords), 1.0)
    mix = make_reward([("keyword_coverage", 1.0), (disc, 0.5)])
    fluent_score = mix(prompts[held], fluent, None, **keywords)
    list_score = mix(prompts[held], lists[held], None, **keywords)
    assert (fluent_score > list_score).all(), (fluent_score, list_score)
    assert disc.evaluate(prompts[held], lists[held], refs[held])["disc_accuracy"] >= 0.9


# -- offline pre-training from the command line ----------------------------------------------


def test_train_disc_command_line_saves_hugging_face_format_that_make_reward_loads(
    one_thread, tiny_encoder, tmp_path, capsys
):
    out = tmp_path / "disc"
    argv = ["train-disc", "--task", "summarize", "--out", str(out), "--negatives", "shuffled"]
    argv += ["--base-model", tiny_encoder, "--max-length", "24", "--epochs", "2"]
    argv += ["--device", "cpu", "--learning-rate", "1e-3"]
    parser = feedback_cli.argparse.ArgumentParser()
    feedback_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["feedback", *argv])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    references = len(task_references(make_task("summarize")))  # every reference of train
    assert f'"positives": {references}' in printed and '"eval/disc_accuracy"' in printed
    assert {"config.json", "model.safetensors", "tokenizer.json", "reward_model.json"} <= {
        p.name for p in out.iterdir()
    }

    fixed = make_reward("discriminator", path=out, device="cpu")
    assert not fixed.online and online_rewards(fixed) == []  # a fixed reward: trainers leave it
    pairs = task_references(make_task("summarize"), "validation")
    prompts, texts = [p for p, _ in pairs], [t for _, t in pairs]
    log_d = fixed(prompts, texts, None)
    assert log_d.dtype == np.float32 and log_d.shape == (5,) and (log_d < 0).all()
    # The folder is a "binary" reward model too: its probability is exp(log D).
    prob = make_reward("reward_model", path=out, output="prob", device="cpu")
    np.testing.assert_allclose(prob(prompts, texts, None), np.exp(log_d), rtol=1e-5)
    with pytest.raises(RuntimeError, match="fixed"):
        fixed.observe(prompts, texts, [[t] for t in texts])


# -- bad input -------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors(one_thread, tiny_encoder, tmp_path, capsys):
    no_refs = "rows \\[0, 1\\] have none; use a task whose samples have references"
    with pytest.raises(ValueError, match=no_refs):
        task_references(make_task("keywords"), limit=2)
    disc = tiny_disc(tiny_encoder)
    with pytest.raises(ValueError, match=no_refs):
        disc.observe(["p", "q"], ["a", "b"], [[], []])
    with pytest.raises(ValueError, match="got None for 2 completions"):
        disc.observe(["p", "q"], ["a", "b"], None)  # type: ignore[arg-type]
    trainer = Trainer(
        tiny_config("reinforce", tmp_path / "run", task="keywords", iterations=1),
        reward=[("keyword_coverage", 1.0), (disc, 0.5)],
    )
    with pytest.raises(TrainingStopped, match="use a task whose samples have references"):
        trainer.train()

    missing = str(tmp_path / "no-such-encoder")
    with pytest.raises(
        OSError, match=re.escape(f"cannot load the discriminator's encoder {missing!r}")
    ):
        DiscriminatorReward(base_model=missing)
    with pytest.raises(FileNotFoundError, match="is not a saved discriminator"):
        DiscriminatorReward(tmp_path)
    for option in ("update_every", "buffer_size", "steps"):
        with pytest.raises(ValueError, match=f"{option} must be an int >= 1, got 0"):
            make_reward("discriminator", **{option: 0})
    with pytest.raises(TypeError, match="unknown discriminator option\\(s\\) \\['k'\\]"):
        make_reward("discriminator", k=2)

    parser = feedback_cli.argparse.ArgumentParser()
    feedback_cli.add_parser(parser.add_subparsers())
    out = str(tmp_path / "d")
    args = parser.parse_args(["feedback", "train-disc", "--task", "keywords", "--out", out])
    assert args.func(args) == 2
    assert "use a task whose samples have references" in capsys.readouterr().err
