"""azuld's HTTP server (azuld.http.server) on a real socket: refusals and failures.

Spoken to in raw bytes: each test runs a server on 127.0.0.1:0 with the small ASGI app of
`harness.py` (one route per behaviour) and checks the framing byte for byte where it matters.
Timeouts are a few tenths of a second so the timeout tests stay fast; every test is bounded by
`trio.fail_after`.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from azuld.http import connection as connection_module
from azuld.http import hypercorn_server
from azuld.http.rejections import REJECTIONS
from tests.http.server.harness import BOTH, App, Running, start


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
