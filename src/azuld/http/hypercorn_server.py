"""hypercorn as azuld's HTTP server (`server.http_server = "hypercorn"`: HTTP/2 over TLS, at
several times the CPU of `azuld.http.server`), made safe.

hypercorn reads HTTP/1.1 with h11, which lets `Transfer-Encoding` win over a `Content-Length`
in the same request: a proxy in front that frames by the length is smuggled the request hidden
in the body (RFC 9112 6.3). And an error in one connection (a malformed trailer while the app is
answering ends in `trio.BusyResourceError`) escapes hypercorn's handler and ends the daemon.

So `serve` runs hypercorn's own connection handler (`TCPServer`) under listeners of its own, with
the `ServerConfig` `azuld.http.server.serve` takes:

- Every connection's bytes go through `_GuardedStream` before h11 sees them: azuld's framing
  (`azuld.http.h1.RequestFramer`) reads every request first. A request it refuses (ambiguous
  framing, a bad Host, a bare LF, ...) never reaches h11: h11 gets in its place a request for
  `REFUSAL_PATH`, which `_Front` answers with the status and the reason, in order after the
  requests before it, then the connection closes. A body it refuses is cut where it went wrong
  with a line h11 refuses too. It also holds the head timeout and the send timeout.
- A connection that fails in any way is logged and closed; the others and the daemon go on.

h2 (TLS with ALPN `h2`, or the prior-knowledge preface) and the protocols a request upgrades to
pass through unread: their framing is h2's or the WebSocket's, not HTTP/1.1's.

This leans on hypercorn's internals (`TCPServer`, `Lifespan`, `WorkerContext`) as of the pinned
0.18.0; `worker_serve` is their public composition, which cannot wrap a connection's stream.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from math import inf
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import LifespanFailureError, wrap_app

from azuld.errors import ConfigError
from azuld.http.connection import error_body
from azuld.http.h1 import Head, ProtocolError, RequestFramer, RequestHead
from azuld.http.rejections import REJECTIONS, Rejection
from azuld.http.server import ServerConfig, listen_on

__all__ = ["REFUSAL_PATH", "hypercorn_config", "serve"]

Message = dict[str, Any]
ASGIApp = Callable[[Message, Any, Any], Awaitable[None]]

# Requests `_GuardedStream` refused reach hypercorn as requests for this path (unguessable, so
# that no client can ask for it), with the status and the reason in `_REFUSAL_HEADER`.
REFUSAL_PATH = f"/.azuld/refused/{secrets.token_hex(16)}"
_REFUSAL_HEADER = b"x-azuld-refusal"
# Where a body was refused: what h11 refuses at any line of a chunked body (a chunk size, the
# CRLF after a chunk's data, a trailer section), so that h11 stops there too.
_POISON = b":\r\n\r\n"
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_RECEIVE_BYTES = 64 * 1024

log = logging.getLogger(__name__)


def hypercorn_config(config: ServerConfig) -> HypercornConfig:
    """The one place azuld's server settings become hypercorn's."""
    hypercorn = HypercornConfig()
    hypercorn.bind = [config.listen]
    hypercorn.accesslog = None
    hypercorn.errorlog = logging.getLogger("hypercorn.error")
    hypercorn.graceful_timeout = config.graceful_timeout_seconds
    # Long-polls may hold a request for `max_deadline_seconds`; keep idle connections a while.
    hypercorn.keep_alive_timeout = config.keep_alive_timeout_seconds
    # The head limit azuld's framing holds (431 above it), so h11 never refuses a head it took.
    hypercorn.h11_max_incomplete_size = 64 * 1024
    hypercorn.backlog = config.backlog
    return hypercorn


class _Front:
    """The ASGI app hypercorn runs: answers `REFUSAL_PATH`; gives the app a `send` shielded from
    the request's cancellation, with a deadline of its own. quart-trio cancels the app when the
    client disconnects, which would also cancel hypercorn's close and keep-alive bookkeeping
    running inside `send`: connections a client left open were then never closed."""

    def __init__(self, app: ASGIApp, send_timeout_seconds: float) -> None:
        self.app = app
        self.send_timeout_seconds = send_timeout_seconds

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == REFUSAL_PATH:
            for name, value in scope["headers"]:
                if name == _REFUSAL_HEADER:
                    await _answer_refusal(send, value, scope.get("client"))
                    return

        async def shielded_send(message: Message) -> None:
            deadline = trio.current_time() + self.send_timeout_seconds
            with trio.CancelScope(shield=True, deadline=deadline):
                await send(message)
            # hypercorn drops sends to a closed connection without a checkpoint: an app streaming
            # into one must still let the other tasks run (and see its cancellation).
            await trio.lowlevel.checkpoint()

        await self.app(scope, receive, shielded_send)


async def _answer_refusal(send: Any, refusal: bytes, client: Any) -> None:
    status, _, reason = refusal.decode("ascii").partition(" ")
    code = int(status)
    REJECTIONS.record(
        Rejection("-", "-", code, reason, client[0] if client else "-", before_the_app=True),
        trio.current_time(),
    )
    body = error_body(code, "bad request" if code == 400 else "refused", reason)
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _refusal_request(error: ProtocolError) -> bytes:
    reason = re.sub(rb"[^\x20-\x7e]", b"?", error.message.encode("ascii", "replace"))
    return b"GET %s HTTP/1.1\r\nhost: azuld\r\nconnection: close\r\n%s: %d %s\r\n\r\n" % (
        REFUSAL_PATH.encode(),
        _REFUSAL_HEADER,
        error.status,
        reason,
    )


def _switches_protocol(head: RequestHead) -> bool:
    """Whether hypercorn leaves HTTP/1.1 after this request, as it decides (`H11Protocol`: the
    last `Upgrade` and `Connection` values count): `h2c` without a body, or a WebSocket GET."""
    upgrade = connection = ""
    has_body = False
    for name, value in head.headers:
        if name == b"upgrade":
            upgrade = value.decode("latin-1").strip().lower()
        elif name == b"connection":
            connection = value.decode("latin-1").strip().lower()
        elif name in (b"content-length", b"transfer-encoding"):
            has_body = True
    if upgrade == "h2c" and not has_body:
        return True
    tokens = {token.strip() for token in connection.split(",")}
    return upgrade == "websocket" and "upgrade" in tokens and head.method.upper() == "GET"


class _GuardedStream(trio.abc.Stream):
    """A client's stream as hypercorn reads and writes it: HTTP/1.1 requests only once azuld's
    framing has read them (see the module's docstring). Everything else hypercorn asks of a
    stream (`socket`, `do_handshake`, `send_eof`, ...) is the client stream's."""

    def __init__(self, inner: trio.abc.Stream, config: ServerConfig) -> None:
        self._inner = inner
        self._config = config
        self._framer = RequestFramer()
        self._ready = bytearray()  # read and checked: hypercorn's next bytes
        self._state = "start"  # then "guard"; "pass" (not HTTP/1.1); "done" (no more requests)
        self._head_deadline = inf
        self._sending = trio.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Raises:
        trio.BrokenResourceError: the client did not take it within the send timeout (hypercorn
            shields its sends, so this is the only deadline they have)."""
        async with self._sending:
            with trio.move_on_after(self._config.send_timeout_seconds):
                await self._inner.send_all(data)
                return
        raise trio.BrokenResourceError("the client stopped reading")

    async def send_eof(self) -> None:
        """After any send in progress: hypercorn closes a connection (`send_eof`) outside the
        lock its sends take, and the app's send that met it raised `trio.BusyResourceError`.

        Raises:
            AttributeError: the stream cannot half-close (TLS); hypercorn expects that.
        """
        send_eof = self._inner.send_eof  # type: ignore[attr-defined]
        async with self._sending:
            await send_eof()

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._ready:
            if self._state == "pass":
                return bytes(await self._inner.receive_some(max_bytes))
            data = await self._receive()
            if not data:
                return b""  # the client left, or the head timeout passed: hypercorn closes
            if self._state != "done":
                self._framer.feed(data)
                self._advance()
        size = len(self._ready) if max_bytes is None else max_bytes
        taken = bytes(self._ready[:size])
        del self._ready[:size]
        return taken

    async def _receive(self) -> bytes:
        """The next bytes from the client; b"" at its end or when a head took too long (the
        connection is then closed: hypercorn would wait for its idle timeout)."""
        with trio.move_on_at(self._head_deadline):
            return bytes(await self._inner.receive_some(_RECEIVE_BYTES))
        log.debug("closing a connection: request head not received in time")
        await trio.aclose_forcefully(self._inner)
        return b""

    def _advance(self) -> None:
        framer = self._framer
        if self._state == "start" and not self._starts_http_1():
            return
        try:
            while (event := framer.next_event()) is not None:
                self._ready += event.raw
                if isinstance(event, Head) and _switches_protocol(event.head):
                    self._pass_through()
                    return
        except ProtocolError as error:
            # Before a head: the refused request's stand-in. In a body: a line h11 refuses.
            self._ready += _refusal_request(error) if framer.reading_head else _POISON
            self._state = "done"
            framer.buffer.clear()
            return
        if framer.closed:
            self._state = "done"  # what follows a request that closes is not hypercorn's
        elif framer.reading_head and framer.buffer:
            if self._head_deadline == inf:
                self._head_deadline = trio.current_time() + self._config.head_timeout_seconds
        else:
            self._head_deadline = inf

    def _starts_http_1(self) -> bool:
        """At the start: HTTP/1.1, unless TLS chose h2 or the client sent h2's preface (then
        everything passes through); undecided while the first bytes could be that preface."""
        selected = getattr(self._inner, "selected_alpn_protocol", None)
        buffer = self._framer.buffer
        if (selected is not None and selected() == "h2") or buffer.startswith(_H2_PREFACE):
            self._pass_through()
            return False
        if _H2_PREFACE.startswith(buffer):
            return False
        self._state = "guard"
        return True

    def _pass_through(self) -> None:
        self._ready += self._framer.buffer
        self._framer.buffer.clear()
        self._state = "pass"
        self._head_deadline = inf


async def _serve_connection(
    stream: trio.abc.Stream,
    *,
    app: Any,
    hypercorn: HypercornConfig,
    config: ServerConfig,
    context: WorkerContext,
    state: dict[str, Any],
) -> None:
    """One connection, by hypercorn's handler over a `_GuardedStream`. Whatever it raises is
    logged and the connection closed: one connection never ends the server."""
    guarded = _GuardedStream(stream, config)
    try:
        await TCPServer(app, hypercorn, context, ConnectionState(state.copy()), guarded)  # type: ignore[arg-type]
    except Exception:  # every failure, whatever it is, stays in its connection
        log.warning("a connection failed and was closed", exc_info=True)
    finally:
        await trio.aclose_forcefully(stream)


async def serve(
    app: ASGIApp,
    config: ServerConfig,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`azuld.http.server.serve`, by hypercorn: serve `app` until `shutdown` is set and the
    requests in flight are done (or `graceful_timeout_seconds` passed; then they are cancelled).

    Raises:
        ConfigError: a bad `listen`, or the app's lifespan startup failed.
        OSError: the address cannot be bound (in use, not local).
    """
    hypercorn = hypercorn_config(config)
    front = wrap_app(
        _Front(app, config.send_timeout_seconds),  # type: ignore[arg-type]
        hypercorn.wsgi_max_body_size,
        "asgi",
    )
    state: dict[str, Any] = {}
    lifespan = Lifespan(front, hypercorn, state)
    context = WorkerContext(None)
    listeners, urls = await listen_on(config)
    handler = partial(
        _serve_connection,
        app=front,
        hypercorn=hypercorn,
        config=config,
        context=context,
        state=state,
    )
    failed: BaseExceptionGroup[LifespanFailureError] | None = None
    try:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as acceptors:
                    await acceptors.start(
                        partial(
                            trio.serve_listeners, handler, listeners, handler_nursery=connections
                        )
                    )
                    task_status.started(urls)
                    await shutdown.wait()
                    acceptors.cancel_scope.cancel()  # closes the listeners
                await context.terminated.set()  # idle connections close; busy ones after
                connections.cancel_scope.deadline = (
                    trio.current_time() + config.graceful_timeout_seconds
                )
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        failed, rest = group.split(LifespanFailureError)
        if rest is not None:
            raise
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    if failed is not None:  # raised here, not wrapped in the nursery's group
        raise ConfigError(f"the HTTP app failed to start: {failed.exceptions[0]}")
