"""The protocol's routes over a real socket, on each HTTP server `server.http_server` offers:
the same app, the same answers, and the hostile requests of issue #18 contained by both."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
import trio

from azuld.http import Services, create_app, hypercorn_server
from azuld.http import server as azuld_server
from azuld.http.server import ServerConfig
from tests.conftest import make_binary
from tests.http.test_seed_routes import ROUTES, scenario

SERVERS = {"azuld": azuld_server.serve, "hypercorn": hypercorn_server.serve}


class _Response:
    """An httpx response with the parts of Quart's test response `scenario` reads."""

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.headers = response.headers
        self._response = response

    async def get_json(self) -> Any:
        return self._response.json()

    async def get_data(self) -> bytes:
        return self._response.content


class _Client:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, url: str, data: bytes) -> _Response:
        return _Response(await self.client.post(url, content=data))

    async def get(self, url: str) -> _Response:
        return _Response(await self.client.get(url))


@pytest.fixture(params=sorted(SERVERS))
async def url(
    request: pytest.FixtureRequest, services: Services, nursery: trio.Nursery
) -> AsyncIterator[str]:
    """The URL of the app served by each server in turn."""
    await nursery.start(services.dispatcher.run)
    shutdown = trio.Event()
    serve = SERVERS[request.param]
    urls = await nursery.start(
        lambda task_status: serve(
            create_app(services),
            ServerConfig("127.0.0.1:0"),
            shutdown=shutdown,
            task_status=task_status,
        )
    )
    yield urls[0]
    shutdown.set()


async def raw(url: str, data: bytes) -> bytes:
    """Send `data` on a connection of its own; everything the server sends until it closes."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_the_protocol_over_the_wire(url: str, version: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        client = _Client(http)
        await http.post("/api/v2/event?model=binary", content=msgspec.json.encode([make_binary()]))
        seen = await scenario(client, ROUTES[version], f"Wire{version}")  # type: ignore[arg-type]
        assert [seen[0][0], seen[1][0], seen[2], seen[3][0], seen[4][0]] == [
            200,
            200,
            (400, True),
            200,
            200,
        ]
        assert seen[-2:] == [{"events": []}, 422]


async def test_downloads_over_the_wire(url: str) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: streamed in several reads
    sha = hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        uploaded = await http.post(
            f"/api/v3/stream/samples/content?expected-sha256={sha}", content=data
        )
        assert uploaded.status_code == 200, uploaded.text
        stream = f"/api/v3/stream/samples/content/{sha}"
        whole = await http.get(stream)
        assert (whole.status_code, whole.content) == (200, data)
        part = await http.get(stream, headers={"Range": "bytes=10-19"})
        assert (part.status_code, part.content) == (206, data[10:20])
        assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        assert (await http.head(stream)).status_code == 200
        assert (await http.head(stream.replace(sha, "0" * 64))).status_code == 404
        beyond = await http.get(stream, headers={"Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416


async def test_a_request_hidden_in_a_body_is_not_served(url: str) -> None:
    """CL+TE: read as chunked the body ends at once, and `/healthz` would be served after it."""
    answer = await raw(
        url,
        b"POST /api/v2/event?model=binary HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"both Content-Length and Transfer-Encoding" in answer
    assert answer.count(b"HTTP/1.1") == 1


async def test_malformed_trailers_after_an_unread_body_leave_the_server_up(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunked body the route does not read, then a malformed trailer arriving while the
    response goes out: under hypercorn this raced into `trio.BusyResourceError`, which ended
    the daemon (usually within a few tries)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    rng = random.Random(18)
    with trio.fail_after(60):
        for _ in range(40):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(
                    b"GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n"
                )
                await trio.sleep(rng.random() * 0.003)
                with contextlib.suppress(trio.BrokenResourceError):  # it may have closed
                    await stream.send_all(b"0\r\nbad trailer\r\n\r\n")
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_deep_json_over_the_wire_is_422(url: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post("/api/v2/event?model=binary", content=deep)
    assert response.status_code == 422
    assert "nesting deeper than" in response.json()["detail"]
