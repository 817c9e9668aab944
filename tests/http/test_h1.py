"""HTTP/1.1 framing (azuld.http.h1): request heads, chunked bodies, response heads."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from azuld.http.h1 import (
    MAX_HEAD_BYTES,
    ChunkedDecoder,
    ProtocolError,
    RequestHead,
    parse_request_head,
    response_head,
)


def head(*lines: bytes) -> bytes:
    """A request head as `parse_request_head` takes it: no final blank line."""
    return b"\r\n".join(lines)


def refused(raw: bytes) -> int:
    with pytest.raises(ProtocolError) as caught:
        parse_request_head(raw)
    assert caught.value.message
    return caught.value.status


# -- request line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "method", "target", "version"),
    [
        (b"GET / HTTP/1.1", "GET", b"/", "1.1"),
        (b"GET / HTTP/1.0", "GET", b"/", "1.0"),
        (b"POST /api/v0/x?a=1&b=%20 HTTP/1.1", "POST", b"/api/v0/x?a=1&b=%20", "1.1"),
        (b"OPTIONS * HTTP/1.1", "OPTIONS", b"*", "1.1"),
        (b"GET http://h:1/p?q HTTP/1.1", "GET", b"http://h:1/p?q", "1.1"),
        (b"M-SEARCH / HTTP/1.1", "M-SEARCH", b"/", "1.1"),
    ],
)
def test_request_line(line: bytes, method: str, target: bytes, version: str) -> None:
    parsed = parse_request_head(head(line, b"Host: h"))
    assert (parsed.method, parsed.target, parsed.http_version) == (method, target, version)
    assert parsed.headers == [(b"host", b"h")]


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/1.2", 505),
        (b"GET / HTTP/0.9", 505),
        (b"GET / http/1.1", 400),
        (b"GET / FTP/1.1", 400),
        (b"GET /", 400),
        (b"GET", 400),
        (b"", 400),
        (b"GET  / HTTP/1.1", 400),  # two spaces
        (b"GET / HTTP/1.1 ", 400),  # trailing space
        (b"GET\t/ HTTP/1.1", 400),
        (b"G(T / HTTP/1.1", 400),  # not a token
        (b"GET /a b HTTP/1.1", 400),
        (b"GET /\x00 HTTP/1.1", 400),
        (b"GET /\xc3\xa9 HTTP/1.1", 400),  # raw UTF-8 in the target
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello on plain HTTP
    ],
)
def test_bad_request_line(line: bytes, status: int) -> None:
    assert refused(head(line, b"Host: h")) == status


# -- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"Host: example", (b"host", b"example")),
        (b"X-MiXeD-CaSe: Value Kept", (b"x-mixed-case", b"Value Kept")),
        (b"x-ows:   \t padded \t  ", (b"x-ows", b"padded")),
        (b"x-no-space:value", (b"x-no-space", b"value")),
        (b"x-empty:", (b"x-empty", b"")),
        (b"x-empty-ows:  \t ", (b"x-empty-ows", b"")),
        (b"x-inner-ws: a  \t b", (b"x-inner-ws", b"a  \t b")),
        (b"x-colons: a:b: c", (b"x-colons", b"a:b: c")),
        (b"x-obs-text: caf\xc3\xa9", (b"x-obs-text", b"caf\xc3\xa9")),
        (b"x-tokens!#$%&'*+-.^_`|~09: v", (b"x-tokens!#$%&'*+-.^_`|~09", b"v")),
    ],
)
def test_header_line(line: bytes, expected: tuple[bytes, bytes]) -> None:
    # HTTP/1.0: a request without `Host` is allowed there.
    assert parse_request_head(head(b"GET / HTTP/1.0", line)).headers == [expected]


def test_headers_keep_their_order_and_repeats() -> None:
    parsed = parse_request_head(
        head(b"GET / HTTP/1.1", b"Host: h", b"Accept: a", b"X-Dup: 1", b"accept: b", b"X-DUP: 2")
    )
    assert parsed.headers == [
        (b"host", b"h"),
        (b"accept", b"a"),
        (b"x-dup", b"1"),
        (b"accept", b"b"),
        (b"x-dup", b"2"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        b" folded: onto the previous line",  # obs-fold
        b"\tfolded",
        b"x-bare-lf: a\nb",
        b"x-bare-cr: a\rb",
        b"x-nul: a\x00b",
        b"x-ctl: a\x01b",
        b"x-del: a\x7fb",
        b"x-vt: a\x0bb",
        b"x-space-before-colon : v",
        b"x bad: v",
        b"x(bad): v",
        b"x\x00nul: v",
        b"caf\xc3\xa9: v",
        b": no name",
        b"no colon",
        b"",  # an empty line inside the head
    ],
)
def test_bad_header_line(line: bytes) -> None:
    assert refused(head(b"GET / HTTP/1.1", b"Host: h", line)) == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\nHost: h",
        b"GET / HTTP/1.1\r\nHost: h\nX-A: b",
        b"GET / HTTP/1.1\r\nX-A: b\n\r\nHost: h",
    ],
)
def test_bare_lf_is_named(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request_head(raw)
    assert (caught.value.status, caught.value.message) == (
        400,
        "bare LF in the request head: every line must end with CRLF",
    )


# -- Host (RFC 9112 3.2) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "lines", "message"),
    [
        (b"HTTP/1.1", [], "an HTTP/1.1 request needs a Host header"),
        (b"HTTP/1.1", [b"X-Host: h"], "an HTTP/1.1 request needs a Host header"),
        (b"HTTP/1.1", [b"Host: a", b"Host: b"], "more than one Host header"),
        (b"HTTP/1.1", [b"Host: a", b"host: a"], "more than one Host header"),
        (b"HTTP/1.0", [b"Host: a", b"Host: a"], "more than one Host header"),
        (b"HTTP/1.1", [b"Host: a b"], "invalid Host header: 'a b'"),
        (b"HTTP/1.1", [b"Host: a/b"], "invalid Host header: 'a/b'"),
        (b"HTTP/1.1", [b"Host: a@b"], "invalid Host header: 'a@b'"),
        (b"HTTP/1.1", [b"Host: a:b"], "invalid Host header: 'a:b'"),
        (b"HTTP/1.1", [b"Host: a, b"], "invalid Host header: 'a, b'"),
        (b"HTTP/1.1", [b"Host: [::1"], "invalid Host header: '[::1'"),
        (b"HTTP/1.1", [b"Host: caf\xc3\xa9"], "invalid Host header: 'caf\\\\xc3\\\\xa9'"),
    ],
)
def test_host_is_required_once(version: bytes, lines: list[bytes], message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request_head(head(b"GET / " + version, *lines))
    assert (caught.value.status, caught.value.message) == (400, message)


@pytest.mark.parametrize(
    "value",
    [b"example", b"example.com:8111", b"127.0.0.1", b"[::1]:80", b"[::1]", b"h:", b"x-y_z.~", b""],
)
def test_valid_hosts(value: bytes) -> None:
    parsed = parse_request_head(head(b"GET / HTTP/1.1", b"Host: " + value))
    assert parsed.headers == [(b"host", value)]


def test_http_1_0_needs_no_host() -> None:
    assert parse_request_head(b"GET / HTTP/1.0").headers == []


# -- bodies: Content-Length and Transfer-Encoding ---------------------------------------------


@pytest.mark.parametrize(
    ("lines", "content_length", "chunked"),
    [
        ([], None, False),
        ([b"Content-Length: 0"], 0, False),
        ([b"Content-Length: 12"], 12, False),
        ([b"content-length:  007 "], 7, False),
        ([b"Content-Length: 999999999999999999"], 999_999_999_999_999_999, False),  # 18 digits
        ([b"Content-Length: 5", b"Content-Length: 5"], 5, False),  # equal duplicates are fine
        ([b"Content-Length: 5", b"content-length: 05"], 5, False),
        ([b"Transfer-Encoding: chunked"], None, True),
        ([b"transfer-encoding: Chunked "], None, True),
    ],
)
def test_body_framing(lines: list[bytes], content_length: int | None, chunked: bool) -> None:
    parsed = parse_request_head(head(b"POST / HTTP/1.1", b"Host: h", *lines))
    assert (parsed.content_length, parsed.chunked) == (content_length, chunked)


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ([b"Content-Length: abc"], 400),
        ([b"Content-Length: -1"], 400),
        ([b"Content-Length: +1"], 400),
        ([b"Content-Length: 1.0"], 400),
        ([b"Content-Length: 0x10"], 400),
        ([b"Content-Length: 1 2"], 400),
        ([b"Content-Length: 5, 5"], 400),
        ([b"Content-Length:"], 400),
        ([b"Content-Length: \xd9\xa1"], 400),  # a non-ASCII digit
        ([b"Content-Length: 9999999999999999999"], 400),  # 19 digits
        ([b"Content-Length: 1" + b"0" * 40], 400),
        ([b"Content-Length: 5", b"Content-Length: 6"], 400),
        ([b"Content-Length: 5", b"Transfer-Encoding: chunked"], 400),
        ([b"Transfer-Encoding: chunked", b"Content-Length: 5"], 400),
        ([b"Transfer-Encoding: gzip", b"Content-Length: 5"], 400),
        ([b"Transfer-Encoding: gzip"], 501),
        ([b"Transfer-Encoding: chunked, gzip"], 501),
        ([b"Transfer-Encoding: gzip, chunked"], 501),
        ([b"Transfer-Encoding: identity"], 501),
        ([b"Transfer-Encoding:"], 501),
        ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], 501),
        ([b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"], 501),
    ],
)
def test_bad_body_framing(lines: list[bytes], status: int) -> None:
    assert refused(head(b"POST / HTTP/1.1", b"Host: h", *lines)) == status


def test_transfer_encoding_on_http_1_0_is_not_implemented() -> None:
    assert refused(head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked")) == 501


# -- connection and expectations --------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "lines", "keep_alive"),
    [
        (b"HTTP/1.1", [], True),
        (b"HTTP/1.1", [b"Connection: keep-alive"], True),
        (b"HTTP/1.1", [b"Connection: close"], False),
        (b"HTTP/1.1", [b"Connection: Close"], False),
        (b"HTTP/1.1", [b"Connection: upgrade, close"], False),
        (b"HTTP/1.1", [b"Connection: te", b"Connection: close"], False),
        (b"HTTP/1.1", [b"Connection: closed"], True),
        (b"HTTP/1.0", [], False),
        (b"HTTP/1.0", [b"Connection: keep-alive"], True),
        (b"HTTP/1.0", [b"Connection: Keep-Alive"], True),
        (b"HTTP/1.0", [b"Connection: foo ,  keep-alive"], True),
        (b"HTTP/1.0", [b"Connection: close"], False),
    ],
)
def test_keep_alive(version: bytes, lines: list[bytes], keep_alive: bool) -> None:
    parsed = parse_request_head(head(b"GET / " + version, b"Host: h", *lines))
    assert parsed.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("version", "lines", "expect_continue"),
    [
        (b"HTTP/1.1", [b"Expect: 100-continue", b"Content-Length: 10"], True),
        (b"HTTP/1.1", [b"Expect: 100-Continue", b"Transfer-Encoding: chunked"], True),
        (b"HTTP/1.1", [b"Expect: 100-continue"], False),  # no body: nothing to wait for
        (b"HTTP/1.1", [b"Expect: 100-continue", b"Content-Length: 0"], False),
        (b"HTTP/1.1", [b"Content-Length: 10"], False),
        # RFC 9110 10.1.1: an HTTP/1.0 client does not understand 1xx; the expectation is ignored.
        (b"HTTP/1.0", [b"Expect: 100-continue", b"Content-Length: 10"], False),
    ],
)
def test_expect_continue(version: bytes, lines: list[bytes], expect_continue: bool) -> None:
    parsed = parse_request_head(head(b"POST / " + version, b"Host: h", *lines))
    assert parsed.expect_continue is expect_continue


@pytest.mark.parametrize("value", [b"200-ok", b"100-continue, foo", b"", b"continue"])
def test_other_expectations_fail(value: bytes) -> None:
    assert refused(head(b"POST / HTTP/1.1", b"Expect: " + value, b"Content-Length: 1")) == 417


def test_parsed_head_in_full() -> None:
    assert parse_request_head(
        head(
            b"PUT /x HTTP/1.1",
            b"Host: h",
            b"Content-Length: 3",
            b"Expect: 100-continue",
            b"Connection: close",
        )
    ) == RequestHead(
        method="PUT",
        target=b"/x",
        http_version="1.1",
        headers=[
            (b"host", b"h"),
            (b"content-length", b"3"),
            (b"expect", b"100-continue"),
            (b"connection", b"close"),
        ],
        content_length=3,
        chunked=False,
        keep_alive=False,
        expect_continue=True,
    )


# -- chunked bodies ---------------------------------------------------------------------------


def decode_whole(wire: bytes) -> tuple[bytes, bool, bytes]:
    """(decoded data, done, bytes left after the body) with everything fed at once."""
    decoder = ChunkedDecoder()
    buffer = bytearray(wire)
    data = decoder.feed(buffer)
    return data, decoder.done, bytes(buffer)


def decode_bytewise(wire: bytes) -> tuple[bytes, bool, bytes]:
    """The same, the wire arriving one byte at a time."""
    decoder = ChunkedDecoder()
    buffer = bytearray()
    out = []
    for index in range(len(wire)):
        if decoder.done:
            return b"".join(out), True, bytes(buffer) + wire[index:]
        buffer.append(wire[index])
        out.append(decoder.feed(buffer))
    return b"".join(out), decoder.done, bytes(buffer)


Decode = Callable[[bytes], tuple[bytes, bool, bytes]]
DECODERS = pytest.mark.parametrize("decode", [decode_whole, decode_bytewise])


@DECODERS
@pytest.mark.parametrize(
    ("wire", "data", "done", "rest"),
    [
        (b"0\r\n\r\n", b"", True, b""),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", True, b""),
        (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", True, b""),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", True, b""),
        (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", True, b""),
        (b"000003\r\nabc\r\n0\r\n\r\n", b"abc", True, b""),
        (b"3;name=value\r\nabc\r\n0;last\r\n\r\n", b"abc", True, b""),  # extensions
        (b'3 ; q="a;b"\r\nabc\r\n0\r\n\r\n', b"abc", True, b""),
        (b"3\t\r\nabc\r\n0\r\n\r\n", b"abc", True, b""),
        (b"3\r\na\r\n\r\n0\r\n\r\n", b"a\r\n", True, b""),  # CRLF inside the data
        (b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n", b"abc", True, b""),
        (b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", b"abc", True, b"GET / HTTP/1.1\r\n"),
        (b"3\r\nabc\r\n", b"abc", False, b""),  # more to come
        (b"5\r\nhel", b"hel", False, b""),
        (b"", b"", False, b""),
    ],
)
def test_chunked(decode: Decode, wire: bytes, data: bytes, done: bool, rest: bytes) -> None:
    assert decode(wire) == (data, done, rest)


@DECODERS
@pytest.mark.parametrize(
    "wire",
    [
        b"x\r\n",  # not hex
        b"-1\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"\r\n",  # no size
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"1234567890abcdef\r\n",  # 16 hex digits: more than any body
        b"5\r\nhello world\r\n0\r\n\r\n",  # data longer than its size
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"3;\x00\r\nabc\r\n0\r\n\r\n",  # controls in an extension
        b"3;a\rb\r\nabc\r\n0\r\n\r\n",
        b"3;ext\nmore\r\nabc\r\n0\r\n\r\n",  # bare LF in an extension
        b"3;" + b"x" * 2000 + b"\r\nabc\r\n0\r\n\r\n",  # overlong size line
        b"0" * 2000 + b"3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-Trailer: " + b"x" * 2000 + b"\r\n\r\n",  # overlong trailer line
        # Trailer lines are header lines (RFC 9112 7.1.2), checked as such.
        b"3\r\nabc\r\n0\r\nGET / HTTP/1.1\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-Nul: a\x00b\r\n\r\n",
        b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-A: 1\r\n folded\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-Bare: a\rb\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX-Bare: a\nb\r\n\r\n",
        b"3\r\nabc\r\n0\r\nX A: b\r\n\r\n",
        # Framing fields cannot be trailers (RFC 9110 6.5.1).
        b"3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",
        b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_bad_chunked(decode: Decode, wire: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(wire)
    assert caught.value.status == 400


@DECODERS
def test_the_trailer_section_is_bounded(decode: Decode) -> None:
    line = b"X-Trailer: " + b"t" * 100 + b"\r\n"
    fits = b"0\r\n" + line * (MAX_HEAD_BYTES // len(line)) + b"\r\n"
    assert decode(fits) == (b"", True, b"")
    with pytest.raises(ProtocolError) as caught:
        decode(b"0\r\n" + line * (MAX_HEAD_BYTES // len(line) + 1) + b"\r\n")
    assert (caught.value.status, caught.value.message) == (
        431,
        "chunked body: trailer section over 64 KiB",
    )


@pytest.mark.parametrize(
    ("wire", "rest"),
    [
        (b"3\r\nabc\r\nzz\r\n", b"zz\r\n"),
        (b"3\r\nabcd\r\n", b"d\r\n"),
        (b"0\r\nX-A: 1\r\nbad\r\n\r\n", b"bad\r\n\r\n"),
    ],
)
def test_a_refused_line_is_left_in_the_buffer(wire: bytes, rest: bytes) -> None:
    """What came before the refused line was consumed; the line itself was not (the hypercorn
    guard forwards exactly what the decoder consumed)."""
    decoder = ChunkedDecoder()
    buffer = bytearray(wire)
    with pytest.raises(ProtocolError):
        decoder.feed(buffer)
    assert bytes(buffer) == rest


def test_chunk_size_line_without_its_crlf_is_bounded() -> None:
    decoder = ChunkedDecoder()
    buffer = bytearray(b"5" * 1024)
    assert decoder.feed(buffer) == b""  # may still be a size line
    buffer += b"5"
    with pytest.raises(ProtocolError):
        decoder.feed(buffer)


def test_chunked_decoder_leaves_the_rest_of_a_partial_line() -> None:
    decoder = ChunkedDecoder()
    buffer = bytearray(b"5\r\nhello\r\n1")
    assert decoder.feed(buffer) == b"hello"
    assert buffer == b"1"
    buffer += b"0\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n"
    assert decoder.feed(buffer) == b"z" * 16
    assert decoder.done
    assert decoder.feed(buffer) == b""  # nothing more once done


# -- response heads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "version", "line"),
    [
        (200, "1.1", b"HTTP/1.1 200 OK"),
        (200, "1.0", b"HTTP/1.0 200 OK"),
        (204, "1.1", b"HTTP/1.1 204 No Content"),
        (404, "1.1", b"HTTP/1.1 404 Not Found"),
        (431, "1.1", b"HTTP/1.1 431 Request Header Fields Too Large"),
        (500, "1.1", b"HTTP/1.1 500 Internal Server Error"),
        (505, "1.1", b"HTTP/1.1 505 HTTP Version Not Supported"),
        (599, "1.1", b"HTTP/1.1 599 "),  # unknown: an empty reason phrase
    ],
)
def test_response_status_line(status: int, version: str, line: bytes) -> None:
    assert response_head(status, [], http_version=version) == line + b"\r\n\r\n"


def test_response_headers_go_out_as_given() -> None:
    assert response_head(201, [(b"Content-Type", b"text/plain"), (b"x-a", b"")]) == (
        b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nx-a: \r\n\r\n"
    )


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"v\r\nSet-Cookie: evil=1"),
        (b"x-a", b"v\nx"),
        (b"x-a", b"v\rx"),
        (b"x-a\r\nx-b", b"v"),
        (b"x-a\n", b"v"),
    ],
)
def test_response_header_injection_is_refused(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        response_head(200, [(b"content-length", b"0"), header])
