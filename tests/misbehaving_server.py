"""A deliberately misbehaving HTTP server for testing clients: raw socket answers, byte by byte.

Each accepted connection has its request read (headers and ``Content-Length`` body), then
gets the scripted :data:`Behaviour` for its request number: well-formed answers, truncated
bodies, bad status lines, huge headers, bytes dripped slowly, silence, a close or a reset.

It binds 127.0.0.1 only, and it stops by itself: every loop is bounded (a drip sends a fixed
number of bytes, a stall ends after its seconds), every wait checks a stop event, and the
server shuts down after ``lifetime`` seconds even if nobody closes it.

>>> with MisbehavingServer(send(response(b"hi"))) as server:
...     server.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

Behaviour = Callable[[socket.socket, threading.Event], None]
"""What the server does with one connection after reading its request: ``(conn, stop)``."""


def response(
    body: bytes,
    status: str = "200 OK",
    headers: Iterable[tuple[str, str]] = (),
    content_length: int | None = None,
) -> bytes:
    """The bytes of an HTTP/1.1 response; ``content_length`` may lie about the body."""
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", "Connection: close"]
    head.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    head += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def completion(content: object) -> bytes:
    """A chat-completions JSON body whose answer is ``content``."""
    return json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": content}}]}
    ).encode()


def send(data: bytes) -> Behaviour:
    """Send ``data`` at once, then close."""

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(data)

    return behave


def drip(data: bytes, interval: float) -> Behaviour:
    """Send ``data`` one byte every ``interval`` seconds (until done, the client leaves, or
    the server stops)."""

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            if stop.wait(interval):
                return

    return behave


def stall(seconds: float, then: bytes = b"") -> Behaviour:
    """Say nothing for ``seconds``, then send ``then``."""

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        if not stop.wait(seconds):
            conn.sendall(then)

    return behave


def close() -> Behaviour:
    """Close the connection without a word."""

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        pass

    return behave


def reset() -> Behaviour:
    """Abort the connection with a TCP reset (SO_LINGER 0)."""

    def behave(conn: socket.socket, stop: threading.Event) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return behave


class MisbehavingServer:
    """Serve ``behaviours`` on ``127.0.0.1`` and a free port, in a thread.

    ``behaviours`` is one :data:`Behaviour` for every request, or a list: request ``n`` gets
    ``behaviours[n]`` and the last one repeats; or ``route(request body) -> Behaviour``
    chooses by what was asked (for concurrent requests). ``server.url`` is a judge base URL
    (``http://127.0.0.1:<port>/v1``); ``server.requests`` counts the requests read.
    """

    def __init__(
        self,
        behaviours: Behaviour | list[Behaviour] | None = None,
        route: Callable[[bytes], Behaviour] | None = None,
        lifetime: float = 60.0,
    ) -> None:
        if (behaviours is None) == (route is None):
            raise ValueError("pass either behaviours or route")
        self.behaviours = behaviours if isinstance(behaviours, list) else [behaviours]
        self.route = route
        self.requests = 0
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)
        self._stop.set()

    def _read_request(self, conn: socket.socket) -> bytes | None:
        """The request body, or None when the client left before sending it all."""
        conn.settimeout(5.0)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk or len(data) > 1 << 20:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        return body

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                body = self._read_request(conn)
                if body is None:
                    return
                with self._lock:
                    n = self.requests
                    self.requests += 1
                if self.route is not None:
                    behaviour = self.route(body)
                else:
                    behaviour = self.behaviours[min(n, len(self.behaviours) - 1)]
                behaviour(conn, self._stop)
            except OSError:  # the client left: what a hostile server shrugs off
                pass

    def start(self) -> MisbehavingServer:
        self._server_thread = threading.Thread(target=self._serve, daemon=True)
        self._server_thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)  # no handler starts after this
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
