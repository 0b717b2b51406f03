"""The labeling web app: a standard-library HTTP server over a :class:`FeedbackStore`.

``textgym feedback serve --db FILE`` (or :func:`make_server`) serves a page that shows each
rater the next open task of the labeling queue (rate 1-5, rank by drag or keys, edit, write a
demonstration), with keyboard shortcuts and a progress count, and a statistics page
(``/stats``) with agreement between raters. Several raters label at once: each names
themself on the page, and a task stays open until it has the labels it needs.

Safety:

- it binds to 127.0.0.1 by default; binding to any other address requires an access token,
  which every request must carry: ``?token=`` in the page address (the answer sets it as an
  HttpOnly, SameSite=Strict cookie for the page's scripts), the cookie, or an
  ``X-Textgym-Token`` header; on localhost without a token, requests must name a local
  ``Host`` (no DNS rebinding);
- the page inserts model text with ``textContent`` only, and a Content-Security-Policy allows
  no inline script, so a completion containing ``<script>`` is shown, never run;
- request bodies are JSON of at most :data:`MAX_BODY_BYTES`; malformed requests get a 4xx
  status with a message saying what was wrong, never a 500 or a dropped connection; a store
  locked by another process for longer than its ``timeout`` gives 503 with ``Retry-After``.
  POSTs must be ``application/json``, which a cross-site form cannot send;
- each connection must deliver its whole request within ``request_timeout`` seconds (a
  slowloris client is cut off), and at most ``max_connections`` are served at once (the next
  one gets 503 at once), both checked before any token check.

Labels are idempotent per (rater, task): posting the same task again stores nothing new and
answers ``"unchanged": true`` with the first label's id; ``"replace": true`` in the body is the
explicit way to change one's label. A task that already has the labels it needs refuses new
raters with 409 (the page then moves on to the next open task), so ``needed`` is exact.

API (JSON): ``GET /api/next?rater=NAME`` -> ``{"task": {...} | null, "progress": {...}}``;
``POST /api/label`` with ``{"rater", "task_id", ...}`` and ``score`` (+ ``comment``) for a
rate task, ``order`` (sample ids best first) for a rank task, ``text`` for edit and demo
tasks; ``GET /api/stats`` -> :func:`~textgym.feedback.aggregate.agreement_report`.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import sqlite3
import sys
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from textgym.feedback.aggregate import agreement_report
from textgym.feedback.records import check_score
from textgym.feedback.store import DuplicateLabel, FeedbackStore, LabelTask, TaskComplete

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
"""Largest request body accepted (a long edit or demonstration fits comfortably)."""
MAX_TEXT_CHARS = 20_000
"""Longest comment, edit or demonstration accepted."""
REQUEST_TIMEOUT = 10.0
"""Default seconds a connection has to deliver its whole request (request line to body)."""
MAX_CONNECTIONS = 64
"""Default number of connections served at once."""
RETRY_AFTER_SECONDS = 5
"""What a 503 for a locked store tells the client to wait."""
_SQLITE_MAX_INT = 2**63 - 1
TOKEN_HEADER = "X-Textgym-Token"
COOKIE_NAME = "textgym_token"
_STATIC = {
    "/": ("label.html", "text/html; charset=utf-8"),
    "/stats": ("stats.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or name) only accepts connections from this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "192.168.1.5")]
    [True, True, True, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _text_field(body: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key, None if required else "")
    if not isinstance(value, str):
        raise HttpError(HTTPStatus.BAD_REQUEST, f"field {key!r} must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise HttpError(
            HTTPStatus.BAD_REQUEST, f"field {key!r} is longer than {MAX_TEXT_CHARS} characters"
        )
    return value


class LabelingApp:
    """The request logic, independent of the HTTP plumbing: JSON in, JSON out."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store

    def task_json(self, rater: str) -> dict[str, Any]:
        task = self.store.next_task(rater)
        payload: dict[str, Any] = {"task": None, "progress": self.store.progress(rater)}
        if task is not None:
            samples = self.store.samples(ids=list(task.sample_ids))
            by_id = {s.id: s for s in samples}
            payload["task"] = {
                "id": task.id,
                "kind": task.kind,
                "prompt": task.prompt,
                "samples": [{"id": i, "completion": by_id[i].completion} for i in task.sample_ids],
            }
        return payload

    def label(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        rater = _text_field(body, "rater").strip()
        if not rater or len(rater) > 100:
            raise HttpError(HTTPStatus.BAD_REQUEST, "field 'rater' must be 1 to 100 characters")
        task_id = body.get("task_id")
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            raise HttpError(HTTPStatus.BAD_REQUEST, "field 'task_id' must be an integer")
        replace = body.get("replace", False)
        if not isinstance(replace, bool):
            raise HttpError(HTTPStatus.BAD_REQUEST, "field 'replace' must be true or false")
        try:
            if not 0 < task_id <= _SQLITE_MAX_INT:
                raise KeyError(task_id)
            task = self.store.task(task_id)
        except KeyError:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no labeling task {task_id}") from None
        try:
            label_id = self._store_label(task, rater, body, replace)
        except DuplicateLabel as exc:  # a re-post: the first label stands
            return {
                "ok": True,
                "label_id": exc.label_id,
                "unchanged": True,
                "progress": self.store.progress(rater),
            }
        except TaskComplete as exc:
            raise HttpError(
                HTTPStatus.CONFLICT, f"{exc}; fetch the next task (GET /api/next)"
            ) from None
        return {"ok": True, "label_id": label_id, "progress": self.store.progress(rater)}

    def _store_label(self, task: LabelTask, rater: str, body: dict[str, Any], replace: bool) -> int:
        if task.kind == "rate":
            try:  # the same rule as import and the Python API
                score = check_score(body.get("score"))
            except ValueError as exc:
                raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
            comment = _text_field(body, "comment", required=False)
            return self.store.add_rating(
                task.sample_ids[0],
                score,
                rater=rater,
                comment=comment,
                task_id=task.id,
                replace=replace,
            )
        if task.kind == "rank":
            order = body.get("order")
            if not isinstance(order, list) or sorted(map(str, order)) != sorted(
                map(str, task.sample_ids)
            ):
                raise HttpError(
                    HTTPStatus.BAD_REQUEST,
                    f"field 'order' must list the task's sample ids {list(task.sample_ids)} "
                    "once each, best first",
                )
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in order):
                raise HttpError(HTTPStatus.BAD_REQUEST, "field 'order' must hold integers")
            return self.store.add_ranking(order, rater=rater, task_id=task.id, replace=replace)
        text = _text_field(body, "text")
        if task.kind == "edit":
            return self.store.add_edit(
                task.sample_ids[0], text, rater=rater, task_id=task.id, replace=replace
            )
        if not text.strip():
            raise HttpError(HTTPStatus.BAD_REQUEST, "field 'text' must not be blank")
        return self.store.add_demonstration(
            task.prompt, text, rater=rater, task_id=task.id, replace=replace
        )


class _Handler(BaseHTTPRequestHandler):
    server: LabelingServer
    server_version = "textgym-labeling"
    sys_version = ""
    _set_cookie = False  # set per request by _check_access

    # -- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.info("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        # One deadline for the whole request, not per read: a client that drips a byte at a
        # time is cut off all the same. Cancelled once the request is read (see _request_read).
        self._deadline = threading.Timer(self.server.request_timeout, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut_off(self) -> None:
        logger.info(
            "%s took over %.1f s to send its request: closed",
            self.client_address[0],
            self.server.request_timeout,
        )
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _request_read(self) -> None:
        self._deadline.cancel()

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):  # the client may be gone already
            super().finish()

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self._set_cookie:
            self.send_header(
                "Set-Cookie",
                f"{COOKIE_NAME}={self.server.token}; HttpOnly; SameSite=Strict; Path=/",
            )
        for key, value in _SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _check_access(self, query: dict[str, list[str]]) -> None:
        token = self.server.token
        if token is None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if not is_loopback(host):
                raise HttpError(
                    HTTPStatus.FORBIDDEN,
                    f"this server only answers requests for localhost, not Host {host!r}",
                )
            return
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except CookieError:
            cookie.clear()
        from_query = (query.get("token") or [""])[0]
        given = (
            self.headers.get(TOKEN_HEADER)
            or from_query
            or (cookie[COOKIE_NAME].value if COOKIE_NAME in cookie else "")
        )
        if hmac.compare_digest(given.encode(), token.encode()):
            # The page's scripts and styles load without ?token=: remember it in a cookie.
            self._set_cookie = bool(from_query)
        else:
            raise HttpError(
                HTTPStatus.UNAUTHORIZED,
                f"missing or wrong access token: open the address printed by "
                f"`textgym feedback serve` (with ?token=...) or send the {TOKEN_HEADER} header",
            )

    def _handle(self, method: str) -> None:
        self._set_cookie = False
        if method != "POST":  # no body to wait for
            self._request_read()
        try:
            self._route(method)
        except (BrokenPipeError, ConnectionResetError):
            logger.info("%s closed the connection before the answer", self.client_address[0])

    def _route(self, method: str) -> None:
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query, max_num_fields=20)
            self._check_access(query)
            if method in ("GET", "HEAD"):
                self._get(url.path, query)
            elif method == "POST":
                self._post(url.path)
            else:
                raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"method {method} is not allowed")
        except HttpError as exc:
            self._json(exc.status, {"error": exc.message})
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # the client's fault
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except sqlite3.OperationalError as exc:  # e.g. another process holds the write lock
            logger.warning("feedback store unavailable: %s", exc)
            self._json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": f"the feedback store is busy ({exc}); try again shortly"},
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # a bug: answer, log the traceback, keep serving
            logger.exception("error answering %s %s", method, self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {exc}"})

    # -- routes

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        if path in _STATIC:
            name, content_type = _STATIC[path]
            body = resources.files("textgym.feedback").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        elif path == "/api/next":
            rater = (query.get("rater") or [""])[0].strip()
            if not rater or len(rater) > 100:
                raise HttpError(HTTPStatus.BAD_REQUEST, "query 'rater' must be 1 to 100 characters")
            self._json(HTTPStatus.OK, self.server.app.task_json(rater))
        elif path == "/api/stats":
            self._json(HTTPStatus.OK, agreement_report(self.server.app.store))
        else:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no page {path!r}")

    def _post(self, path: str) -> None:
        if path != "/api/label":
            raise HttpError(HTTPStatus.NOT_FOUND, f"no endpoint {path!r} (POST /api/label)")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "send the label as Content-Type: application/json",
            )
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True  # do not read an oversized body
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes is over the limit of {MAX_BODY_BYTES}",
            )
        raw = self.rfile.read(int(length))
        if len(raw) < int(length):
            raise ConnectionResetError("the request body ended early")
        self._request_read()
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"the body is not UTF-8 JSON ({exc})") from None
        except RecursionError:
            raise HttpError(
                HTTPStatus.BAD_REQUEST, "the body's JSON is nested too deeply"
            ) from None
        self._json(HTTPStatus.OK, self.server.app.label(body))

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._handle("OPTIONS")


class LabelingServer(ThreadingHTTPServer):
    """A threading HTTP server for one store; see :func:`make_server`."""

    daemon_threads = True

    def __init__(
        self,
        app: LabelingApp,
        host: str,
        port: int,
        token: str | None,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not (isinstance(request_timeout, (int, float)) and 0 < request_timeout < float("inf")):
            raise ValueError(
                f"request_timeout must be a number of seconds > 0, got {request_timeout!r}"
            )
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 1
        ):
            raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        if token is None and not is_loopback(host):
            raise ValueError(
                f"binding to {host!r} exposes the labeling app beyond this machine: pass an "
                "access token (`--token`, or let `textgym feedback serve` generate one), or bind "
                "to 127.0.0.1"
            )
        if token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{16,}", token):
            raise ValueError(
                "the access token must be at least 16 characters among letters, digits and . _ ~ -"
            )
        self.app = app
        self.token = token
        self.request_timeout = float(request_timeout)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._thread: threading.Thread | None = None
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Refuse at once past max_connections, before a thread or any token check.
        if not self._slots.acquire(blocking=False):
            body = b'{"error": "too many connections; try again shortly"}'
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Retry-After: %d\r\nContent-Length: %d\r\n\r\n%s"
                    % (RETRY_AFTER_SECONDS, len(body), body)
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanishes mid-request is routine: one line, no traceback.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            logger.info("%s: connection lost", client_address[0])
        else:
            logger.exception("error serving %s", client_address[0])

    @property
    def url(self) -> str:
        """The page address (with the token, when there is one)."""
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        if ":" in str(shown):
            shown = f"[{shown}]"
        return f"http://{shown}:{port}/" + (f"?token={self.token}" if self.token else "")

    def start(self) -> LabelingServer:
        """Serve from a daemon thread (tests, :class:`~textgym.feedback.human.HumanReward`)."""
        self._thread = threading.Thread(target=self.serve_forever, name="labeling", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()


def make_server(
    db: str | os.PathLike[str] | FeedbackStore,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> LabelingServer:
    """A labeling server for the store at ``db`` (port 0 picks a free port).

    Binding to an address other than loopback requires ``token`` (16+ characters). Each
    connection has ``request_timeout`` seconds to send its whole request, and at most
    ``max_connections`` are served at once.
    """
    store = db if isinstance(db, FeedbackStore) else FeedbackStore(db)
    return LabelingServer(
        LabelingApp(store),
        host,
        port,
        token,
        request_timeout=request_timeout,
        max_connections=max_connections,
    )
