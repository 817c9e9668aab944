"""azuld's HTTP/1.1 framing against a maintained parser (h11), on the same byte streams.

`azuld.http.h1.RequestFramer` splits a connection's bytes as azuld's server does (the same
`find_head_end`, `parse_request_head` and `ChunkedDecoder`); h11 is what hypercorn uses. Both
read streams of one to three requests made from pieces on the edges of the grammar (bare LFs,
folded lines, controls, every framing header, chunk extensions, trailers), now and then with a
byte inserted, dropped or cut off. Where both read a request, they must read the same method,
target, version, headers and body, and agree where it ends. Where they differ, the difference
must be one of the deliberate ones listed below, each with its reason; anything else fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from azuld.http.h1 import MAX_HEAD_BYTES, Body, Head, ProtocolError, RequestFramer

# azuld refuses, h11 accepts: azuld is stricter on purpose. Each pattern matches the start of
# azuld's refusal.
STRICTER = {
    # Request smuggling: a proxy in front that frames by Content-Length sees another request
    # (RFC 9112 6.3 lets a server refuse; h11 lets Transfer-Encoding win).
    "both Content-Length and Transfer-Encoding": "smuggling",
    # RFC 9112 2.2 lets a server take a bare LF as a line end; a proxy may not, and would see
    # other lines than azuld does.
    "bare LF in the request head": "smuggling",
    # Obsolete line folding (RFC 9112 5.2: reject with 400, or unfold as h11 does) and lines a
    # proxy could read otherwise.
    "malformed header line": "smuggling",
    # RFC 9112 3.2: a Host with an invalid value MUST be a 400; h11 does not look at it.
    "invalid Host header": "RFC 9112 3.2",
    # `Content-Length: 5, 5` (a list, which h11 folds) and lengths of 19 digits and more.
    "Content-Length must be a non-negative integer": "one plain length, no lists",
    # h11 reads other HTTP/x.y versions as its own; azuld answers 505.
    "only HTTP/1.0 and HTTP/1.1 are served": "RFC 9110 15.6.6",
    # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing.
    "only 'Transfer-Encoding: chunked' is supported": "RFC 9112 6.1",
    # RFC 9110 10.1.1: an expectation the server cannot meet may be a 417.
    "only 'Expect: 100-continue' is supported": "RFC 9110 10.1.1",
    # Chunk sizes of more than 15 hex digits (more than any body) and controls (NUL, bare CR)
    # in chunk extensions, which a proxy could read differently.
    "chunked body: malformed chunk size": "smuggling",
    "chunked body: chunk header line too long": "a bound on what is buffered",
    # Trailers are header lines (RFC 9112 7.1.2), never framing fields (RFC 9110 6.5.1),
    # and at most 64 KiB; h11 checks less (it takes `Content-Length: 5` as a trailer).
    "chunked body: malformed trailer line": "RFC 9112 7.1.2",
    "chunked body: Content-Length cannot be a trailer": "RFC 9110 6.5.1",
    "chunked body: Transfer-Encoding cannot be a trailer": "RFC 9110 6.5.1",
    "chunked body: trailer section over 64 KiB": "a bound on what is buffered",
}
# h11 refuses, azuld accepts: RFC 9112 2.2, a server SHOULD ignore empty lines (CRLF) before a
# request line; h11 refuses them.
H11_REFUSES_STRAY_CRLF = "no request line received"


@dataclass
class Message:
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


@dataclass
class Outcome:
    messages: list[Message] = field(default_factory=list)
    # "ok": every byte read; "incomplete": a request is still arriving; "closed": a request
    # closed the connection; "refused": `reason`.
    state: str = "ok"
    reason: str = ""
    in_progress: Message | None = None


def read_with_azuld(stream: bytes) -> Outcome:
    framer = RequestFramer()
    framer.feed(stream)
    outcome = Outcome()
    try:
        while (event := framer.next_event()) is not None:
            if isinstance(event, Head):
                head = event.head
                outcome.in_progress = Message(
                    head.method.encode(), head.target, head.http_version.encode(), head.headers
                )
            else:
                assert isinstance(event, Body)
                assert outcome.in_progress is not None
                outcome.in_progress.body += event.data
                if event.end:
                    outcome.messages.append(outcome.in_progress)
                    outcome.in_progress = None
    except ProtocolError as error:
        outcome.state, outcome.reason = "refused", error.message
        return outcome
    if framer.closed:
        outcome.state = "closed"
    elif outcome.in_progress is not None or framer.buffer:
        outcome.state = "incomplete"
    return outcome


def read_with_h11(stream: bytes) -> Outcome:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    if stream:  # b"" would say the client closed
        connection.receive_data(stream)
    outcome = Outcome()
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                if outcome.in_progress is not None or connection.trailing_data[0]:
                    outcome.state = "incomplete"
                return outcome
            if isinstance(event, h11.Request):
                outcome.in_progress = Message(
                    event.method, event.target, event.http_version, list(event.headers)
                )
            elif isinstance(event, h11.Data):
                assert outcome.in_progress is not None
                outcome.in_progress.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert outcome.in_progress is not None
                outcome.messages.append(outcome.in_progress)
                outcome.in_progress = None
                connection.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
                connection.send(h11.EndOfMessage())
                if connection.their_state is h11.MUST_CLOSE:
                    outcome.state = "closed"
                    return outcome
                connection.start_next_cycle()
            else:  # PAUSED and ConnectionClosed cannot come: each request is answered, no EOF
                raise AssertionError(f"unexpected h11 event {event!r}")
    except h11.RemoteProtocolError as error:
        outcome.state, outcome.reason = "refused", str(error)
        return outcome


def compare(stream: bytes) -> str:
    """Read `stream` with both; fail unless they agree or differ deliberately. Returns how they
    compared ("same", or the deliberate difference)."""
    ours, theirs = read_with_azuld(stream), read_with_h11(stream)
    for index, (mine, other) in enumerate(zip(ours.messages, theirs.messages, strict=False)):
        assert mine == other, f"request {index} read differently from {stream!r}"
    common = min(len(ours.messages), len(theirs.messages))
    if (len(ours.messages), ours.state) == (len(theirs.messages), theirs.state):
        return "same"
    if ours.state == "refused" and len(ours.messages) == common:
        reason = next((r for r in STRICTER if ours.reason.startswith(r)), None)
        assert reason is not None, (
            f"azuld refuses request {common} ({ours.reason!r}) of {stream!r}; h11 does not"
        )
        return f"azuld stricter: {reason}"
    if theirs.state == "refused" and len(theirs.messages) == common:
        if ours.state == "incomplete" and ours.in_progress is None:
            # h11 refuses some heads (a line that is not a request line) before their end;
            # azuld waits for the whole head (bounded by the head timeout) and reads it then.
            return "h11 refuses before the head is whole"
        if theirs.reason.startswith("illegal chunk header") and re.search(rb"[ \t];", stream):
            # RFC 9112 7.1.1 allows whitespace (BWS) before a chunk extension's ";"; h11 does
            # not. Without it, they must agree.
            compare(re.sub(rb"[ \t]+;", b";", stream))
            return "whitespace before a chunk extension"
        assert theirs.reason == H11_REFUSES_STRAY_CRLF, (
            f"h11 refuses request {common} ({theirs.reason!r}) of {stream!r}; azuld does not"
        )
        return "stray CRLF"
    if theirs.state == "closed" and len(theirs.messages) == common:
        # HTTP/1.0 keep-alive: azuld keeps the connection open when asked to, h11 never does.
        last = theirs.messages[-1]
        assert last.version == b"1.0", f"h11 closes after request {common - 1} of {stream!r}"
        return "HTTP/1.0 keep-alive"
    raise AssertionError(f"azuld {ours} and h11 {theirs} differ on {stream!r}")


# -- the streams --------------------------------------------------------------------------------

_GOOD_REQUEST_LINES = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"M-SEARCH"]),
    st.sampled_from([b"/", b"/a?b=c&d", b"*", b"http://h:1/p?q", b"/%20", b"/x/y.z"]),
    st.sampled_from([b"HTTP/1.1"] * 5 + [b"HTTP/1.0"]),
).map(lambda parts: b" ".join(parts))
_ODD_REQUEST_LINES = st.sampled_from(
    [
        b"G(T / HTTP/1.1",
        b"GET /\xff HTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GET / HTTP/2.0",
        b"GET / HTTP/1.2",
        b"GET / http/1.1",
        b"GET  / HTTP/1.1",
        b"PRI * HTTP/2.0",
    ]
)
_GOOD_HEADER_LINES = st.sampled_from(
    [
        b"X-A: b",
        b"X-A:b",
        b"X-A: \t b c \t",
        b"X-Obs: caf\xc3\xa9",
        b"Accept: */*",
        b"Connection: keep-alive",
        b"Connection: close",
        b"Connection: upgrade",
        b"Upgrade: h2c",
        b"Expect: 100-continue",
        b"X-Empty:",
    ]
)
_ODD_HEADER_LINES = st.sampled_from(
    [
        b"Host: h",  # a second one
        b"host:h:80",
        b"Host: [::1]:80",
        b"Host: a b",
        b"X-Nul: a\x00b",
        b"X-Cr: a\rb",
        b" folded",
        b"X A: b",
        b": v",
        b"Expect: nope",
        b"Content-Length: 5, 5",
        b"Content-Length: abc",
        b"Content-Length: 3",
        b"Content-Length: 0003",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: Chunked",
        b"Transfer-Encoding: chunked, gzip",
    ]
)
_CHUNK_EXTENSIONS = st.sampled_from([b""] * 6 + [b";a=b", b' ; q="x;y"', b";\x00", b"\t"])
_TRAILERS = st.lists(
    st.sampled_from(
        [b"X-T: 1"] * 4
        + [
            b"X-T:2",
            b"GET / HTTP/1.1",
            b"no colon",
            b"X-Nul: \x00",
            b" folded",
            b"Content-Length: 5",
            b"Host: h",
        ]
    ),
    max_size=2,
)


@st.composite
def _body(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """(framing header lines, the body on the wire)."""
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    data = draw(st.binary(max_size=40))
    if kind == "none":
        return [], b""
    if kind == "length":
        declared = len(data) + draw(st.sampled_from([0] * 8 + [-1, 1]))
        return [b"Content-Length: %d" % max(declared, 0)], data
    wire = b""
    rest = data
    while rest:
        size = draw(st.integers(1, len(rest)))
        digits = b"%x" % size
        if draw(st.booleans()):
            digits = digits.upper().rjust(draw(st.integers(1, 18)), b"0")
        wire += digits + draw(_CHUNK_EXTENSIONS) + b"\r\n" + rest[:size] + b"\r\n"
        rest = rest[size:]
    wire += b"0" + draw(_CHUNK_EXTENSIONS) + b"\r\n"
    wire += b"".join(line + b"\r\n" for line in draw(_TRAILERS)) + b"\r\n"
    return [b"Transfer-Encoding: chunked"], wire


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    """Mostly a well-formed request (so that both read many), now and then with odd pieces."""
    framing, body = draw(_body())
    odd = draw(st.integers(0, 3)) == 0
    line = draw(_ODD_REQUEST_LINES if odd and draw(st.booleans()) else _GOOD_REQUEST_LINES)
    lines = [line, *draw(st.lists(_GOOD_HEADER_LINES, max_size=3))]
    if odd:
        for extra in draw(st.lists(_ODD_HEADER_LINES, min_size=1, max_size=2)):
            lines.insert(draw(st.integers(1, len(lines))), extra)
    if not odd or draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), b"Host: h")
    for framing_line in framing:
        lines.insert(draw(st.integers(1, len(lines))), framing_line)
    end = b"\n" if odd and draw(st.integers(0, 3)) == 0 else b"\r\n"
    return b"".join(line + end for line in lines) + end + body


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    requests = draw(st.lists(_request(), min_size=1, max_size=3))
    stream = b"".join(draw(st.sampled_from([b""] * 5 + [b"\r\n"])) + r for r in requests)
    mutation = draw(st.sampled_from(["none"] * 7 + ["insert", "drop", "cut"]))
    if mutation != "none" and stream:
        at = draw(st.integers(0, len(stream) - 1))
        if mutation == "insert":
            byte = draw(st.sampled_from([b"\r", b"\n", b"\x00", b" ", b":", b"0", b"\r\n", b";"]))
            stream = stream[:at] + byte + stream[at:]
        elif mutation == "drop":
            stream = stream[:at] + stream[at + 1 :]
        else:
            stream = stream[:at]
    return stream


# The probes of issue #18 and the edges each deliberate difference is about.
_KNOWN = [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /hidden HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nGET / HTTP/1.1\r\n\x00\r\nno colon\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    b"PUT /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\n"
    b"X-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after-close",
]


@pytest.mark.parametrize("stream", _KNOWN)
def test_known_streams(stream: bytes) -> None:
    compare(stream)


def test_well_formed_pipelines_are_read_alike() -> None:
    assert compare(_KNOWN[-1]) == "same"
    assert len(read_with_azuld(_KNOWN[-1]).messages) == 4


@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,  # the same streams in every CI run; new ones when the strategy changes
    suppress_health_check=[HealthCheck.too_slow],
)
@given(streams())
@example(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
def test_azuld_and_h11_agree(stream: bytes) -> None:
    compare(stream)


def _read_in_pieces(stream: bytes, cuts: list[int]) -> tuple[list[list[object]], bytes, str]:
    """([head, body, ended] of each request, the raw bytes the events took, how it ended), with
    `stream` fed in pieces at `cuts`."""
    framer = RequestFramer()
    requests: list[list[object]] = []
    raw = b""
    bounds = [0, *sorted(cuts), len(stream)]
    try:
        for start, stop in pairwise(bounds):
            framer.feed(stream[start:stop])
            while (event := framer.next_event()) is not None:
                raw += event.raw
                if isinstance(event, Head):
                    requests.append([event.head, b"", False])
                else:
                    requests[-1][1] += event.data  # type: ignore[operator]
                    requests[-1][2] = event.end
    except ProtocolError as error:
        return requests, raw, error.message
    return requests, raw, "closed" if framer.closed else "ok"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(streams(), st.lists(st.integers(0, 400), max_size=6))
def test_the_framer_reads_a_stream_alike_in_any_pieces(stream: bytes, cuts: list[int]) -> None:
    whole = _read_in_pieces(stream, [])
    pieces = _read_in_pieces(stream, [cut for cut in cuts if cut <= len(stream)])
    assert pieces[2] == whole[2]
    finished = [request for request in whole[0] if request[2]]
    assert [request for request in pieces[0] if request[2]] == finished
    if whole[2] == "ok":
        # What the events took is the stream, less the stray CRLFs before requests and what
        # is still waiting to be read.
        assert pieces[1] == whole[1]
        assert stream.replace(b"\r\n", b"").startswith(whole[1].replace(b"\r\n", b""))


_CHUNKED = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
# A stream h11 reads and azuld refuses, for each entry of STRICTER.
_STRICTER_EXAMPLES = {
    "both Content-Length and Transfer-Encoding": _KNOWN[0],
    "bare LF in the request head": b"GET / HTTP/1.1\nHost: a\n\n",
    "malformed header line": _KNOWN[3],
    "invalid Host header": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "Content-Length must be a non-negative integer": (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx"
    ),
    "only HTTP/1.0 and HTTP/1.1 are served": b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    "only 'Transfer-Encoding: chunked' is supported": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "only 'Expect: 100-continue' is supported": (
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: x\r\nContent-Length: 1\r\n\r\nx"
    ),
    "chunked body: malformed chunk size": _CHUNKED + b"3;\x00\r\nabc\r\n0\r\n\r\n",
    "chunked body: chunk header line too long": _CHUNKED
    + b"3;"
    + b"e" * 2000
    + b"\r\nabc\r\n0\r\n\r\n",
    "chunked body: malformed trailer line": _CHUNKED + b"0\r\nX-T: \x01\r\n\r\n",
    "chunked body: Content-Length cannot be a trailer": (
        _CHUNKED + b"0\r\nContent-Length: 5\r\n\r\n"
    ),
    "chunked body: Transfer-Encoding cannot be a trailer": (
        _CHUNKED + b"0\r\nTransfer-Encoding: chunked\r\n\r\n"
    ),
    "chunked body: trailer section over 64 KiB": (
        _CHUNKED
        + b"0\r\n"
        + b"X-Trailer: "
        + b"t" * 900
        + b"\r\n" * 1
        + b"X-T: 1\r\n" * 9000
        + b"\r\n"
    ),
}


@pytest.mark.parametrize("refusal", sorted(STRICTER))
def test_each_deliberate_difference_is_real(refusal: str) -> None:
    """h11 reads the example; azuld refuses it, for the reason given (so no entry of STRICTER
    outlives its cause)."""
    assert compare(_STRICTER_EXAMPLES[refusal]) == f"azuld stricter: {refusal}"
    assert read_with_azuld(_STRICTER_EXAMPLES[refusal]).reason.startswith(refusal)
