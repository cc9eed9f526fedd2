"""A small MCP server for tests/mcp_tools.rs, written with the official `mcp` SDK
(MCPServer, formerly FastMCP).

Tools:
  add(a, b)          the sum, as text
  sleep(seconds)     sleeps, then answers "slept"; a cancelled sleep is counted
  cancelled_sleeps() how many sleeps were cancelled (by notifications/cancelled)
  grow()             adds the tool `mul(a, b)` and sends notifications/tools/list_changed

Usage:
  python test_server.py stdio
  python test_server.py http [--port N] [--token TOKEN]
      serves streamable HTTP on 127.0.0.1 at port N (default: a free one), prints
      `PORT <n>` on stdout once listening; with --token every request needs
      `Authorization: Bearer TOKEN`.
"""

import argparse
import asyncio
import socket
import sys
import time

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("sluice-test")
cancelled = 0


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep for `seconds`, then answer."""
    global cancelled
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        cancelled += 1
        raise
    return "slept"


@server.tool()
def cancelled_sleeps() -> str:
    """How many sleeps were cancelled."""
    return str(cancelled)


def mul(a: int, b: int) -> str:
    """Multiply two integers."""
    return str(a * b)


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the tool `mul` and announce the changed list."""
    server.add_tool(mul)
    await ctx.session.send_tool_list_changed()
    return "grown"


class RequireToken:
    """ASGI middleware: 401 unless `Authorization: Bearer <token>`."""

    def __init__(self, app, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != self.expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await self.app(scope, receive, send)


def bind(port: int) -> socket.socket:
    """A listening socket; a port just freed by a killed server may take a moment."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for _ in range(100):
        try:
            sock.bind(("127.0.0.1", port))
            return sock
        except OSError:
            time.sleep(0.05)
    sock.bind(("127.0.0.1", port))
    return sock


def serve_http(port: int, token: str | None) -> None:
    sock = bind(port)
    sock.listen(64)
    app = server.streamable_http_app(host="127.0.0.1")
    if token:
        app = RequireToken(app, token)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    else:
        serve_http(args.port, args.token)


if __name__ == "__main__":
    sys.exit(main())
