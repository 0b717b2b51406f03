"""Feedback store: round trips of every label kind, JSONL, concurrency, crashes, migrations."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from textgym.feedback import FeedbackStore, PreferencePair, SchemaError
from textgym.feedback.store import SCHEMA_VERSION, migrate


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        yield s


def fill(store: FeedbackStore) -> dict[str, int]:
    ids = {
        "good": store.add_sample("Greet.", "Hello!", task="t", model="m", meta={"step": 3}),
        "ok": store.add_sample("Greet.", "Hi.", task="t", model="m"),
        "bad": store.add_sample("Greet.", "Go away.", task="t", model="m"),
    }
    store.add_rating(ids["good"], 5, rater="alice", comment="warm")
    store.add_rating(ids["bad"], 1, rater="bob")
    store.add_ranking([ids["good"], ids["ok"], ids["bad"]], rater="alice")
    store.add_ranking([ids["ok"], ids["bad"]], rater="ai:judge")
    store.add_edit(ids["bad"], "Good day!", rater="carol")
    store.add_demonstration("Greet.", "Welcome, friend.", rater="dave", task="t")
    store.add_label(ids["ok"], 1, rater="erin")
    return ids


def test_round_trip_every_label_kind(store):
    ids = fill(store)
    sample = store.sample(ids["good"])
    assert (sample.prompt, sample.completion, sample.task, sample.model, sample.meta) == (
        "Greet.",
        "Hello!",
        "t",
        "m",
        {"step": 3},
    )
    assert sample.created > 0
    assert [(r.sample_id, r.score, r.rater, r.comment) for r in store.ratings()] == [
        (ids["good"], 5, "alice", "warm"),
        (ids["bad"], 1, "bob", ""),
    ]
    assert [r.score for r in store.ratings(rater="bob")] == [1]
    rankings = store.rankings()
    assert [(r.prompt, r.sample_ids, r.rater) for r in rankings] == [
        ("Greet.", (ids["good"], ids["ok"], ids["bad"]), "alice"),
        ("Greet.", (ids["ok"], ids["bad"]), "ai:judge"),
    ]
    assert [(e.sample_id, e.text, e.rater) for e in store.edits()] == [
        (ids["bad"], "Good day!", "carol")
    ]
    assert [(d.prompt, d.text, d.rater, d.task) for d in store.demonstrations()] == [
        ("Greet.", "Welcome, friend.", "dave", "t")
    ]
    assert [(b.sample_id, b.label, b.rater) for b in store.labels()] == [(ids["ok"], 1, "erin")]
    assert store.raters() == ["ai:judge", "alice", "bob", "carol", "dave", "erin"]
    assert store.counts() == {
        "samples": 3,
        "ratings": 2,
        "rankings": 2,
        "edits": 1,
        "demonstrations": 1,
        "labels": 1,
        "tasks": 0,
    }
    assert store.integrity_check() == []


def test_preference_pairs_from_rankings(store):
    fill(store)
    assert store.preference_pairs(rater="alice") == [
        PreferencePair("Greet.", "Hello!", "Hi.", "alice"),
        PreferencePair("Greet.", "Hello!", "Go away.", "alice"),
        PreferencePair("Greet.", "Hi.", "Go away.", "alice"),
    ]
    assert store.preference_pairs(rater="ai:judge") == [
        PreferencePair("Greet.", "Hi.", "Go away.", "ai:judge")
    ]
    assert len(store.preference_pairs()) == 4
    with pytest.raises(AttributeError):
        store.preference_pairs()[0].chosen = "x"  # frozen


def test_dedup_and_data_survive_reopen(tmp_path):
    path = tmp_path / "fb.sqlite"
    with FeedbackStore(path) as s:
        a = s.add_sample("p", "c")
        assert s.add_sample("p", "c") == a
        assert s.add_sample("p", "c", task="other") != a
        s.add_rating(a, 3, rater="x")
    with FeedbackStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert [r.score for r in s.ratings()] == [3]
        assert s.add_sample("p", "c") == a


def test_bad_input_is_refused_with_a_message(store):
    a = store.add_sample("p", "a")
    b = store.add_sample("p", "b")
    other = store.add_sample("q", "c")
    with pytest.raises(ValueError, match="score.* must be a whole number from 1 to 5, got 6"):
        store.add_rating(a, 6, rater="x")
    with pytest.raises(ValueError, match="rater must be a non-empty name"):
        store.add_rating(a, 3, rater=" ")
    with pytest.raises(KeyError, match="no sample with id 999"):
        store.add_edit(999, "t", rater="x")
    with pytest.raises(ValueError, match="ONE prompt"):
        store.add_ranking([a, other], rater="x")
    with pytest.raises(ValueError, match="at least 2 samples"):
        store.add_ranking([a], rater="x")
    with pytest.raises(ValueError, match="each sample once"):
        store.add_ranking([a, a], rater="x")
    with pytest.raises(ValueError, match="binary label is 0 or 1"):
        store.add_label(b, 2, rater="x")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        store.add_sample("p", "z", meta={"f": object()})
    with pytest.raises(ValueError, match="task kind must be one of"):
        store.add_task("grade", sample_ids=[a])
    with pytest.raises(ValueError, match="'rate' task takes exactly 1"):
        store.add_task("rate", sample_ids=[a, b])
    # A refused write adds nothing.
    assert store.counts()["rankings"] == 0
    assert store.counts()["ratings"] == 0


def test_labeling_queue_with_several_raters(store):
    a = store.add_sample("p", "a")
    b = store.add_sample("p", "b")
    rate = store.add_task("rate", sample_ids=[a], needed=2)
    rank = store.add_task("rank", sample_ids=[b, a])
    demo = store.add_task("demo", prompt="write")
    assert store.next_task("alice").id == rate
    store.add_rating(a, 4, rater="alice", task_id=rate)
    assert store.next_task("alice").id == rank  # alice is done with `rate`
    assert store.next_task("bob").id == rate  # it still needs a second rater
    assert not store.task_done(rate)
    store.add_rating(a, 2, rater="bob", task_id=rate)
    assert store.task_done(rate)
    store.add_ranking([a, b], rater="bob", task_id=rank)
    assert store.next_task("alice").id == demo
    assert store.next_task("alice", kinds=["rank"]) is None
    assert store.progress("alice") == {
        "tasks": 3,
        "done": 2,
        "open": 1,
        "labelled_by_rater": 1,
        "left_for_rater": 1,
    }
    store.add_demonstration("write", "text", rater="alice", task_id=demo)
    assert store.next_task("carol") is None
    assert store.task(rank).sample_ids == (b, a)


def test_jsonl_round_trip(tmp_path, store):
    fill(store)
    out = tmp_path / "export.jsonl"
    assert store.export_jsonl(out) == 3 + 2 + 2 + 1 + 1 + 1
    with FeedbackStore(tmp_path / "copy.sqlite") as copy:
        counts = copy.import_jsonl(out)
        assert counts == {
            "sample": 3,
            "rating": 2,
            "ranking": 2,
            "edit": 1,
            "demonstration": 1,
            "label": 1,
        }
        assert copy.preference_pairs() == store.preference_pairs()
        again = tmp_path / "again.jsonl"
        copy.export_jsonl(again)
    assert out.read_text() == again.read_text()


def test_jsonl_bad_line_adds_nothing(tmp_path, store):
    path = tmp_path / "bad.jsonl"
    good = {"type": "sample", "id": 1, "prompt": "p", "completion": "c"}
    path.write_text(json.dumps(good) + "\n" + '{"type": "rating", "sample_id": 7}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'score' is missing"):
        store.import_jsonl(path)
    assert store.counts()["samples"] == 0
    path.write_text("[1, 2]\n")
    with pytest.raises(
        ValueError, match=r"bad.jsonl:1: must be a JSON object with a 'type', got number"
    ):
        store.import_jsonl(path)


def test_eight_threads_label_concurrently_and_lose_nothing(tmp_path):
    path = tmp_path / "fb.sqlite"
    shared = FeedbackStore(path)
    errors: list[BaseException] = []
    per_thread = 40

    def work(k: int) -> None:
        # Half the threads share one instance, half open their own connection.
        store = shared if k % 2 else FeedbackStore(path)
        try:
            for i in range(per_thread):
                a = store.add_sample(f"prompt {k}-{i}", "first")
                b = store.add_sample(f"prompt {k}-{i}", "second")
                store.add_rating(a, 1 + (i % 5), rater=f"r{k}")
                store.add_ranking([a, b], rater=f"r{k}")
                store.add_edit(b, f"edit {i}", rater=f"r{k}")
                store.add_demonstration(f"prompt {k}-{i}", "demo", rater=f"r{k}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            if store is not shared:
                store.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = 8 * per_thread
    assert shared.counts() == {
        "samples": 2 * total,
        "ratings": total,
        "rankings": total,
        "edits": total,
        "demonstrations": total,
        "labels": 0,
        "tasks": 0,
    }
    assert len(shared.preference_pairs()) == total
    assert shared.integrity_check() == []
    shared.close()


WRITER = textwrap.dedent(
    """
    import sys
    from textgym.feedback import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        ids = [store.add_sample(f"p{i}", f"c{j}") for j in range(4)]
        store.add_ranking(ids, rater="w")
        store.add_rating(ids[0], 5, rater="w", comment="x" * 2000)
        i += 1
    """
)


def test_crash_mid_write_leaves_database_consistent(tmp_path):
    path = tmp_path / "fb.sqlite"
    FeedbackStore(path).close()
    for delay in (0.3, 0.45, 0.6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no rollback: a real crash
        proc.wait()
        proc.stdout.close()
        with FeedbackStore(path) as store:
            assert store.integrity_check() == []
            rankings = store.rankings()
            assert rankings, "the writer should have committed some rankings before the kill"
            assert all(len(r.sample_ids) == 4 for r in rankings)
            assert {len(store.preference_pairs())} == {6 * len(rankings)}


def test_migration_from_older_schema_keeps_data(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, up_to=1) == 1
    conn.execute(
        "INSERT INTO samples (task, prompt, completion, model, meta, created) "
        "VALUES ('', 'p', 'c', '', '{}', 0)"
    )
    conn.execute("INSERT INTO ratings (sample_id, score, rater, created) VALUES (1, 4, 'old', 0)")
    conn.close()
    with FeedbackStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert [(r.score, r.rater, r.task_id) for r in store.ratings()] == [(4, "old", None)]
        assert store.add_task("rate", sample_ids=[1]) == 1


def test_newer_or_foreign_files_are_refused(tmp_path):
    newer = tmp_path / "newer.sqlite"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer than this textgym supports"):
        FeedbackStore(newer)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SchemaError, match="is not a feedback store"):
        FeedbackStore(junk)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        FeedbackStore(tmp_path)


def test_command_line_label_stats_export_import(tmp_path, monkeypatch, capsys):
    from textgym import cli

    db = tmp_path / "fb.sqlite"
    with FeedbackStore(db) as store:
        for text in ("first", "second", "third"):
            store.add_task("rate", sample_ids=[store.add_sample("p", text)])
    answers = iter(["4", "", "2"])  # rate, skip, rate
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert cli.main(["feedback", "label", "--db", str(db), "--rater", "cli"]) == 0
    assert "2 ratings saved; 1 tasks left" in capsys.readouterr().out
    assert cli.main(["feedback", "stats", "--db", str(db)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["ratings"] == 2
    assert report["raters"]["cli"] == {"ratings": 2, "mean": 3.0, "std": 1.0}
    out = tmp_path / "all.jsonl"
    assert cli.main(["feedback", "export", "--db", str(db), "--out", str(out)]) == 0
    copy = tmp_path / "copy.sqlite"
    assert cli.main(["feedback", "import", "--db", str(copy), "--file", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"sample": 3, "rating": 2}
    with FeedbackStore(copy) as store:
        assert sorted(r.score for r in store.ratings()) == [2, 4]
