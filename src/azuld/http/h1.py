"""HTTP/1.1 framing without I/O: parse a request head, decode a chunked body, build a response
head. `azuld.http.server` does the reading and writing.

Strict where ambiguity would be dangerous (request smuggling: both `Content-Length` and
`Transfer-Encoding`, differing lengths, codings other than `chunked`), plain elsewhere. Every
refusal is a `ProtocolError` carrying the status to answer with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

__all__ = [
    "MAX_HEAD_BYTES",
    "ChunkedDecoder",
    "ProtocolError",
    "RequestHead",
    "parse_request_head",
    "response_head",
]

# The whole request line plus headers; larger heads get 431.
MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE_BYTES = 1024

_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII: no spaces, no controls, no raw UTF-8
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Extensions are ignored, but control characters in them (a bare CR, NUL) are refused, as in
# header values: proxies that read them differently could be smuggled a request.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(;[\t\x20-\x7e\x80-\xff]*)?")
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class ProtocolError(Exception):
    """The request cannot be served as sent; answer `status` with this message and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: bytes
    http_version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order
    content_length: int | None  # None: chunked, or no body
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def parse_request_head(head: bytes) -> RequestHead:
    """Parse everything before the blank line (`head` excludes the final CRLF CRLF).

    Raises:
        ProtocolError: malformed (400), unsupported version (505) or coding (501).
    """
    lines = head.split(b"\r\n")
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

    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    transfer_encoding: bytes | None = None
    connection = b""
    expect_continue = False
    for line in lines[1:]:
        match = _HEADER.fullmatch(line)
        if match is None or _BAD_VALUE.search(match[2]):
            raise ProtocolError(400, "malformed header line (or a line folded onto the next)")
        name = match[1].lower()
        value = match[2]
        headers.append((name, value))
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

    chunked = False
    if transfer_encoding is not None:
        if content_length is not None:
            raise ProtocolError(400, "both Content-Length and Transfer-Encoding: send one")
        if transfer_encoding != b"chunked" or http_version == "1.0":
            raise ProtocolError(501, "only 'Transfer-Encoding: chunked' is supported")
        chunked = True
    tokens = {token.strip() for token in connection.split(b",")}
    # HTTP/1.1 keeps connections open unless told not to; HTTP/1.0 only when asked.
    keep_alive = b"close" not in tokens if http_version == "1.1" else b"keep-alive" in tokens
    return RequestHead(
        method=method.decode("ascii"),
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
    its trailers."""

    def __init__(self) -> None:
        self.done = False
        self._remaining = 0  # bytes of the current chunk still to read
        self._need_crlf = False  # the CRLF after a chunk's data
        self._in_trailers = False

    def feed(self, buffer: bytearray) -> bytes:
        """Raises:
        ProtocolError: malformed chunk framing (400)."""
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
            del buffer[: end + 2]
            if self._need_crlf:
                if line:
                    raise ProtocolError(400, "chunked body: chunk data longer than its size")
                self._need_crlf = False
            elif self._in_trailers:
                if not line:
                    self.done = True
            else:
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise ProtocolError(400, "chunked body: malformed chunk size")
                self._remaining = int(match[1], 16)
                if self._remaining == 0:
                    self._in_trailers = True
        return b"".join(out)


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
    reason = _REASONS.get(status, b"")
    lines = [b"HTTP/%s %d %s" % (http_version.encode(), status, reason)]
    for name, value in headers:
        if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value:
            raise ValueError(f"header {name!r} contains CR or LF")
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)
