"""A remote judge: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp
server, a hosted API), asked concurrently with timeouts and retries (standard library only)."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from textgym.rewards.judge.prompts import Conversation

logger = logging.getLogger(__name__)


class JudgeConnectionError(ConnectionError):
    """The judge endpoint cannot be reached (nothing listens, DNS failure, refused)."""


class RemoteJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    Args:
        url: base URL such as ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended)
            or the full ``.../chat/completions`` URL.
        model: the served model's name, sent as ``"model"``.
        api_key_env: environment variable holding the API key (sent as a Bearer token); None for
            a server without authentication. A missing variable is an error at construction.
        timeout: seconds for connecting and for each read of one request.
        max_retries: retries after a timeout, a dropped connection, HTTP 429 or 5xx.
        backoff: first retry delay in seconds, doubled per retry (with up to 25% jitter);
            a ``Retry-After`` header is honoured up to ``max_backoff``.
        max_concurrency: requests in flight at once.
        max_tokens: answer length limit; temperature is 0.
        json_mode: send ``response_format={"type": "json_object"}`` (servers that support it
            then always answer JSON).
        check: probe ``GET <url>/models`` at construction, so an unreachable endpoint fails
            at once with an error naming the URL.
        seed: seeds the retry jitter.
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
    ) -> None:
        if not re.match(r"https?://[^/]+", url or ""):
            raise ValueError(f"judge url must start with http:// or https://, got {url!r}")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or max_concurrency < 1 or max_tokens < 1:
            raise ValueError(
                f"invalid RemoteJudge options: timeout={timeout} (>0), max_retries={max_retries} "
                f"(>=0), backoff={backoff} (>=0), max_concurrency={max_concurrency} (>=1), "
                f"max_tokens={max_tokens} (>=1)"
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
            self.api_key = os.environ.get(api_key_env)
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
        """Probe ``GET <url>/models``; raise :class:`JudgeConnectionError` naming the URL."""
        req = urllib.request.Request(self.base_url + "/models", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:  # the server answered: it is reachable
            if exc.code in (401, 403):
                raise self._auth_error(exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeConnectionError(
                f"cannot reach the judge endpoint {self.base_url} ({reason}); is the server "
                "running and the URL right?"
            ) from None

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        with self._lock:
            jitter = 1.0 + 0.25 * self._rng.random()
        return min(self.backoff * (2**attempt) * jitter, self.max_backoff)

    def _request(self, conversation: Conversation) -> str | None:
        """One chat completion with retries; the answer text, or None after a failure."""
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
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            req = urllib.request.Request(self.url, data=data, headers=self._headers())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                self._count("http_errors")
                self._count(f"http_{exc.code}")
                if exc.code in (401, 403):
                    raise self._auth_error(exc.code) from None
                if exc.code == 404:
                    raise RuntimeError(
                        f"the judge endpoint {self.url} answered HTTP 404; is the URL the "
                        "OpenAI-compatible base (ending in /v1)?"
                    ) from None
                last_error = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    break  # the request itself is bad (e.g. too long): retrying cannot help
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except TimeoutError:
                self._count("timeouts")
                last_error = f"timeout after {self.timeout}s"
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    self._count("timeouts")
                    last_error = f"timeout after {self.timeout}s"
                else:
                    self._count("connection_errors")
                    last_error = f"connection error: {reason}"
            else:
                try:
                    return str(json.loads(raw)["choices"][0]["message"]["content"] or "")
                except (ValueError, KeyError, IndexError, TypeError):
                    self._count("malformed_responses")
                    logger.warning("judge %s: malformed response body %.200r", self.url, raw)
                    return None
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        self._count("failed_requests")
        if last_error.startswith("connection error"):
            raise JudgeConnectionError(
                f"cannot reach the judge endpoint {self.url} after {self.max_retries + 1} "
                f"attempts ({last_error})"
            )
        logger.warning("judge %s: request failed after retries (%s)", self.url, last_error)
        return None

    def complete(self, conversations: list[Conversation]) -> list[str | None]:
        """Answer texts for all conversations (None where the request failed), concurrently."""
        if not conversations:
            return []
        workers = min(self.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self._request, conversations))
