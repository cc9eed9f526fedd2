"""A fake OpenAI-compatible upstream for the Python SDK tests, stdlib only.

It speaks the wire format of the OpenAI API reference: `POST /v1/chat/completions`
streamed as SSE `chat.completion.chunk` events ending in `data: [DONE]`, `POST
/v1/embeddings` and `GET /v1/models`. The upstream model name picks the behaviour:

- `echo-upstream`  streams "echo: <last user text>" word by word.
- `tool-upstream`  without a tool result in the history: a streamed `get_weather` tool
                   call (first delta carries id, type and name, later deltas append the
                   arguments, finish_reason `tool_calls`); with one: a sentence built
                   from the tool message's content.
- `broken-upstream` answers 500 with an OpenAI error body.
- `embed-upstream` (embeddings) returns `embedding_for(text)` for every input.

Every request body is recorded so tests can check what sluice forwarded.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ECHO = "echo-upstream"
TOOLS = "tool-upstream"
BROKEN = "broken-upstream"
EMBED = "embed-upstream"

CREATED = 1694268190
TOOL_CALL_ID = "call_fake_weather_1"
# The arguments of the streamed tool call, split the way real servers split them.
TOOL_ARGUMENT_PIECES = ['{"', 'city', '":"', "Paris", '","unit":"', "celsius", '"}']


def embedding_for(text: str, index: int) -> list[float]:
    """A deterministic vector whose values are exact in float32."""
    return [float(len(text)), float(index), 0.5, -0.25, 1024.0]


def prompt_tokens(messages: list[dict]) -> int:
    """Words across every message's text: a stand-in token count the tests can predict."""
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(p.get("text", "").split()) for p in content)
    return total


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content)
    return content or ""


class FakeUpstream:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[tuple[str, dict]] = []
        upstream = self

        class Handler(_Handler):
            owner = upstream

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "FakeUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, path: str, body: dict) -> None:
        with self._lock:
            self._requests.append((path, body))

    def requests(self, path: str) -> list[dict]:
        with self._lock:
            return [b for p, b in self._requests if p == path]

    def chat_request_containing(self, marker: str) -> list[dict]:
        """Every chat request whose messages mention `marker` (tests use a unique one)."""
        return [
            b
            for b in self.requests("/v1/chat/completions")
            if any(marker in _text(m) for m in b.get("messages", []))
        ]


class _Handler(BaseHTTPRequestHandler):
    owner: FakeUpstream
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    # --- plumbing -------------------------------------------------------------

    def _send_json(self, status: int, value: dict) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        self._send_json(
            status, {"error": {"message": message, "type": kind, "param": None, "code": code}}
        )

    def _read_json(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError:
            self._error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
            return None

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _sse(self, payload: str) -> None:
        data = f"data: {payload}\n\n".encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_sse(self) -> None:
        self._sse("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # --- routes ---------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
                for m in (ECHO, TOOLS, BROKEN, EMBED)
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._error(404, f"Unknown request URL: GET {self.path}.", "invalid_request_error", "unknown_url")

    def do_POST(self) -> None:
        body = self._read_json()
        if body is None:
            return
        self.owner.record(self.path, body)
        if self.path == "/v1/chat/completions":
            self._chat(body)
        elif self.path == "/v1/embeddings":
            self._embeddings(body)
        else:
            self._error(404, f"Unknown request URL: POST {self.path}.", "invalid_request_error", "unknown_url")

    def _chat(self, body: dict) -> None:
        model = body.get("model")
        messages = body.get("messages") or []
        if model == BROKEN:
            self._error(500, "The server had an error while processing your request.", "server_error")
            return
        if model not in (ECHO, TOOLS):
            self._error(404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found")
            return
        if body.get("stream") is not True:
            self._error(400, "this fake upstream only streams", "invalid_request_error")
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish: str | None = None) -> str:
            value = {
                "id": "chatcmpl-fake123",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                value["usage"] = None
            return json.dumps(value)

        tool_result = next((m for m in reversed(messages) if m.get("role") == "tool"), None)
        self._start_sse()
        if model == TOOLS and tool_result is None:
            first = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": TOOL_CALL_ID,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            }
            self._sse(chunk(first))
            for piece in TOOL_ARGUMENT_PIECES:
                self._sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            self._sse(chunk({}, "tool_calls"))
            completion = 1 + len(TOOL_ARGUMENT_PIECES)
        else:
            if model == TOOLS:
                text = f"The weather tool says: {_text(tool_result)}"
            else:
                last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
                text = f"echo: {_text(last_user)}"
            words = text.split(" ")
            self._sse(chunk({"role": "assistant", "content": ""}))
            for i, word in enumerate(words):
                self._sse(chunk({"content": word if i == 0 else " " + word}))
            self._sse(chunk({}, "stop"))
            completion = len(words)
        if include_usage:
            prompt = prompt_tokens(messages)
            usage = {
                "id": "chatcmpl-fake123",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
            self._sse(json.dumps(usage))
        self._end_sse()

    def _embeddings(self, body: dict) -> None:
        model = body.get("model")
        if model != EMBED:
            self._error(404, f"The model `{model}` does not exist.", "invalid_request_error", "model_not_found")
            return
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if body.get("encoding_format", "float") != "float":
            self._error(400, "this fake upstream only returns floats", "invalid_request_error")
            return
        data = [
            {"object": "embedding", "index": i, "embedding": embedding_for(text, i)}
            for i, text in enumerate(inputs)
        ]
        # Token-id inputs count one token per id.
        tokens = sum(len(t) if isinstance(t, list) else len(t.split()) for t in inputs)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )
