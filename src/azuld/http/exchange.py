"""One request/response exchange on a connection of azuld's HTTP/1.1 server: the ASGI `receive`
and `send` the app is given, and the framing of the response (length, chunked, keep-alive).

`Exchange.run` calls the app once and says whether the connection can carry the next request:
not after a response cut short, a body left unread (after a short linger), a malformed body or
`Connection: close`. An app that fails before its reply started gets a 500 written for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import trio

from azuld.http.connection import DATE, Connection, error_body
from azuld.http.h1 import ChunkedDecoder, ProtocolError, RequestHead, response_head
from azuld.http.rejections import REJECTIONS, Rejection

__all__ = ["ASGIApp", "Exchange", "Host", "Message"]

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

# After a response sent before its request body was read, how much of the body is read and
# dropped (so the client sees the response, not a reset) before the connection closes.
_LINGER_BYTES = 4 * 1024 * 1024
_LINGER_SECONDS = 2.0
_NO_BODY_STATUSES = frozenset({204, 304})
_HOP_BY_HOP = frozenset({b"connection", b"transfer-encoding", b"keep-alive"})

log = logging.getLogger(__name__)


class Host(Protocol):
    """What an exchange needs of the server it runs in."""

    @property
    def app(self) -> ASGIApp: ...

    @property
    def draining(self) -> bool: ...


class Exchange:
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
        "host",
        "keep_alive",
        "response_complete",
        "response_started",
    )

    def __init__(self, host: Host, connection: Connection, head: RequestHead) -> None:
        self.host = host
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
            await self.host.app(scope, self.receive, self.send)
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
                await self._refuse_body(self.body_error)
            else:
                await self._send_error(500, "internal error", "the error was logged")
            return False
        if self.body_error is not None and not self.response_started:
            await self._refuse_body(self.body_error)
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
        return self.keep_alive and not self.host.draining

    async def _refuse_body(self, error: ProtocolError) -> None:
        """Answer a request whose body was malformed (and log it)."""
        head, connection = self.head, self.connection
        user_agent = next((v for k, v in head.headers if k == b"user-agent"), b"-")
        REJECTIONS.record(
            Rejection(
                head.method,
                head.target.partition(b"?")[0].decode("ascii"),
                error.status,
                error.message,
                connection.client[0] if connection.client else "-",
                user_agent.decode("latin-1"),
                before_the_app=True,
            ),
            trio.current_time(),
        )
        await self._send_error(error.status, "bad request", error.message)

    async def _send_error(self, status: int, title: str, detail: str) -> None:
        self.keep_alive = False
        body = error_body(status, title, detail)
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
                    if take == len(buffer):
                        data = bytes(buffer)  # one copy (a slice, then bytes of it, are two)
                    else:
                        with memoryview(buffer) as view:
                            data = bytes(view[:take])
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
        if self.host.draining:
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
        headers.append((b"date", DATE.header()))
        return response_head(self._status, headers, http_version=self.head.http_version)
