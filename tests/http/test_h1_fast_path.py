"""`parse_request_head`'s one-pass path must agree with the line-by-line one on every head."""

from __future__ import annotations

import random

import pytest

from azuld.http import h1

# Pieces that sit on the boundaries of what either path accepts.
_PIECES = [
    b"GET",
    b"POST",
    b" ",
    b"  ",
    b"/",
    b"/a?b=c",
    b"*",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"http/1.1",
    b"\r\n",
    b"\r",
    b"\n",
    b"\t",
    b":",
    b": ",
    b"Host",
    b"content-length",
    b"Content-Length: 5",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Expect: 100-continue",
    b"x",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"\xff",
    b"(",
    b"1",
]


def _outcome(parse: object, head: bytes) -> object:
    try:
        return parse(head)  # type: ignore[operator]
    except h1.ProtocolError as error:
        return (error.status, error.message)


def _agree(head: bytes) -> None:
    fast = _outcome(h1.parse_request_head, head)
    assert fast == _outcome(h1._parse_line_by_line, head), head


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: h",
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"GET / HTTP/1.1\r\nHost:  \t h \t ",
        b"GET / HTTP/1.1\r\nHost:",
        b"GET / HTTP/1.1\r\nHost: \t",
        b"GET / HTTP/1.1\r\nX: a\tb",
        b"GET / HTTP/1.1\r\nX: a\rb",
        b"GET / HTTP/1.1\r\nX: a\nb",
        b"GET / HTTP/1.1\r\nX: \xff\x80",
        b"GET / HTTP/1.1\r\n X: a",
        b"GET / HTTP/1.1\r\nX : a",
        b"GET / HTTP/1.1\nHost: h",
        b"GET / HTTP/1.1 \r\nHost: h",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\nBad line",
        b"POST / HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 3",
    ],
)
def test_paths_agree_on_edges(head: bytes) -> None:
    _agree(head)


def _random_line(rng: random.Random) -> bytes:
    """A header line that is usually well-formed: a name, a colon, spaces and tabs around a
    value of mostly visible characters, now and then a control character or a missing part."""
    name = rng.choice([b"Host", b"X-Id", b"content-length", b"Connection", b"Expect", b"", b"a b"])
    around = [b"", b" ", b"\t", b" \t ", b"  "]
    value = bytes(
        rng.choice(b"ab 1\t\x80\xff,;") if rng.random() > 0.01 else rng.randrange(32)
        for _ in range(rng.randrange(6))
    )
    colon = b":" if rng.random() > 0.02 else b""
    return name + colon + rng.choice(around) + value + rng.choice(around)


def test_paths_agree_on_random_heads() -> None:
    rng = random.Random(1234)
    parsed = 0
    for _ in range(20_000):
        if rng.random() < 0.5:
            start = rng.choice(
                [b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"GET /", b"PUT * HTTP/1.1"]
            )
            lines = [b"Host: h"] * rng.randrange(2)  # HTTP/1.1 needs one
            lines += [_random_line(rng) for _ in range(rng.randrange(5))]
            head = b"\r\n".join([start, *lines])
        else:
            head = b"".join(rng.choices(_PIECES, k=rng.randrange(12)))
        _agree(head)
        parsed += isinstance(_outcome(h1.parse_request_head, head), h1.RequestHead)
    assert parsed > 1_000  # the well-formed heads were compared too, not only the refusals
