"""The remote judge against a misbehaving endpoint: every server behaviour ends in a score or in
the documented fallback with its flag, within a bounded time and memory (RemoteJudge's
docstring states the policy). The server (tests/misbehaving_server.py) answers byte by byte
on 127.0.0.1 and stops by itself; every case asserts its wall time."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import numpy as np
import pytest

from textgym.rewards.judge import JudgeConnectionError, JudgeReward, RemoteJudge, parse_verdict
from textgym.rewards.judge.remote import retry_after_seconds

from .misbehaving_server import (
    MisbehavingServer,
    close,
    completion,
    drip,
    reset,
    response,
    send,
    stall,
)

GOOD = response(completion('{"score": 7}'))  # 7 on 1..10 -> 6/9
GOOD_SCORE = 6 / 9
FALLBACK = 0.25


def judge_for(server: MisbehavingServer, **options) -> JudgeReward:
    options = {"timeout": 1.0, "max_retries": 1, "backoff": 0.01, **options}
    backend = RemoteJudge(server.url, api_key_env=None, check=False, **options)
    return JudgeReward(judge=backend, fallback=FALLBACK, examples=[])


def judged(behaviours, **options) -> tuple[float, bool, dict, float]:
    """(score, fallback flag, stats, seconds) of one judgment against ``behaviours``."""
    with MisbehavingServer(behaviours) as server:
        judge = judge_for(server, **options)
        start = time.monotonic()
        parts = judge.components(["What is 2 + 2?"], ["4"])
        elapsed = time.monotonic() - start
    return float(parts["judge"][0]), bool(parts["judge_fallback"][0]), judge.stats, elapsed


# ---------------------------------------------------------------- item 9: a score or the fallback

LONG_HEADER = response(completion('{"score": 7}'), headers=[("X-Junk", "a" * 70_000)])
MANY_HEADERS = response(completion('{"score": 7}'), headers=[(f"X-{i}", "1") for i in range(150)])
NESTED_BODY = response(b"[" * 100_000 + b"]" * 100_000)
NESTED_CONTENT = response(completion('{"score": ' * 50_000))


@pytest.mark.parametrize(
    ("behaviour", "counter", "expected", "bound"),
    [
        # Retry-After that cannot be waited for: ignored, the usual backoff instead.
        (
            [send(response(b"{}", "429 Too Many", [("Retry-After", "-5")])), send(GOOD)],
            "http_429",
            GOOD_SCORE,
            2.0,
        ),
        (
            [send(response(b"{}", "503 Busy", [("Retry-After", "nan")])), send(GOOD)],
            "http_503",
            GOOD_SCORE,
            2.0,
        ),
        (
            [send(response(b"{}", "429 Too Many", [("Retry-After", "inf")])), send(GOOD)],
            "http_429",
            GOOD_SCORE,
            2.0,
        ),
        (
            [send(response(b"{}", "429 Too Many", [("Retry-After", "soon")])), send(GOOD)],
            "http_429",
            GOOD_SCORE,
            2.0,
        ),
        # A huge Retry-After waits max_backoff (0.3 s here), not a billion seconds.
        (
            [send(response(b"{}", "429 Too Many", [("Retry-After", "1e9")])), send(GOOD)],
            "http_429",
            GOOD_SCORE,
            2.0,
        ),
        # The connection closed, reset or cut mid-body: retried, then the fallback.
        (close(), "disconnects", FALLBACK, 3.0),
        (reset(), "disconnects", FALLBACK, 3.0),
        ([close(), send(GOOD)], "disconnects", GOOD_SCORE, 2.0),
        (send(response(b'{"choices": [', content_length=500)), "disconnects", FALLBACK, 3.0),
        (
            send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                b'10\r\n{"choices": [{"\r\n'
            ),
            "disconnects",
            FALLBACK,
            3.0,
        ),
        (
            send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
            "disconnects",
            FALLBACK,
            3.0,
        ),
        # Not HTTP at all: a bad status line, an unknown protocol, a 70 KB header, 150 headers.
        (send(b"HELLO THERE\r\n\r\n"), "protocol_errors", FALLBACK, 3.0),
        (send(b"HTTP/9.9 200 OK\r\n\r\n{}"), "protocol_errors", FALLBACK, 3.0),
        (send(b"HTTP/1.1 abc OK\r\n\r\n"), "protocol_errors", FALLBACK, 3.0),
        (send(LONG_HEADER), "protocol_errors", FALLBACK, 3.0),
        (send(MANY_HEADERS), "protocol_errors", FALLBACK, 3.0),
        # A body that is not a chat completion: not retried.
        (send(NESTED_BODY), "malformed_responses", FALLBACK, 2.0),
        (send(response(b"\xff\xfe not utf-8")), "malformed_responses", FALLBACK, 2.0),
        (send(response(completion({"score": 7}))), "malformed_responses", FALLBACK, 2.0),
        (send(response(b'{"choices": "none"}')), "malformed_responses", FALLBACK, 2.0),
        # An answer nested too deeply to read as JSON has no verdict.
        (send(NESTED_CONTENT), "parse_failures", FALLBACK, 3.0),
        # Content parts (newer OpenAI servers) are text too.
        (
            send(response(completion([{"type": "text", "text": '{"score": 7}'}]))),
            "requests",
            GOOD_SCORE,
            2.0,
        ),
    ],
    ids=[
        "retry-after-negative",
        "retry-after-nan",
        "retry-after-inf",
        "retry-after-junk",
        "retry-after-huge",
        "closed",
        "reset",
        "closed-then-good",
        "truncated-body",
        "truncated-chunk",
        "bad-chunk-size",
        "bad-status-line",
        "unknown-protocol",
        "bad-status-code",
        "70kb-header",
        "150-headers",
        "nested-json-body",
        "body-not-utf8",
        "content-a-dict",
        "choices-not-a-list",
        "nested-json-content",
        "content-parts",
    ],
)
def test_every_server_behaviour_ends_in_a_score_or_the_flagged_fallback(
    behaviour, counter, expected, bound
):
    score, fell_back, stats, elapsed = judged(behaviour, max_backoff=0.3)
    assert score == pytest.approx(expected)
    assert fell_back == (expected == FALLBACK)
    assert stats[counter] >= 1, dict(stats)
    assert stats["fallbacks"] == int(fell_back)
    assert elapsed < bound, f"{elapsed:.2f}s"


def test_a_closed_connection_is_retried_and_then_falls_back_like_a_timeout():
    score, fell_back, stats, _ = judged(close(), max_retries=2)
    assert (score, fell_back) == (FALLBACK, True)
    assert stats["disconnects"] == 3 and stats["retries"] == 2
    assert stats["failed_requests"] == 1 and stats["connection_errors"] == 0


def test_retry_after_is_honoured_when_it_is_valid():
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1), usegmt=True)
    for value, wait in (("0.6", 0.6), (later, 0.0)):
        behaviours = [send(response(b"{}", "429 Too Many", [("Retry-After", value)])), send(GOOD)]
        score, fell_back, stats, elapsed = judged(behaviours, max_backoff=5.0)
        assert (score, fell_back) == (pytest.approx(GOOD_SCORE), False)
        assert wait <= elapsed < wait + 2.0, (value, elapsed)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 1.5 ", 1.5),
        ("-5", None),
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # already past
    ],
)
def test_retry_after_values(value, seconds):
    assert retry_after_seconds(value) == seconds


def test_a_redirect_is_a_configuration_error_naming_the_new_url():
    moved = send(response(b"", "301 Moved", [("Location", "https://elsewhere.example/v1")]))
    with MisbehavingServer(moved) as server:
        judge = judge_for(server)
        with pytest.raises(RuntimeError, match=r"HTTP 301, a redirect to 'https://elsewhere"):
            judge(["q"], ["a"])


def test_the_probe_names_the_url_for_a_server_that_is_not_http():
    with MisbehavingServer(send(b"SSH-2.0-OpenSSH_9.6\r\n")) as server:
        start = time.monotonic()
        with pytest.raises(JudgeConnectionError, match=f"judge endpoint {server.url} .*not an"):
            RemoteJudge(server.url, api_key_env=None, timeout=1.0)
    assert time.monotonic() - start < 2.0


# ---------------------------------------------------------------- item 10: bounded time


@pytest.mark.parametrize(
    "behaviour",
    [
        drip(GOOD, 0.25),  # status line and headers, one byte every 0.25 s
        drip(b"HTTP/1.1 200 OK\r\n", 0.25),
        stall(30.0),  # nothing at all
    ],
    ids=["drip-whole-response", "drip-status-line", "silence"],
)
def test_timeout_is_a_deadline_for_the_whole_request(behaviour):
    # Each byte arrives well within the 1 s timeout; the full answer would take 40 s.
    score, fell_back, stats, elapsed = judged(behaviour, timeout=1.0, max_retries=1)
    assert (score, fell_back) == (FALLBACK, True)
    assert stats["timeouts"] == 2 and stats["requests"] == 2
    assert 2.0 <= elapsed < 3.5, f"{elapsed:.2f}s for 2 attempts of 1 s"


def test_a_dripped_body_is_cut_at_the_deadline():
    head, _, body = GOOD.partition(b"\r\n\r\n")

    def head_then_drip(conn, stop):
        conn.sendall(head + b"\r\n\r\n")
        drip(body, 0.25)(conn, stop)

    score, fell_back, stats, elapsed = judged(head_then_drip, timeout=1.0, max_retries=0)
    assert (score, fell_back) == (FALLBACK, True) and stats["timeouts"] == 1
    assert 1.0 <= elapsed < 2.0, f"{elapsed:.2f}s"


def test_concurrent_requests_share_the_bound():
    with MisbehavingServer(drip(GOOD, 0.25)) as server:
        judge = judge_for(server, timeout=1.0, max_retries=0, max_concurrency=8)
        start = time.monotonic()
        scores, flags = judge.scores_and_fallbacks(["q"] * 8, [f"a{i}" for i in range(8)])
        elapsed = time.monotonic() - start
    assert flags.all() and np.all(scores == FALLBACK) and judge.stats["timeouts"] == 8
    assert elapsed < 2.5, f"{elapsed:.2f}s for 8 parallel requests of 1 s"


# ---------------------------------------------------------------- item 10: bounded memory


def test_a_body_over_the_cap_is_refused_without_reading_it():
    huge = response(b"x" * (3 << 20))  # 3 MiB, declared
    score, fell_back, stats, elapsed = judged(send(huge))
    assert (score, fell_back) == (FALLBACK, True)
    assert stats["oversized_responses"] == 1 and stats["requests"] == 1  # not retried
    assert elapsed < 2.0


def test_an_undeclared_body_over_the_cap_is_cut_off():
    # Chunked: the size is known only while reading; reading stops just past the cap.
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40)) + b"0\r\n\r\n"
    stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    score, fell_back, stats, _ = judged(send(stream), max_response_bytes=100_000)
    assert (score, fell_back) == (FALLBACK, True) and stats["oversized_responses"] == 1


def test_the_cap_is_configurable():
    padded = completion('{"score": 7}' + " " * 5000)
    small = judged(send(response(padded)), max_response_bytes=4096)
    large = judged(send(response(padded)), max_response_bytes=8192)
    assert small[:2] == (FALLBACK, True) and small[2]["oversized_responses"] == 1
    assert large[:2] == (pytest.approx(GOOD_SCORE), False)
    with pytest.raises(ValueError, match=r"max_response_bytes=0 \(>=1\)"):
        RemoteJudge("http://127.0.0.1:9/v1", api_key_env=None, check=False, max_response_bytes=0)


def test_an_answer_at_the_cap_is_parsed_in_bounded_time():
    # Almost 1 MiB of brace soup: each '{' starts a JSON attempt (17 s for 200k characters
    # and more than 100 s for 2.1 MB before parsing was made linear).
    soup = "{" * ((1 << 20) - 200)
    score, fell_back, stats, elapsed = judged(send(response(completion(soup))))
    assert (score, fell_back) == (FALLBACK, True) and stats["parse_failures"] == 1
    assert elapsed < 5.0, f"{elapsed:.2f}s"


SCALE = {str(i): float(i) for i in range(1, 11)}
MIB = 1 << 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{" * MIB, None),
        ('{"a": ' * (MIB // 6), None),
        ('{"a": [' * (MIB // 7), None),
        ('{"a": "{' * (MIB // 8), None),
        ('{"' * (MIB // 2), None),
        ("{\n" * (MIB // 2), None),
        ("7 " * (MIB // 2), 7.0),
        ("1" * MIB, None),
        ('{"a": [' * 20_000 + ' {"score": 3}', 3.0),
        ("x " * (MIB // 2) + '{"score": 9}', 9.0),
        ('{"a": [' + "1," * (MIB // 2) + '1], "score": 9}', 9.0),
    ],
    ids=[
        "braces",
        "open-objects",
        "open-lists",
        "strings-with-braces",
        "open-strings",
        "braces-on-lines",
        "one-label-repeated",
        "digits",
        "deep-then-verdict",
        "prose-then-verdict",
        "big-array",
    ],
)
def test_parse_verdict_is_linear(text, expected):
    start = time.monotonic()
    assert parse_verdict(text, SCALE) == expected
    assert time.monotonic() - start < 3.0


def test_parse_verdict_time_grows_linearly():
    def seconds(n: int) -> float:
        text = "{" * n
        start = time.perf_counter()
        parse_verdict(text, SCALE)
        return time.perf_counter() - start

    small, large = min(seconds(100_000) for _ in range(3)), min(seconds(800_000) for _ in range(3))
    # 8 times the text: about 8 times the time when linear, 64 times when quadratic.
    assert large < 24 * small + 0.05, (small, large)


def test_a_hostile_batch_keeps_its_good_answers():
    # Each sample of one batch meets another behaviour; each gets its own score or flag, and
    # the batch takes one deadline (requests run concurrently).
    behaviours = {
        "good": send(GOOD),
        "closed": close(),
        "nested": send(NESTED_BODY),
        "dripped": drip(GOOD, 0.25),
        "not-http": send(b"HELLO\r\n\r\n"),
    }

    def route(body: bytes):
        asked = json.loads(body)["messages"][-1]["content"]
        return behaviours[asked.split("Response: ")[-1].split("\n")[0]]

    with MisbehavingServer(route=route) as server:
        judge = judge_for(server, max_retries=0)
        start = time.monotonic()
        parts = judge.components(["q"] * len(behaviours), list(behaviours))
        elapsed = time.monotonic() - start
    np.testing.assert_allclose(parts["judge"], [GOOD_SCORE] + [FALLBACK] * 4, rtol=1e-6)
    assert parts["judge_fallback"].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    stats = judge.stats
    assert (stats["disconnects"], stats["malformed_responses"]) == (1, 1)
    assert (stats["timeouts"], stats["protocol_errors"]) == (1, 1)
    assert elapsed < 2.5, f"{elapsed:.2f}s"
