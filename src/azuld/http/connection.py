"""One client connection of azuld's HTTP/1.1 server: the socket, a reader task filling `buffer`,
bounded writes, and the next request's head.

The connection knows nothing of ASGI: `azuld.http.server` reads heads from it and runs each request
as an `azuld.http.exchange.Exchange` over it. Timeouts are not cancel scopes here: each wait
records when it began (`idle_since`, `head_since`, `send_since`) and the server's sweeper closes
the connections that waited too long.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, Protocol

import msgspec
import trio

from azuld.http.h1 import (
    ProtocolError,
    RequestHead,
    find_head_end,
    parse_request_head,
    response_head,
)
from azuld.http.rejections import REJECTIONS, Rejection
from azuld.models.responses import ErrorBody

__all__ = ["DATE", "Connection", "error_body"]

# The most one read takes (a big body arrives in pieces of this size when the app keeps up).
_RECEIVE_BYTES = 256 * 1024
# The reader stops reading a connection once this much is waiting (a big upload, pipelining).
_READ_AHEAD_BYTES = 256 * 1024


class _Scratch(threading.local):
    """Where reads land before they are appended to a connection's buffer: one for all the
    connections a thread's trio loop runs (a read is copied out before the next can start), so
    that a read allocates nothing, whatever its size."""

    def __init__(self) -> None:
        self.buffer = bytearray(_RECEIVE_BYTES)


_SCRATCH = _Scratch()


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


DATE = _Date()


def error_body(status: int, title: str, detail: str) -> bytes:
    return msgspec.json.encode(
        ErrorBody(status=str(status), title=title, detail=detail, error_enum="ErrorStringEnumUnset")
    )


class _InFlight(Protocol):
    """The request being served (an `Exchange`): told when the client hangs up."""

    def finish(self) -> None: ...


class Connection:
    """One client connection: a reader task filling `buffer`; requests are served in turn by
    `run`'s `serve_requests`."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.peer_closed = False  # EOF or a broken stream: nothing more will arrive
        self.broken = False  # a write failed: nothing more can be sent
        self.in_flight: _InFlight | None = None
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

    async def run(self, serve_requests: Callable[[Connection], Awaitable[None]]) -> None:
        """Read in a task of its own while `serve_requests(self)` serves the requests; then
        close. Cancelled (through `scope`) by the sweeper or a drain."""
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_loop)
                    try:
                        await serve_requests(self)
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _read_loop(self) -> None:
        fd = self._socket.fileno() if self._socket is not None else -1
        buffer = self.buffer
        try:
            with memoryview(_SCRATCH.buffer) as scratch:
                while True:
                    room = _READ_AHEAD_BYTES - len(buffer)
                    if room <= 0:
                        self._room = trio.Event()
                        await self._room.wait()
                        continue
                    if fd >= 0:
                        # Wait, then read: a read tried first (as `recv` does) would, after
                        # every request, only find the socket empty (the client awaits the
                        # response).
                        await trio.lowlevel.wait_readable(fd)
                        try:
                            received = os.readv(fd, (scratch[:room],))
                        except BlockingIOError:
                            continue
                        if not received:
                            break
                        buffer += scratch[:received]
                    else:
                        data = await self.stream.receive_some(_RECEIVE_BYTES)
                        if not data:
                            break
                        buffer += data
                    self._wake_data_waiters()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # reset, or a failed TLS handshake: the same as a hang-up here
        finally:
            self.peer_closed = True
            self._wake_data_waiters()
            if self.in_flight is not None:
                self.in_flight.finish()

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

    async def read_head(self) -> RequestHead | None:
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
        try:
            end = find_head_end(buffer)
            if end < 0:  # usually the whole head arrives in one read
                self.head_since = trio.current_time()
                try:
                    while end < 0:
                        if self.peer_closed:
                            return None
                        await self.wait_for_data()
                        while buffer.startswith(b"\r\n"):
                            del buffer[:2]
                        end = find_head_end(buffer)
                finally:
                    self.head_since = None
        except ProtocolError as error:
            await self.refuse(error.status, error.message)
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
        """Answer a request that never reached the app (and log it), then the connection
        closes."""
        client = self.client[0] if self.client else "-"
        REJECTIONS.record(
            Rejection("-", "-", status, detail, client, before_the_app=True), trio.current_time()
        )
        body = error_body(status, "bad request" if status == 400 else "refused", detail)
        head = response_head(
            status,
            [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"date", DATE.header()),
            ],
        )
        await self.write(head + body)


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
