"""A remote judge: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp
server, a hosted API), asked concurrently with deadlines, a response-size cap and retries
(standard library only)."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from textgym.rewards.judge.prompts import Conversation
from textgym.rewards.judge.transport import Response, TransportError, fetch

logger = logging.getLogger(__name__)

_STAT = {
    "unreachable": "connection_errors",
    "timeout": "timeouts",
    "disconnect": "disconnects",
    "protocol": "protocol_errors",
    "oversized": "oversized_responses",
}
"""Transport failure kind -> the counter it increments in :attr:`RemoteJudge.stats`."""
_RETRIED = ("unreachable", "timeout", "disconnect", "protocol")
"""Transport failures that may pass (retried); an oversized body would come again."""


class JudgeConnectionError(ConnectionError):
    """The judge endpoint cannot be reached (nothing listens, DNS failure, refused)."""


def retry_after_seconds(value: str | None) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds; None when it is absent or
    unusable (negative, NaN, infinite, neither a number nor an HTTP date).

    >>> retry_after_seconds("2"), retry_after_seconds("-5"), retry_after_seconds("nan")
    (2.0, None, None)
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT")  # a date in the past: now
    0.0
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class RemoteJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    Args:
        url: base URL such as ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended)
            or the full ``.../chat/completions`` URL.
        model: the served model's name, sent as ``"model"``.
        api_key_env: environment variable holding the API key (sent as a Bearer token); None for
            a server without authentication. A missing variable is an error at construction.
        timeout: seconds for one whole request: connecting, sending, and receiving the status,
            headers and body. It is a deadline, not a per-read limit, so a server sending one
            byte at a time is cut off at ``timeout`` too.
        max_retries: retries after a timeout, a dropped connection, a non-HTTP answer, HTTP 429
            or 5xx.
        backoff: first retry delay in seconds, doubled per retry (with up to 25% jitter);
            a valid ``Retry-After`` header (seconds >= 0 or an HTTP date) replaces it. Every
            delay is capped at ``max_backoff``.
        max_concurrency: requests in flight at once.
        max_tokens: answer length limit; temperature is 0.
        json_mode: send ``response_format={"type": "json_object"}`` (servers that support it
            then always answer JSON).
        check: probe ``GET <url>/models`` at construction, so an unreachable endpoint fails
            at once with an error naming the URL.
        seed: seeds the retry jitter.
        max_response_bytes: the largest response body read (default 1 MiB); a larger one is
            refused without reading the rest. It also bounds the text :func:`parse_verdict`
            reads.

    What each server behaviour leads to. A request ends in an answer text, or in None (the
    caller, :class:`JudgeReward`, then scores the stated ``fallback`` and flags the sample in
    the ``<name>_fallback`` component), or, for configuration errors only, in an exception.
    Every case is counted in :attr:`stats` and logged:

    - **retried, then None**: the deadline passes (``timeouts``); the server closes or resets
      the connection, or truncates the body (``disconnects``); the answer is not HTTP, e.g. a
      bad status line, a header line over 64 KiB or more than 100 headers
      (``protocol_errors``); HTTP 429 or 5xx (``http_errors``, ``http_<code>``);
    - **None at once**: another HTTP 4xx, such as 400 or 413 (the request itself is refused);
      a body over ``max_response_bytes`` (``oversized_responses``); a body that is not a chat
      completion: not JSON, JSON nested too deeply to read, no ``choices[0].message.content``
      (``malformed_responses``);
    - **raised**, naming the URL, because no retry or fallback can fix them:
      :class:`PermissionError` for HTTP 401/403 (the key), :class:`RuntimeError` for HTTP 404
      or a redirect (the URL), and :class:`JudgeConnectionError` when nothing accepts the
      connection after the retries (refused, DNS or TLS failure).

    A request therefore takes at most ``(max_retries + 1) * timeout + max_retries *
    max_backoff`` seconds, and holds at most ``max_response_bytes`` of body in memory.
    """

    def __init__(
        self,
        url: str,
        model: str = "default",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_concurrency: int = 8,
        max_tokens: int = 128,
        json_mode: bool = False,
        check: bool = True,
        seed: int = 0,
        max_response_bytes: int = 1 << 20,
    ) -> None:
        if not re.match(r"https?://[^/]+", url or ""):
            raise ValueError(f"judge url must start with http:// or https://, got {url!r}")
        try:
            urllib.parse.urlsplit(url).port  # noqa: B018 - raises for a port that is no number
        except ValueError as exc:
            raise ValueError(f"judge url {url!r} is not a valid URL ({exc})") from None
        numbers = (timeout, backoff, max_backoff)
        if (
            not all(math.isfinite(x) for x in numbers)
            or timeout <= 0
            or max_retries < 0
            or backoff < 0
            or max_backoff < 0
            or max_concurrency < 1
            or max_tokens < 1
            or max_response_bytes < 1
        ):
            raise ValueError(
                f"invalid RemoteJudge options: timeout={timeout} (>0), max_retries={max_retries} "
                f"(>=0), backoff={backoff} (>=0), max_backoff={max_backoff} (>=0), "
                f"max_concurrency={max_concurrency} (>=1), max_tokens={max_tokens} (>=1), "
                f"max_response_bytes={max_response_bytes} (>=1); numbers must be finite"
            )
        base = url.rstrip("/")
        if base.endswith("/chat/completions"):
            base = base[: -len("/chat/completions")]
        self.base_url = base
        self.url = base + "/chat/completions"
        self.model = model
        self.name = f"{model}@{base}"
        self.api_key_env = api_key_env
        self.api_key: str | None = None
        if api_key_env is not None:
            self.api_key = os.environ.get(api_key_env, "").strip() or None
            if not self.api_key:
                raise ValueError(
                    f"the judge endpoint {self.url} needs an API key in the environment variable "
                    f"{api_key_env}, which is not set; export {api_key_env}=..., or pass "
                    "api_key_env=None for a server without authentication"
                )
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.max_response_bytes = max_response_bytes
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        if check:
            self.check()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _auth_error(self, code: int) -> PermissionError:
        where = f"the environment variable {self.api_key_env}" if self.api_key_env else "no key"
        return PermissionError(
            f"the judge endpoint {self.url} refused the API key (HTTP {code}); it was read from "
            f"{where}; check the key and the api_key_env argument"
        )

    def check(self) -> None:
        """Probe ``GET <url>/models``; raise :class:`JudgeConnectionError` naming the URL when
        no HTTP answer comes within ``timeout``, :class:`PermissionError` for HTTP 401/403."""
        try:
            resp = fetch(
                self.base_url + "/models",
                headers=self._headers(),
                timeout=self.timeout,
                max_bytes=self.max_response_bytes,
            )
        except TransportError as exc:
            if exc.kind == "oversized":  # a long model list: the server is there
                return
            raise JudgeConnectionError(
                f"cannot reach the judge endpoint {self.base_url} ({exc}); is the server "
                "running and the URL right?"
            ) from None
        if resp.status in (401, 403):
            raise self._auth_error(resp.status)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return min(asked, self.max_backoff)
        with self._lock:
            jitter = 1.0 + 0.25 * self._rng.random()
        return min(self.backoff * (2**attempt) * jitter, self.max_backoff)

    def _answer(self, resp: Response) -> str | None:
        """The answer text of a 2xx response; None (counted, logged) when the body is not a
        chat completion with text content."""
        try:
            content = json.loads(resp.body)["choices"][0]["message"]["content"]
        except RecursionError:
            return self._malformed("JSON nested too deeply", resp.body)
        except (ValueError, KeyError, IndexError, TypeError):
            return self._malformed("malformed", resp.body)
        if content is None or isinstance(content, (str, int, float)):
            return "" if content is None else str(content)
        if isinstance(content, list):  # content parts: [{"type": "text", "text": "..."}]
            texts = [part.get("text") for part in content if isinstance(part, dict)]
            if texts and all(isinstance(t, str) for t in texts):
                return "".join(texts)
        return self._malformed(f"{type(content).__name__} content", resp.body)

    def _malformed(self, problem: str, body: bytes) -> None:
        self._count("malformed_responses")
        logger.warning(
            "judge %s: %s response body (%d bytes) %r", self.url, problem, len(body), body[:200]
        )

    def _request(self, conversation: Conversation) -> str | None:
        """One chat completion with retries; the answer text, or None after a failure (see
        the class docstring for which failures are retried and which raise)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": conversation,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        data = json.dumps(body).encode()
        last_error = ""
        unreachable = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            try:
                resp = fetch(
                    self.url,
                    data=data,
                    headers=self._headers(),
                    timeout=self.timeout,
                    max_bytes=self.max_response_bytes,
                )
            except TransportError as exc:
                self._count(_STAT[exc.kind])
                last_error = str(exc)
                unreachable = exc.kind == "unreachable"
                if exc.kind not in _RETRIED:
                    break
            else:
                if resp.status < 300:
                    return self._answer(resp)
                self._count("http_errors")
                self._count(f"http_{resp.status}")
                if resp.status in (401, 403):
                    raise self._auth_error(resp.status)
                if resp.status == 404:
                    raise RuntimeError(
                        f"the judge endpoint {self.url} answered HTTP 404; is the URL the "
                        "OpenAI-compatible base (ending in /v1)?"
                    )
                if resp.status < 400:
                    location = resp.headers.get("Location", "nowhere")
                    raise RuntimeError(
                        f"the judge endpoint {self.url} answered HTTP {resp.status}, a redirect "
                        f"to {location[:300]!r}; pass the URL it names"
                    )
                last_error = f"HTTP {resp.status}"
                unreachable = False
                if resp.status != 429 and resp.status < 500:
                    break  # the request itself is bad (e.g. too long): retrying cannot help
                retry_after = resp.headers.get("Retry-After")
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        self._count("failed_requests")
        if unreachable:
            raise JudgeConnectionError(
                f"cannot reach the judge endpoint {self.url} after {self.max_retries + 1} "
                f"attempts ({last_error})"
            )
        logger.warning("judge %s: request failed (%s)", self.url, last_error)
        return None

    def complete(self, conversations: list[Conversation]) -> list[str | None]:
        """Answer texts for all conversations (None where the request failed), concurrently."""
        if not conversations:
            return []
        workers = min(self.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self._request, conversations))
