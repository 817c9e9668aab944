"""HTTP/1.1 framing without I/O: parse a request head, decode a chunked body, build a response
head. `azuld.http.server` does the reading and writing.

Strict where ambiguity would be dangerous (request smuggling: both `Content-Length` and
`Transfer-Encoding`, differing lengths, codings other than `chunked`), plain elsewhere. Every
refusal is a `ProtocolError` carrying the status to answer with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from itertools import chain
from typing import NamedTuple

__all__ = [
    "BARE_LF",
    "HEAD_TOO_LARGE",
    "MAX_HEAD_BYTES",
    "Body",
    "ChunkedDecoder",
    "Head",
    "ProtocolError",
    "RequestFramer",
    "RequestHead",
    "find_head_end",
    "parse_request_head",
    "response_head",
]

# The whole request line plus headers; larger heads get 431.
MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE_BYTES = 1024
# RFC 9112 2.2 lets a server take a bare LF as a line end; azuld refuses it, as it refuses every
# other framing a proxy in front could read differently.
BARE_LF = "bare LF in the request head: every line must end with CRLF"
HEAD_TOO_LARGE = "request head (request line and headers) over 64 KiB"

_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: no spaces, no controls, no raw UTF-8
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Extensions are ignored, but control characters in them (a bare CR, NUL) are refused, as in
# header values: proxies that read them differently could be smuggled a request.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(;[\t\x20-\x7e\x80-\xff]*)?")
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}

# The common request in two C-level passes instead of a regex per line: a request line that is
# well-formed, then header lines that all are (`_HEADER` lines whose value has no `_BAD_VALUE`
# character, each followed by CRLF). Anything else takes the line-by-line path, which finds the
# exact error to answer with.
_TCHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TCHARS + rb") ([\x21-\x7e]+) HTTP/1\.([01])(?=\r\n|\Z)")
_VALUE_CHAR = rb"[^\x00-\x08\x0a-\x1f\x7f]"
_VISIBLE_VALUE_CHAR = rb"[^\x00-\x08\x0a-\x1f\x7f \t]"
_HEADER_BLOCK = re.compile(rb"(?:" + _TCHARS + rb":" + _VALUE_CHAR + rb"*\r\n)*")
# (name, value without the spaces and tabs around it); greedy, then back to the last visible
# character, which is cheaper than a lazy value.
_HEADER_LINE = re.compile(
    rb"("
    + _TCHARS
    + rb"):[ \t]*((?:"
    + _VALUE_CHAR
    + rb"*"
    + _VISIBLE_VALUE_CHAR
    + rb")?)[ \t]*\r\n"
)
# The headers that frame the request (and `Host`, checked), of which every other header is
# skipped at once.
_FRAMING_HEADERS = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"expect", b"host"}
)
# RFC 9112 3.2: `uri-host [":" port]`, a registered name, IPv4 address or IP literal; empty when
# the target has no authority.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+;=]*)(?::[0-9]*)?")
# The trailer section (RFC 9112 7.1.2): header lines, at most as much as a request head, and
# none of the fields that frame a message (RFC 9110 6.5.1).
_MAX_TRAILER_BYTES = MAX_HEAD_BYTES
_FRAMING_TRAILERS = frozenset({b"content-length", b"transfer-encoding"})
# Status lines by (version, status): built once each.
_STATUS_LINES: dict[tuple[str, int], bytes] = {}


class ProtocolError(Exception):
    """The request cannot be served as sent; answer `status` with this message and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestHead(NamedTuple):  # a tuple: built per request, at a third of a frozen dataclass
    method: str
    target: bytes
    http_version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order
    content_length: int | None  # None: chunked, or no body
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def find_head_end(buffer: bytes | bytearray) -> int:
    """Where the request head at the front of `buffer` ends (the index of its CRLF CRLF), or -1
    while it may still be arriving. Stray CRLFs before it are the caller's to drop first.

    Raises:
        ProtocolError: over `MAX_HEAD_BYTES` (431), or its lines end with a bare LF (400: it would
            never end with CRLF CRLF).
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise ProtocolError(431, HEAD_TOO_LARGE)
        if buffer.count(b"\n") > buffer.count(b"\r\n"):
            raise ProtocolError(400, BARE_LF)
    elif end > MAX_HEAD_BYTES:
        raise ProtocolError(431, HEAD_TOO_LARGE)
    return end


def parse_request_head(head: bytes) -> RequestHead:
    """Parse everything before the blank line (`head` excludes the final CRLF CRLF).

    Raises:
        ProtocolError: malformed (400), unsupported version (505) or coding (501).
    """
    line = _REQUEST_LINE.match(head)
    if line is not None:
        # The header lines after the request line's CRLF, each with its CRLF.
        block = head[line.end() + 2 :] + b"\r\n" if line.end() < len(head) else b""
        if _HEADER_BLOCK.fullmatch(block):
            method = line[1].decode("ascii")
            http_version = "1.1" if line[3] == b"1" else "1.0"
            return _interpret(method, line[2], http_version, _HEADER_LINE.findall(block))
    return _parse_line_by_line(head)


def _parse_line_by_line(head: bytes) -> RequestHead:
    """`parse_request_head` for any head, with the error the first bad line deserves."""
    lines = head.split(b"\r\n")
    if any(b"\n" in line for line in lines):
        raise ProtocolError(400, BARE_LF)
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise ProtocolError(400, "malformed request line: expected 'METHOD target HTTP/1.1'")
    method, target, version = parts
    if not _METHOD.fullmatch(method) or not _TARGET.fullmatch(target):
        raise ProtocolError(400, "malformed request line: bad method or target characters")
    if version == b"HTTP/1.1":
        http_version = "1.1"
    elif version == b"HTTP/1.0":
        http_version = "1.0"
    elif version.startswith(b"HTTP/"):
        raise ProtocolError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    else:
        raise ProtocolError(400, "malformed request line: no HTTP version")
    return _interpret(method.decode("ascii"), target, http_version, _checked_lines(lines[1:]))


def _checked_lines(lines: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(name, value) of each line, refusing the first malformed one when the reading reaches it
    (so the errors come in line order, whatever they are)."""
    for line in lines:
        match = _HEADER.fullmatch(line)
        if match is None or _BAD_VALUE.search(match[2]):
            raise ProtocolError(400, "malformed header line (or a line folded onto the next)")
        yield match[1], match[2]


def _interpret(
    method: str, target: bytes, http_version: str, lines: Iterable[tuple[bytes, bytes]]
) -> RequestHead:
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    transfer_encoding: bytes | None = None
    connection = b""
    expect_continue = False
    host: bytes | None = None
    for raw_name, value in lines:
        name = raw_name.lower()
        headers.append((name, value))
        if name not in _FRAMING_HEADERS:
            continue
        if name == b"content-length":
            if not value.isdigit() or len(value) > 18:
                raise ProtocolError(400, "Content-Length must be a non-negative integer")
            length = int(value)
            if content_length is not None and content_length != length:
                raise ProtocolError(400, "conflicting Content-Length headers")
            content_length = length
        elif name == b"transfer-encoding":
            transfer_encoding = value.lower() if transfer_encoding is None else b"repeated"
        elif name == b"connection":
            connection = connection + b"," + value.lower() if connection else value.lower()
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise ProtocolError(417, "only 'Expect: 100-continue' is supported")
            expect_continue = True
        elif name == b"host":
            if host is not None:
                raise ProtocolError(400, "more than one Host header")
            if not _HOST.fullmatch(value):
                raise ProtocolError(
                    400, f"invalid Host header: {value.decode('ascii', 'backslashreplace')!r}"
                )
            host = value
    if host is None and http_version == "1.1":  # RFC 9112 3.2
        raise ProtocolError(400, "an HTTP/1.1 request needs a Host header")

    chunked = False
    if transfer_encoding is not None:
        if content_length is not None:
            raise ProtocolError(400, "both Content-Length and Transfer-Encoding: send one")
        if transfer_encoding != b"chunked" or http_version == "1.0":
            raise ProtocolError(501, "only 'Transfer-Encoding: chunked' is supported")
        chunked = True
    # HTTP/1.1 keeps connections open unless told not to; HTTP/1.0 only when asked.
    if connection:
        tokens = {token.strip() for token in connection.split(b",")}
        keep_alive = b"close" not in tokens if http_version == "1.1" else b"keep-alive" in tokens
    else:
        keep_alive = http_version == "1.1"
    return RequestHead(
        method=method,
        target=target,
        http_version=http_version,
        headers=headers,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        # RFC 9110 10.1.1: ignored from HTTP/1.0 clients, which would take a 100 as the answer.
        expect_continue=expect_continue
        and http_version == "1.1"
        and (chunked or bool(content_length)),
    )


class ChunkedDecoder:
    """Incremental decoder of a chunked request body. `feed` consumes what it can from the front
    of `buffer` and returns the data decoded so far; `done` turns true after the last chunk and
    its trailers. A line it refuses stays at the front of `buffer`."""

    def __init__(self) -> None:
        self.done = False
        self._remaining = 0  # bytes of the current chunk still to read
        self._need_crlf = False  # the CRLF after a chunk's data
        self._in_trailers = False
        self._trailer_bytes = 0

    def feed(self, buffer: bytearray) -> bytes:
        """Raises:
        ProtocolError: malformed chunk framing or trailers (400), trailers over 64 KiB (431)."""
        out: list[bytes] = []
        while not self.done:
            if self._remaining:
                taken = bytes(buffer[: self._remaining])
                if not taken:
                    break
                del buffer[: len(taken)]
                self._remaining -= len(taken)
                out.append(taken)
                if self._remaining:
                    break
                self._need_crlf = True
                continue
            end = buffer.find(b"\r\n")
            # The same limit whether the line arrives whole or in pieces.
            if (len(buffer) if end < 0 else end) > _MAX_CHUNK_LINE_BYTES:
                raise ProtocolError(400, "chunked body: chunk header line too long")
            if end < 0:
                break
            line = bytes(buffer[:end])
            if self._need_crlf:
                if line:
                    raise ProtocolError(400, "chunked body: chunk data longer than its size")
                self._need_crlf = False
            elif self._in_trailers:
                self._trailer_bytes += end + 2
                if self._trailer_bytes > _MAX_TRAILER_BYTES:
                    raise ProtocolError(431, "chunked body: trailer section over 64 KiB")
                if not line:
                    self.done = True
                else:
                    _check_trailer(line)
            else:
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise ProtocolError(400, "chunked body: malformed chunk size")
                self._remaining = int(match[1], 16)
                if self._remaining == 0:
                    self._in_trailers = True
            del buffer[: end + 2]
        return b"".join(out)


def _check_trailer(line: bytes) -> None:
    """A trailer line is a header line, and not one that frames the message.

    Raises:
        ProtocolError: it is not (400).
    """
    match = _HEADER.fullmatch(line)
    if match is None or _BAD_VALUE.search(match[2]):
        raise ProtocolError(400, "chunked body: malformed trailer line")
    if match[1].lower() in _FRAMING_TRAILERS:
        raise ProtocolError(400, f"chunked body: {match[1].decode()} cannot be a trailer")


class Head(NamedTuple):
    """A request head, and the bytes it took on the wire (stray CRLFs before it not included)."""

    head: RequestHead
    raw: bytes


class Body(NamedTuple):
    """A piece of a request body (`data`), the bytes it took on the wire (`raw`: with the chunk
    framing), and whether the request ends with it."""

    data: bytes
    raw: bytes
    end: bool


class RequestFramer:
    """The requests in a connection's bytes, split as azuld's server splits them: stray CRLFs
    dropped, each head found by `find_head_end` and read by `parse_request_head`, each body
    framed by its Content-Length or by a `ChunkedDecoder`, nothing read after a request that
    closes the connection. Without I/O: `feed` bytes, then take `next_event` until it says more
    are needed. The hypercorn front uses it to see every request before hypercorn does, and the
    tests compare it with other parsers."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False  # a request that closes the connection was read whole
        self._head: RequestHead | None = None  # the request whose body is being read
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self._failure: ProtocolError | None = None

    @property
    def reading_head(self) -> bool:
        """Between requests: what comes next is a request head (or stray CRLFs)."""
        return self._head is None and not self.closed and self._failure is None

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_event(self) -> Head | Body | None:
        """The next head or piece of body, or None until more bytes are fed (or for good, once
        `closed`). A request without a body is a `Head` and then an empty, final `Body`.

        Raises:
            ProtocolError: the bytes cannot be a request (the framer is then of no further use).
        """
        buffer = self.buffer
        if self._failure is not None:
            raise self._failure
        if self.closed:
            return None
        if self._head is None:
            while buffer.startswith(b"\r\n"):
                del buffer[:2]
            end = find_head_end(buffer)
            if end < 0:
                return None
            raw = bytes(buffer[: end + 4])
            del buffer[: end + 4]
            head = parse_request_head(raw[:end])
            self._head = head
            self._remaining = head.content_length or 0
            self._decoder = ChunkedDecoder() if head.chunked else None
            return Head(head, raw)
        if self._decoder is not None:
            before = bytes(buffer)
            try:
                data = self._decoder.feed(buffer)
            except ProtocolError as error:
                raw = before[: len(before) - len(buffer)]
                if not raw:
                    raise
                # What came before the refused line, for a caller that forwards the wire as
                # far as it was read; its data is not told apart (the request fails anyway).
                self._failure = error
                return Body(b"", raw, False)
            raw = before[: len(before) - len(buffer)]
            if not raw:
                return None
            return self._body(data, raw, self._decoder.done)
        if self._remaining and not buffer:
            return None
        data = bytes(buffer[: self._remaining])
        del buffer[: len(data)]
        self._remaining -= len(data)
        return self._body(data, data, not self._remaining)

    def _body(self, data: bytes, raw: bytes, end: bool) -> Body:
        if end:
            assert self._head is not None
            self.closed = not self._head.keep_alive
            self._head = self._decoder = None
        return Body(data, raw, end)


def response_head(
    status: int,
    headers: list[tuple[bytes, bytes]],
    *,
    http_version: str = "1.1",
) -> bytes:
    """The status line and headers, ending with the blank line. Header names and values go out
    as given (ASGI apps hand over bytes); CR or LF in them would split the response, so they are
    refused.

    Raises:
        ValueError: a header name or value contains CR or LF.
    """
    status_line = _STATUS_LINES.get((http_version, status))
    if status_line is None:
        reason = _REASONS.get(status, b"")
        status_line = b"HTTP/%s %d %s\r\n" % (http_version.encode(), status, reason)
        if len(_STATUS_LINES) < 1024:  # statuses are a small set; apps could invent more
            _STATUS_LINES[(http_version, status)] = status_line
    # One scan of every name and value for CR or LF, then one join.
    every_part = b"".join(chain.from_iterable(headers))
    if b"\r" in every_part or b"\n" in every_part:
        for name, value in headers:
            if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value:
                raise ValueError(f"header {name!r} contains CR or LF")
    lines = [name + b": " + value + b"\r\n" for name, value in headers]
    return status_line + b"".join(lines) + b"\r\n"
