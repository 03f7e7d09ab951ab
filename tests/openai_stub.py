"""A local OpenAI-compatible chat-completions server for tests: real HTTP on 127.0.0.1 (an OS-chosen port), replies
scripted by a Python callable, every request recorded.

    from openai_stub import OpenAIStub, StubResponse, sequence

    def reply(request):                      # a StubRequest: .messages, .body, .headers, .authorization, .index
        if "dog" in request.messages[-1]["content"]:
            return "{'pred': 'yes', 'score': 5}"            # a str: the assistant message's content (HTTP 200)
        return StubResponse(status=429, json={"error": {"message": "slow down"}})  # any status / body / headers

    with OpenAIStub(reply) as stub:
        client_call(base_url=stub.base_url)  # "http://127.0.0.1:PORT/v1"
        assert stub.requests[0].authorization == "Bearer sk-test"
        assert len(stub.requests_to("/v1/chat/completions")) == 1

Endpoints: `POST /v1/chat/completions` (the OpenAI response shape: `choices[0].message.content`, `usage`, ...) and
`GET /v1/models` (one model, `model_name`). A handler that raises gives an HTTP 500; `sequence(a, b, ...)` makes a
handler that answers with `a`, then `b`, ... (the last one repeated), per key (default: one sequence for all
requests; `key=lambda request: ...` for one per prompt). `stub.handler` may be replaced while the server runs.

As a pytest fixture: `from openai_stub import openai_stub_fixture  # noqa: F401` in a test module (or
`pytest_plugins = ["openai_stub"]`), then ask for `openai_stub`: a started stub answering `DEFAULT_REPLY` until
`openai_stub.handler` is set. The server is shut down and its socket closed on exit.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

DEFAULT_REPLY = "OK"


@dataclass
class StubRequest:
    """One request the stub received (`body` is the parsed JSON, None when the body is not JSON)."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: object = None

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", []) if isinstance(self.body, dict) else []

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def prompt(self) -> str:
        """The messages' contents joined by blank lines (for `in` checks)."""
        return "\n\n".join(str(message.get("content", "")) for message in self.messages)


@dataclass
class StubResponse:
    """A scripted HTTP response: `content` (wrapped in the chat-completions shape), or `json` / `body` as given."""

    status: int = 200
    content: str | None = None
    json: object = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[StubRequest], "str | StubResponse"]


def sequence(*replies, key: Callable[[StubRequest], object] | None = None) -> Handler:
    """A handler answering with `replies` in order, the last one repeated; one sequence per `key(request)`."""
    if not replies:
        raise ValueError("sequence() needs at least one reply")
    counters: dict[object, itertools.count] = defaultdict(itertools.count)
    lock = threading.Lock()

    def handler(request: StubRequest):
        with lock:
            position = next(counters[key(request) if key else None])
        return replies[min(position, len(replies) - 1)]

    return handler


def completion(content: str, model: str | None, index: int) -> dict:
    """The OpenAI chat-completions response body for one assistant message."""
    return {
        "id": f"chatcmpl-stub-{index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class OpenAIStub:
    """The server; a context manager (`start()` / `stop()` otherwise). See the module docstring."""

    def __init__(self, handler: Handler | None = None, model_name: str = "stub-judge", default_reply=DEFAULT_REPLY):
        self.handler: Handler = handler or (lambda request: default_reply)
        self.model_name = model_name
        self.requests: list[StubRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> OpenAIStub:
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", 0), _make_handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- addresses and records -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stub is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (`.../v1`), what clients take as `base_url`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def requests_to(self, path: str) -> list[StubRequest]:
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def reset(self) -> None:
        """Forgets the recorded requests."""
        with self._lock:
            self.requests.clear()

    def _record(self, method: str, path: str, headers, raw: bytes) -> StubRequest:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            request = StubRequest(
                len(self.requests), method, path, {k.lower(): v for k, v in headers.items()}, raw, body
            )
            self.requests.append(request)
        return request


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hung up before a delayed reply (its timeout) is expected; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler_class(stub: OpenAIStub):
    class _Handler(BaseHTTPRequestHandler):
        server_version = "OpenAIStub/1.0"

        def log_message(self, format, *args):  # keep test output clean
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            headers = {"Content-Type": "application/json", **(headers or {})}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_json(self, status: int, payload, headers: dict | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), headers)

        def do_GET(self):
            path = self.path.split("?")[0]
            stub._record("GET", path, self.headers, b"")
            if path.rstrip("/") == "/v1/models":
                self._send_json(200, {"object": "list", "data": [{"id": stub.model_name, "object": "model"}]})
            else:
                self._send_json(404, {"error": {"message": f"no route {path}"}})

        def do_POST(self):
            path = self.path.split("?")[0]
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = stub._record("POST", path, self.headers, raw)
            if path.rstrip("/") != "/v1/chat/completions":
                self._send_json(404, {"error": {"message": f"no route {path}"}})
                return
            if not isinstance(request.body, dict) or not isinstance(request.body.get("messages"), list):
                self._send_json(400, {"error": {"message": "body must be JSON with a 'messages' list"}})
                return
            try:
                reply = stub.handler(request)
            except Exception as err:  # a failing handler is a server error, as a real endpoint's would be
                self._send_json(500, {"error": {"message": f"{type(err).__name__}: {err}"}})
                return
            if isinstance(reply, str):
                reply = StubResponse(content=reply)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.body is not None:
                body = reply.body.encode() if isinstance(reply.body, str) else reply.body
                self._send(reply.status, body, reply.headers)
            elif reply.json is not None:
                self._send_json(reply.status, reply.json, reply.headers)
            elif reply.content is not None:
                self._send_json(reply.status, completion(reply.content, request.model, request.index), reply.headers)
            else:
                self._send_json(reply.status, {"error": {"message": f"HTTP {reply.status}"}}, reply.headers)

    return _Handler


@pytest.fixture(name="openai_stub")
def openai_stub_fixture():
    """`openai_stub`: a running `OpenAIStub` (answers `DEFAULT_REPLY` until `openai_stub.handler` is set), stopped
    afterwards."""
    with OpenAIStub() as stub:
        yield stub
