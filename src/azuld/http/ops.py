"""Operational routes, served by Quart: `/` (Go's liveness answer), `/healthz`, `/readyz`,
`/metrics`, and the introspection and admin routes under `/api/azuld/v1`."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, g, request

from azuld.core.keys import validate_name
from azuld.errors import BadRequest
from azuld.http.nesting import check_nesting
from azuld.http.steps import Services
from azuld.views import source_tree

__all__ = [
    "Health",
    "Readiness",
    "ReoffersRequest",
    "cluster",
    "failed",
    "healthz",
    "jobs",
    "metrics",
    "plugins",
    "readyz",
    "reoffer",
    "reoffers",
    "root",
    "source",
]


class Health(msgspec.Struct, kw_only=True):
    """The process answers."""

    status: Literal["ok"]


class Readiness(msgspec.Struct, kw_only=True):
    """Whether the event log and the blob store are usable, and if not, why not."""

    ready: bool
    reasons: Annotated[
        list[str], msgspec.Meta(description="Why the event log or the blob store is not usable.")
    ]


class ReoffersRequest(msgspec.Struct, kw_only=True):
    """Failed jobs (by `dequeued`) to put back in front of their plugin key, and who asks."""

    job_ids: list[str]
    by: str = ""


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status=status, content_type="application/json")


async def root(svc: Services) -> Response:
    return Response("Azul Dispatcher", content_type="text/plain")


async def healthz(svc: Services) -> Response:
    return _json(Health(status="ok"))


async def readyz(svc: Services) -> Response:
    """Ready when the event log and the blob store are usable; the reasons say what is not."""
    log_problem = await svc.dispatcher.log_problem(fresh=True)
    reasons = [r for r in (log_problem, await svc.blobs.health()) if r]
    return _json(Readiness(ready=not reasons, reasons=reasons), status=503 if reasons else 200)


async def plugins(svc: Services) -> Response:
    """Per plugin key: lanes, queued, in flight, fetched and finished counts (this instance)."""
    return _json({"plugins": await svc.dispatcher.key_summaries()})


async def metrics(svc: Services) -> Response:
    await svc.dispatcher.key_summaries()  # refreshes the lag and in-flight gauges
    await svc.dispatcher.cluster()  # and the cluster's
    return Response(svc.metrics.render(), content_type=CONTENT_TYPE_LATEST)


async def cluster(svc: Services) -> Response:
    """The instances sharing the event log, the partitions each owns, and what moved."""
    return _json(await svc.dispatcher.cluster())


async def jobs(svc: Services) -> Response:
    """The jobs in flight on this instance, the longest-running first (`?limit=`)."""
    return _json(await svc.dispatcher.jobs(_limit()))


async def source(svc: Services, source: str) -> Response:
    """The binaries of a source as a tree, with the features plugins found (small sources)."""
    validate_name("source", source)
    tree = await source_tree(svc.log, svc.settings.events.topic_prefix, source)
    return _json({"source": source, "binaries": tree})


def _limit() -> int:
    """The request's `?limit=` (200 if not given).

    Raises:
        BadRequest: not a whole number >= 0.
    """
    try:
        limit = int(request.args.get("limit", "200"))
    except ValueError:
        raise BadRequest(f"limit={request.args['limit']!r} is not an integer") from None
    if limit < 0:
        raise BadRequest(f"limit={limit} must not be negative")
    return limit


async def failed(svc: Services) -> Response:
    """Dead letters: jobs that ended in an error status, newest first (`?plugin=`, `?limit=`)."""
    plugin = request.args.get("plugin", "")
    return _json({"failed": await svc.dispatcher.failed(plugin, _limit())})


async def reoffer(svc: Services) -> Response:
    """Put jobs back in front of their plugin key: `{"job_ids": [...], "by": "who"}`.

    Only as JSON (`Content-Type: application/json`): a form on another site cannot send that
    without the browser asking azuld first (which it refuses), so a page an admin visits cannot
    re-offer jobs in the admin's name.
    """
    if request.mimetype != "application/json":
        raise BadRequest(
            f"send the job ids as JSON (Content-Type: application/json), not {request.mimetype!r}"
        )
    body = await request.get_data(cache=False)
    assert isinstance(body, bytes)
    check_nesting(body, what="the request body", title="invalid JSON")
    try:
        wanted = msgspec.json.decode(body, type=ReoffersRequest)
    except msgspec.DecodeError as exc:
        raise BadRequest(f'expected {{"job_ids": ["..."], "by": "name"}}: {exc}') from None
    by = wanted.by or getattr(g, "caller", "anonymous")
    outcome = await svc.dispatcher.reoffer(wanted.job_ids, by)
    return _json({"reoffered": outcome})


async def reoffers(svc: Services) -> Response:
    """The audit trail of re-offered jobs: who, when, which job, to which plugin key."""
    return _json({"reoffers": await svc.dispatcher.reoffers()})
