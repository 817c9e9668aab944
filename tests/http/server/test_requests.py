"""azuld's HTTP server (azuld.http.server) on a real socket: requests and responses.

Spoken to in raw bytes: each test runs a server on 127.0.0.1:0 with the small ASGI app of
`harness.py` (one route per behaviour) and checks the framing byte for byte where it matters.
Timeouts are a few tenths of a second so the timeout tests stay fast; every test is bounded by
`trio.fail_after`.
"""

from __future__ import annotations

import contextlib
import json
import re

import pytest
import trio

from tests.http.server.harness import BOTH, DATE, App, Running, start


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
