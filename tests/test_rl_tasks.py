"""The results grid's three tasks (issue 18): sentiment control on SST-2 openings, RLHF on
Taskmaster-4's human labels, DialogSum with ROUGE-L + MiniLM + length. Each task's reward
model trains with one command (``textgym feedback train-rm --data ...``) and plugs in as the
task's default reward. Fixtures under tests/fixtures/{sst2,taskmaster4}; real-data checks skip
without ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from textgym import cli
from textgym.feedback.recipes import (
    RECIPES,
    TASKMASTER4_REWARD_FILES,
    SentimentReward,
    Taskmaster4Reward,
    loop_free,
    plain_talk,
    reward_model_dir,
    sst2_examples,
    taskmaster4_examples,
    text_turn,
    train_recipe,
)
from textgym.feedback.reward_model import LearnedReward
from textgym.rewards import list_rewards, make_reward, score
from textgym.rewards.metrics import SourceNovelty
from textgym.rewards.summary import NoSpeakerTurns, ReferenceLength, SummaryGate, rouge_minilm
from textgym.tasks import DataFormatError, list_tasks, make_task, prompt_text

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A 1-layer, 16-wide random BERT with MiniLM's tokenizer: a reward model in a second."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from textgym.models import minilm_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


TINY = ["--max-length", "48", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


def test_the_three_tasks_and_their_rewards_are_registered():
    assert {"sst2_sentiment", "taskmaster4_rlhf", "dialogsum_rl"} <= set(list_tasks())
    names = {"sst2_sentiment", "sst2_positive", "taskmaster4_rm", "rouge_minilm"}
    assert names | {"reference_length", "novelty"} <= set(list_rewards())
    assert set(RECIPES) == {"sst2", "taskmaster4"}


# ----------------------------------------------------------------------------- sentiment


def test_sst2_sentiment_prompts_are_detokenized_openings_of_long_enough_sentences():
    task = make_task("sst2_sentiment", path=FIXTURES)
    assert task.default_reward == "sst2_sentiment"
    # train.tsv: 8 rows; two are short phrases, one is under 8 words, one repeats an opening.
    openings = [s.meta["opening"] for s in task.split("train")]
    assert openings == [
        "a warm, funny film that",
        "the plot (such as it",
        "the cast is terrific and",
        "it's a tedious, empty exercise",
    ]
    first = task.split("train")[0]
    assert first.prompt == [
        {
            "role": "user",
            "content": "Continue this sentence from a movie review. Write only the "
            "continuation.\n\na warm, funny film that",
        }
    ]
    assert first.references == ("doesn't forget its heart",)
    assert task.split("train")[2].references == ('the songs are "wonderful".',)
    assert [s.meta["label"] for s in task.split("train")] == [1, 0, 1, 0]
    # dev.tsv names its text column "content" and feeds validation; no test split.
    assert [s.meta["sentiment"] for s in task.split("validation")] == [
        "positive",
        "negative",
        "positive",
    ]
    assert "test" not in task.splits
    shorter = make_task("sst2_sentiment", path=FIXTURES, prompt_words=4, min_continuation_words=1)
    assert shorter.split("validation")[0].meta["opening"] == "one of the year's"


def test_sst2_sentiment_bad_files_and_options_are_named(tmp_path):
    folder = tmp_path / "sst2"
    folder.mkdir()
    (folder / "train.tsv").write_text("label\tsentence\n2\ta b c d e f g h i\n")
    with pytest.raises(DataFormatError, match=r"train.tsv line 2: field 'label' must be 0 or 1"):
        make_task("sst2_sentiment", path=tmp_path)
    (folder / "train.tsv").write_text("label\tsentence\n1\ta b\tc\n")
    with pytest.raises(DataFormatError, match=r"line 2: has 3 tab-separated value\(s\)"):
        make_task("sst2_sentiment", path=tmp_path)
    (folder / "train.tsv").write_text("label\ttext\n1\ta b c d e f g h i\n")
    with pytest.raises(DataFormatError, match=r"no sentence column \(tried sentence, content"):
        make_task("sst2_sentiment", path=tmp_path)
    with pytest.raises(ValueError, match="prompt_words=0 must be >= 1"):
        make_task("sst2_sentiment", path=FIXTURES, prompt_words=0)


def test_sst2_examples_match_the_task_text():
    train = sst2_examples("train", FIXTURES)
    assert len(train) == 8 and train[0].prompt == "" and train[0].target == 1.0
    assert train[0].completion == "a warm, funny film that doesn't forget its heart"
    dev = sst2_examples("dev", FIXTURES / "sst2" / "dev.tsv")
    assert [e.target for e in dev] == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="split must be 'train' or 'dev'"):
        sst2_examples("test", FIXTURES)


# ----------------------------------------------------------------------------- taskmaster-4


def test_taskmaster4_reward_prompts_are_the_rlhf_task_prompts():
    """The reward model is trained on the very text the policy's prompts become."""
    task = make_task("taskmaster4_rlhf", path=FIXTURES, holdout=0.0)
    assert task.default_reward == "taskmaster4_rm"
    sample = task.split("train")[0]  # the agent's turn after the latte order and its API call
    examples = taskmaster4_examples(("reward_00.json",), FIXTURES)
    assert examples[0].prompt == prompt_text(sample.prompt)
    assert examples[0].completion == sample.references[0] == "One small latte. Anything else?"
    assert "[API result get_menu_items: " in examples[0].prompt
    assert [e.target for e in examples] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert examples[-1].completion == '[API call get_menu_items: {"query": "latte"}]'


def test_taskmaster4_bad_reward_rows_are_named(tmp_path):
    folder = tmp_path / "taskmaster4" / "reward"
    folder.mkdir(parents=True)
    row = {"context": "[]", "generation": '{"role": "agent", "text": "Hi."}', "reward": 0.5}
    (folder / "reward_00.json").write_text(json.dumps([row]))
    with pytest.raises(DataFormatError, match=r"reward_00.json item 0: reward must be 0.0 or 1.0"):
        taskmaster4_examples(("reward_00.json",), tmp_path)
    (folder / "reward_00.json").write_text(json.dumps([{"context": "[]"}]))
    with pytest.raises(DataFormatError, match=r"item 0: not a Taskmaster-4 reward row"):
        taskmaster4_examples(("reward_00.json",), tmp_path)
    row = {"context": '[{"role": "agent"}]', "generation": '{"text": "x"}', "reward": 1}
    (folder / "reward_00.json").write_text(json.dumps([row]))
    with pytest.raises(DataFormatError, match=r"a turn needs 'text', or 'api' / 'response'"):
        taskmaster4_examples(("reward_00.json",), tmp_path)


# ----------------------------------------------------------------------------- one command


def test_train_rm_data_trains_saves_where_the_rewards_look(
    tiny_bert, tmp_path, monkeypatch, capsys
):
    torch.set_num_threads(1)
    monkeypatch.setenv("TEXTGYM_REWARD_MODELS", str(tmp_path / "rms"))
    argv = ["feedback", "train-rm", "--data", "sst2", "--data-path", str(FIXTURES)]
    assert cli.main([*argv, "--base-model", tiny_bert, *TINY]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("{") :])
    assert report["saved"] == str(tmp_path / "rms" / "sst2") == str(reward_model_dir("sst2"))
    assert report["eval/size"] == 4 and report["train/size"] == 8  # all of dev.tsv, train.tsv
    assert {"eval/accuracy", "eval/auc", "eval/majority_baseline", "time/train_seconds"} <= set(
        report
    )
    saved = json.loads((reward_model_dir("sst2") / "recipe_metrics.json").read_text())
    assert saved["config"]["max_length"] == 48 and saved["config"]["max_train_examples"] == 3000

    # The task's default reward finds the model; it scores the opening plus the continuation.
    task = make_task("sst2_sentiment", path=FIXTURES)
    reward = make_reward(task.default_reward, device="cpu")
    assert isinstance(reward, SentimentReward)
    samples = task.split("validation")
    prompts = [prompt_text(s.prompt) for s in samples]
    completions = [s.references[0] for s in samples]
    meta = {"opening": [s.meta["opening"] for s in samples]}
    total, parts = score(reward, prompts, completions, None, **meta)
    assert total.shape == (3,) and np.all((total > 0) & (total < 1))
    assert list(parts) == ["sst2_sentiment"]
    whole = LearnedReward(reward_model_dir("sst2"), output="prob", device="cpu")
    sentences = [f"{s.meta['opening']} {s.references[0]}" for s in samples]
    ramp = np.minimum(1.0, np.array([len(c.split()) for c in completions]) / 5)
    np.testing.assert_allclose(total, whole([""] * 3, sentences, None) * ramp, rtol=1e-5)
    # Stopping at once is worth nothing, whatever the opening alone would score.
    opening = meta["opening"][0]
    continuations = ["", "great", "a great , great film", "a great, great film !"]
    short = reward(prompts[:1] * 4, continuations, None, opening=[opening] * 4)
    plain = whole([""] * 3, [f"{opening} {c}" for c in continuations[1:]], None)
    # 0, 1, 4 and 4 words: a lone comma or "!" is no word.
    np.testing.assert_allclose(
        short, [0.0, plain[0] / 5, plain[1] * 0.8, plain[2] * 0.8], rtol=1e-5
    )
    unscaled = SentimentReward(reward_model_dir("sst2"), min_words=0, device="cpu")
    assert unscaled(prompts[:1], [""], None, opening=[opening])[0] == pytest.approx(
        float(whole([""], [opening], None)[0]), rel=1e-5
    )
    # Through the env: the task's default reward receives the opening in the batched meta.
    from textgym.env import TextGenEnv
    from textgym.models import shared_tokenizer

    env = TextGenEnv(
        task=task, tokenizer=shared_tokenizer("smollm2-135m"), split="validation",
        max_prompt_tokens=64, max_new_tokens=8,
    )  # fmt: skip
    env.reset(seed=0, options={"index": 0})
    for t in env.tokenizer.encode(completions[0], add_special_tokens=False)[:8]:
        _, r, terminated, truncated, info = env.step(t)
    assert terminated or truncated
    assert r == pytest.approx(float(reward([prompts[0]], [info["completion"]], None,
                                           opening=[meta["opening"][0]])[0]), rel=1e-5)  # fmt: skip
    # The positive rate of an evaluation is the mean of "sst2_positive".
    positive = make_reward("sst2_positive", device="cpu")
    assert positive.name == "sst2_positive"
    assert positive(prompts, completions, None, **meta).tolist() == (total > 0.5).tolist()
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\) or None, got 1.5"):
        SentimentReward(reward_model_dir("sst2"), threshold=1.5)
    with pytest.raises(
        ValueError, match=r"min_words must be an int >= 0 \(0: no scaling\), got -1"
    ):
        SentimentReward(reward_model_dir("sst2"), min_words=-1)


def test_taskmaster4_recipe_reports_text_replies_apart(tiny_bert, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "tm4"
    config = dict(base_model=tiny_bert, max_length=64, batch_size=8, epochs=1, device="cpu")
    _, metrics = train_recipe("taskmaster4", out, path=FIXTURES, **config)
    assert metrics["eval/size"] == 5  # files 00-04 vs 05
    # The recipe adds each of the 15 good training replies again after another conversation.
    assert metrics["train/size"] == 25 + 15 and "eval/context_accuracy" in metrics
    assert metrics["eval_text/size"] == 4  # the held-out API-call row is left out
    assert metrics["eval/majority_baseline"] == pytest.approx(0.6)
    monkeypatch.setenv("TEXTGYM_REWARD_MODELS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"textgym feedback train-rm --data taskmaster4"):
        make_reward("taskmaster4_rm")
    reward = make_reward("taskmaster4_rm", path=out, device="cpu")
    values = reward(["user: A mocha."] * 4, ["One mocha.", "No.", " ", "```"], None)
    assert values.shape == (4,) and np.all((values[:2] > 0) & (values[:2] < 1))
    # An empty reply or punctuation alone (PPO learned a bare code fence) is never a good turn.
    assert values[2] == 0.0 and values[3] == 0.0
    assert LearnedReward(out, output="prob", device="cpu")(["user: A mocha."], ["```"], None) > 0
    whole = LearnedReward(out, output="prob", device="cpu")
    np.testing.assert_allclose(
        values[:2], whole(["user: A mocha."] * 2, ["One mocha.", "No."], None)
    )
    assert reward.name == "taskmaster4_rm"
    # Nor is code, a JSON object, an API line (GRPO learned to answer with Python), a bare
    # value (PPO learned "True") or talk of the system's internals, which the model alone
    # rates above 0; text_only=False gives the model's score back.
    machine = [
        "import requests\nrequests.get(url)",
        '{"order_id": "1"}',
        "[API call x: {}]",
        "True",
        "To create a new order, you need to create an order object.",  # RLOO climbed these
        "Your `order_id` is 1.",
    ]
    prompts = ["user: A mocha."] * 6
    assert reward(prompts, machine, None).tolist() == [0.0] * 6
    raw = Taskmaster4Reward(out, text_only=False, device="cpu")(prompts, machine, None)
    assert np.all(raw > 0)
    np.testing.assert_allclose(raw, whole(prompts, machine, None))
    with pytest.raises(ValueError, match=r"text_only must be True or False, got 'no'"):
        Taskmaster4Reward(out, text_only="no")
    # A reply that repeats itself (PPO looped "The order of the order of ...") scores 0 too;
    # min_distinct=0 gives the model's score back.
    loops = [
        "The order of the order of the order of the order",
        "One mocha, please. One mocha, please.",
    ]
    assert reward(prompts[:2], loops, None).tolist() == [0.0, 0.0]
    ungated = Taskmaster4Reward(out, min_distinct=0, device="cpu")(prompts[:2], loops, None)
    np.testing.assert_allclose(ungated, whole(prompts[:2], loops, None))
    for bad, message in [
        (1.0, r"in \[0, 1\) \(0: no repetition gate\), got 1.0"),
        (True, r"a number in \[0, 1\), got True"),
    ]:
        with pytest.raises(ValueError, match=f"min_distinct must be {message}"):
            Taskmaster4Reward(out, min_distinct=bad)


def test_train_rm_command_line_errors(tmp_path, capsys):
    base = ["feedback", "train-rm"]
    assert cli.main([*base, "--data", "imdb", "--out", str(tmp_path)]) == 2
    assert "unknown reward-model recipe 'imdb'; valid: sst2, taskmaster4" in capsys.readouterr().err
    assert cli.main([*base, "--data", "sst2", "--kind", "pairs", "--data-path", str(FIXTURES)]) == 2
    assert "recipe 'sst2' has binary labels" in capsys.readouterr().err
    assert cli.main([*base, "--db", str(tmp_path / "fb.sqlite")]) == 2
    assert "--out is required with --db" in capsys.readouterr().err
    assert cli.main([*base, "--data", "sst2", "--data-path", str(tmp_path)]) == 2
    assert "train.tsv not found; pass the folder with train.tsv" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --db and --data exclude each other
        cli.main([*base, "--db", "x", "--data", "sst2"])


# ----------------------------------------------------------------------------- summarization


def test_reference_length_and_rouge_minilm():
    refs = [["the cat sat on the mat"]] * 3
    completions = ["the cat sat on the mat", "a dog", ""]
    assert ReferenceLength()(["p"] * 3, completions, refs).tolist() == pytest.approx(
        [1.0, 2 / 6, 0.0]
    )
    reward = make_reward("rouge_minilm", device="cpu")
    total, parts = score(reward, ["p"] * 3, completions, refs)
    assert list(parts) == [
        "rouge_l",
        "semantic_similarity",
        "reference_length",
        "novelty",
        "no_turns",
    ]
    assert total[0] == pytest.approx(1.75, abs=1e-4)  # every term is 1 for the reference itself
    assert total[2] == 0.0  # an empty summary earns nothing
    assert 0 < total[1] < total[0]
    assert repr(rouge_minilm(semantic_similarity=0, reference_length=0.5, min_novelty=0)) == (
        "WeightedSum(rouge_l*1, reference_length*0.5)"
    )
    with pytest.raises(ValueError, match="every weight is 0"):
        rouge_minilm(rouge_l=0, semantic_similarity=0, reference_length=0)
    with pytest.raises(ValueError, match=r"weight rouge_l=-1 must be a number >= 0"):
        rouge_minilm(rouge_l=-1)
    with pytest.raises(ValueError, match="needs one list of references per completion"):
        ReferenceLength()(["p"], ["x"], None)


DIALOGUE = (
    "user: Summarize the following dialogue in one sentence.\n\n"
    "#Person1#: Happy anniversary, Tom!\n#Person2#: Thanks, Mia.\n"
    "#Person1#: I baked you a cake. I hope you like chocolate.\n"
    "#Person2#: Chocolate! It's my favourite! You remembered after all these years."
)


def test_rouge_minilm_scores_copies_and_transcripts_of_the_dialogue_below_a_summary():
    # GRPO won the ungated reward by copying the dialogue, the novelty-gated one by writing new
    # "#Person1#:" turns, and one that matched those tags exactly by writing "Person1:" turns.
    summary = "Mia bakes Tom a chocolate cake for their anniversary and Tom loves it."
    copy = "#Person1#: Happy anniversary, Tom!\n#Person2#: Thanks, Mia.\n#Person1#: I baked"
    transcript = "#Person1#: Mia gives Tom a cake.\n#Person2#: Tom loves the anniversary cake."
    respelled = 'Person1: "Mia gives Tom a cake." Person2: "Tom loves the anniversary cake."'
    other = "Person2 wants to book a flight to Paris."  # a fluent summary of the wrong dialogue
    candidates = [
        "Mia bakes a cake for Tom on their anniversary.",
        copy,
        transcript,
        respelled,
        other,
    ]
    refs = [[summary]] * len(candidates)
    prompts = [DIALOGUE] * len(candidates)
    ungated = rouge_minilm(min_novelty=0, device="cpu")(prompts, candidates, refs)
    assert min(ungated[1:4]) > ungated[4]  # each beats a summary of the wrong dialogue
    total, parts = score(rouge_minilm(device="cpu"), prompts, candidates, refs)
    assert parts["novelty"][1] == 0.0 and min(parts["novelty"][2:4]) > 0.5  # new words
    assert parts["no_turns"].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert total[1] == total[2] == total[3] == 0.0 < total[4] < total[0]
    assert total[0] == pytest.approx(ungated[0])  # a real summary keeps its whole reward
    novelty_only = rouge_minilm(speaker_turns=False, device="cpu")(prompts, candidates, refs)
    assert novelty_only[1] == 0.0 < novelty_only[4] < min(novelty_only[2:4])  # what GRPO found


def test_source_novelty_and_the_gate_check_their_inputs():
    novelty = make_reward("novelty")
    assert isinstance(novelty, SourceNovelty) and novelty.n == 3
    half = "the cat sat on a red mat"  # 5 trigrams: 2 in the prompt, 3 new
    assert novelty(["the cat sat on the mat"], [half], None).tolist() == pytest.approx([0.6])
    one = lambda p, c, r, **m: np.ones(len(c))  # noqa: E731
    gate = SummaryGate(one, min_novelty=0.8)  # novelty 0.6 of the 0.8 that earns it all
    assert gate(["the cat sat on"], [half], None).tolist() == pytest.approx([0.75])
    with pytest.raises(ValueError, match=r"min_novelty must be in \(0, 1\], got 1.5"):
        SummaryGate(one, min_novelty=1.5)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        SourceNovelty(n=0)
    with pytest.raises(ValueError, match="got 1 prompts for 2 completions"):
        novelty(["p"], ["a", "b"], None)
    with pytest.raises(ValueError, match="needs one prompt per completion"):
        NoSpeakerTurns()(["p"], ["a", "b"], None)
    # SAMSum-style names are speakers too; a name without the colon is a summary's word.
    chat = "Amanda: I baked cookies.\nJerry: Sure!"
    said = ["Amanda baked cookies.", "Jerry: yum", "Note: Amanda baked."]
    assert NoSpeakerTurns()([chat] * 3, said, None).tolist() == [1.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- real data


def test_real_sst2_sentiment_task_and_labels(shared_data):
    task = make_task("sst2_sentiment", path=shared_data)
    assert len(task.split("train")) == 22_166 and len(task.split("validation")) == 768
    dev = task.split("validation")
    assert 0.45 < np.mean([s.meta["label"] for s in dev]) < 0.55
    assert all(len(s.meta["opening"].split()) == 5 for s in dev)
    assert len(sst2_examples("train", shared_data)) == 67_349
    assert len(sst2_examples("dev", shared_data)) == 872


def test_real_taskmaster4_reward_examples_and_task(shared_data):
    train = taskmaster4_examples(TASKMASTER4_REWARD_FILES[:5], shared_data)
    held_out = taskmaster4_examples(("reward_05.json",), shared_data)
    assert (len(train), len(held_out)) == (2_500, 328)
    assert 0.8 < np.mean([e.target for e in train + held_out]) < 0.9
    assert all(e.prompt.startswith("system: You take drink orders") for e in held_out)
    task = make_task("taskmaster4_rlhf", path=shared_data, max_samples=50)
    assert "[API result " in "".join(prompt_text(s.prompt) for s in task.split("train"))


def test_real_taskmaster4_replies_are_text_turns(shared_data):
    # The text-turn gate must not cost a real reply its reward: every agent turn the task
    # holds as a reference passes it.
    task = make_task("taskmaster4_rlhf", path=shared_data)
    replies = [r for samples in task.splits.values() for s in samples for r in s.references]
    assert len(replies) > 1_000
    assert text_turn(replies).min() == 1.0
    assert plain_talk(replies).min() == 1.0  # nor talks of the system's internals
    assert loop_free(replies, 0.8).min() == 1.0  # nor the repetition gate (lowest: 0.857)


def test_real_dialogsum_rl_is_dialogsum_with_the_climbable_reward(shared_data):
    task = make_task("dialogsum_rl", path=shared_data, max_samples=20)
    plain = make_task("dialogsum", path=shared_data, max_samples=20)
    assert task.default_reward == "rouge_minilm" and task.name == "dialogsum_rl"
    assert task.split("test") == plain.split("test")


def test_real_dialogsum_references_pass_the_summary_gates(shared_data):
    # The gates must not cost a real summary its reward: no human summary writes a speaker
    # turn, and all but a few keep at least half of their trigrams new.
    samples = make_task("dialogsum_rl", path=shared_data).split("validation")
    prompts = [prompt_text(s.prompt) for s in samples]
    summaries = [s.references[0] for s in samples]
    assert len(samples) == 500
    assert NoSpeakerTurns()(prompts, summaries, None).min() == 1.0
    assert (SourceNovelty()(prompts, summaries, None) >= 0.5).mean() >= 0.99
