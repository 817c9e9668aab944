"""azuld's HTTP/1.1 server (azuld.http.server) on a real socket, spoken to in raw bytes.

Each test runs `serve` in its nursery on 127.0.0.1:0 with a small ASGI app (`App` below, one
route per behaviour) and checks the framing byte for byte where it matters. Timeouts are a few
tenths of a second so the timeout tests stay fast; every test is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from azuld.errors import ConfigError
from azuld.http import connection as connection_module
from azuld.http import hypercorn_server
from azuld.http.rejections import REJECTIONS
from azuld.http.server import ServerConfig, parse_listen, serve, ssl_context
from azuld.settings import load_settings

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


@pytest.fixture
async def app() -> App:
    return App()


@pytest.fixture
async def server(nursery: trio.Nursery, app: App) -> Running:
    return await start(nursery, app)


@pytest.fixture(params=sorted(SERVERS))
async def either(request: pytest.FixtureRequest, nursery: trio.Nursery, app: App) -> Running:
    """Each server in turn: for what both must do alike (framing, refusals, timeouts)."""
    return await start(nursery, app, kind=request.param)


# -- requests and responses -------------------------------------------------------------------


async def test_serve_reports_its_url(server: Running) -> None:
    assert server.urls == [f"http://127.0.0.1:{server.port}"]


async def test_response_bytes(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("POST", "/echo", b"hello")
            response = await client.response()
    assert re.fullmatch(
        rb"HTTP/1\.1 200 OK\r\ncontent-length: 5\r\ndate: (.+)\r\n\r\n", response.raw_head
    )
    assert DATE.fullmatch(response.header(b"date") or b"")
    assert response.body == b"hello"


async def test_keep_alive_serves_several_requests(either: Running, app: App) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            for index in range(5):
                body = b"request %d " % index * index
                await client.request("POST", "/echo", body)
                response = await client.response()
                assert (response.status, response.body) == (200, body)
                assert response.header(b"connection") is None
    assert len({scope["client"] for scope in app.scopes}) == 1


async def test_pipelined_requests_are_answered_in_order(either: Running) -> None:
    requests = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
        b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"
        b"\r\n"  # a stray CRLF between requests is allowed
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nthird \r\n5\r\nchunk\r\n0\r\n\r\n"
        b"HEAD /sized HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlast"
    )
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(requests)
            bodies = [(await client.response()).body for _ in range(3)]
            head = await client.response(head=True)
            last = await client.response()
            assert await client.closed()
    assert bodies == [b"first", b"onetwo-twothree", b"third chunk"]
    assert (head.header(b"content-length"), head.body) == (b"5", b"")
    assert (last.body, last.header(b"connection")) == (b"last", b"close")


async def test_chunked_request_body(either: Running) -> None:
    pieces = [
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;ext=1\r\nhel",
        b"lo\r",
        b"\n1",
        b"0\r\n" + b"0123456789abcdef" + b"\r\n",
        b"0\r\nX-Trailer: yes\r\n",
        b"\r\n",
    ]
    with trio.fail_after(5):
        async with either.connect() as client:
            for piece in pieces:
                await client.send(piece)
                await trio.sleep(0.01)
            response = await client.response()
            assert response.body == b"hello0123456789abcdef"
            await client.request("POST", "/echo", b"next")  # the connection is still usable
            assert (await client.response()).body == b"next"


async def test_malformed_chunked_body_is_refused(either: Running) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"zz\r\nabc\r\n0\r\n\r\n"
            )
            response = await client.response()
            assert await client.closed()
    assert response.status == 400
    assert response.header(b"connection") == b"close"
    if either.kind == "azuld":  # hypercorn's answer to a body h11 refuses is its own, empty
        assert "malformed chunk size" in response.json()["detail"]


@pytest.mark.parametrize(
    ("trailers", "status", "detail"),
    [
        (b"GET /echo HTTP/1.1\r\n", 400, "chunked body: malformed trailer line"),
        (b"X-Nul: a\x00b\r\n", 400, "chunked body: malformed trailer line"),
        (b"no colon\r\n", 400, "chunked body: malformed trailer line"),
        (b"X-Trailer: 1\r\n" * 5000, 431, "chunked body: trailer section over 64 KiB"),
    ],
)
async def test_malformed_trailers_are_refused(
    either: Running, trailers: bytes, status: int, detail: str
) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n"
            )
            response = await client.response()
            assert await client.closed()
    if either.kind == "azuld":
        assert (response.status, response.json()["detail"]) == (status, detail)
    else:  # the trailers stop at the refused line; hypercorn answers with h11's own error
        assert response.status in (400, status)


@pytest.mark.parametrize(
    ("head", "detail"),
    [
        (b"GET /echo HTTP/1.1\r\n\r\n", "an HTTP/1.1 request needs a Host header"),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host header"),
    ],
)
async def test_host_is_required_once(either: Running, app: App, head: bytes, detail: str) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(head)
            response = await client.response()
            assert await client.closed()
    assert (response.status, response.json()["detail"]) == (400, detail)
    assert not app.scopes


@pytest.mark.parametrize(
    "head",
    [b"GET /echo HTTP/1.1\nHost: t\n\n", b"GET /echo HTTP/1.1\r\nHost: t\n\r\n"],
)
@BOTH
async def test_bare_lf_head_is_refused_at_once(
    nursery: trio.Nursery, app: App, kind: str, head: bytes
) -> None:
    server = await start(nursery, app, kind=kind, head_timeout_seconds=600)
    with trio.fail_after(30):  # far less than the head timeout
        async with server.connect() as client:
            await client.send(head)
            response = await client.response()
            assert await client.closed()
    assert (response.status, response.json()["detail"]) == (
        400,
        "bare LF in the request head: every line must end with CRLF",
    )
    assert not app.scopes


async def test_expect_100_continue(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: 4\r\n\r\n"
            )
            assert await client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            await client.send(b"body")
            response = await client.response()
            assert (response.status, response.body) == (200, b"body")
            assert response.header(b"connection") is None
            # Without an Expect header no interim response is sent.
            await client.request("POST", "/echo", b"again")
            response = await client.response()
            assert (response.status, response.body) == (200, b"again")


async def test_no_100_continue_for_http_1_0(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(
                b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nold"
            )
            response = await client.response()
    assert response.raw_head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert response.body == b"old"


async def test_no_100_continue_when_the_app_answers_without_reading(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(
                b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: 4\r\n\r\n"
            )
            response = await client.response()
    assert (response.status, response.body) == (200, b"early")
    assert response.header(b"connection") == b"close"


@pytest.mark.parametrize("mebibytes", [1, 8])  # 8: more than the server reads and drops
async def test_response_before_a_large_body_is_read_closes_the_connection(
    server: Running, mebibytes: int
) -> None:
    body = b"z" * (mebibytes * 1024 * 1024)

    async def send_body() -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await client.send(body)

    with trio.fail_after(5):
        async with server.connect() as client, trio.open_nursery() as nursery:
            await client.send(
                b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            nursery.start_soon(send_body)
            response = await client.response()
            assert (response.status, response.body) == (200, b"early")
            assert response.header(b"connection") == b"close"
            assert await client.closed()


async def test_head_gets_headers_without_a_body(either: Running) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.request("HEAD", "/sized")
            response = await client.response(head=True)
            assert response.status == 200
            assert response.header(b"content-length") == b"5"
            # No body bytes went out: the next response follows directly.
            await client.request("POST", "/echo", b"after")
            assert (await client.response()).body == b"after"


async def test_head_of_a_streamed_response(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("HEAD", "/stream")
            response = await client.response(head=True)
            assert response.header(b"transfer-encoding") is None
            await client.request("POST", "/echo", b"after")
            assert (await client.response()).body == b"after"


async def test_http_1_0_closes_unless_asked_to_keep_alive(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("POST", "/echo", b"old", version="1.0")
            response = await client.response()
            assert response.raw_head.startswith(b"HTTP/1.0 200 OK\r\n")
            assert (response.body, response.header(b"connection")) == (b"old", b"close")
            assert await client.closed()
        async with server.connect() as client:
            for _ in range(2):
                await client.request(
                    "POST", "/echo", b"kept", headers=("Connection: keep-alive",), version="1.0"
                )
                response = await client.response()
                assert response.raw_head.startswith(b"HTTP/1.0 200 OK\r\n")
                assert (response.body, response.header(b"connection")) == (b"kept", b"keep-alive")


async def test_streamed_response_is_chunked_on_http_1_1(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", "/stream")
            head = await client.read_until(b"\r\n\r\n")
            assert re.fullmatch(
                rb"HTTP/1\.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: .+\r\n\r\n", head
            )
            assert await client.read_until(b"0\r\n\r\n") == (
                b"3\r\none\r\n7\r\ntwo-two\r\n5\r\nthree\r\n0\r\n\r\n"
            )
            await client.request("POST", "/echo", b"next")
            assert (await client.response()).body == b"next"


async def test_streamed_response_on_http_1_0_ends_with_the_connection(either: Running) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.request(
                "GET", "/stream", headers=("Connection: keep-alive",), version="1.0"
            )
            response = await client.response()
    assert response.header(b"transfer-encoding") is None
    assert response.header(b"connection") == b"close"
    assert response.body == b"onetwo-twothree"


async def test_204_has_no_body(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", "/no-content")
            head = await client.read_until(b"\r\n\r\n")
            assert re.fullmatch(rb"HTTP/1\.1 204 No Content\r\ndate: .+\r\n\r\n", head)
            await client.request("POST", "/echo", b"next")
            assert (await client.response()).body == b"next"


async def test_scope(either: Running) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.request("GET", "/sc%6fpe?a=1&b=%20", headers=("X-Custom:  Value ",))
            shown = json.loads((await client.response()).body)
            local = client.stream.socket.getsockname()  # type: ignore[attr-defined]
    assert shown == {
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/scope",
        "raw_path": "/sc%6fpe",
        "query_string": "a=1&b=%20",
        "root_path": "",
        "client": list(local),
        "server": ["127.0.0.1", either.port],
        "headers": [["host", "test"], ["x-custom", "Value"]],
    }


async def test_absolute_form_target(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", "http://example:1/scope?q=1")
            shown = json.loads((await client.response()).body)
    assert (shown["path"], shown["query_string"]) == ("/scope", "q=1")


# -- refusals and failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status", "detail"),
    [
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\nx: a\r\n folded\r\n\r\n", 400, "malformed header line"),
        (b"BAD REQUEST LINE HERE\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "only HTTP/1.0 and HTTP/1.1"),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "chunked"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "conflict"),
        (b"POST / HTTP/1.1\r\nExpect: nothing\r\nContent-Length: 1\r\n\r\nx", 417, "100-con"),
    ],
)
async def test_malformed_head_gets_an_error_and_close(
    either: Running, app: App, raw: bytes, status: int, detail: str
) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(raw)
            response = await client.response()
            assert await client.closed()
    assert response.status == status
    assert response.header(b"connection") == b"close"
    body = response.json()
    assert body["status"] == str(status)
    assert detail in body["detail"]
    assert not app.scopes


@pytest.mark.parametrize(
    ("framing", "status", "detail"),
    [
        (
            b"Content-Length: 45\r\nTransfer-Encoding: chunked",
            400,
            "both Content-Length and Transfer-Encoding: send one",
        ),
        (
            b"Transfer-Encoding: chunked\r\nContent-Length: 45",
            400,
            "both Content-Length and Transfer-Encoding: send one",
        ),
        (b"Content-Length: 45\r\nContent-Length: 5", 400, "conflicting Content-Length headers"),
        (b"Transfer-Encoding: gzip, chunked", 501, "only 'Transfer-Encoding: chunked'"),
        (b"Transfer-Encoding: chunked, gzip", 501, "only 'Transfer-Encoding: chunked'"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 501, "only"),
    ],
)
async def test_ambiguous_framing_is_refused_and_nothing_after_it_is_served(
    either: Running, app: App, framing: bytes, status: int, detail: str
) -> None:
    """Request smuggling: read by its Content-Length, the body below hides a second request;
    read as chunked, it ends early and the hidden request follows. Neither is served."""
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n\r\n"
                b"0\r\n\r\nGET /scope HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            response = await client.response()
            assert await client.closed()
    assert (response.status, response.header(b"connection")) == (status, b"close")
    assert detail in response.json()["detail"]
    assert not app.scopes


async def test_refusals_before_the_app_are_logged(
    either: Running, caplog: pytest.LogCaptureFixture
) -> None:
    REJECTIONS.__init__()  # type: ignore[misc]  # its bucket full: other tests used it
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            assert (await client.response()).status == 400
        async with either.connect() as client:
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nUser-Agent: probe/1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
            )
            assert (await client.response()).status == 400
    lines = [r for r in caplog.records if r.name == "azuld.http.rejected"]
    assert lines[0].levelno == logging.WARNING
    assert lines[0].getMessage() == (
        'rejected - - 400 from 127.0.0.1 ua="-" request_id=-: more than one Host header'
    )
    if either.kind == "azuld":  # hypercorn answers a malformed body itself
        assert lines[1].getMessage() == (
            'rejected POST /echo 400 from 127.0.0.1 ua="probe/1" request_id=-: '
            "chunked body: malformed chunk size"
        )


async def test_a_refusal_comes_after_the_answers_before_it(either: Running, app: App) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
                b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nhidden"
            )
            first, second, refused = [await client.response() for _ in range(3)]
            assert await client.closed()
    assert (first.body, second.body) == (b"first", b"onetwo-twothree")
    assert (refused.status, refused.json()["detail"]) == (
        400,
        "both Content-Length and Transfer-Encoding: send one",
    )
    assert [scope["path"] for scope in app.scopes] == ["/echo", "/stream"]


@BOTH
async def test_a_failing_connection_does_not_end_the_server(
    nursery: trio.Nursery,
    app: App,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever goes wrong in one connection (here an error injected where each server reads a
    connection's bytes) ends that connection only."""
    where = (
        (hypercorn_server._GuardedStream, "receive_some")
        if kind == "hypercorn"
        else (connection_module.Connection, "read_head")
    )
    original = getattr(*where)
    failures = [RuntimeError("injected"), trio.BusyResourceError("injected")]

    async def failing(self: Any, *args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await original(self, *args)

    monkeypatch.setattr(*where, failing)
    server = await start(nursery, app, kind=kind)
    with trio.fail_after(5):
        for _ in range(2):
            async with server.connect() as doomed:
                await doomed.request("POST", "/echo", b"x")
                assert await doomed.closed()
        async with server.connect() as client:
            await client.request("POST", "/echo", b"still served")
            assert (await client.response()).body == b"still served"
    failed = [r for r in caplog.records if "failed and was closed" in r.getMessage()]
    assert len(failed) == 2
    assert all(r.levelno == logging.WARNING and r.exc_info for r in failed)


async def test_hypercorn_passes_http_2_through(nursery: trio.Nursery, app: App) -> None:
    """h2 with prior knowledge, and an h2c upgrade, are hypercorn's: not read as HTTP/1.1."""
    server = await start(nursery, app, kind="hypercorn")
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            frame = await client.read_exactly(9)
            assert frame[3] == 0x04  # the server's SETTINGS frame
        async with server.connect() as client:
            await client.send(
                b"GET /scope HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
            )
            switching = await client.read_until(b"\r\n\r\n")
            assert switching.startswith(b"HTTP/1.1 101 ")


async def test_a_target_not_starting_with_a_slash_is_refused(server: Running, app: App) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(b"GET noslash HTTP/1.1\r\nHost: t\r\n\r\n")
            response = await client.response()
            assert await client.closed()
    assert (response.status, response.json()["detail"]) == (
        400,
        "request target must start with '/'",
    )
    assert not app.scopes


@pytest.mark.parametrize("terminated", [True, False])
async def test_head_over_64_kib_gets_431(either: Running, terminated: bool) -> None:
    raw = (
        b"GET /echo HTTP/1.1\r\nx-big: " + b"a" * (64 * 1024) + (b"\r\n\r\n" if terminated else b"")
    )
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.send(raw)
            response = await client.response()
            assert await client.closed()
    assert response.status == 431
    assert "over 64 KiB" in response.json()["detail"]


async def test_exception_before_the_response_gets_500(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", "/raise-before-start")
            response = await client.response()
            assert await client.closed()
    assert (response.status, response.header(b"connection")) == (500, b"close")
    assert response.json()["title"] == "internal error"


async def test_exception_after_start_but_before_any_byte_gets_500(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", "/raise-after-start")
            response = await client.response()
            assert await client.closed()
    assert (response.status, response.header(b"connection")) == (500, b"close")


async def test_exception_mid_response_closes_the_connection(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", "/raise-mid-body")
            head = await client.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            # The chunked body stops without its last chunk: the client sees it cut short.
            assert await client.read_to_eof() == b"7\r\npartial\r\n"


async def test_receive_after_a_malformed_body_keeps_saying_disconnect(
    server: Running, app: App
) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(
                b"POST /receive-after-disconnect HTTP/1.1\r\nHost: t\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\nzz\r\n3\r\nabc\r\n0\r\n\r\n"
            )
            response = await client.response()
            assert await client.closed()
    assert app.received == ["http.disconnect", "http.disconnect"]
    assert (response.status, response.header(b"connection")) == (200, b"close")


@pytest.mark.parametrize(
    ("pieces", "status", "body"),
    [
        ("hello", 200, b"hello"),
        ("hel,lo", 200, b"hello"),
        ("hello-world", 500, None),  # refused before anything went out
    ],
)
async def test_app_content_length_is_kept_to(
    server: Running, pieces: str, status: int, body: bytes | None
) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", f"/wrong-length?{pieces}")
            response = await client.response()
            assert response.status == status
            if body is not None:
                assert response.body == body
                await client.request("POST", "/echo", b"next")
                assert (await client.response()).body == b"next"
            else:
                assert await client.closed()


@pytest.mark.parametrize("pieces", ["hello,world", "hel"])
async def test_app_body_not_matching_its_content_length_closes_the_connection(
    either: Running, pieces: str
) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.request("GET", f"/wrong-length?{pieces}")
            head = await client.read_until(b"\r\n\r\n")
            assert b"\r\ncontent-length: 5\r\n" in head
            # Only the first five bytes (or fewer) go out, then the connection closes: nothing
            # is left over to be read as the next response.
            assert (await client.read_to_eof()) == pieces.split(",")[0].encode()


async def test_app_without_a_response_gets_500(server: Running) -> None:
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("POST", "/no-response", b"x")
            response = await client.response()
    assert (response.status, response.json()["detail"]) == (500, "the app sent no response")


async def test_header_with_crlf_from_the_app_is_not_sent(either: Running) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.request("GET", "/bad-header")
            response = await client.response()
            assert await client.closed()
    assert response.status == 500
    assert b"evil" not in response.raw_head


async def test_disconnect_reaches_the_waiting_app(
    either: Running, app: App, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.request("POST", "/wait", b"x")
            await app.entered.wait()
            await trio.sleep(0.05)
            assert not app.disconnected.is_set()
        await app.disconnected.wait()
        await trio.sleep(0.05)
    # The app returned without a response because the client left: not an error worth a log.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_app_streaming_to_a_client_that_left_does_not_stall_the_server(
    either: Running, app: App
) -> None:
    with trio.fail_after(5):
        async with either.connect() as client:
            await client.request("GET", "/endless")
            await client.read_until(b"\r\n\r\n")
        # The app goes on sending into a broken connection (the writes are dropped); that must
        # not keep the rest of the server from running.
        async with either.connect() as other:
            await other.request("POST", "/echo", b"still served")
            assert (await other.response()).body == b"still served"
        app.release.set()
        await app.released.wait()


# -- timeouts ---------------------------------------------------------------------------------


@BOTH
async def test_idle_keep_alive_connection_is_closed(
    nursery: trio.Nursery, app: App, kind: str
) -> None:
    server = await start(nursery, app, kind=kind, keep_alive_timeout_seconds=0.3)
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("POST", "/echo", b"x")
            await client.response()
            began = trio.current_time()  # a little after the server began waiting
            assert await client.closed()
            # Not before the timeout. No upper bound: a loaded machine is late, not wrong; the
            # fail_after above catches a timer that never fires.
            assert trio.current_time() - began >= 0.25
        async with server.connect() as silent:  # never sends a byte
            began = trio.current_time()
            assert await silent.closed()
            assert trio.current_time() - began >= 0.3


@BOTH
async def test_slow_head_is_closed(nursery: trio.Nursery, app: App, kind: str) -> None:
    server = await start(nursery, app, kind=kind, head_timeout_seconds=0.3)
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            began = trio.current_time()

            async def trickle() -> None:
                try:
                    while True:
                        await trio.sleep(0.03)
                        await client.send(b"a")
                except trio.BrokenResourceError:
                    pass

            async with trio.open_nursery() as nursery_:
                nursery_.start_soon(trickle)
                assert await client.closed()
                nursery_.cancel_scope.cancel()
            assert trio.current_time() - began >= 0.3
    assert not app.scopes


async def test_client_that_stops_reading_is_dropped(nursery: trio.Nursery, app: App) -> None:
    server = await start(nursery, app, send_timeout_seconds=0.3)
    with trio.fail_after(10):
        async with server.connect() as stuck:
            await stuck.request("GET", "/endless")
            await app.entered.wait()
            async with server.connect() as other:  # served while the other is stuck
                await other.request("POST", "/echo", b"meanwhile")
                assert (await other.response()).body == b"meanwhile"
            await app.cancelled.wait()
            assert trio.current_time() - app.stream_started_at >= 0.3
        async with server.connect() as other:
            await other.request("POST", "/echo", b"after")
            assert (await other.response()).body == b"after"


# -- shutdown and lifespan --------------------------------------------------------------------


@BOTH
async def test_graceful_shutdown(nursery: trio.Nursery, app: App, kind: str) -> None:
    # A grace far beyond the test's deadline: what closes within it was not waiting out the grace.
    server = await start(nursery, app, kind=kind, graceful_timeout_seconds=120)
    with trio.fail_after(30):
        async with server.connect() as idle, server.connect() as busy:
            await idle.request("POST", "/echo", b"x")
            await idle.response()
            await busy.request("GET", "/hold")
            await app.entered.wait()
            server.shutdown.set()
            assert await idle.closed()  # while the busy request still runs
            with pytest.raises(OSError, match="connect"):
                await trio.open_tcp_stream("127.0.0.1", server.port)
            await trio.sleep(0.1)
            assert not server.stopped.is_set()
            app.release.set()
            response = await busy.response()
            assert response.body == b"released"
            if kind == "azuld":  # hypercorn closes without saying so
                assert response.header(b"connection") == b"close"
            assert await busy.closed()
            await server.stopped.wait()  # with the last connection, not at the grace's end
    assert not app.cancelled.is_set()
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


@BOTH
async def test_shutdown_cancels_requests_that_outlive_the_grace(
    nursery: trio.Nursery, app: App, kind: str
) -> None:
    server = await start(nursery, app, kind=kind, graceful_timeout_seconds=0.3)
    with trio.fail_after(5):
        async with server.connect() as busy:
            await busy.request("GET", "/hold")
            await app.entered.wait()
            began = trio.current_time()
            server.shutdown.set()
            await app.cancelled.wait()
            assert trio.current_time() - began >= 0.3
            assert await busy.closed()
            await server.stopped.wait()


@BOTH
async def test_lifespan_messages_reach_the_app(nursery: trio.Nursery, app: App, kind: str) -> None:
    server = await start(nursery, app, kind=kind)
    assert app.lifespan == ["lifespan.startup"]
    server.shutdown.set()
    with trio.fail_after(5):
        await server.stopped.wait()
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


@BOTH
async def test_failed_lifespan_startup_raises_config_error(kind: str) -> None:
    app = App(fail_startup="no database")
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(5), pytest.raises(ConfigError, match="no database"):
        await SERVERS[kind](app, ServerConfig(f"127.0.0.1:{port}"), shutdown=trio.Event())
    assert app.lifespan == ["lifespan.startup"]
    with trio.socket.socket() as again:  # the listener did not outlive the failure
        await again.bind(("127.0.0.1", port))
        again.listen()


@BOTH
async def test_app_without_lifespan_support_is_served(nursery: trio.Nursery, kind: str) -> None:
    async def plain(scope: Message, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http", "no lifespan here"
        await respond(send, 200, b"plain")

    server = await start(nursery, plain, kind=kind)  # type: ignore[arg-type]
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.request("GET", "/")
            assert (await client.response()).body == b"plain"


def test_server_config_from_settings() -> None:
    settings = load_settings(
        environ={},
        overrides={
            "server.listen": "127.0.0.1:9",
            "server.head_timeout_seconds": 4.5,
            "server.keep_alive_timeout_seconds": 20,
            "server.graceful_timeout_seconds": 7,
        },
    )
    assert ServerConfig.from_settings(settings.server) == ServerConfig(
        "127.0.0.1:9",
        head_timeout_seconds=4.5,
        keep_alive_timeout_seconds=20,
        graceful_timeout_seconds=7,
    )


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8111", ("127.0.0.1", 8111)),
        (":80", (None, 80)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(listen: str, parsed: tuple[str | None, int]) -> None:
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["127.0.0.1", "host:http", "h:65536", "h:-1", ""])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ConfigError, match="not host:port"):
        parse_listen(listen)


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azuld test")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@BOTH
async def test_tls(
    nursery: trio.Nursery, app: App, kind: str, certificate: tuple[Path, Path]
) -> None:
    certfile, keyfile = certificate
    client_context = ssl.create_default_context(cafile=str(certfile))
    client_context.set_alpn_protocols(["h2", "http/1.1"])
    server = await start(
        nursery,
        app,
        ssl_client=client_context,
        kind=kind,
        ssl_context=ssl_context(str(certfile), str(keyfile)),
    )
    assert server.urls == [f"https://127.0.0.1:{server.port}"]
    with trio.fail_after(5):
        async with server.connect() as client:
            for _ in range(2):  # keep-alive over TLS too
                await client.request("GET", "/scope")
                shown = json.loads((await client.response()).body)
                assert (shown["scheme"], shown["path"]) == ("https", "/scope")
            assert isinstance(client.stream, trio.SSLStream)
            assert client.stream.selected_alpn_protocol() == "http/1.1"
            assert shown["client"][0] == "127.0.0.1"


@BOTH
async def test_plain_http_to_a_tls_port_does_not_stop_the_server(
    nursery: trio.Nursery, app: App, kind: str, certificate: tuple[Path, Path]
) -> None:
    certfile, keyfile = certificate
    server = await start(
        nursery,
        app,
        ssl_client=ssl.create_default_context(cafile=str(certfile)),
        kind=kind,
        ssl_context=ssl_context(str(certfile), str(keyfile)),
    )
    with trio.fail_after(5):
        plain = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
        async with plain:
            await plain.request("GET", "/scope")
            await plain.read_to_eof()
        async with server.connect() as client:
            await client.request("GET", "/scope")
            assert json.loads((await client.response()).body)["scheme"] == "https"


async def test_hypercorn_speaks_http_2_over_tls(
    nursery: trio.Nursery, app: App, certificate: tuple[Path, Path]
) -> None:
    """ALPN chose h2: hypercorn's, passed through unread."""
    certfile, keyfile = certificate
    client_context = ssl.create_default_context(cafile=str(certfile))
    client_context.set_alpn_protocols(["h2"])
    server = await start(
        nursery,
        app,
        ssl_client=client_context,
        kind="hypercorn",
        ssl_context=ssl_context(str(certfile), str(keyfile), ("h2", "http/1.1")),
    )
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            frame = await client.read_exactly(9)
            assert isinstance(client.stream, trio.SSLStream)
            assert client.stream.selected_alpn_protocol() == "h2"
            assert frame[3] == 0x04  # the server's SETTINGS frame


@BOTH
async def test_address_in_use_raises_os_error(server: Running, kind: str) -> None:
    app = App()
    with trio.fail_after(5), pytest.raises(OSError, match="in use"):
        await SERVERS[kind](app, ServerConfig(f"127.0.0.1:{server.port}"), shutdown=trio.Event())
