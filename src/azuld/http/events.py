"""`/api/v2/event`: publish events, and fetch them as jobs (active) or as a feed (passive)."""

from __future__ import annotations

import secrets

import msgspec
from quart import Blueprint, Response, request

from azuld.core.params import parse_consume_params
from azuld.dispatcher import FetchResult
from azuld.errors import NotFound
from azuld.http.app import services

__all__ = ["blueprint", "multipart_body"]

blueprint = Blueprint("events", __name__)

_TRUE_LITERAL = {"true", "1"}  # Go compares POST flags literally


@blueprint.post("/api/v2/event")
async def post_events() -> Response:
    return await _publish(request.args.get("model", ""))


async def _publish(model: str) -> Response:
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    include_ok = request.args.get("include_ok", "") in _TRUE_LITERAL
    result = await services().dispatcher.publish(model, body, include_ok=include_ok)
    return Response(msgspec.json.encode(result), content_type="application/json")


def multipart_body(result: FetchResult) -> tuple[bytes, str]:
    """The two-part `multipart/form-data` reply: `info`, then `events` (reference 2.3)."""
    boundary = secrets.token_hex(16)
    info = msgspec.json.encode(result.info)
    events = b'{"events":[' + b",".join(result.events) + b"]}"
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


@blueprint.get("/api/v2/event/<model>/<mode>")
async def fetch_events(model: str, mode: str) -> Response:
    if mode not in ("active", "passive"):
        raise NotFound(f"no fetch mode {mode!r}: use /api/v2/event/<model>/active or /passive")
    return await _fetch(model, mode)


# The seed document's route names (docs/protocol.md): thin aliases of the v2 routes, same
# handlers, same semantics.


@blueprint.post("/api/v1/events/plugin")
async def v1_register() -> Response:
    """= `POST /api/v2/event?model=plugin`."""
    return await _publish("plugin")


@blueprint.get("/api/v1/processing/<entity_type>")
async def v1_get_job(entity_type: str) -> Response:
    """= `GET /api/v2/event/<entity_type>/active`."""
    return await _fetch(entity_type, "active")


@blueprint.post("/api/v1/processing/<entity_type>")
async def v1_post_status(entity_type: str) -> Response:
    """= `POST /api/v2/event?model=status` (results and heartbeats of `entity_type` jobs)."""
    return await _publish("status")


async def _fetch(model: str, mode: str) -> Response:
    svc = services()
    dispatch = svc.settings.dispatch
    params = parse_consume_params(
        model,
        mode == "active",
        request.args.items(multi=True),
        default_deadline_seconds=dispatch.default_deadline_seconds,
        max_deadline_seconds=dispatch.max_deadline_seconds,
        max_count=dispatch.max_count,
    )
    result = await svc.dispatcher.fetch(params)
    body, content_type = multipart_body(result)
    return Response(body, content_type=content_type)
