"""The soak's test upstream: an OpenAI-compatible server on loopback that can be told to fail.

`POST /v1/chat/completions` answers with a fixed completion, as one JSON `chat.completion`
or, for `"stream": true`, as SSE chunks (role, `--tokens` content deltas `--token-ms`
apart, finish, usage, `[DONE]`); `GET /v1/models` lists the requested model. HTTP/1.1
keep-alive, written on asyncio streams so that the failure modes are exact:

- `503`: every new request gets `503` with an OpenAI-shaped error body (streams already
  running finish);
- `refuse`: the listening socket is closed (connections are refused) and every open
  connection is aborted, so a stream in progress is cut off; the port is bound again when
  the window ends.

A second port takes the orders: `POST /fail?mode=503|refuse&seconds=S` starts a window
that ends by itself after S seconds; `POST /drop` closes the idle keep-alive connections
(for the soak's quiet points); `GET /state` says what the upstream is doing. Every
window is logged to stderr. The process exits by itself after `--max-seconds`.

Usage: upstream.py --listen 127.0.0.1:PORT --control 127.0.0.1:PORT
       [--tokens 16] [--token-ms 10] [--max-seconds 3600]
"""

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlsplit


def log(msg):
    print(f"[upstream {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def read_request(reader):
    """(method, target, body) of the next request on the connection, or None at its end."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return method, target, body


def response(status, reason, body, ctype="application/json"):
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def error_body(message):
    return json.dumps(
        {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    ).encode()


class Upstream:
    def __init__(self, host, port, tokens, token_ms):
        self.host, self.port = host, port
        self.tokens, self.token_ms = tokens, token_ms
        self.server = None
        self.conns = {}  # writer -> busy (a request being answered)
        self.mode = "ok"
        self.until = 0.0
        self.windows = []
        self.served = 0

    async def listen(self):
        self.server = await asyncio.start_server(
            self.serve, self.host, self.port, reuse_address=True, backlog=1024
        )

    async def serve(self, reader, writer):
        self.conns[writer] = False
        try:
            while True:
                try:
                    method, target, body = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.conns[writer] = True
                await self.answer(method, target, body, writer)
                self.conns[writer] = False
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.conns.pop(writer, None)
            writer.close()

    async def answer(self, method, target, body, writer):
        path = urlsplit(target).path
        if self.mode == "503":
            writer.write(response(503, "Service Unavailable", error_body("test upstream failing")))
            await writer.drain()
            return
        if method == "GET" and path == "/v1/models":
            data = {"object": "list", "data": [{"id": "soak-upstream", "object": "model"}]}
            writer.write(response(200, "OK", json.dumps(data).encode()))
            await writer.drain()
            return
        if method != "POST" or path != "/v1/chat/completions":
            writer.write(response(404, "Not Found", error_body(f"no route {path}")))
            await writer.drain()
            return
        try:
            req = json.loads(body)
        except ValueError:
            writer.write(response(400, "Bad Request", error_body("body is not JSON")))
            await writer.drain()
            return
        self.served += 1
        model = req.get("model", "soak-upstream")
        created = int(time.time())
        rid = f"chatcmpl-soak{self.served}"
        words = [f"w{i} " for i in range(self.tokens)]
        usage = {"prompt_tokens": 8, "completion_tokens": self.tokens,
                 "total_tokens": 8 + self.tokens}
        if not req.get("stream"):
            data = {
                "id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(words)}}],
                "usage": usage,
            }
            writer.write(response(200, "OK", json.dumps(data).encode()))
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )

        def chunk(delta, finish=None, use=None):
            ev = {"id": rid, "object": "chat.completion.chunk", "created": created,
                  "model": model,
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if use is not None:
                ev["choices"] = []
                ev["usage"] = use
            return f"data: {json.dumps(ev)}\n\n".encode()

        async def send(data):
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        await send(chunk({"role": "assistant", "content": ""}))
        for w in words:
            await asyncio.sleep(self.token_ms / 1000)
            await send(chunk({"content": w}))
        await send(chunk({}, "stop"))
        if (req.get("stream_options") or {}).get("include_usage"):
            await send(chunk({}, use=usage))
        await send(b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def fail(self, mode, seconds):
        if self.mode != "ok":
            return False
        self.mode = mode
        start = time.time()
        self.until = start + seconds
        self.windows.append({"mode": mode, "start": start, "end": self.until})
        log(f"failing ({mode}) for {seconds} s")
        if mode == "refuse":
            self.server.close()
            for w in list(self.conns):
                w.transport.abort()
        asyncio.get_running_loop().call_later(seconds, lambda: asyncio.ensure_future(self.recover()))
        return True

    async def recover(self):
        if self.mode == "refuse":
            await self.server.wait_closed()
            await self.listen()
        log(f"recovered from {self.mode}")
        self.mode = "ok"

    async def control(self, reader, writer):
        try:
            method, target, _ = await read_request(reader)
            url = urlsplit(target)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if method == "POST" and url.path == "/fail" and q.get("mode") in ("503", "refuse"):
                ok = await self.fail(q["mode"], float(q.get("seconds", "20")))
                status = (200, "OK") if ok else (409, "Conflict")
            elif method == "POST" and url.path == "/drop":
                # Close the idle keep-alive connections (sluice's pool then lets them go).
                for w, busy in list(self.conns.items()):
                    if not busy:
                        w.transport.abort()
                status = (200, "OK")
            elif method == "GET" and url.path == "/state":
                status = (200, "OK")
            else:
                status = (404, "Not Found")
            state = {"mode": self.mode, "until": self.until, "served": self.served,
                     "windows": self.windows}
            writer.write(response(*status, json.dumps(state).encode()))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--control", required=True)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--token-ms", type=float, default=10)
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    up = Upstream(host, int(port), a.tokens, a.token_ms)
    await up.listen()
    chost, cport = a.control.rsplit(":", 1)
    ctl = await asyncio.start_server(up.control, chost, int(cport), reuse_address=True)
    log(f"listening on {a.listen}, control on {a.control}")
    async with ctl:
        await asyncio.sleep(a.max_seconds)
    log(f"stopping after {a.max_seconds} s; {up.served} completions served")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
