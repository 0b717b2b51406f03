"""Tasks: embedded tasks, real-data loaders (shared data or fixtures), errors, determinism."""

from __future__ import annotations

import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from textgym.tasks import (
    Sample,
    Task,
    default_data_dir,
    list_tasks,
    make_task,
    prompt_text,
)
from textgym.tasks import datasets as ds
from textgym.tasks.datasets import DataFormatError
from textgym.tasks.embedded import word_list

DATA = Path(
    os.environ.get("TEXTGYM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared data folder {DATA} is absent (set TEXTGYM_DATA to use it)"
)
FIXTURES = Path(__file__).resolve().parent / "fixtures"

ALL_TASKS = {
    "keywords",
    "summarize",
    "dialogue",
    "dialogsum",
    "samsum",
    "scitldr",
    "taskmaster4",
    "dailydialog",
    "cnn_dailymail",
    "xsum",
    "imdb",
}


def roles(sample: Sample) -> list[str]:
    return [m["role"] for m in sample.prompt]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------- registry


def test_every_task_is_registered() -> None:
    assert set(list_tasks()) >= ALL_TASKS


def test_unknown_task_lists_registered_tasks() -> None:
    with pytest.raises(
        ValueError, match=r"unknown task 'nope'; registered tasks: .*dialogsum.*keywords"
    ):
        make_task("nope")


def test_empty_prompt_is_rejected() -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        Sample("   ")


# ---------------------------------------------------------------- embedded: keywords


def test_keywords_splits_are_deterministic_and_disjoint() -> None:
    a, b = make_task("keywords"), make_task("keywords")
    assert {k: len(v) for k, v in a.splits.items()} == {
        "train": 3000,
        "validation": 100,
        "test": 100,
    }
    for split in ("train", "validation", "test"):
        assert [s.prompt for s in a.split(split)] == [s.prompt for s in b.split(split)]
    # Pinned values: catch any change of the generator across numpy/python versions.
    assert a.split("test")[0].meta["keywords"] == ["orange", "kite", "teach"]
    assert a.split("validation")[0].meta["keywords"] == ["cut", "wheel", "cup"]
    sets = [frozenset(s.meta["keywords"]) for v in a.splits.values() for s in v]
    assert len(set(sets)) == len(sets) == 3200


def test_keywords_eval_splits_do_not_depend_on_train_size() -> None:
    small, big = make_task("keywords", num_train=10), make_task("keywords", num_train=500)
    assert len(small.split("train")) == 10
    assert [s.meta for s in small.split("test")] == [s.meta for s in big.split("test")]
    assert [s.meta for s in small.split("validation")] == [s.meta for s in big.split("validation")]
    assert make_task("keywords", seed=1).split("test")[0].meta != small.split("test")[0].meta


def test_keywords_prompt_and_word_mix() -> None:
    verbs, nouns = set(word_list("verbs")), set(word_list("nouns"))
    assert len(verbs) >= 90 and len(nouns) >= 150
    for s in make_task("keywords", num_train=200).split("train"):
        kws = s.meta["keywords"]
        assert len(kws) == len(set(kws)) == 3
        assert any(k in verbs for k in kws) and all(k in verbs | nouns for k in kws)
        assert s.references == ()
        assert s.prompt == [
            {
                "role": "user",
                "content": f"Write one sentence that uses the words: {', '.join(kws)}.",
            }
        ]


def test_keywords_size_range_and_template() -> None:
    task = make_task("keywords", num_keywords=(2, 4), num_train=300, template="Use {keywords}!")
    sizes = {len(s.meta["keywords"]) for s in task.split("train")}
    assert sizes == {2, 3, 4}
    assert task.split("test")[0].prompt[0]["content"].startswith("Use ")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_keywords": 0}, r"num_keywords=0 must be an int or \(low, high\) within 1..8"),
        ({"num_keywords": (4, 2)}, r"num_keywords=\(4, 2\)"),
        ({"template": "Use these words."}, r"must contain '\{keywords\}'"),
        ({"num_keywords": 1, "num_train": 1000}, r"1200 distinct prompts requested"),
        ({"num_test": -1}, r"num_test=-1 must be >= 0"),
    ],
)
def test_keywords_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_task("keywords", **kwargs)


# ---------------------------------------------------------------- embedded: summarize, dialogue


def test_summarize_set() -> None:
    task = make_task("summarize")
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 30, "validation": 5, "test": 5}
    samples = [s for v in task.splits.values() for s in v]
    assert len({s.meta["id"] for s in samples}) == 40
    assert len({s.meta["topic"] for s in samples}) >= 25  # varied topics
    for s in samples:
        instruction, passage = s.prompt[0]["content"].split("\n\n")
        assert instruction == "Summarize this passage in one sentence."
        assert 3 <= len(re.findall(r"[.!?](?:\s|$)", passage)) <= 6
        assert 1 <= len(s.references) <= 2
    assert (
        make_task("summarize", instruction="TL;DR:")
        .split("test")[0]
        .prompt[0]["content"]
        .startswith("TL;DR:\n\n")
    )


def test_dialogue_set() -> None:
    task = make_task("dialogue")
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 30, "validation": 5, "test": 5}
    for s in (s for v in task.splits.values() for s in v):
        r = roles(s)
        assert r[0] == "system" and r[-1] == "user"
        assert r[1:] == ["user", "assistant"] * (len(r) // 2 - 1) + ["user"]
        assert s.references and all(ref.strip() for ref in s.references)
    assert roles(make_task("dialogue", instruction="").split("train")[0])[0] == "user"


# Sentences for the first four keyword prompts of the test split (the task has no references).
KEYWORD_SENTENCES = {
    ("orange", "kite", "teach"): "My father will teach me to fly my orange kite in the park.",
    ("carry", "bag", "candle"): "She had to carry a candle in her bag all night.",
    ("listen", "water", "mouse"): "The mouse stopped to listen to the running water.",
    ("sky", "pencil", "eat"): "We eat lunch under the blue sky and draw it with a pencil.",
}


def test_embedded_default_rewards_score_their_samples() -> None:
    from textgym.rewards import make_reward, score

    for name in ("keywords", "summarize", "dialogue"):
        task = make_task(name)
        batch = list(task.split("test")[:4])
        meta = {k: [s.meta[k] for s in batch] for k in batch[0].meta}
        refs = [list(s.references) for s in batch]
        golden = [
            s.references[0] if s.references else KEYWORD_SENTENCES[tuple(s.meta["keywords"])]
            for s in batch
        ]
        total, _ = score(
            make_reward(task.default_reward),
            [prompt_text(s.prompt) for s in batch],
            golden,
            refs,
            **meta,
        )
        np.testing.assert_allclose(total, 1.0, atol=1e-5)
        empty, _ = score(make_reward(task.default_reward), ["p"] * 4, [""] * 4, refs, **meta)
        assert np.all(empty < 0.5)
        if name == "keywords":  # the bare keywords cover every word but are no sentence
            listed = [", ".join(s.meta["keywords"]) for s in batch]
            lists, _ = score(make_reward(task.default_reward), ["p"] * 4, listed, refs, **meta)
            np.testing.assert_array_equal(lists, 0.0)


# ---------------------------------------------------------------- sampling and order


def test_sampling_from_np_random_is_reproducible() -> None:
    task = make_task("keywords")

    def draw(seed: int) -> list[list[str]]:
        rng = np.random.default_rng(seed)
        return [task.sample(rng).meta["keywords"] for _ in range(20)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert task.sample(np.random.default_rng(0), split="test") in task.split("test")


def test_evaluation_order_is_fixed_file_order() -> None:
    task = make_xsum()
    assert [s.meta["id"] for s in task.split("validation")] == ["40000004"]
    assert list(task.split("train")) == list(make_xsum().split("train"))


# ---------------------------------------------------------------- data location and errors


def make_xsum() -> Task:
    return make_task("xsum", path=FIXTURES, holdout=0.0)


def test_default_data_dir_honors_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTGYM_DATA", str(FIXTURES))
    assert default_data_dir() == FIXTURES
    assert len(make_task("xsum", holdout=0.0).split("train")) == 3


def test_missing_env_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXTGYM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"TEXTGYM_DATA=.*nowhere.* is not a folder.*path="):
        default_data_dir()


def test_missing_data_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=rf"path {re.escape(str(tmp_path / 'no'))} is not a folder"
    ):
        make_task("dialogsum", path=tmp_path / "no")
    (tmp_path / "xsum").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"no data files in .*xsum \(expected train: train.jsonl"
    ):
        make_task("xsum", path=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"split 'train': no file matches 'mine.jsonl'"):
        make_task("xsum", path=tmp_path, split={"train": "mine.jsonl"})


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    good = {"fname": "a", "dialogue": "#Person1#: Hi.", "summary": "They greet.", "topic": "hi"}
    bad = {"fname": "b", "dialogue": "#Person1#: Bye."}
    write_jsonl(tmp_path / "dialogsum" / "train.jsonl", [good, bad])
    with pytest.raises(
        DataFormatError,
        match=r"dialogsum/train\.jsonl line 2: missing field 'summary' \(fields present: dialogue, fname\)",
    ):
        make_task("dialogsum", path=tmp_path)


def test_empty_prompt_field_is_an_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"document": "  ", "summary": "x"}])
    with pytest.raises(DataFormatError, match=r"train\.jsonl line 1: field 'document' is empty"):
        make_task("xsum", path=tmp_path)


def test_invalid_json_and_wrong_types(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"document": "a", "summary": "b"}\n{oops\n')
    with pytest.raises(DataFormatError, match=r"train\.jsonl line 2: is not JSON"):
        make_task("xsum", path=tmp_path)
    write_jsonl(tmp_path / "train.jsonl", [{"document": ["a"], "summary": "b"}])
    with pytest.raises(
        DataFormatError, match=r"line 1: field 'document' must be a string, got list"
    ):
        make_task("xsum", path=tmp_path)


def test_json_list_errors_name_the_item(tmp_path: Path) -> None:
    folder = tmp_path / "taskmaster4" / "data"
    folder.mkdir(parents=True)
    conv = {"conversation_id": "c0", "utterances": [{"speaker": "user", "text": "Hi"}]}
    (folder / "data_00.json").write_text(json.dumps([conv, {"conversation_id": "c1"}]))
    with pytest.raises(DataFormatError, match=r"data_00\.json item 1: missing field 'utterances'"):
        make_task("taskmaster4", path=tmp_path)
    conv2 = {
        "conversation_id": "c1",
        "utterances": [{"speaker": "user", "text": "Hi"}, {"text": "Yes?"}],
    }
    (folder / "data_00.json").write_text(json.dumps([conv, conv2]))
    with pytest.raises(DataFormatError, match=r"item 1 utterance 1: missing field 'speaker'"):
        make_task("taskmaster4", path=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "web"}, r"source='web' is not supported; use one of \['local', 'hub'\]"),
        ({"max_samples": 0}, r"max_samples=0 must be a positive int"),
        ({"holdout": 0.7}, r"holdout=0.7 must be in \[0, 0.5\)"),
        ({"split": {"dev": "x.jsonl"}}, r"unknown split\(s\) \['dev'\]; allowed"),
    ],
)
def test_bad_loader_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_task("xsum", path=FIXTURES, **kwargs)


# ---------------------------------------------------------------- hub code path (fake `datasets`)


class FakeDatasets(types.ModuleType):
    def __init__(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__("datasets")
        self.rows, self.calls = rows, []

    def load_dataset(self, *args: str, split: str) -> list[dict[str, Any]]:
        self.calls.append((*args, split))
        return self.rows[split]


def test_hub_source_calls_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {"source": [f"Sentence {i}."], "target": ["tl", "dr"], "paper_id": f"p{i}"}
        for i in range(3)
    ]
    fake = FakeDatasets({"train": rows, "validation": rows[:1], "test": rows[:2]})
    monkeypatch.setitem(sys.modules, "datasets", fake)
    task = make_task("scitldr", source="hub")
    assert fake.calls == [
        ("allenai/scitldr", "Abstract", "train"),
        ("allenai/scitldr", "Abstract", "validation"),
        ("allenai/scitldr", "Abstract", "test"),
    ]
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 3, "validation": 1, "test": 2}
    assert task.split("test")[1].references == ("tl", "dr")

    imdb_rows = [{"text": " ".join(["word"] * 30) + f" {i}", "label": i % 2} for i in range(40)]
    fake = FakeDatasets({"train[:40]": imdb_rows, "test": imdb_rows[:3]})
    monkeypatch.setitem(sys.modules, "datasets", fake)
    task = make_task("imdb", source="hub", split={"train": "train[:40]", "test": "test"})
    assert fake.calls[0] == ("stanfordnlp/imdb", "train[:40]")
    assert "validation" in task.splits  # held out of train: the hub has no validation split
    assert sum(len(task.splits[s]) for s in ("train", "validation")) == 40


def test_hub_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install datasets"):
        make_task("dialogsum", source="hub")


# ---------------------------------------------------------------- fixture-backed loaders


def test_dailydialog_fixture() -> None:
    task = make_task("dailydialog", path=FIXTURES, max_context_turns=2)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 16, "validation": 3, "test": 2}
    first = task.split("train")[0]
    assert first.prompt == [
        {"role": "system", "content": ds.DAILYDIALOG_INSTRUCTION},
        {"role": "user", "content": "Hi, Tom. Are you coming to the game tonight?"},
    ]
    assert first.references == ("I'd love to, but I have to finish my report.",)
    fourth = task.split("train")[3]  # answers turn 4 from turns 2-3 only
    assert roles(fourth) == ["system", "assistant", "user"]
    assert fourth.references == ("Too bad. Maybe next time.",)
    assert all(roles(s)[-1] == "user" for v in task.splits.values() for s in v)


def test_cnn_dailymail_and_xsum_fixtures() -> None:
    cnn = make_task("cnn_dailymail", path=FIXTURES / "cnn_dailymail", max_source_words=12)
    assert {k: len(v) for k, v in cnn.splits.items()} == {"train": 3, "validation": 1, "test": 1}
    s = cnn.split("train")[0]
    assert s.prompt[0]["content"] == (
        f"{ds.CNN_INSTRUCTION}\n\nA lighthouse on the northern coast has been turned into a small"
    )
    assert s.references[0].startswith("A century-old lighthouse") and s.meta == {
        "id": "f1a0c0ffee01"
    }
    xsum = make_xsum()
    assert xsum.split("train")[1].references == (
        "A pale-spined hedgehog has surprised a homeowner who mistook it for wool.",
    )
    assert "test" not in xsum.splits and cnn.default_reward == xsum.default_reward == "rouge_l"


def test_imdb_fixture() -> None:
    task = make_task("imdb", path=FIXTURES, prompt_words=8, holdout=0.0)
    train = task.split("train")
    assert len(train) == 4  # "Short and sweet." has nothing to continue
    assert train[0].prompt[0]["content"] == (
        f"{ds.IMDB_INSTRUCTION}\n\nI went into this film expecting very little,"
    )
    assert "<br" not in train[0].references[0]
    assert train[0].references[0].startswith("and I came out smiling.")
    assert [s.meta["sentiment"] for s in train] == ["positive", "negative", "positive", "negative"]
    positive = make_task("imdb", path=FIXTURES, label=1, max_reference_words=5, holdout=0.0)
    assert {s.meta["label"] for v in positive.splits.values() for s in v} == {1}
    assert all(len(s.references[0].split()) == 5 for s in positive.split("train"))
    with pytest.raises(ValueError, match=r"label=2 must be 0 \(negative\), 1 \(positive\)"):
        make_task("imdb", path=FIXTURES, label=2)


# ---------------------------------------------------------------- shared real data


@needs_data
def test_dialogsum_real() -> None:
    task = make_task("dialogsum", path=DATA)
    sizes = {k: len(v) for k, v in task.splits.items()}
    assert sizes["validation"] == 500 and sizes["train"] + sizes["test"] == 12460
    assert 0.02 < sizes["test"] / 12460 < 0.06
    train_ids = {s.meta["id"] for s in task.split("train")}
    assert not train_ids & {s.meta["id"] for s in task.split("test")}
    s = task.split("validation")[0]
    assert s.meta["id"] == "dev_0" and "#Person1#:" in s.prompt[0]["content"]
    # The hold-out depends on ids only: a capped load gives a prefix of the full test split.
    capped = make_task("dialogsum", path=DATA, max_samples=20)
    assert all(len(v) == 20 for v in capped.splits.values())
    assert list(capped.split("test")) == list(task.split("test")[:20])


@needs_data
def test_samsum_real() -> None:
    task = make_task("samsum", path=DATA)
    assert {k: len(v) for k, v in task.splits.items()} == {"validation": 818}
    assert all("\r" not in s.prompt[0]["content"] for s in task.split("validation"))
    mapped = make_task("samsum", path=DATA / "samsum", split={"train": "validation.jsonl"})
    assert set(mapped.splits) == {"train", "validation", "test"}
    assert sum(len(v) for v in mapped.splits.values()) == 818


@needs_data
def test_scitldr_real() -> None:
    task = make_task("scitldr", path=DATA)
    sizes = {k: len(v) for k, v in task.splits.items()}
    assert sizes["validation"] == 619 and sizes["train"] + sizes["test"] == 1992
    assert max(len(s.references) for s in task.split("validation")) >= 3
    assert all("\n" not in s.prompt[0]["content"].split("\n\n", 1)[1] for s in task.split("train"))


@needs_data
def test_taskmaster4_real() -> None:
    task = make_task("taskmaster4", path=DATA)
    splits = task.splits
    assert (
        len(splits["train"]) > 5000
        and len(splits["validation"]) > 100
        and len(splits["test"]) > 100
    )
    ids = {k: {s.meta["id"] for s in v} for k, v in splits.items()}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["validation"]
    for s in splits["validation"]:
        assert roles(s)[0] == "system" and roles(s)[-1] == "user"
        assert "[API" not in prompt_text(s.prompt) and s.references[0].strip()
    inline = make_task("taskmaster4", path=DATA, api="inline", max_samples=50)
    assert all(len(v) == 50 for v in inline.splits.values())
    assert any("[API call get_menu_items:" in prompt_text(s.prompt) for s in inline.split("train"))
    assert "API calls" in inline.split("train")[0].prompt[0]["content"]
    with pytest.raises(
        ValueError, match=r"api='tool' is not supported; use one of \['drop', 'inline'\]"
    ):
        make_task("taskmaster4", path=DATA, api="tool")
