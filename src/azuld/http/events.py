"""`/api/v2/event` and the seed's v1 names for it: publish events, and fetch them as jobs (active)
or as a feed (passive). Hot routes (`azuld.http.hot`).

Bodies come in two encodings, JSON and (for Go plugins, `avro-format=true`) Avro bulk records
(`azuld.models.avro`). A post says which with `posted_in_avro`, and `Dispatcher.publish` decodes
either into the same events. A fetch's `avro-format` is parsed with its other parameters
(`azuld.core.params`); the dispatcher then renders each event in the encoding asked for, and
`encode_fetch_reply` frames them: a multipart reply with the same parts either way (the Go
dispatcher's framing; only the `events` part's bytes differ). Replies to posts are JSON.
"""

from __future__ import annotations

import msgspec

from azuld.core.keys import random_hex
from azuld.dispatch import FetchResult
from azuld.errors import NotFound
from azuld.http.asgi import Front, Query, Reply, Request, bytes_reply
from azuld.http.nesting import check_nesting
from azuld.models.avro import bulk_record

__all__ = [
    "encode_fetch_reply",
    "fetch_events",
    "post_events",
    "posted_in_avro",
    "v1_get_job",
    "v1_post_status",
    "v1_register",
]

_JSON = b"application/json"
_TRUE_LITERAL = frozenset({"true", "1"})  # Go compares POST flags literally


def posted_in_avro(query: Query) -> bool:
    """Whether a post's body is an Avro bulk record: `avro-format` is `true` or `1`, compared
    literally as Go compares its POST flags (anything else is JSON). The Content-Type is
    ignored, as in Go (the Go client sends `application/avro`)."""
    return query.get("avro-format") in _TRUE_LITERAL


def encode_fetch_reply(result: FetchResult, *, avro: bool = False) -> tuple[bytes, str]:
    """The fetch reply and its Content-Type: `multipart/form-data` with two parts, `info`
    (JSON), then `events` (reference 2.3): `{"events": [...]}`, or with `avro` the Avro bulk
    record of the events' datums (still named `events.json`, as the Go dispatcher names it)."""
    info = msgspec.json.encode(result.info)
    if avro:
        events = bulk_record(result.events)
    else:
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
    body = await front.read_body(request)
    include_ok = request.query.get("include_ok") in _TRUE_LITERAL
    avro = posted_in_avro(request.query)
    if not avro:  # refused before a deep decode could run out of stack (Avro has no nesting)
        check_nesting(
            body,
            what="ensure events were in json format: event message",
            title="PostEvent TransformEvents invalid events",
        )
    result = await front.svc.dispatcher.publish(model, body, include_ok=include_ok, avro=avro)
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
    body, content_type = encode_fetch_reply(result, avro=params.avro)
    return bytes_reply(content_type.encode(), body)


async def fetch_events(front: Front, request: Request, parts: list[str]) -> Reply | None:
    model, mode = parts
    if mode not in ("active", "passive"):
        raise NotFound(f"no fetch mode {mode!r}: use /api/v2/event/<model>/active or /passive")
    return await _fetch(front, request, model, mode)


async def v1_get_job(front: Front, request: Request, parts: list[str]) -> Reply | None:
    """= `GET /api/v2/event/<entity_type>/active`."""
    return await _fetch(front, request, parts[0], "active")
