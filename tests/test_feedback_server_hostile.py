"""The labeling server against hostile or broken clients: every request gets a JSON answer
(4xx or 503), slow and idle connections are cut off, and labels count once per rater."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import sqlite3
import threading
import time

import pytest

from textgym.feedback import FeedbackStore
from textgym.feedback.server import MAX_BODY_BYTES, make_server


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite", timeout=0.5) as s:
        yield s


@pytest.fixture
def rate_task(store):
    sample = store.add_sample("Name a fruit.", "Apple.")
    return store.add_task("rate", sample_ids=[sample], needed=2)


@pytest.fixture
def server(store):
    srv = make_server(store, port=0, request_timeout=1.0, max_connections=4).start()
    yield srv
    srv.stop()


def call(server, method, path, body=None):
    """(status, headers, raw body) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), payload


def post(server, body):
    status, _, payload = call(server, "POST", "/api/label", body)
    return status, json.loads(payload)


def raw_socket(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes; True when it did (not a client-side timeout)."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_task_id_too_large_for_sqlite_gets_404(server, rate_task):
    status, data = post(server, {"rater": "ann", "task_id": 2**70, "score": 3})
    assert status == 404
    assert data["error"] == f"no labeling task {2**70}"


def test_deeply_nested_body_under_the_cap_gets_400(server, rate_task):
    body = b"[" * 30_000
    assert len(body) < MAX_BODY_BYTES
    status, _, payload = call(server, "POST", "/api/label", body)
    assert status == 400
    assert "nested too deeply" in json.loads(payload)["error"]


def test_locked_store_gets_503_with_retry_after(server, store, rate_task):
    other = sqlite3.connect(store.path, timeout=0.1, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        start = time.monotonic()
        status, headers, payload = call(
            server, "POST", "/api/label", {"rater": "ann", "task_id": rate_task, "score": 4}
        )
        waited = time.monotonic() - start
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert "busy" in json.loads(payload)["error"]
    assert waited < 5  # the store's own 0.5 s timeout, not a hang
    # Once the lock is gone the same label goes through.
    assert post(server, {"rater": "ann", "task_id": rate_task, "score": 4})[0] == 200


def test_slowloris_is_cut_off_while_others_are_served(server, rate_task):
    slow = raw_socket(server)
    stop = threading.Event()

    def drip() -> None:
        try:
            slow.sendall(b"GET /api/next?rater=slow HTTP/1.1\r\n")
            while not stop.is_set():
                slow.sendall(b"X")  # a header that never ends, one byte at a time
                time.sleep(0.2)
        except OSError:
            pass

    dripper = threading.Thread(target=drip, daemon=True)
    start = time.monotonic()
    dripper.start()
    try:
        status, _, payload = call(server, "GET", "/api/next?rater=ann")
        assert status == 200 and json.loads(payload)["task"]["id"] == rate_task
        assert closed_by_server(slow)
        assert time.monotonic() - start < 4  # request_timeout is 1 s for the whole request
    finally:
        stop.set()
        slow.close()
        dripper.join()


def test_connections_over_the_cap_get_503_at_once(server, rate_task):
    idle = [raw_socket(server) for _ in range(4)]  # max_connections=4, all silent
    try:
        time.sleep(0.2)
        extra = raw_socket(server)
        start = time.monotonic()
        answer = extra.recv(4096)
        extra.close()
        assert time.monotonic() - start < 1
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 503")
        assert b"Retry-After:" in head
        assert json.loads(body)["error"] == "too many connections; try again shortly"
        # The idle ones are cut off by the request timeout, which frees their slots.
        assert all(closed_by_server(sock) for sock in idle)
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.1)
    assert call(server, "GET", "/api/next?rater=ann")[0] == 200


def test_a_label_counts_once_per_rater_and_task(server, store, rate_task):
    status, first = post(server, {"rater": "ann", "task_id": rate_task, "score": 2})
    assert status == 200 and "unchanged" not in first
    status, again = post(server, {"rater": "ann", "task_id": rate_task, "score": 5})
    assert status == 200
    assert again["unchanged"] is True and again["label_id"] == first["label_id"]
    assert [r.score for r in store.ratings()] == [2]
    # The explicit way to change one's label replaces it.
    status, changed = post(
        server, {"rater": "ann", "task_id": rate_task, "score": 5, "replace": True}
    )
    assert status == 200 and "unchanged" not in changed
    assert [(r.rater, r.score) for r in store.ratings()] == [("ann", 5)]
    assert changed["progress"]["labelled_by_rater"] == 1
    status, data = post(server, {"rater": "ann", "task_id": rate_task, "score": 4, "replace": 1})
    assert status == 400 and data["error"] == "field 'replace' must be true or false"


def test_a_task_with_all_its_labels_refuses_a_new_rater(server, store, rate_task):
    assert post(server, {"rater": "ann", "task_id": rate_task, "score": 2})[0] == 200
    assert post(server, {"rater": "bob", "task_id": rate_task, "score": 3})[0] == 200
    status, data = post(server, {"rater": "cat", "task_id": rate_task, "score": 4})
    assert status == 409
    assert "already has the 2 label(s) it needs" in data["error"]
    assert "GET /api/next" in data["error"]
    assert sorted(r.rater for r in store.ratings()) == ["ann", "bob"]
    # Raters who labelled it may still change their own label.
    status, _ = post(server, {"rater": "bob", "task_id": rate_task, "score": 1, "replace": True})
    assert status == 200
    assert sorted((r.rater, r.score) for r in store.ratings()) == [("ann", 2), ("bob", 1)]


@pytest.mark.parametrize("rater", ["a\x00b", "tab\there", "bell\x07"])
def test_rater_names_with_control_characters_are_refused(server, store, rate_task, rater):
    status, data = post(server, {"rater": rater, "task_id": rate_task, "score": 3})
    assert status == 400
    assert "rater must not contain control characters" in data["error"]
    assert store.ratings() == []


def test_store_refuses_duplicate_task_labels_directly(store, rate_task):
    from textgym.feedback.store import DuplicateLabel, TaskComplete

    sample = store.task(rate_task).sample_ids[0]
    first = store.add_rating(sample, 3, rater="ann", task_id=rate_task)
    with pytest.raises(DuplicateLabel, match="pass replace=True") as info:
        store.add_rating(sample, 4, rater="ann", task_id=rate_task)
    assert info.value.label_id == first
    store.add_rating(sample, 4, rater="bob", task_id=rate_task)
    with pytest.raises(TaskComplete, match="already has the 2 label"):
        store.add_rating(sample, 5, rater="cat", task_id=rate_task)


def test_head_is_answered_without_a_body(server):
    status, headers, body = call(server, "HEAD", "/")
    _, get_headers, get_body = call(server, "GET", "/")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == get_headers["Content-Length"] == str(len(get_body))


def test_client_that_disconnects_mid_body_leaves_no_traceback(server, rate_task, caplog, capfd):
    caplog.set_level(logging.INFO, logger="textgym.feedback.server")
    sock = raw_socket(server)
    sock.sendall(
        b"POST /api/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"rater":'
    )
    sock.shutdown(socket.SHUT_WR)
    closed_by_server(sock)
    sock.close()
    time.sleep(0.2)
    assert call(server, "GET", "/api/next?rater=ann")[0] == 200  # still serving
    assert not [r for r in caplog.records if r.exc_info]
    assert "Traceback" not in capfd.readouterr().err
    assert any("closed the connection" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_timeout": 0}, "request_timeout must be a number of seconds > 0, got 0"),
        ({"max_connections": 0}, "max_connections must be an integer >= 1, got 0"),
    ],
)
def test_bad_limits_are_refused(store, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_server(store, port=0, **kwargs)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--token", "short"], "the access token must be at least 16 characters"),
        (["--max-connections", "0"], "max_connections must be an integer >= 1, got 0"),
        (["--request-timeout", "-1"], "request_timeout must be a number of seconds > 0"),
    ],
)
def test_serve_command_reports_bad_options_in_one_line(tmp_path, capsys, options, message):
    from textgym.cli import main

    code = main(["feedback", "serve", "--db", str(tmp_path / "fb.sqlite"), "--port", "0", *options])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
