"""The harness of the HTTP server tests: a small ASGI app (`App`, one route per behaviour), a raw
client that parses responses independently of azuld.http.h1, and `start`, which runs a server
(`SERVERS`: azuld's own or hypercorn) on 127.0.0.1:0 in a nursery."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from azuld.http import hypercorn_server
from azuld.http.server import ServerConfig, serve

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The servers `server.http_server` chooses from, with the same `serve` contract. The tests that
# take `either` (or parametrize `kind`) run on both: framing, refusals, timeouts, shutdown. The
# others are about azuld's own server (its exact bytes, its answers for a failing app).
SERVERS = {"azuld": serve, "hypercorn": hypercorn_server.serve}
BOTH = pytest.mark.parametrize("kind", sorted(SERVERS))

DATE = re.compile(rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT")


# -- the app ----------------------------------------------------------------------------------


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client left")
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


@dataclass
class App:
    """An ASGI app whose path names what it does; events let tests follow it."""

    fail_startup: str | None = None
    lifespan: list[str] = field(default_factory=list)
    scopes: list[Message] = field(default_factory=list)
    entered: trio.Event = field(default_factory=trio.Event)  # a request reached a route
    release: trio.Event = field(default_factory=trio.Event)  # lets /hold answer
    disconnected: trio.Event = field(default_factory=trio.Event)
    cancelled: trio.Event = field(default_factory=trio.Event)
    released: trio.Event = field(default_factory=trio.Event)  # /endless ended its response
    stream_started_at: float = 0.0
    pieces_sent: int = 0
    received: list[str] = field(default_factory=list)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.run_lifespan(receive, send)
            return
        self.scopes.append(scope)
        route = getattr(self, "route_" + scope["path"].strip("/").replace("-", "_"))
        self.entered.set()
        await route(scope, receive, send)

    async def run_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            self.lifespan.append(message["type"])
            if message["type"] == "lifespan.startup":
                if self.fail_startup is not None:
                    await send({"type": "lifespan.startup.failed", "message": self.fail_startup})
                    return
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def route_echo(self, scope: Message, receive: Receive, send: Send) -> None:
        await respond(send, 200, await read_body(receive))

    async def route_sized(self, scope: Message, receive: Receive, send: Send) -> None:
        """Sets its own Content-Length (as apps do for HEAD)."""
        await read_body(receive)
        await respond(send, 200, b"hello", [(b"content-length", b"5")])

    async def route_scope(self, scope: Message, receive: Receive, send: Send) -> None:
        await read_body(receive)
        shown = {
            key: scope[key]
            for key in ("http_version", "method", "scheme", "path", "root_path", "client")
        }
        shown["server"] = scope["server"]
        shown["raw_path"] = scope["raw_path"].decode()
        shown["query_string"] = scope["query_string"].decode()
        shown["headers"] = [[name.decode(), value.decode()] for name, value in scope["headers"]]
        await respond(send, 200, json.dumps(shown).encode(), [(b"content-type", b"x/json")])

    async def route_stream(self, scope: Message, receive: Receive, send: Send) -> None:
        """Three pieces, no Content-Length: chunked on HTTP/1.1."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"one", b"", b"two-two", b"three"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def route_no_content(self, scope: Message, receive: Receive, send: Send) -> None:
        await respond(send, 204, b"dropped")

    async def route_ignore_body(self, scope: Message, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"early")

    async def route_wait(self, scope: Message, receive: Receive, send: Send) -> None:
        """Reads the request, then waits for the client to leave."""
        await read_body(receive)
        self.entered.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()

    async def route_hold(self, scope: Message, receive: Receive, send: Send) -> None:
        """Answers once the test sets `release`."""
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        await respond(send, 200, b"released")

    async def route_endless(self, scope: Message, receive: Receive, send: Send) -> None:
        """Streams 64 KiB pieces until cancelled or released, never looking at `receive`."""
        self.stream_started_at = trio.current_time()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while not self.release.is_set():
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
                self.pieces_sent += 1
        except trio.Cancelled:
            self.cancelled.set()
            raise
        await send({"type": "http.response.body", "body": b""})
        self.released.set()

    async def route_receive_after_disconnect(
        self, scope: Message, receive: Receive, send: Send
    ) -> None:
        while (message := await receive())["type"] != "http.disconnect":
            self.received.append(message["type"])
        self.received.append(message["type"])
        self.received.append((await receive())["type"])
        await respond(send, 200, b"x")

    async def route_wrong_length(self, scope: Message, receive: Receive, send: Send) -> None:
        """Declares `Content-Length: 5`, then sends the pieces in the query string."""
        pieces = scope["query_string"].split(b",")
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
        )
        for index, piece in enumerate(pieces):
            more_body = index < len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more_body})

    async def route_raise_before_start(self, scope: Message, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom before the response")

    async def route_raise_after_start(self, scope: Message, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom after http.response.start")

    async def route_raise_mid_body(self, scope: Message, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom mid-body")

    async def route_no_response(self, scope: Message, receive: Receive, send: Send) -> None:
        await read_body(receive)

    async def route_bad_header(self, scope: Message, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"x", [(b"x-injected", b"a\r\nset-cookie: evil=1")])


# -- a raw client -----------------------------------------------------------------------------


@dataclass
class Response:
    version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key == name]
        assert len(values) <= 1, f"{name!r} repeated"
        return values[0] if values else None

    def json(self) -> Any:
        assert self.header(b"content-type") == b"application/json; charset=utf-8"
        return json.loads(self.body)


class Client:
    """One connection; responses are parsed here, independently of azuld.http.h1."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await trio.aclose_forcefully(self.stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: tuple[str, ...] = (),
        version: str = "1.1",
    ) -> None:
        lines = [f"{method} {path} HTTP/{version}", "Host: test", *headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        await self.send("\r\n".join(lines).encode() + b"\r\n\r\n" + (body or b""))

    async def _fill(self) -> bool:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        self.buffer += data
        return bool(data)

    async def read_until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            if not await self._fill():
                raise EOFError(f"closed before {marker!r}; got {bytes(self.buffer)!r}")
        data = bytes(self.buffer[: end + len(marker)])
        del self.buffer[: end + len(marker)]
        return data

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self._fill():
                raise EOFError(f"closed {size - len(self.buffer)} bytes short")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_to_eof(self) -> bytes:
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def closed(self) -> bool:
        """True when the server closed the connection with nothing more sent."""
        return await self.read_to_eof() == b""

    async def response(self, *, head: bool = False) -> Response:
        raw_head = await self.read_until(b"\r\n\r\n")
        status_line, *lines = raw_head[:-4].split(b"\r\n")
        version, status, reason = status_line.split(b" ", 2)
        headers = []
        for line in lines:
            name, value = line.split(b": ", 1)
            headers.append((name.lower(), value))
        response = Response(version, int(status), reason, headers, b"", raw_head)
        length = response.header(b"content-length")
        if head or response.status in (204, 304) or response.status < 200:
            assert response.header(b"transfer-encoding") is None
        elif response.header(b"transfer-encoding") == b"chunked":
            assert length is None
            while size := int((await self.read_until(b"\r\n"))[:-2], 16):
                response.body += await self.read_exactly(size)
                assert await self.read_exactly(2) == b"\r\n"
            assert await self.read_exactly(2) == b"\r\n"  # no trailers
        elif length is not None:
            response.body = await self.read_exactly(int(length))
        else:
            response.body = await self.read_to_eof()
        return response


@dataclass
class Running:
    port: int
    urls: list[str]
    shutdown: trio.Event
    stopped: trio.Event
    kind: str  # which server: a key of SERVERS
    ssl_client: ssl.SSLContext | None = None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Client]:
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        if self.ssl_client is not None:
            stream = trio.SSLStream(stream, self.ssl_client, server_hostname="127.0.0.1")
        async with Client(stream) as client:
            yield client


async def start(
    nursery: trio.Nursery,
    app: App,
    ssl_client: ssl.SSLContext | None = None,
    *,
    kind: str = "azuld",
    **settings: Any,
) -> Running:
    shutdown, stopped = trio.Event(), trio.Event()
    config = ServerConfig("127.0.0.1:0", **settings)

    serve_with = SERVERS[kind]

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_with(app, config, shutdown=shutdown, task_status=task_status)
        finally:
            stopped.set()

    urls = await nursery.start(run)
    return Running(int(urls[0].rsplit(":", 1)[1]), urls, shutdown, stopped, kind, ssl_client)
