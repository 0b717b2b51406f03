"""Feedback data in and out: every format round-trips, and real Label Studio and Argilla records
come in as their tools write them."""

from __future__ import annotations

import json
import os

import pytest

from textgym import cli
from textgym.feedback.formats import FORMATS, export_feedback, import_feedback
from textgym.feedback.store import FeedbackStore, PreferencePair


@pytest.fixture
def store(tmp_path):
    """Rankings of 3 and 2 by two people and a judge, a second prompt, a demonstration, an edit
    and an open 'rank' task nobody has labelled."""
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        a = s.add_sample("Say hi.", "Hello!")
        b = s.add_sample("Say hi.", "Go away.")
        c = s.add_sample("Say hi.", "Hi. ✨")
        s.add_ranking([a, c, b], rater="alice")
        s.add_ranking([c, a], rater="bob")
        s.add_ranking([a, b], rater="ai:judge")
        x = s.add_sample("Name a fruit.", "Apple.")
        y = s.add_sample("Name a fruit.", "A car.")
        s.add_ranking([x, y], rater="bob")
        z = s.add_sample("Name a fruit.", "Banana.")
        s.add_task("rank", sample_ids=[y, z])
        s.add_demonstration("Write a haiku.", "Autumn moon\nrises", rater="carol")
        s.add_edit(b, "Go away, please.", rater="dan")
        yield s


def pairs(store: FeedbackStore, rater: str | None = None) -> list[PreferencePair]:
    """The store's preference pairs, sorted; with ``rater``, all attributed to that rater."""
    found = store.preference_pairs()
    if rater is not None:
        found = [PreferencePair(p.prompt, p.chosen, p.rejected, rater) for p in found]
    return sorted(found, key=lambda p: (p.prompt, p.chosen, p.rejected, p.rater))


def round_trip(store, tmp_path, fmt, **kwargs):
    out = tmp_path / f"export.{fmt}"
    written = export_feedback(store, out, fmt)
    copy = FeedbackStore(tmp_path / f"copy-{fmt}.sqlite")
    counts = import_feedback(copy, out, fmt, **kwargs)
    return written, counts, copy


def test_trl_preference_round_trip(store, tmp_path):
    written, counts, copy = round_trip(store, tmp_path, "trl-preference", rater="lab")
    lines = (tmp_path / "export.trl-preference").read_text(encoding="utf-8").splitlines()
    # A ranking of 3 gives 3 pairs, the others 1 each; only TRL's three keys go out.
    assert written == len(lines) == 3 + 1 + 1 + 1 == counts["ranking"]
    assert json.loads(lines[0]) == {"prompt": "Say hi.", "chosen": "Hello!", "rejected": "Hi. ✨"}
    assert pairs(copy) == pairs(store, rater="lab")


def test_trl_preference_default_rater_names_the_file_and_reads_conversations(tmp_path):
    path = tmp_path / "conv.jsonl"
    record = {
        "prompt": [{"role": "user", "content": "Say hi."}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        assert import_feedback(s, path, "trl-preference") == {"ranking": 1}
        assert s.preference_pairs() == [
            PreferencePair("Say hi.", "Hello!", "No.", "import:conv.jsonl")
        ]


def test_trl_sft_round_trip_carries_demonstrations_and_edits(store, tmp_path):
    written, counts, copy = round_trip(store, tmp_path, "trl-sft", rater="lab")
    first = json.loads((tmp_path / "export.trl-sft").read_text(encoding="utf-8").splitlines()[0])
    assert first == {
        "messages": [
            {"role": "user", "content": "Write a haiku."},
            {"role": "assistant", "content": "Autumn moon\nrises"},
        ]
    }
    assert written == 2 and counts == {"demonstration": 2}
    assert [(d.prompt, d.text, d.rater) for d in copy.demonstrations()] == [
        ("Write a haiku.", "Autumn moon\nrises", "lab"),
        ("Say hi.", "Go away, please.", "lab"),
    ]


def test_trl_sft_reads_prompt_completion_records(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"prompt": "Q?", "completion": "A."}) + "\n", encoding="utf-8")
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        assert import_feedback(s, path, "trl-sft", rater="r") == {"demonstration": 1}
        assert [(d.prompt, d.text) for d in s.demonstrations()] == [("Q?", "A.")]


@pytest.mark.parametrize("fmt", ["label-studio", "argilla"])
def test_annotation_tools_round_trip_with_raters(store, tmp_path, fmt):
    written, counts, copy = round_trip(store, tmp_path, fmt)
    assert pairs(copy) == pairs(store)
    # The open 'rank' task goes out unlabelled (to be labelled in the tool) and adds nothing.
    assert counts["unlabelled"] == 1
    again = tmp_path / "again.json"
    export_feedback(copy, again, fmt)
    with FeedbackStore(tmp_path / "third.sqlite") as third:
        import_feedback(third, again, fmt)
        assert pairs(third) == pairs(store)


def test_label_studio_tasks_are_the_pairwise_template(store, tmp_path):
    out = tmp_path / "ls.json"
    assert export_feedback(store, out, "label-studio") == 5  # 3 + 1 pairs, + 1 open task pair
    tasks = json.loads(out.read_text(encoding="utf-8"))
    first = tasks[0]
    assert first["data"] == {"prompt": "Say hi.", "answer1": "Hello!", "answer2": "Hi. ✨"}
    choices = [
        (a["textgym_rater"], a["result"][0]["value"]["selected"]) for a in first["annotations"]
    ]
    assert choices == [("alice", "left"), ("bob", "right")]
    assert first["annotations"][0]["result"][0]["type"] == "pairwise"
    assert tasks[-1]["annotations"] == []


def test_label_studio_export_as_the_tool_writes_it_imports(tmp_path):
    # Label Studio's JSON export: ids, users as ids or emails, a cancelled annotation, an
    # annotation without a pairwise choice, another control's result beside the choice.
    export = [
        {
            "id": 7,
            "data": {"prompt": "Name a fruit.", "answer1": "A car.", "answer2": "Apple."},
            "annotations": [
                {
                    "id": 31,
                    "completed_by": 3,
                    "result": [
                        {
                            "id": "x1",
                            "from_name": "comparison",
                            "to_name": "answer1",
                            "type": "pairwise",
                            "value": {"selected": "right"},
                        },
                        {"type": "choices", "value": {"choices": ["sure"]}},
                    ],
                    "was_cancelled": False,
                },
                {
                    "completed_by": {"email": "ann@example.com"},
                    "result": [{"type": "pairwise", "value": {"selected": "left"}}],
                },
                {"completed_by": 4, "was_cancelled": True, "result": []},
                {"completed_by": 5, "result": []},
            ],
            "predictions": [],
        }
    ]
    path = tmp_path / "project-1.json"
    path.write_text(json.dumps(export, indent=2), encoding="utf-8")
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        assert import_feedback(s, path, "label-studio") == {"ranking": 2}
        assert pairs(s) == [
            PreferencePair("Name a fruit.", "A car.", "Apple.", "ann@example.com"),
            PreferencePair("Name a fruit.", "Apple.", "A car.", "label-studio:3"),
        ]


def test_argilla_records_as_the_tool_writes_them_import(tmp_path):
    # Argilla 2 ``Record.to_dict`` records (one per JSON line here): string rankings, the older
    # {"value", "rank"} form, an unknown user, and draft or discarded responses to skip.
    records = [
        {
            "id": "r1",
            "fields": {"prompt": "Say hi.", "a": "Hello!", "b": "Go away.", "c": "Hi."},
            "metadata": {},
            "responses": {
                "ranking": [
                    {"value": ["c", "a", "b"], "user_id": "0b5c2d0e-1111-2222-3333-444455556666"},
                    {
                        "value": [{"value": "b", "rank": 2}, {"value": "a", "rank": 1}],
                        "user_id": "u2",
                        "status": "submitted",
                    },
                    {"value": ["b", "a"], "user_id": "u3", "status": "discarded"},
                    {"value": ["b", "a"], "user_id": "u4", "status": "draft"},
                ]
            },
            "suggestions": {},
            "vectors": {},
        },
        {"id": "r2", "fields": {"prompt": "Q?", "a": "x", "b": "y"}, "responses": {}},
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        assert import_feedback(s, path, "argilla") == {"ranking": 2, "unlabelled": 1}
        unknown = "argilla:0b5c2d0e-1111-2222-3333-444455556666"
        assert pairs(s) == [
            PreferencePair("Say hi.", "Hello!", "Go away.", unknown),
            PreferencePair("Say hi.", "Hello!", "Go away.", "argilla:u2"),
            PreferencePair("Say hi.", "Hi.", "Go away.", unknown),
            PreferencePair("Say hi.", "Hi.", "Hello!", unknown),
        ]


def test_jsonl_format_is_the_store_export(store, tmp_path):
    written, counts, copy = round_trip(store, tmp_path, "jsonl")
    assert counts["ranking"] == 4 and written == sum(counts.values())
    assert pairs(copy) == pairs(store)


def test_a_bad_record_imports_nothing(tmp_path):
    path = tmp_path / "prefs.jsonl"
    good = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "p"}) + "\n", "utf-8")
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        with pytest.raises(ValueError, match=r"prefs.jsonl:2: field 'chosen' is missing"):
            import_feedback(s, path, "trl-preference")
        assert s.counts()["samples"] == 0 and s.counts()["rankings"] == 0


def test_export_is_atomic(store, tmp_path, monkeypatch):
    out = tmp_path / "prefs.jsonl"
    out.write_text("the previous export\n", encoding="utf-8")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export_feedback(store, out, "trl-preference")
    assert out.read_text(encoding="utf-8") == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("prefs")) == [
        "prefs.jsonl"
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_export_then_import(store, tmp_path, capsys, fmt):
    out = tmp_path / f"out-{fmt}"
    db = str(store.path)
    assert cli.main(["feedback", "export", "--db", db, "--out", str(out), "--format", fmt]) == 0
    assert f"records written to {out}" in capsys.readouterr().out
    copy = str(tmp_path / "copy.sqlite")
    args = ["feedback", "import", "--db", copy, "--file", str(out), "--format", fmt]
    assert cli.main([*args, "--rater", "lab"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts.get("ranking", 0) + counts.get("demonstration", 0) > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_line_separators_and_quotes_inside_texts_survive(tmp_path, fmt):
    # JSON allows U+2028 and form feeds unescaped; a reader that splits on them breaks records.
    odd = 'line\u2028sep\x0cfeed\r\n"quoted" \\ tab\t ✨'
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        a, b = s.add_sample(odd, odd + " good"), s.add_sample(odd, odd + " bad")
        s.add_ranking([a, b], rater="ann")
        s.add_demonstration(odd, odd, rater="ann")
        written, counts, copy = round_trip(s, tmp_path, fmt, rater="ann")
        if fmt == "trl-sft":
            assert [(d.prompt, d.text) for d in copy.demonstrations()] == [(odd, odd)]
        else:
            assert pairs(copy) == pairs(s)
