"""The HTTP clients of the load generator (`loadgen.py`), all with the same `request()` interface.

`H11Client` (h11 over a trio socket, the default: a fraction of httpx's CPU per request),
`RawClient` and `HttpxClient` (`httpx.AsyncClient`). The harness measures them so the report can
say whether the client was the bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence

import h11
import trio

__all__ = ["Client", "H11Client", "HTTPError", "HttpxClient", "RawClient", "Reply", "make_client"]


class HTTPError(Exception):
    pass


Reply = tuple[int, dict[str, str], bytes]


class H11Client:
    """One keep-alive HTTP/1.1 connection, h11 over a trio TCP stream (TCP_NODELAY is trio's
    default). Reconnects when the server closes the connection."""

    def __init__(self, url: str) -> None:
        hostport = url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        self._host, self._port = host, int(port)
        self._host_header = hostport.encode()
        self._stream: trio.SocketStream | None = None
        self._conn: h11.Connection | None = None

    async def _connect(self) -> tuple[trio.SocketStream, h11.Connection]:
        if self._stream is not None:
            await self._stream.aclose()
        self._stream = await trio.open_tcp_stream(self._host, self._port)
        self._conn = h11.Connection(h11.CLIENT)
        return self._stream, self._conn

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        stream, conn = self._stream, self._conn
        if stream is None or conn is None or conn.our_state is not h11.IDLE:
            stream, conn = await self._connect()
        head = [(b"host", self._host_header)]
        head.extend((k.encode(), v.encode()) for k, v in headers)
        if method != "GET" or body:
            head.append((b"content-length", str(len(body)).encode()))
        data = conn.send(h11.Request(method=method, target=target, headers=head)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        status = 0
        reply_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(262144))
            elif isinstance(event, h11.Response):
                status = event.status_code
                reply_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                self._conn = None
                raise HTTPError("connection closed mid-response")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self._conn = None  # MUST_CLOSE: reconnect next time
        return status, reply_headers, b"".join(chunks)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None


class RawClient:
    """One keep-alive HTTP/1.1 connection with the request written and the reply parsed by hand
    (Content-Length or chunked bodies): the cheapest client here, for when h11's CPU matters."""

    def __init__(self, url: str) -> None:
        hostport = url.split("://", 1)[1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        self._host, self._port = host, int(port)
        self._hostport = hostport
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()

    async def _receive(self, stream: trio.SocketStream) -> None:
        chunk = await stream.receive_some(262144)
        if not chunk:
            self._stream = None
            raise HTTPError("connection closed mid-response")
        self._buffer += chunk

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        stream = self._stream
        if stream is None:
            stream = self._stream = await trio.open_tcp_stream(self._host, self._port)
            self._buffer = bytearray()
        head = f"{method} {target} HTTP/1.1\r\nhost: {self._hostport}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers)
        if method != "GET" or body:
            head += f"content-length: {len(body)}\r\n"
        await stream.send_all(head.encode() + b"\r\n" + body)
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            await self._receive(stream)
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        status = int(lines[0].split(" ", 2)[1])
        reply_headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            reply_headers[name.strip().lower()] = value.strip()
        if "content-length" in reply_headers:
            size = int(reply_headers["content-length"])
            while len(buffer) < size:
                await self._receive(stream)
            payload = bytes(buffer[:size])
            del buffer[:size]
        elif reply_headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                while (eol := buffer.find(b"\r\n")) < 0:
                    await self._receive(stream)
                size = int(bytes(buffer[:eol]).split(b";")[0], 16)
                while len(buffer) < eol + 2 + size + 2:
                    await self._receive(stream)
                parts.append(bytes(buffer[eol + 2 : eol + 2 + size]))
                del buffer[: eol + 2 + size + 2]
                if size == 0:
                    break
            payload = b"".join(parts)
        else:
            raise HTTPError(f"reply without a length: {reply_headers}")
        if reply_headers.get("connection", "").lower() == "close":
            await stream.aclose()
            self._stream = None
        return status, reply_headers, payload

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None


class HttpxClient:
    """The same interface over `httpx.AsyncClient` (one pooled client per worker)."""

    def __init__(self, url: str) -> None:
        import httpx

        self._client = httpx.AsyncClient(base_url=url, timeout=120)

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        response = await self._client.request(
            method, target, content=body or None, headers=list(headers)
        )
        return response.status_code, dict(response.headers), response.content

    async def aclose(self) -> None:
        await self._client.aclose()


Client = RawClient | H11Client | HttpxClient


def make_client(kind: str, url: str) -> Client:
    if kind == "raw":
        return RawClient(url)
    if kind == "h11":
        return H11Client(url)
    if kind == "httpx":
        return HttpxClient(url)
    raise ValueError(f"unknown client {kind!r} (raw, h11 or httpx)")
