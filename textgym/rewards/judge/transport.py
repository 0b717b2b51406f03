"""HTTP for the remote judge: one request with a whole-request deadline and a size cap.

:func:`fetch` sends one request through :mod:`urllib.request` (so proxies from the environment
still apply) and returns a :class:`Response` for any HTTP status, or raises
:class:`TransportError` saying what went wrong in one of five words (:data:`KINDS`).

Two bounds hold whatever the server does:

- **time**: ``timeout`` is a deadline for the whole request (connecting, sending, the status
  line, the headers and the body), not a limit per socket read. Every read checks the deadline
  and gives the socket only the time that is left, so a server that drips one byte at a time
  is cut off at the deadline (a per-read timeout would let it hold the request forever);
- **memory**: the body is read in chunks and refused beyond ``max_bytes`` (a ``Content-Length``
  over the cap is refused before reading). Status and header lines are capped by
  :mod:`http.client` (64 KiB a line, 100 headers).

Redirects are not followed: urllib would turn a redirected POST into a GET without its body,
so a redirect comes back as a :class:`Response` with its 3xx status and ``Location``.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

KINDS = ("unreachable", "timeout", "disconnect", "protocol", "oversized")
"""What a :class:`TransportError` can be: nothing accepts the connection at the URL (refused,
DNS, TLS); the deadline passed; the server closed or reset the connection or truncated the
body; the answer is not HTTP (bad status line, header line over 64 KiB, over 100 headers); the
body is larger than the cap."""

_CHUNK = 64 * 1024


class TransportError(Exception):
    """One request failed below HTTP; :attr:`kind` is one of :data:`KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Response:
    """An HTTP answer: its status, headers and body (empty unless the status is 2xx)."""

    status: int
    headers: Message
    body: bytes = b""


class _DeadlineExceeded(TimeoutError):
    """The request's deadline passed between two reads."""


class _ConnectFailed(OSError):
    """Connecting failed for a reason other than time (refused, DNS, TLS handshake)."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _DeadlineExceeded("the request's deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """Raw reads from a socket, each given only the time left before the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._io = sock.makefile("rb", buffering=0)  # keeps the socket open until closed
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_remaining(self._deadline))
        return self._io.readinto(buffer)

    def close(self) -> None:
        self._io.close()
        super().close()


class _DeadlineSocket:
    """A connected socket whose sends and reads (through :meth:`makefile`) obey a deadline;
    http.client uses only ``sendall``, ``makefile`` and ``close`` after connecting."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineConnectionMixin:
    """Connect within the deadline, then wrap the socket in a :class:`_DeadlineSocket`."""

    sock: Any
    timeout: float | None

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        self.timeout = min(self.timeout or float("inf"), _remaining(self._deadline))
        try:
            super().connect()  # type: ignore[misc]
        except TimeoutError:
            raise
        except OSError as exc:
            raise _ConnectFailed(exc.errno, f"{type(exc).__name__}: {exc}") from exc
        self.sock = _DeadlineSocket(self.sock, self._deadline)


class _HTTPConnection(_DeadlineConnectionMixin, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnectionMixin, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_HTTPConnection, deadline=self._deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_HTTPSConnection, deadline=self._deadline)
        return self.do_open(connection, req, context=self._context)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx reaches the caller as an HTTPError, with its Location


def _failure(exc: BaseException, timeout: float) -> TransportError:
    """The :class:`TransportError` for an exception raised while talking to the server."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return TransportError("timeout", f"timeout after {timeout}s")
    if isinstance(exc, _ConnectFailed):
        return TransportError("unreachable", f"connection error: {exc.strerror}")
    if isinstance(exc, http.client.IncompleteRead):
        return TransportError(
            "disconnect",
            f"the server closed the connection after {len(exc.partial)} bytes of the body",
        )
    if isinstance(exc, ConnectionError):  # also RemoteDisconnected, before HTTPException
        return TransportError("disconnect", f"the server closed the connection ({exc})")
    if isinstance(exc, http.client.HTTPException):
        return TransportError(
            "protocol", f"not an HTTP answer ({type(exc).__name__}: {str(exc)[:200]})"
        )
    if isinstance(exc, urllib.error.URLError):
        return TransportError("unreachable", f"connection error: {exc.reason}")
    return TransportError("disconnect", f"connection error: {type(exc).__name__}: {exc}")


def _read_body(resp: http.client.HTTPResponse, max_bytes: int) -> bytes:
    declared = resp.length  # None when absent, invalid or chunked
    if declared is not None and declared > max_bytes:
        raise TransportError(
            "oversized", f"the body would be {declared} bytes, over the cap of {max_bytes}"
        )
    chunks: list[bytes] = []
    size = 0
    while chunk := resp.read(min(_CHUNK, max_bytes + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise TransportError("oversized", f"the body is over the cap of {max_bytes} bytes")
    if resp.length:  # http.client returns a short body quietly: a closed connection
        raise http.client.IncompleteRead(b"".join(chunks), resp.length)
    return b"".join(chunks)


def fetch(
    url: str,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    max_bytes: int,
) -> Response:
    """One request to ``url`` (POST when ``data`` is given), finished within ``timeout``
    seconds and with a body of at most ``max_bytes``.

    Returns the :class:`Response` for every HTTP status (the body is read for 2xx only);
    raises :class:`TransportError` when no complete HTTP answer arrived in time.
    """
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(
        _HTTPHandler(deadline), _HTTPSHandler(deadline), _NoRedirects()
    )
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=timeout) as resp:
            return Response(resp.status, resp.headers, _read_body(resp, max_bytes))
    except urllib.error.HTTPError as exc:
        exc.close()
        return Response(exc.code, exc.headers)
    except TransportError:
        raise
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise _failure(exc, timeout) from None
