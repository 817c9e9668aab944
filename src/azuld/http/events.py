"""`/api/v2/event` and the seed's v1 names for it: publish events, and fetch them as jobs (active)
or as a feed (passive). Hot routes (`azuld.http.hot`).

Bodies have one encoding each way, chosen in one function: `decode_posted` turns a posted body into
what `Dispatcher.publish` takes, `encode_fetch_reply` turns a `FetchResult` into the reply. JSON
today; a second encoding (Avro bulk records, asked for with `avro-format=true`) goes in there. Until
then `avro-format=true` is refused with a 422: by `decode_posted` on a post, by
`azuld.core.params` on a fetch.
"""

from __future__ import annotations

import msgspec

from azuld.core.keys import random_hex
from azuld.dispatch import FetchResult
from azuld.errors import NotFound, Unprocessable
from azuld.http.asgi import Front, Query, Reply, Request, bytes_reply
from azuld.http.nesting import check_nesting

__all__ = [
    "decode_posted",
    "encode_fetch_reply",
    "fetch_events",
    "post_events",
    "v1_get_job",
    "v1_post_status",
    "v1_register",
]

_JSON = b"application/json"
_TRUE_LITERAL = frozenset({"true", "1"})  # Go compares POST flags literally


def decode_posted(query: Query, body: bytes) -> bytes:
    """The posted events as `Dispatcher.publish` takes them: a JSON array or object.

    Raises:
        Unprocessable: `avro-format` is true (azuld takes JSON only, for now), or the JSON nests
            deeper than `azuld.http.nesting.MAX_JSON_DEPTH`.
    """
    if query.get("avro-format") in _TRUE_LITERAL:
        raise Unprocessable("avro-format is not supported by azuld; post JSON")
    check_nesting(
        body,
        what="ensure events were in json format: event message",
        title="PostEvent TransformEvents invalid events",
    )
    return body


def encode_fetch_reply(result: FetchResult) -> tuple[bytes, str]:
    """The fetch reply and its Content-Type: `multipart/form-data` with two parts, `info`, then
    `events` (reference 2.3), both JSON."""
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


async def _publish(front: Front, request: Request, model: str) -> Reply:
    body = decode_posted(request.query, await front.read_body(request))
    include_ok = request.query.get("include_ok") in _TRUE_LITERAL
    result = await front.svc.dispatcher.publish(model, body, include_ok=include_ok)
    return bytes_reply(_JSON, msgspec.json.encode(result))


async def post_events(front: Front, request: Request, parts: list[str]) -> Reply:
    return await _publish(front, request, request.query.get("model"))


async def v1_register(front: Front, request: Request, parts: list[str]) -> Reply:
    """= `POST /api/v2/event?model=plugin`."""
    return await _publish(front, request, "plugin")


async def v1_post_status(front: Front, request: Request, parts: list[str]) -> Reply:
    """= `POST /api/v2/event?model=status` (results and heartbeats of `entity_type` jobs)."""
    return await _publish(front, request, "status")


async def _fetch(front: Front, request: Request, model: str, mode: str) -> Reply | None:
    params = front.consume_params(model, mode == "active", request.query)
    result = await front.fetch_unless_gone(request.receive, params)
    if result is None:
        return None  # the client went away: the long-poll was cancelled
    body, content_type = encode_fetch_reply(result)
    return bytes_reply(content_type.encode(), body)


async def fetch_events(front: Front, request: Request, parts: list[str]) -> Reply | None:
    model, mode = parts
    if mode not in ("active", "passive"):
        raise NotFound(f"no fetch mode {mode!r}: use /api/v2/event/<model>/active or /passive")
    return await _fetch(front, request, model, mode)


async def v1_get_job(front: Front, request: Request, parts: list[str]) -> Reply | None:
    """= `GET /api/v2/event/<entity_type>/active`."""
    return await _fetch(front, request, parts[0], "active")
