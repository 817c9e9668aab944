"""`/api/v2/event`: the fetch reply's wire format. The event routes (publish, and fetch as jobs or
as a feed) are served as raw ASGI by `azuld.http.hot`."""

from __future__ import annotations

import msgspec

from azuld.core.keys import random_hex
from azuld.dispatcher import FetchResult

__all__ = ["multipart_body"]


def multipart_body(result: FetchResult) -> tuple[bytes, str]:
    """The two-part `multipart/form-data` reply: `info`, then `events` (reference 2.3)."""
    info = msgspec.json.encode(result.info)
    events = b'{"events":[' + b",".join(result.events) + b"]}"
    # Random, and checked: a plugin's own results reach other plugins' replies, so a boundary it
    # could guess must still not split them.
    boundary = random_hex(16)
    while boundary.encode() in events:
        boundary = random_hex(16)
    parts = []
    for name, payload in (("info", info), ("events", events)):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.json"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + payload
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
