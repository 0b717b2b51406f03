"""Labeling web app: HTTP errors and access control, then end to end in headless Chromium."""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path

import pytest

from textgym.feedback import FeedbackStore
from textgym.feedback.server import MAX_BODY_BYTES, TOKEN_HEADER, make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">bold <b>claim</b>'


@pytest.fixture
def store(tmp_path):
    with FeedbackStore(tmp_path / "fb.sqlite") as s:
        yield s


@pytest.fixture
def queued(store):
    """One task of each kind; the rate task's completion tries to inject HTML."""
    evil = store.add_sample("Describe the product.", XSS)
    first = store.add_sample("Name a fruit.", "Apple.")
    second = store.add_sample("Name a fruit.", "A car.")
    third = store.add_sample("Name a fruit.", "Banana, a yellow fruit.")
    typo = store.add_sample("Spell it.", "recieve")
    return {
        "rate": store.add_task("rate", sample_ids=[evil]),
        "rank": store.add_task("rank", sample_ids=[first, second, third]),
        "edit": store.add_task("edit", sample_ids=[typo]),
        "demo": store.add_task("demo", prompt="Write a haiku about rain."),
        "samples": (evil, first, second, third, typo),
    }


@pytest.fixture
def server(store):
    srv = make_server(store, port=0).start()
    yield srv
    srv.stop()


def request(server, method, path, body=None, headers=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(payload)
    except json.JSONDecodeError:
        return resp.status, payload.decode()


def test_api_labels_a_task_and_reports_progress(server, queued, store):
    status, data = request(server, "GET", "/api/next?rater=ann")
    assert status == 200
    assert data["task"]["id"] == queued["rate"]
    assert data["task"]["samples"][0]["completion"] == XSS
    assert data["progress"]["left_for_rater"] == 4
    status, data = request(
        server, "POST", "/api/label", {"rater": "ann", "task_id": queued["rate"], "score": 2}
    )
    assert (status, data["ok"], data["progress"]["labelled_by_rater"]) == (200, True, 1)
    assert [(r.score, r.rater) for r in store.ratings()] == [(2, "ann")]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("POST", "/api/label", b"{not json", {}, 400, "not UTF-8 JSON"),
        ("POST", "/api/label", b"\xff\xfe", {}, 400, "not UTF-8 JSON"),
        ("POST", "/api/label", [1, 2], {}, 400, "must be a JSON object"),
        (
            "POST",
            "/api/label",
            {"rater": "a", "task_id": "1"},
            {},
            400,
            "'task_id' must be an integer",
        ),
        ("POST", "/api/label", {"rater": "a", "task_id": 999}, {}, 404, "no labeling task 999"),
        ("POST", "/api/label", {"rater": "", "task_id": 1}, {}, 400, "'rater' must be 1 to 100"),
        (
            "POST",
            "/api/label",
            {"rater": "a", "task_id": 1, "score": 9},
            {},
            400,
            "whole number from 1 to 5, got 9",
        ),
        ("POST", "/api/label", {"rater": "a", "task_id": 2, "order": [2, 3]}, {}, 400, "once each"),
        (
            "POST",
            "/api/label",
            {"rater": "a", "task_id": 3, "text": 5},
            {},
            400,
            "must be a string",
        ),
        ("POST", "/api/label", {"rater": "a", "task_id": 4, "text": "  "}, {}, 400, "not be blank"),
        ("POST", "/api/label", {}, {"Content-Type": "text/plain"}, 415, "application/json"),
        ("POST", "/api/other", {}, {}, 404, "no endpoint"),
        ("GET", "/api/next", None, {}, 400, "query 'rater'"),
        ("GET", "/nope", None, {}, 404, "no page"),
        ("PUT", "/api/label", {}, {}, 405, "method PUT is not allowed"),
        ("DELETE", "/", None, {}, 405, "not allowed"),
        (
            "GET",
            "/",
            None,
            {"Host": "evil.example.com"},
            403,
            "only answers requests for localhost",
        ),
    ],
)
def test_malformed_requests_get_4xx_with_a_message(
    server, queued, store, method, path, body, headers, status, message
):
    got, data = request(server, method, path, body, headers)
    assert got == status
    assert message in data["error"]
    assert store.counts()["ratings"] == store.counts()["rankings"] == 0


def test_oversized_body_is_refused(server, queued):
    body = json.dumps({"rater": "a", "task_id": queued["demo"], "text": "x" * MAX_BODY_BYTES})
    status, data = request(server, "POST", "/api/label", body.encode())
    assert status == 413
    assert "over the limit" in data["error"]


def test_binding_beyond_localhost_requires_a_token(store):
    with pytest.raises(ValueError, match="pass an access token"):
        make_server(store, host="0.0.0.0", port=0)
    srv = make_server(store, host="0.0.0.0", port=0, token="s3cret-token-0123456789").start()
    try:
        status, data = request(srv, "GET", "/api/next?rater=a")
        assert status == 401
        assert "missing or wrong access token" in data["error"]
        assert request(srv, "GET", "/")[0] == 401
        wrong = {TOKEN_HEADER: "guess-guess-guess-guess"}
        assert request(srv, "GET", "/api/next?rater=a", headers=wrong)[0] == 401
        assert request(srv, "GET", "/api/next?rater=a&token=s3cret-token-0123456789")[0] == 200
        good = {TOKEN_HEADER: "s3cret-token-0123456789"}
        assert request(srv, "GET", "/api/stats", headers=good)[0] == 200
        assert srv.url.endswith("/?token=s3cret-token-0123456789")
        # The page address sets an HttpOnly cookie, so its scripts and styles load with it.
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.request("GET", "/?token=s3cret-token-0123456789")
        resp = conn.getresponse()
        resp.read()
        cookie = resp.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        conn.close()
        with_cookie = {"Cookie": cookie.split(";")[0]}
        assert request(srv, "GET", "/app.js", headers=with_cookie)[0] == 200
        assert request(srv, "GET", "/app.js", headers={"Cookie": "textgym_token=nope"})[0] == 401
    finally:
        srv.stop()
    with pytest.raises(ValueError, match="at least 16 characters among letters"):
        make_server(store, host="0.0.0.0", port=0, token="short")
    with pytest.raises(ValueError, match="at least 16 characters among letters"):
        make_server(store, host="0.0.0.0", port=0, token="spaces are not ok here;x")


def test_stats_endpoint_reports_agreement(server, store):
    a, b = store.add_sample("p", "a"), store.add_sample("p", "b")
    for rater, (x, y) in {"r1": (5, 1), "r2": (4, 1), "r3": (5, 2)}.items():
        store.add_rating(a, x, rater=rater)
        store.add_rating(b, y, rater=rater)
        store.add_ranking([a, b], rater=rater)
    status, report = request(server, "GET", "/api/stats")
    assert status == 200
    assert report["ratings"]["items_with_2plus_raters"] == 2
    assert report["ratings"]["alpha_interval"] > 0.8
    assert report["preferences"]["percent_agreement"] == 100.0
    assert report["raters"]["r2"] == {"ratings": 2, "mean": 2.5, "std": 1.5}


# ----------------------------------------------------------------------------- real browser


def _chromium_or_skip():
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install 'textgym[browser]')"
    )
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.skip(
            f"Debian's chromium is not installed at {CHROMIUM} (`apt-get install chromium` as "
            "root; `make install` does it)"
        )
    return playwright


def _chromium_path() -> str:
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


def test_web_app_end_to_end_in_headless_chromium(server, queued, store):
    sync_api = _chromium_or_skip()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url)
            page.fill("#rater", "tester")
            page.press("#rater", "Enter")

            # 1. Rate: the <script> completion is shown as text and never runs.
            page.wait_for_selector("#task[data-kind='rate']")
            assert page.text_content("#completion") == XSS
            assert page.locator("#completion script, #completion img, #completion b").count() == 0
            assert page.evaluate("typeof window.__xss") == "undefined"
            assert "4 left for you" in page.text_content("#progress")
            page.fill("#comment", "suspicious markup")
            page.locator("body").click(position={"x": 5, "y": 5})  # leave the comment box
            page.keyboard.press("4")
            page.keyboard.press("Enter")

            # 2. Rank by keys, then by dragging: Apple, A car, Banana -> Banana, Apple, A car.
            page.wait_for_selector("#task[data-kind='rank']")
            items = page.locator("#ranking li")
            assert items.all_text_contents() == ["Apple.", "A car.", "Banana, a yellow fruit."]
            page.keyboard.press("3")
            page.keyboard.press("ArrowUp")  # Apple, Banana, A car
            assert items.all_text_contents()[1] == "Banana, a yellow fruit."
            items.nth(1).drag_to(items.nth(0))  # Banana, Apple, A car
            assert items.all_text_contents() == ["Banana, a yellow fruit.", "Apple.", "A car."]
            page.keyboard.press("Enter")

            # 3. Edit, submitted with Ctrl+Enter from the text box.
            page.wait_for_selector("#task[data-kind='edit']")
            assert page.input_value("#text") == "recieve"
            page.fill("#text", "receive")
            page.press("#text", "Control+Enter")

            # 4. Demonstrate.
            page.wait_for_selector("#task[data-kind='demo']")
            assert page.text_content("#prompt") == "Write a haiku about rain."
            page.fill("#text", "Soft rain on the roof")
            page.click("#submit")

            page.wait_for_selector("#status:has-text('Nothing left to label')")
            assert "4 left" not in page.text_content("#progress")
            assert "You labelled 4" in page.text_content("#progress")

            page.goto(server.url + "stats")
            page.wait_for_selector("#counts tr")
            assert "ratings" in page.text_content("#counts")
            assert errors == []
        finally:
            browser.close()

    evil, first, second, third, typo = queued["samples"]
    assert [(r.sample_id, r.score, r.rater, r.comment) for r in store.ratings()] == [
        (evil, 4, "tester", "suspicious markup")
    ]
    assert [(r.sample_ids, r.rater) for r in store.rankings()] == [
        ((third, first, second), "tester")
    ]
    assert [(e.sample_id, e.text) for e in store.edits()] == [(typo, "receive")]
    assert [(d.prompt, d.text) for d in store.demonstrations()] == [
        ("Write a haiku about rain.", "Soft rain on the roof")
    ]
    assert store.progress()["done"] == 4


def test_web_app_with_an_access_token_in_headless_chromium(store):
    sync_api = _chromium_or_skip()
    sample = store.add_sample("Say hi.", "Hello!")
    store.add_task("rate", sample_ids=[sample])
    srv = make_server(store, host="0.0.0.0", port=0, token="browser-token-0123456789").start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium_path(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(srv.url)
                page.fill("#rater", "remote")
                page.press("#rater", "Enter")
                page.wait_for_selector("#task[data-kind='rate']")
                page.keyboard.press("5")
                page.keyboard.press("Enter")
                page.wait_for_selector("#status:has-text('Nothing left to label')")
                page.click("#stats-link")
                page.wait_for_selector("#raters tr >> nth=1")
                assert "remote" in page.text_content("#raters")
            finally:
                browser.close()
    finally:
        srv.stop()
    assert [(r.score, r.rater) for r in store.ratings()] == [(5, "remote")]
