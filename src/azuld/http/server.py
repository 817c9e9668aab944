"""azuld's HTTP/1.1 server: ASGI over trio sockets, built for many small keep-alive requests.

Why not hypercorn (still available as `server.http_server = "hypercorn"`): on these machines its
per-request machinery costs about 0.7 ms of CPU before the app runs (benchmarks/README.md), more
than all of azuld's own work for a job; plugins make three requests per job. This server does the
same job for HTTP/1.1 in about a tenth of that: framing is hand-parsed (`azuld.http.h1`), a small
response goes out in one write, and each connection has one reader task, so a client that hangs
up mid-request is noticed (the app gets `http.disconnect`) without ever cancelling a read.

Three modules: this one binds the listeners and runs the lifespan, the connections, the sweeper
and the drain; `azuld.http.connection` is one client connection (socket, reader, writes, request
heads); `azuld.http.exchange` is one request/response exchange on it (the ASGI side).

Lifetimes: `serve` owns a nursery of connections; each connection owns its reader. On
`shutdown`, the listeners close, idle connections close at once, requests in flight finish
within `graceful_timeout_seconds` (with `Connection: close`), then the rest is cancelled.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from azuld.errors import ConfigError
from azuld.http.connection import Connection
from azuld.http.exchange import ASGIApp, Exchange, Message
from azuld.settings import ServerSettings

__all__ = [
    "SEND_TIMEOUT_SECONDS",
    "ServerConfig",
    "listen_on",
    "parse_listen",
    "serve",
    "ssl_context",
]

# The longest one write may block on a client that stops reading (here, and in the sends that
# apps shield from their own cancellation).
SEND_TIMEOUT_SECONDS = 30.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str  # "host:port", "[v6]:port"; port 0 picks a free one
    ssl_context: ssl.SSLContext | None = None
    graceful_timeout_seconds: float = 3.0
    # Between requests on a connection; long-polls hold a request for up to a minute.
    keep_alive_timeout_seconds: float = 75.0
    # From a request's first byte to its blank line (slow-loris clients).
    head_timeout_seconds: float = 30.0
    send_timeout_seconds: float = SEND_TIMEOUT_SECONDS
    backlog: int = 1024
    # Bound already (by azuld's supervisor, for processes sharing a port): listened on instead.
    sockets: tuple[socket.socket, ...] = ()

    @classmethod
    def from_settings(
        cls,
        server: ServerSettings,
        context: ssl.SSLContext | None = None,
        sockets: tuple[socket.socket, ...] = (),
    ) -> ServerConfig:
        """The one place `[server]` settings become the server's (either server's)."""
        return cls(
            listen=server.listen,
            sockets=sockets,
            ssl_context=context,
            graceful_timeout_seconds=server.graceful_timeout_seconds,
            keep_alive_timeout_seconds=server.keep_alive_timeout_seconds,
            head_timeout_seconds=server.head_timeout_seconds,
        )


def parse_listen(listen: str) -> tuple[str | None, int]:
    """`host:port` → (host or None for every interface, port).

    Raises:
        ConfigError: not `host:port` with a port from 0 to 65535.
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"server.listen: {listen!r} is not host:port (e.g. 127.0.0.1:8111)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port_text)


class _Server:
    """The connections of one `serve`: each one's requests in turn, the sweeper that closes those
    that waited too long, and the drain."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.draining = False
        self.connections: set[Connection] = set()
        self.all_closed = trio.Event()

    async def handle(self, stream: trio.abc.Stream) -> None:
        if isinstance(stream, trio.SocketStream):
            stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        connection = Connection(stream)
        self.connections.add(connection)
        try:
            await connection.run(self._serve_requests)
        except Exception:  # a failure, whatever it is, stays in its connection
            log.warning(
                "a connection from %s failed and was closed", connection.client, exc_info=True
            )
        finally:
            self.connections.discard(connection)
            if self.draining and not self.connections:
                self.all_closed.set()

    async def _serve_requests(self, connection: Connection) -> None:
        while not self.draining:
            head = await connection.read_head()
            if head is None:
                return
            exchange = Exchange(self, connection, head)
            connection.in_flight = exchange
            try:
                keep_alive = await exchange.run()
            finally:
                connection.in_flight = None
            if not keep_alive or connection.broken:
                return

    def _overdue(self, connection: Connection, now: float) -> str | None:
        """Which wait of `connection` has run out of time, if any."""
        config = self.config
        idle_since, head_since = connection.idle_since, connection.head_since
        if idle_since is not None and now - idle_since > config.keep_alive_timeout_seconds:
            return "idle"
        if head_since is not None and now - head_since > config.head_timeout_seconds:
            return "request head not received in time"
        send_since = connection.send_since
        if send_since is not None and now - send_since > config.send_timeout_seconds:
            return "client stopped reading the response"
        return None

    async def sweep(self) -> None:
        """Close connections that waited too long (idle, a slow head, a client not reading)."""
        config = self.config
        shortest = min(
            config.keep_alive_timeout_seconds,
            config.head_timeout_seconds,
            config.send_timeout_seconds,
        )
        # At most a quarter of the shortest timeout late; at most once a second.
        interval = min(1.0, shortest / 4)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for connection in list(self.connections):
                reason = self._overdue(connection, now)
                if reason is not None:
                    log.debug("closing a connection from %s: %s", connection.client, reason)
                    connection.broken = True
                    connection.scope.cancel()

    def drain(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after their response."""
        self.draining = True
        for connection in self.connections:
            if connection.idle_since is not None:
                connection.scope.cancel()
        if not self.connections:
            self.all_closed.set()


@asynccontextmanager
async def _lifespan(app: ASGIApp, timeout_seconds: float) -> AsyncIterator[None]:
    """Run the app's ASGI lifespan (quart's before/after_serving) around the server.

    Raises:
        ConfigError: the app reported that its startup failed.
    """
    to_app, app_inbox = trio.open_memory_channel[Message](2)
    started = trio.Event()
    stopped = trio.Event()
    failures: list[str] = []

    async def receive() -> Message:
        return await app_inbox.receive()

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind.endswith(".failed"):
            failures.append(str(message.get("message", "")))
        if kind.startswith("lifespan.startup."):
            started.set()
        elif kind.startswith("lifespan.shutdown."):
            stopped.set()

    async def run_app() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        try:
            await app(scope, receive, send)
        except Exception:
            # An app without lifespan support may raise; the spec says to go on without it.
            log.debug("the app does not run the lifespan protocol", exc_info=True)
        finally:
            started.set()
            stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_app)
        await to_app.send({"type": "lifespan.startup"})
        await started.wait()
        if failures:
            nursery.cancel_scope.cancel()
        else:
            try:
                yield
            finally:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout_seconds):
                    await to_app.send({"type": "lifespan.shutdown"})
                    await stopped.wait()
                nursery.cancel_scope.cancel()
    if failures:  # raised outside the nursery, which would wrap it in an ExceptionGroup
        raise ConfigError(f"the HTTP app failed to start: {failures[0]}")


def _url(scheme: str, listener: trio.abc.Listener[Any]) -> str:
    inner = listener.transport_listener if isinstance(listener, trio.SSLListener) else listener
    assert isinstance(inner, trio.SocketListener)
    host, port = inner.socket.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


async def listen_on(config: ServerConfig) -> tuple[list[Any], list[str]]:
    """The listeners of `config.listen`, or of `config.sockets` if there are any (TLS ones with
    an `ssl_context`), and their URLs. Bound before the app starts: a port in use fails fast and
    as a plain OSError (raised inside the lifespan's nursery it would come out wrapped in an
    ExceptionGroup).

    Raises:
        ConfigError: a bad `listen`.
        OSError: the address cannot be bound (in use, not local).
    """
    host, port = parse_listen(config.listen)
    listeners: list[Any] = []
    for sock in config.sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    if not listeners:
        listeners = list(await trio.open_tcp_listeners(port, host=host, backlog=config.backlog))
    scheme = "http"
    if config.ssl_context is not None:
        scheme = "https"
        listeners = [
            trio.SSLListener(listener, config.ssl_context, https_compatible=True)
            for listener in listeners
        ]
    return listeners, [_url(scheme, listener) for listener in listeners]


async def serve(
    app: ASGIApp,
    config: ServerConfig,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown` is set and the requests in flight are done (or
    `graceful_timeout_seconds` passed; then they are cancelled). Reports the bound URLs through
    `task_status` once connections are accepted.

    Raises:
        ConfigError: a bad `listen`, or the app's lifespan startup failed.
        OSError: the address cannot be bound (in use, not local).
    """
    server = _Server(app, config)
    listeners, urls = await listen_on(config)
    try:
        async with (
            _lifespan(app, config.graceful_timeout_seconds),
            trio.open_nursery() as connections,
        ):
            async with trio.open_nursery() as acceptors:
                await acceptors.start(
                    partial(
                        trio.serve_listeners,
                        server.handle,
                        listeners,
                        handler_nursery=connections,
                    )
                )
                acceptors.start_soon(server.sweep)
                task_status.started(urls)
                await shutdown.wait()
                acceptors.cancel_scope.cancel()  # closes the listeners
            server.drain()
            with trio.move_on_after(config.graceful_timeout_seconds):
                await server.all_closed.wait()
            connections.cancel_scope.cancel()
    finally:
        for listener in listeners:  # when the app failed to start (closing twice is harmless)
            await trio.aclose_forcefully(listener)


def ssl_context(
    certfile: str, keyfile: str, alpn: tuple[str, ...] = ("http/1.1",)
) -> ssl.SSLContext:
    """A server TLS context; ALPN advertises `alpn` (azuld's server speaks HTTP/1.1 only;
    hypercorn also h2)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile or None)
    context.set_alpn_protocols(list(alpn))
    return context
