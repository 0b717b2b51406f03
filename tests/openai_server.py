"""A small OpenAI-compatible chat-completions server, for tests and for serving a local judge.

It lives with the tests, not in the package: textgym's judge is a client only.

It speaks the subset of the protocol a judge client uses: ``POST /v1/chat/completions`` and
``GET /v1/models``. Answers come from a ``respond(body) -> str | Reply`` function: scripted
answers and faults (HTTP 429/500, delays, malformed bodies) in tests, or greedy generation by a
Hugging Face causal LM (:func:`model_responder`). It binds 127.0.0.1 only.

Serve SmolLM2 as a judge endpoint::

    python -m tests.openai_server --model smollm2-135m --port 8000
    # then RemoteJudge("http://127.0.0.1:8000/v1", model="smollm2-135m", api_key_env=None)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: ``content`` as a normal completion, or an error ``status``, or a
    raw ``body`` (e.g. malformed JSON); sent after ``delay`` seconds."""

    content: str | None = None
    status: int = 200
    body: bytes | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], "str | Reply"]


class OpenAIServer:
    """An OpenAI-compatible HTTP server on ``127.0.0.1`` and a free port, in a thread.

    ``server.url`` is the base URL (``http://127.0.0.1:<port>/v1``); ``server.requests`` keeps
    every chat request body received; ``server.max_in_flight`` the most requests served at once;
    ``server.errors`` the exceptions raised by ``respond`` (each answered with HTTP 500).

    >>> with OpenAIServer(lambda body: "Yes") as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, respond: Responder, api_key: str | None = None, port: int = 0) -> None:
        self.respond = respond
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.errors: list[Exception] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
                pass

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # fails when the client already timed out

            def _authorized(self) -> bool:
                if server.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self._send(401, b'{"error": {"message": "invalid api key"}}')
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(
                        200, b'{"object": "list", "data": [{"id": "local", "object": "model"}]}'
                    )
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.respond(body)
                    if isinstance(reply, str):
                        reply = Reply(content=reply)
                    if reply.delay:
                        time.sleep(reply.delay)
                except (
                    Exception
                ) as exc:  # a failing responder is a server error, as in real servers
                    server.errors.append(exc)
                    reply = Reply(status=500)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                if reply.body is not None:
                    payload = reply.body
                elif reply.status != 200:
                    payload = json.dumps({"error": {"message": f"HTTP {reply.status}"}}).encode()
                else:
                    payload = json.dumps(
                        {
                            "id": f"chatcmpl-{len(server.requests)}",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": body.get("model", "local"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply.content},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    ).encode()
                self._send(reply.status, payload, reply.headers)

        return Handler

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def model_responder(model: Any, tokenizer: Any, max_new_tokens: int = 32) -> Responder:
    """Answer each chat request by greedy generation with a Hugging Face causal LM."""
    import torch

    lock = threading.Lock()  # one generation at a time: the model is not thread-safe

    def respond(body: dict[str, Any]) -> str:
        limit = min(int(body.get("max_tokens") or max_new_tokens), max_new_tokens)
        ids = tokenizer.apply_chat_template(
            body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with lock, torch.inference_mode():
            out = model.generate(
                **ids,
                max_new_tokens=limit,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    return respond


def main(argv: list[str] | None = None) -> None:
    """Serve a local causal LM over the OpenAI chat-completions protocol on 127.0.0.1."""
    from textgym.models import load_model, load_tokenizer

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", default="smollm2-135m", help="alias, hub id or local path")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(args.model)
    server = OpenAIServer(
        model_responder(load_model(args.model), tokenizer, args.max_new_tokens), port=args.port
    )
    print(f"serving {args.model} at {server.url} (Ctrl-C stops)")
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
