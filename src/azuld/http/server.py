"""azuld's HTTP/1.1 server: ASGI over trio sockets, built for many small keep-alive requests.

Why not hypercorn (still available as `server.http_server = "hypercorn"`): on these machines its
per-request machinery costs about 0.7 ms of CPU before the app runs (benchmarks/README.md), more
than all of azuld's own work for a job; plugins make three requests per job. This server does the
same job for HTTP/1.1 in about a tenth of that: framing is hand-parsed (`azuld.http.h1`), a small
response goes out in one write, and each connection has one reader task, so a client that hangs
up mid-request is noticed (the app gets `http.disconnect`) without ever cancelling a read.

Lifetimes: `serve` owns a nursery of connections; each connection owns its reader. On
`shutdown`, the listeners close, idle connections close at once, requests in flight finish
within `graceful_timeout_seconds` (with `Connection: close`), then the rest is cancelled.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import trio

from azuld.errors import ConfigError
from azuld.http.h1 import (
    MAX_HEAD_BYTES,
    ChunkedDecoder,
    ProtocolError,
    RequestHead,
    parse_request_head,
    response_head,
)
from azuld.models.responses import ErrorBody

__all__ = ["SEND_TIMEOUT_SECONDS", "ServerConfig", "parse_listen", "serve", "ssl_context"]

# The longest one write may block on a client that stops reading (here, and in the sends that
# apps shield from their own cancellation).
SEND_TIMEOUT_SECONDS = 30.0

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

_RECEIVE_BYTES = 64 * 1024
# The reader stops reading a connection once this much is waiting (a big upload, pipelining).
_READ_AHEAD_BYTES = 256 * 1024
# After a response sent before its request body was read, how much of the body is read and
# dropped (so the client sees the response, not a reset) before the connection closes.
_LINGER_BYTES = 4 * 1024 * 1024
_LINGER_SECONDS = 2.0
_HEAD_TOO_LARGE = "request head (request line and headers) over 64 KiB"
_NO_BODY_STATUSES = frozenset({204, 304})
_HOP_BY_HOP = frozenset({b"connection", b"transfer-encoding", b"keep-alive"})

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


class _Date:
    """The `Date` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


_DATE = _Date()


def _error_body(status: int, title: str, detail: str) -> bytes:
    return msgspec.json.encode(
        ErrorBody(status=str(status), title=title, detail=detail, error_enum="ErrorStringEnumUnset")
    )


class _Connection:
    """One client connection: a reader task filling `buffer`, and requests served in turn."""

    def __init__(self, server: _Server, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.buffer = bytearray()
        self.peer_closed = False  # EOF or a broken stream: nothing more will arrive
        self.broken = False  # a write failed: nothing more can be sent
        self.request: _Request | None = None
        # Timeouts are checked by the server's sweeper once a second rather than by a cancel
        # scope per wait (one scope per request cost more than the rest of the framing). Each
        # is the trio time the connection began waiting, or None when it is not waiting.
        self.scope = trio.CancelScope()
        self.idle_since: float | None = None  # for a next request, nothing buffered
        self.head_since: float | None = None  # for the rest of a request head
        self.send_since: float | None = None  # for a write to drain
        # Tasks parked in `wait_for_data` (the serving task, now and then a watcher too), woken
        # with `reschedule` rather than a new `trio.Event` per wait.
        self._data_waiters: list[trio.lowlevel.Task] = []
        self._room = trio.Event()
        # Plain TCP: the trio socket's own send/recv, without `SocketStream`'s wrapping of every
        # call (a conflict detector and an error-translating context manager each); its errors
        # are handled here instead. TLS and other streams go through the stream.
        self._socket = stream.socket if type(stream) is trio.SocketStream else None
        self.client, self.local, self.scheme = _addresses(stream)

    async def run(self) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_loop)
                    try:
                        await self._serve_requests()
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(self.stream)

    def overdue(self, now: float) -> str | None:
        """Which wait has run out of time, if any (the sweeper then closes the connection)."""
        config = self.server.config
        idle_seconds = config.keep_alive_timeout_seconds
        if self.idle_since is not None and now - self.idle_since > idle_seconds:
            return "idle"
        if self.head_since is not None and now - self.head_since > config.head_timeout_seconds:
            return "request head not received in time"
        if self.send_since is not None and now - self.send_since > config.send_timeout_seconds:
            return "client stopped reading the response"
        return None

    async def _read_loop(self) -> None:
        fd = self._socket.fileno() if self._socket is not None else -1
        try:
            while True:
                if len(self.buffer) >= _READ_AHEAD_BYTES:
                    self._room = trio.Event()
                    await self._room.wait()
                    continue
                data: bytes | bytearray
                if fd >= 0:
                    # Wait, then read: a read tried first (as `recv` does) would, after every
                    # request, only find the socket empty (the client awaits the response).
                    await trio.lowlevel.wait_readable(fd)
                    try:
                        data = os.read(fd, _RECEIVE_BYTES)
                    except BlockingIOError:
                        continue
                else:
                    data = await self.stream.receive_some(_RECEIVE_BYTES)
                if not data:
                    break
                self.buffer += data
                self._wake_data_waiters()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # reset, or a failed TLS handshake: the same as a hang-up here
        finally:
            self.peer_closed = True
            self._wake_data_waiters()
            if self.request is not None:
                self.request.finish()

    async def wait_for_data(self) -> None:
        """Wait until more bytes arrive or the peer hangs up (callers check which)."""
        if self.peer_closed:
            return
        task = trio.lowlevel.current_task()
        waiters = self._data_waiters
        waiters.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _wake_data_waiters(self) -> None:
        waiters = self._data_waiters
        if waiters:
            for task in waiters:
                trio.lowlevel.reschedule(task)
            waiters.clear()

    def took(self) -> None:
        """Call after removing bytes from `buffer`: lets the reader go on."""
        if len(self.buffer) < _READ_AHEAD_BYTES:
            self._room.set()

    async def write(self, data: bytes) -> None:
        """Send, bounded by the send timeout. A failed or cancelled write breaks the connection
        (trio streams cannot resume a partial send): later writes are dropped, as hypercorn
        drops writes to a closed connection."""
        if self.broken:
            # Still a checkpoint: an app streaming into a dead connection must not starve the
            # other tasks (and stays cancellable).
            await trio.lowlevel.checkpoint()
            return
        if self.send_since is not None:  # as `SocketStream`'s conflict detector would
            self.broken = True
            raise trio.BusyResourceError("another task is writing to this connection")
        self.send_since = trio.current_time()
        try:
            if self._socket is not None:
                await _send_all(self._socket, data)
            else:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.broken = True
        except BaseException:
            self.broken = True
            raise
        finally:
            self.send_since = None

    async def _serve_requests(self) -> None:
        while not self.server.draining:
            head = await self._read_head()
            if head is None:
                return
            request = _Request(self, head)
            self.request = request
            try:
                keep_alive = await request.run()
            finally:
                self.request = None
            if not keep_alive or self.broken:
                return

    async def _read_head(self) -> RequestHead | None:
        """The next request's head, or None to close (timeout, hang-up, refused, draining)."""
        buffer = self.buffer
        if not buffer:
            self.idle_since = trio.current_time()
            try:
                while not buffer and not self.peer_closed:
                    await self.wait_for_data()
            finally:
                self.idle_since = None
            if not buffer:
                return None
        while buffer.startswith(b"\r\n"):  # stray CRLFs between requests (RFC 9112 2.2)
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:  # usually the whole head arrives in one read
            self.head_since = trio.current_time()
            try:
                while end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        await self.refuse(431, _HEAD_TOO_LARGE)
                        return None
                    if self.peer_closed:
                        return None
                    await self.wait_for_data()
                    while buffer.startswith(b"\r\n"):
                        del buffer[:2]
                    end = buffer.find(b"\r\n\r\n")
            finally:
                self.head_since = None
        if end > MAX_HEAD_BYTES:
            await self.refuse(431, _HEAD_TOO_LARGE)
            return None
        raw = bytes(buffer[:end])
        del buffer[: end + 4]
        self.took()
        try:
            return parse_request_head(raw)
        except ProtocolError as error:
            await self.refuse(error.status, error.message)
            return None

    async def refuse(self, status: int, detail: str) -> None:
        """Answer a request that never reached the app, then the connection closes."""
        body = _error_body(status, "bad request" if status == 400 else "refused", detail)
        head = response_head(
            status,
            [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"date", _DATE.header()),
            ],
        )
        await self.write(head + body)


class _Request:
    """One request/response exchange: the ASGI `receive` and `send` the app is given."""

    __slots__ = (
        "_body_bytes",
        "_body_remaining",
        "_chunked_response",
        "_continue_pending",
        "_declared_length",
        "_decoder",
        "_finished_event",
        "_has_length",
        "_head_sent",
        "_headers",
        "_no_body",
        "_sent_request_message",
        "_status",
        "body_done",
        "body_error",
        "connection",
        "finished",
        "head",
        "keep_alive",
        "response_complete",
        "response_started",
    )

    def __init__(self, connection: _Connection, head: RequestHead) -> None:
        self.connection = connection
        self.head = head
        self.finished = False  # response sent, or the client hung up
        # Made only when a `receive` waits for `finished` (few requests do).
        self._finished_event: trio.Event | None = None
        self.keep_alive = head.keep_alive
        self.response_started = False
        self.response_complete = False
        self._sent_request_message = False
        self._continue_pending = head.expect_continue
        self._decoder = ChunkedDecoder() if head.chunked else None
        self._body_remaining = head.content_length or 0
        self.body_done = not head.chunked and not self._body_remaining
        self.body_error: ProtocolError | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._has_length = False  # the app's headers include a Content-Length
        self._head_sent = False
        self._chunked_response = False
        self._no_body = head.method == "HEAD"
        self._declared_length: int | None = None  # the app's own Content-Length
        self._body_bytes = 0

    def scope(self) -> Message:
        head = self.head
        path_bytes, _, query = head.target.partition(b"?")
        if not path_bytes.startswith(b"/"):
            if b"://" in path_bytes:  # absolute-form, as sent to proxies
                path_bytes = urlsplit(path_bytes).path or b"/"
            elif path_bytes != b"*":
                raise ProtocolError(400, "request target must start with '/'")
        connection = self.connection
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": head.http_version,
            "method": head.method,
            "scheme": connection.scheme,
            "path": unquote(path_bytes.decode("ascii")),
            "raw_path": path_bytes,
            "query_string": query,
            "root_path": "",
            "headers": head.headers,
            "client": connection.client,
            "server": connection.local,
            "extensions": {},
        }

    async def run(self) -> bool:
        """Run the app for this request; True if the connection can carry the next one."""
        connection = self.connection
        try:
            scope = self.scope()
        except ProtocolError as error:
            await connection.refuse(error.status, error.message)
            return False
        try:
            await connection.server.app(scope, self.receive, self.send)
        except Exception:
            if connection.broken or connection.peer_closed or self.body_error is not None:
                # Apps often raise on the `http.disconnect` they get for either.
                log.debug("request ended after the client left or sent a bad body", exc_info=True)
            else:
                log.exception("unhandled error serving %s %s", self.head.method, scope["path"])
            if self._head_sent:
                return False  # part of a response went out: only closing can end it
            # Started but nothing sent (the head waits for the first body message): answer.
            self.response_started = self._chunked_response = False
            self._headers = []
            self._has_length = False
            self._declared_length = None
            self._no_body = self.head.method == "HEAD"
            if self.body_error is not None:
                bad = self.body_error
                await self._send_error(bad.status, "bad request", bad.message)
            else:
                await self._send_error(500, "internal error", "the error was logged")
            return False
        if self.body_error is not None and not self.response_started:
            await self._send_error(self.body_error.status, "bad request", self.body_error.message)
            return False
        if not self.response_started:
            if connection.peer_closed:
                return False  # apps stop when the client leaves (a long-poll given up)
            log.error("no response for %s %s", self.head.method, scope["path"])
            await self._send_error(500, "internal error", "the app sent no response")
            return False
        if not self.response_complete:
            return False
        if not self.body_done:
            await self._linger()
            return False
        return self.keep_alive and not connection.server.draining

    async def _send_error(self, status: int, title: str, detail: str) -> None:
        self.keep_alive = False
        body = _error_body(status, title, detail)
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8")],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    async def _linger(self) -> None:
        """The response went out before the request body was read: read and drop some of the
        rest, so the client reads the response instead of a connection reset."""
        connection = self.connection
        with trio.move_on_after(_LINGER_SECONDS):
            dropped = 0
            while not self.body_done and dropped < _LINGER_BYTES and not connection.peer_closed:
                try:
                    dropped += len(await self._read_body())
                except ProtocolError:
                    return

    # -- receive ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.body_error is not None:
            return {"type": "http.disconnect"}  # not the data after the malformed framing
        if self.body_done and self._sent_request_message:
            # Nothing more to read: wait for the response to finish or the client to leave.
            if not self.connection.peer_closed:
                if self._finished_event is None:
                    self._finished_event = trio.Event()
                    if self.finished:
                        self._finished_event.set()
                await self._finished_event.wait()
            return {"type": "http.disconnect"}
        self._sent_request_message = True
        if self.body_done:
            return {"type": "http.request", "body": b"", "more_body": False}
        if self._continue_pending:
            self._continue_pending = False
            if not self.response_started:
                await self.connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await self._read_body()
        except ProtocolError as error:
            self.body_error = error
            self.keep_alive = False
            return {"type": "http.disconnect"}
        if not body and not self.body_done:
            return {"type": "http.disconnect"}  # the client left mid-body
        return {"type": "http.request", "body": body, "more_body": not self.body_done}

    async def _read_body(self) -> bytes:
        """The next piece of the body (b"" once the client has left mid-body).

        Raises:
            ProtocolError: malformed chunked framing.
        """
        connection = self.connection
        buffer = connection.buffer
        while True:
            if self._decoder is None:
                if buffer:
                    take = min(self._body_remaining, len(buffer))
                    data = bytes(buffer[:take])
                    del buffer[:take]
                    connection.took()
                    self._body_remaining -= take
                    self.body_done = not self._body_remaining
                    return data
            else:
                data = self._decoder.feed(buffer)
                connection.took()
                self.body_done = self._decoder.done
                if data or self.body_done:
                    return data
            if connection.peer_closed:
                return b""
            await connection.wait_for_data()

    # -- send ------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            self.response_started = True
            self._status = int(message["status"])
            headers = self._headers = []
            declared: bytes | None = None  # the first Content-Length
            for name, value in message.get("headers", ()):
                lowered = bytes(name).lower()
                if lowered not in _HOP_BY_HOP:
                    value = bytes(value)
                    headers.append((lowered, value))
                    if declared is None and lowered == b"content-length":
                        declared = value
            if self._status in _NO_BODY_STATUSES or self._status < 200:
                self._no_body = True
            self._declared_length = (
                int(declared) if declared is not None and not self._no_body else None
            )
            self._has_length = declared is not None
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unsupported ASGI message {kind!r}")
        if not self.response_started or self.response_complete:
            raise RuntimeError("http.response.body outside a response")
        body = bytes(message.get("body", b""))
        more_body = bool(message.get("more_body", False))
        if self._declared_length is not None:
            # A body longer or shorter than the app declared would frame the next response
            # wrongly on this connection: refuse the excess, close after a short one.
            self._body_bytes += len(body)
            if self._body_bytes > self._declared_length:
                raise RuntimeError("response body longer than its Content-Length")
            if not more_body and self._body_bytes < self._declared_length:
                self.keep_alive = False
        out = b""
        if not self._head_sent:
            out = self._response_head(final_length=None if more_body else len(body))
            self._head_sent = True
        if self._no_body:
            pass
        elif self._chunked_response:
            if body:
                out += b"%x\r\n" % len(body) + body + b"\r\n"
            if not more_body:
                out += b"0\r\n\r\n"
        else:
            out += body
        if not more_body:
            self.response_complete = True
        if out:
            await self.connection.write(out)
        if not more_body:
            self.finish()

    def finish(self) -> None:
        """The response went out, or the client hung up: wake a `receive` waiting for either."""
        self.finished = True
        if self._finished_event is not None:
            self._finished_event.set()

    def _response_head(self, final_length: int | None) -> bytes:
        headers = self._headers
        if not self.body_done:
            # Reading on past a response would race the client: close after it instead.
            self.keep_alive = False
        if self.connection.server.draining:
            self.keep_alive = False
        if not self._no_body and not self._has_length:
            if final_length is not None:
                headers.append((b"content-length", str(final_length).encode()))
            elif self.head.http_version == "1.1":
                headers.append((b"transfer-encoding", b"chunked"))
                self._chunked_response = True
            else:
                self.keep_alive = False  # HTTP/1.0: the close ends the body
        if not self.keep_alive:
            headers.append((b"connection", b"close"))
        elif self.head.http_version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        headers.append((b"date", _DATE.header()))
        return response_head(self._status, headers, http_version=self.head.http_version)


async def _send_all(socket: trio.socket.SocketType, data: bytes) -> None:
    """`SocketStream.send_all` on its socket (its OSErrors are the caller's broken stream)."""
    sent = await socket.send(data)
    if sent < len(data):  # the kernel's buffer is full: the rest as it drains
        with memoryview(data) as view:
            while sent < len(data):
                sent += await socket.send(view[sent:])


def _addresses(
    stream: trio.abc.Stream,
) -> tuple[tuple[str, int] | None, tuple[str, int] | None, str]:
    """(client, server, scheme) for the ASGI scope."""
    scheme = "http"
    inner = stream
    if isinstance(stream, trio.SSLStream):
        scheme = "https"
        inner = stream.transport_stream
    if not isinstance(inner, trio.SocketStream):
        return None, None, scheme
    try:
        peer = inner.socket.getpeername()
        local = inner.socket.getsockname()
    except OSError:
        return None, None, scheme
    return (peer[0], peer[1]), (local[0], local[1]), scheme


class _Server:
    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config
        self.draining = False
        self.connections: set[_Connection] = set()
        self.all_closed = trio.Event()

    async def handle(self, stream: trio.abc.Stream) -> None:
        if isinstance(stream, trio.SocketStream):
            stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        connection = _Connection(self, stream)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            if self.draining and not self.connections:
                self.all_closed.set()

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
                reason = connection.overdue(now)
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
    host, port = parse_listen(config.listen)
    server = _Server(app, config)
    # Bound before the app starts: a port in use fails fast and as a plain OSError (raised inside
    # the lifespan's nursery it would come out wrapped in an ExceptionGroup).
    listeners: list[Any] = list(
        await trio.open_tcp_listeners(port, host=host, backlog=config.backlog)
    )
    scheme = "http"
    if config.ssl_context is not None:
        scheme = "https"
        listeners = [
            trio.SSLListener(listener, config.ssl_context, https_compatible=True)
            for listener in listeners
        ]
    urls = [_url(scheme, listener) for listener in listeners]
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


def ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server TLS context for HTTP/1.1 (ALPN advertises http/1.1 only)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile or None)
    context.set_alpn_protocols(["http/1.1"])
    return context
