"""HTTP/1.1 over raw sockets, for clients that do not play by the rules (slow, flooding, silent)."""

from __future__ import annotations

from urllib.parse import urlsplit

import trio

from tests.scenarios.outcome import Unexpected


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def request_head(
    method: str, target: str, url: str, headers: dict[str, str] | None = None
) -> bytes:
    host, port = host_port(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(stream: trio.abc.Stream) -> tuple[int, bytes]:
    """Status and body of one response: by `content-length`, chunks, or to EOF.

    Not to EOF when a length is known: the client decides when to hang up (some scenarios
    check that azuld closes its end; reading to EOF would wait for that)."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise Unexpected(f"connection closed before a response: {bytes(buffer[:200])!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise Unexpected(f"not an HTTP response: {bytes(buffer[:200])!r}")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(rest)
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            body += chunk
        return status, bytes(body[:length])
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            body += chunk
        return status, _dechunk(bytes(body))
    while chunk := await stream.receive_some(65536):
        body += chunk
    return status, bytes(body)


def _dechunk(view: bytes) -> bytes:
    decoded = bytearray()
    while view:
        size_line, _, view = view.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        decoded += view[:size]
        view = view[size + 2 :]
    return bytes(decoded)
