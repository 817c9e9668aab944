"""azuld's HTTP server (azuld.http.server): timeouts, shutdown, lifespan, settings.

Spoken to in raw bytes: each test runs a server on 127.0.0.1:0 with the small ASGI app of
`harness.py` (one route per behaviour) and checks the framing byte for byte where it matters.
Timeouts are a few tenths of a second so the timeout tests stay fast; every test is bounded by
`trio.fail_after`.
"""

from __future__ import annotations

import pytest
import trio

from azuld.errors import ConfigError
from azuld.http.server import ServerConfig, parse_listen
from azuld.settings import load_settings
from tests.http.server.harness import BOTH, SERVERS, App, Message, Receive, Send, respond, start


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
