"""Operational routes: `/` (Go's liveness answer), `/healthz`, `/readyz` and introspection."""

from __future__ import annotations

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response, g, request

from azuld.core.keys import validate_name
from azuld.errors import BadRequest
from azuld.http.app import services
from azuld.views import source_tree

__all__ = ["blueprint"]

blueprint = Blueprint("ops", __name__)


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status=status, content_type="application/json")


@blueprint.get("/")
async def root() -> Response:
    return Response("Azul Dispatcher", content_type="text/plain")


@blueprint.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


@blueprint.get("/readyz")
async def readyz() -> Response:
    """Ready when the event log and the blob store are usable; the reasons say what is not."""
    svc = services()
    log_problem = await svc.dispatcher.log_problem(fresh=True)
    reasons = [r for r in (log_problem, await svc.blobs.health()) if r]
    return _json({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)


@blueprint.get("/api/azuld/v1/plugins")
async def plugins() -> Response:
    """Per plugin key: lanes, queued, in flight, fetched and finished counts (this instance)."""
    return _json({"plugins": await services().dispatcher.key_summaries()})


@blueprint.get("/metrics")
async def metrics() -> Response:
    dispatcher = services().dispatcher
    await dispatcher.key_summaries()  # refreshes the lag and in-flight gauges
    return Response(dispatcher.metrics.render(), content_type=CONTENT_TYPE_LATEST)


@blueprint.get("/api/azuld/v1/sources/<source>")
async def source(source: str) -> Response:
    """The binaries of a source as a tree, with the features plugins found (small sources)."""
    validate_name("source", source)
    svc = services()
    tree = await source_tree(svc.dispatcher.log, svc.dispatcher.prefix, source)
    return _json({"source": source, "binaries": tree})


class ReoffersRequest(msgspec.Struct, kw_only=True):
    job_ids: list[str]
    by: str = ""


@blueprint.get("/api/azuld/v1/failed")
async def failed() -> Response:
    """Dead letters: jobs that ended in an error status, newest first (`?plugin=`, `?limit=`)."""
    try:
        limit = int(request.args.get("limit", "200"))
    except ValueError:
        raise BadRequest(f"limit={request.args['limit']!r} is not an integer") from None
    if limit < 0:
        raise BadRequest(f"limit={limit} must not be negative")
    plugin = request.args.get("plugin", "")
    return _json({"failed": await services().dispatcher.failed(plugin, limit)})


@blueprint.post("/api/azuld/v1/reoffer")
async def reoffer() -> Response:
    """Put jobs back in front of their plugin key: `{"job_ids": [...], "by": "who"}`."""
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    try:
        wanted = msgspec.json.decode(body, type=ReoffersRequest)
    except msgspec.DecodeError as exc:
        raise BadRequest(f'expected {{"job_ids": ["..."], "by": "name"}}: {exc}') from None
    by = wanted.by or getattr(g, "caller", "anonymous")
    outcome = await services().dispatcher.reoffer(wanted.job_ids, by)
    return _json({"reoffered": outcome})


@blueprint.get("/api/azuld/v1/reoffers")
async def reoffers() -> Response:
    """The audit trail of re-offered jobs: who, when, which job, to which plugin key."""
    return _json({"reoffers": await services().dispatcher.reoffers()})
