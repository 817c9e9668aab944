"""The SDK's HTTP/1.1 client: h11 over trio streams, with one pool of keep-alive connections
shared by every task of the plugin process.

Why not httpx: a trivial job (fetch, download, status) cost the plugin process 1.9-3.1 ms of CPU
through `httpx.AsyncClient`, most of it httpx's and httpcore's per-request machinery (httpcore's
pool also polls every idle connection on each request, so the cost grew with the workers); the
same three requests cost 0.3-0.6 ms with h11 driven directly (benchmarks/README.md, "The plugin
SDK"). h11 does the parsing (Content-Length, chunked and close-delimited bodies, 1xx replies,
keep-alive rules); this module does the connections and the timeouts.

One request at a time per connection. An idle connection is reused most-recently-used first;
one idle for `MAX_IDLE_SECONDS` is closed instead. A request sent on a reused connection that
the server had already closed (not one byte of reply came back) is sent again, once, on a new
connection: that is the usual race with a server's keep-alive timeout. Every wait is a cancel
scope: connecting within `connect_timeout_seconds`, and at most `wait_seconds` (per request)
without the server sending anything. A request that fails or is cancelled part-way closes its
connection; nothing half-read goes back to the pool.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["Http1Client", "HttpFailure", "HttpReply"]

# The longest an idle connection is kept for reuse (servers close idle ones: azuld after 75 s,
# hypercorn after 5 s; a reuse that races with that is retried once anyway).
MAX_IDLE_SECONDS = 30.0
RECEIVE_BYTES = 256 * 1024

StreamOpener = Callable[[], Awaitable[trio.abc.Stream]]


class HttpFailure(Exception):
    """No complete reply: the connection could not be made, was lost or timed out, or what
    came back was not HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: dict[str, str]  # names lower-case; a repeated header keeps its last value
    body: bytes


class _Stale(Exception):
    """A reused connection gave not one byte of reply: the server had closed it."""


class _Connection:
    __slots__ = ("http", "idle_since", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.http = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0


class Http1Client:
    """HTTP/1.1 requests to one server (`base_url`: scheme, host, port and an optional path
    prefix), over a pool of keep-alive connections."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        connect_timeout_seconds: float = 10.0,
        max_idle_connections: int = 64,
        ssl_context: ssl.SSLContext | None = None,
        open_stream: StreamOpener | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = parts.scheme == "https"
        self._prefix = parts.path.rstrip("/")
        self._ssl_context = ssl_context
        host = parts.netloc.rpartition("@")[2]  # never the userinfo
        self._headers = [(b"host", host.encode()), (b"accept", b"*/*")] + [
            (name.encode(), value.encode()) for name, value in headers
        ]
        self._connect_timeout = connect_timeout_seconds
        self._max_idle = max_idle_connections
        self._open_stream = open_stream or self._open_tcp
        self._idle: list[_Connection] = []
        self._closed = False

    async def _open_tcp(self) -> trio.abc.Stream:
        if self._tls:
            context = self._ssl_context or ssl.create_default_context()
            return await trio.open_ssl_over_tcp_stream(
                self._host, self._port, ssl_context=context, https_compatible=True
            )
        return await trio.open_tcp_stream(self._host, self._port)

    async def _connect(self) -> _Connection:
        try:
            with trio.fail_after(self._connect_timeout):
                return _Connection(await self._open_stream())
        except trio.TooSlowError:
            raise HttpFailure(f"no connection within {self._connect_timeout:g} s") from None
        except OSError as exc:
            raise HttpFailure(f"cannot connect: {_reason(exc)}") from exc

    async def _reusable(self) -> _Connection | None:
        now = trio.current_time()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < MAX_IDLE_SECONDS:
                return connection
            await _aclose(connection)
        return None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        wait_seconds: float = 60.0,
    ) -> HttpReply:
        """Send one request (`path` after the base URL's prefix, query string included) and
        read the whole reply.

        Cancellation: the connection in use is closed; the request may or may not have reached
        the server.

        Raises:
            HttpFailure: no connection, the connection was lost, `wait_seconds` passed without
                the server sending anything, or the reply was not HTTP/1.1.
        """
        if self._closed:
            raise HttpFailure("the client is closed")
        head = self._headers + [(name.encode(), value.encode()) for name, value in headers]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            head.append((b"content-length", b"%d" % len(body or b"")))
        target = (self._prefix + path).encode()
        request = h11.Request(method=method, target=target, headers=head)
        connection = await self._reusable()
        if connection is not None:
            try:
                return await self._exchange(connection, request, body, wait_seconds, reused=True)
            except _Stale:
                pass  # the server had closed it: once more on a new connection
        connection = await self._connect()
        try:
            return await self._exchange(connection, request, body, wait_seconds, reused=False)
        except _Stale:  # pragma: no cover - only raised for reused connections
            raise HttpFailure("connection closed before any reply") from None

    async def _exchange(
        self,
        connection: _Connection,
        request: h11.Request,
        body: bytes | None,
        wait_seconds: float,
        *,
        reused: bool,
    ) -> HttpReply:
        http = connection.http
        reply: HttpReply | None = None
        try:
            with trio.CancelScope(deadline=trio.current_time() + wait_seconds) as scope:
                data = http.send(request) or b""
                if body:
                    data += http.send(h11.Data(data=body)) or b""
                data += http.send(h11.EndOfMessage()) or b""
                reply = await self._send_and_receive(connection, data, wait_seconds, scope, reused)
            if scope.cancelled_caught:
                raise HttpFailure(f"no reply for {wait_seconds:g} s")
        except h11.ProtocolError as exc:
            raise HttpFailure(f"not an HTTP/1.1 reply: {exc}") from exc
        finally:
            if reply is None:
                await _aclose(connection)
        if http.our_state is h11.DONE and http.their_state is h11.DONE and not self._closed:
            http.start_next_cycle()
            connection.idle_since = trio.current_time()
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                await _aclose(connection)
        else:
            await _aclose(connection)  # the server asked to close, or an HTTP/1.0 reply
        assert reply is not None
        return reply

    async def _send_and_receive(
        self,
        connection: _Connection,
        data: bytes,
        wait_seconds: float,
        scope: trio.CancelScope,
        reused: bool,
    ) -> HttpReply:
        http, stream = connection.http, connection.stream
        received = False
        try:
            await stream.send_all(data)
            status = 0
            headers: dict[str, str] = {}
            chunks: list[bytes] = []
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    chunk = await stream.receive_some(RECEIVE_BYTES)
                    if not chunk and not status:
                        if reused and not received:
                            raise _Stale
                        raise HttpFailure("connection closed without a reply")
                    received = True
                    http.receive_data(bytes(chunk))
                    scope.deadline = trio.current_time() + wait_seconds
                elif type(event) is h11.Response:
                    status = event.status_code
                    headers = {k.decode(): v.decode("latin-1") for k, v in event.headers}
                elif type(event) is h11.Data:
                    chunks.append(event.data)
                elif type(event) is h11.EndOfMessage:
                    return HttpReply(status, headers, b"".join(chunks))
                elif type(event) is h11.ConnectionClosed:
                    raise HttpFailure("connection closed mid-reply")
                # an InformationalResponse (1xx) is skipped
        except (trio.BrokenResourceError, OSError) as exc:
            if reused and not received:
                raise _Stale from exc
            raise HttpFailure(f"connection lost: {exc}") from exc

    async def aclose(self) -> None:
        """Close every idle connection; a request still running closes its own when done."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _aclose(connection)


def _reason(error: OSError) -> str:
    """Why a connection failed: trio's "all attempts to connect to ... failed" carries the
    attempts' errors as its cause (`Error connecting to (host, port): Connection refused`)."""
    cause = error.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        last = cause.exceptions[-1]
        if isinstance(last, OSError) and last.strerror:
            return last.strerror.rpartition(": ")[2]
        return str(last)
    return str(error)


async def _aclose(connection: _Connection) -> None:
    await trio.aclose_forcefully(connection.stream)
