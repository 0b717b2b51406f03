"""Bad feedback files: ``textgym feedback import`` answers each with one line naming the file,
the line and the field, and exit code 2; and the rating rule is the same for import and the web
API."""

from __future__ import annotations

import json
import math
import re

import pytest

from textgym import cli
from textgym.feedback.formats import import_feedback
from textgym.feedback.records import RecordError
from textgym.feedback.server import HttpError, LabelingApp
from textgym.feedback.store import FeedbackStore

SAMPLE = json.dumps({"type": "sample", "id": 1, "prompt": "p", "completion": "c"})
SAMPLE2 = json.dumps({"type": "sample", "id": 2, "prompt": "p", "completion": "d"})


def rating(score: str) -> str:
    """A rating line with ``score`` written literally (so NaN and 3.9 reach the parser)."""
    return f'{{"type": "rating", "sample_id": 1, "rater": "ann", "score": {score}}}'


def lines(*items: str) -> bytes:
    return ("\n".join(items) + "\n").encode("utf-8")


DEEP = b"[" * 100_000 + b"]" * 100_000
LS_TASK = {"data": {"prompt": "p", "answer1": "a", "answer2": "b"}}

# (format, file bytes, the message after "FILE:"), one row per kind of bad input.
BAD_FILES = [
    ("jsonl", lines(SAMPLE, '{"type": "demonstration", "prompt": "café"}').decode().encode("latin-1"),
     r":2: has byte 0xe9 at column 41, which is not UTF-8 \(a Latin-1"),
    ("jsonl", lines(SAMPLE).decode().encode("utf-16"),
     r":1: is UTF-16 \(it starts with a UTF-16 byte-order mark\); save it as UTF-8"),
    ("jsonl", lines(SAMPLE).decode().encode("utf-16-le"), r":1: has a NUL byte \(a UTF-16 file\?\)"),
    ("jsonl", lines(SAMPLE) + DEEP + b"\n", r":2: is JSON nested too deeply to read"),
    ("jsonl", lines(SAMPLE, rating("NaN")),
     r":2: field 'score' is NaN, not a finite number \(JSON has no NaN or Infinity\)"),
    ("jsonl", lines(SAMPLE, '{"type": "sample", "id": 2, "prompt": "p", "completion": "c", '
     '"meta": {"topic": [1, -Infinity]}}'), r":2: field 'meta.topic\[1\]' is -Infinity"),
    ("jsonl", lines(SAMPLE, rating("3.9")),
     r":2: field 'score' must be a whole number from 1 to 5, got 3.9"),
    ("jsonl", lines(SAMPLE, rating('"4"')),
     r":2: field 'score' must be a whole number from 1 to 5, got '4'"),
    ("jsonl", lines(SAMPLE, rating("true")),
     r":2: field 'score' must be a whole number from 1 to 5, got True"),
    ("jsonl", lines('{"type": "sample", "id": 1, "prompt": 5, "completion": "c"}'),
     r":1: field 'prompt' must be a string, got number"),
    ("jsonl", lines('{"type": "sample", "id": "one", "prompt": "p", "completion": "c"}'),
     r":1: field 'id' must be an integer, got 'one'"),
    ("jsonl", lines(SAMPLE, '{"type": "edit", "sample_id": 7, "text": "t", "rater": "r"}'),
     r":2: field 'sample_id' names sample 7, which no earlier 'sample' line defines"),
    ("jsonl", lines(SAMPLE, SAMPLE2,
                    '{"type": "ranking", "prompt": "p", "sample_ids": [1, "2"], "rater": "r"}'),
     r":3: field 'sample_ids\[1\]' must be an integer sample id, got '2'"),
    ("jsonl", lines(SAMPLE, '{"type": "label", "sample_id": 1, "label": 2, "rater": "r"}'),
     r":2: field 'label' must be 0 or 1"),
    ("jsonl", lines(SAMPLE, '{"type": "rating", "sample_id": 1, "score": 4, "rater": "a\\u0000b"}'),
     r":2: field 'rater' must not contain control characters"),
    ("jsonl", lines('{"type": "vote"}'), r":1: field 'type' must be one of \['demonstration'"),
    ("jsonl", lines(SAMPLE, '{"type": "sample", "id": 2,'), r":2: is not JSON \(Expecting"),
    ("jsonl", lines('"just a string"'), r":1: must be a JSON object with a 'type', got string"),
    ("jsonl", b"[\n" + SAMPLE.encode() + b",\n" + SAMPLE2.encode() + b"\n",
     r":4: is not JSON \(expected ',' or '\]'\)"),
    ("trl-preference", lines('{"prompt": "p", "chosen": "a"}'), r":1: field 'rejected' is missing"),
    ("trl-preference", lines('{"prompt": "p", "chosen": "a", "rejected": Infinity}'),
     r":1: field 'rejected' is Infinity"),
    ("trl-preference", lines(json.dumps({"prompt": [{"role": "user", "content": "a"},
                                                    {"role": "assistant", "content": "b"},
                                                    {"role": "user", "content": "c"}],
                                         "chosen": "x", "rejected": "y"})),
     r":1: field 'prompt' must be a string or a list of one 'user' message; conversations"),
    ("trl-preference", lines('{"prompt": "p", "chosen": "a", "rejected": "a"}'),
     r":1: field 'rejected' is the same text as 'chosen'"),
    ("trl-sft", lines(json.dumps({"messages": [{"role": "assistant", "content": "x"}]})),
     r":1: field 'messages' must be one user and one assistant message, got roles \['assistant'\]"),
    ("trl-sft", lines(json.dumps({"messages": [{"role": "user", "content": "q"},
                                               {"role": "assistant", "content": 3}]})),
     r":1: field 'messages\[1\].content' must be a string, got number"),
    ("label-studio", json.dumps([LS_TASK, {"data": {"prompt": "p", "answer1": "a"}}],
                                indent=1).encode(),
     r":9: field 'data.answer2' is missing"),
    ("label-studio", json.dumps([{**LS_TASK, "annotations": [{"result": [
        {"type": "pairwise", "value": {"selected": "middle"}}]}]}]).encode(),
     r":1: field 'annotations\[0\].result\[0\].value.selected' must be 'left' or 'right'"),
    ("argilla", lines(json.dumps({"fields": {"prompt": "p", "a": "x", "b": "y"}, "responses": {
        "ranking": [{"value": [{"value": "a", "rank": 1}, {"value": "b", "rank": 1}]}]}})),
     r":1: field 'responses.ranking\[0\].value' has tied ranks \[1, 1\]"),
    ("argilla", lines(json.dumps({"fields": {"prompt": "p", "a": "x"}, "responses": {
        "ranking": [{"value": ["a", "zz"], "user_id": "u"}]}})),
     r":1: field 'responses.ranking\[0\].value' names 'zz', which is not a text field"),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "data", "message"), BAD_FILES)
def test_bad_file_is_one_line_naming_file_line_and_field(tmp_path, capsys, fmt, data, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data)
    db = tmp_path / "fb.sqlite"
    args = ["feedback", "import", "--db", str(db), "--file", str(path), "--format", fmt]
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"textgym feedback import: {path}")
    assert re.search(message, err), err
    with FeedbackStore(db) as store:  # nothing of a bad file is kept
        assert store.counts()["samples"] == 0


@pytest.mark.parametrize("what", ["missing", "folder"])
def test_unreadable_file_is_one_line(tmp_path, capsys, what):
    path = tmp_path / ("nosuch.jsonl" if what == "missing" else "")
    args = ["feedback", "import", "--db", str(tmp_path / "fb.sqlite"), "--file", str(path)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    reason = "No such file or directory" if what == "missing" else "Is a directory"
    assert err == f"textgym feedback import: {path}: cannot be read ({reason})\n"


# The web API and import apply one rating rule: the same values pass, the same are refused with
# the same words.
SCORES = [1, 5, 4.0, 0, 6, 3.5, 3.9, True, "4", None, math.nan, math.inf, [4]]


@pytest.mark.parametrize("score", SCORES, ids=repr)
def test_one_score_rule_for_import_and_the_web_api(tmp_path, score):
    with FeedbackStore(tmp_path / "web.sqlite") as web:
        task = web.add_task("rate", sample_ids=[web.add_sample("p", "c")])
        try:
            LabelingApp(web).label({"rater": "ann", "task_id": task, "score": score})
            web_answer = "stored"
        except HttpError as exc:
            assert exc.status == 400
            web_answer = exc.message
        web_scores = [r.score for r in web.ratings()]

    path = tmp_path / "labels.jsonl"
    record = {"type": "rating", "sample_id": 1, "rater": "ann", "score": score}
    path.write_text(SAMPLE + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    with FeedbackStore(tmp_path / "import.sqlite") as store:
        try:
            import_feedback(store, path)
            import_answer = "stored"
        except RecordError as exc:
            assert exc.line == 2
            import_answer = f"field {exc.field!r} {exc.problem}"
        import_scores = [r.score for r in store.ratings()]

    if isinstance(score, float) and not math.isfinite(score):
        # JSON has no NaN: the file is refused before the rule, the web API by the rule.
        assert import_answer.startswith("field 'score' is ")
        assert web_answer.startswith("field 'score' must be a whole number from 1 to 5")
        return
    assert web_answer == import_answer
    assert web_scores == import_scores
    accepted = score in (1, 5, 4.0) and not isinstance(score, bool)
    assert web_scores == ([int(score)] if accepted else [])
