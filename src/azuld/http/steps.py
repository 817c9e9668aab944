"""What every route shares, on both paths that serve them: the hot routes as raw ASGI
(`azuld.http.hot`) and the rest through Quart (`azuld.http.app`).

`Services` is what handlers reach the daemon through. The steps run in this order on both paths:
`take_request_id`, `authorize` (with the matched route's `Access`), the handler, `error_reply` (the
one mapping of exceptions to HTTP errors) if it raised, and `record_request` (metrics).
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import trio
from werkzeug.exceptions import HTTPException

from azuld.core.keys import random_hex
from azuld.dispatch import Dispatcher
from azuld.errors import AzuldError, ClientError, RangeNotSatisfiable, UpstreamError
from azuld.http.auth import Access, Authorizer
from azuld.http.rejections import REJECTIONS, Rejection
from azuld.metrics import Metrics
from azuld.models.responses import ErrorBody
from azuld.ports import BlobStore, EventLog
from azuld.settings import Settings

__all__ = [
    "ERROR_CONTENT_TYPE",
    "REQUEST_ID",
    "ErrorReply",
    "Services",
    "authorize",
    "error",
    "error_reply",
    "record_rejection",
    "record_request",
    "take_request_id",
]

_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TRUE = frozenset({"1", "t", "T", "true", "True", "TRUE"})  # Go's strconv.ParseBool

ERROR_CONTENT_TYPE = "application/json; charset=utf-8"

# The current request's id, for log lines (set per request; "-" outside requests).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("azuld_request_id", default="-")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """What the handlers reach the daemon through, built by `azuld.service` and handed to
    `create_app`: the dispatcher, the two storage ports, the metrics, the settings and the
    authorizer."""

    dispatcher: Dispatcher
    log: EventLog
    blobs: BlobStore
    metrics: Metrics
    settings: Settings
    auth: Authorizer


def take_request_id(offered: str) -> str:
    """The request's id, also set in `REQUEST_ID`: the caller's `X-Request-Id` if it is plain (it
    goes into every log line and the reply), else a new one."""
    request_id = offered if _REQUEST_ID_PATTERN.fullmatch(offered) else random_hex(8)
    REQUEST_ID.set(request_id)
    return request_id


def authorize(
    svc: Services,
    access: Access,
    model: str,
    resets: Iterable[str],
    authorization: str,
    remote: str,
) -> str:
    """The caller's name, if `access` (the matched route's) lets it make this request. `resets`
    are the query's `reset` values: any true one counts (a fetch honours the last one, so
    checking only the first would let `reset=false&reset=true` past).

    Raises:
        Unauthorized, Forbidden: see `azuld.http.auth`.
    """
    auth = svc.auth
    if not auth.enabled:  # every request is allowed: skip working out the roles it needs
        return "anonymous"
    reset = any(value in _TRUE for value in resets)
    return auth.check(access.roles_for(model, reset), authorization, remote)


def record_request(svc: Services, route: str, method: str, status: int, started: float) -> None:
    """Count the request under its route rule (`unmatched` if none) and observe its latency."""
    requests, latency = svc.metrics.http_children(route, method, status)
    requests.inc()
    latency.observe(trio.current_time() - started)


def record_rejection(
    route: str,
    method: str,
    status: int,
    reason: str,
    client: str,
    user_agent: str,
    request_id: str,
) -> None:
    """Log a request answered with a 4xx (rate-limited: `azuld.http.rejections`)."""
    REJECTIONS.record(
        Rejection(method, route, status, reason, client, user_agent or "-", request_id),
        trio.current_time(),
    )


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error as HTTP: the status and the JSON `ErrorBody`, served as `ERROR_CONTENT_TYPE` with
    `X-Content-Type-Options: nosniff`, and a `Content-Range` for a range past the end."""

    status: int
    body: bytes
    detail: str = ""  # the body's `detail`, for the log of rejections
    content_range: str | None = None


def error(status: int, title: str, detail: str, error_enum: str = "") -> ErrorReply:
    body = ErrorBody(
        status=str(status),
        title=title,
        detail=detail,
        error_enum=error_enum or "ErrorStringEnumUnset",
    )
    return ErrorReply(status, msgspec.json.encode(body), detail)


def error_reply(exc: Exception) -> ErrorReply:
    """The one translation of an exception to HTTP. Client errors say what was wrong; backend
    failures are 503/507; anything unexpected is logged with its traceback and answered with a
    500 that names only the exception's type."""
    if isinstance(exc, ClientError):
        reply = error(exc.http_status, exc.title, exc.detail, exc.error_enum)
        if isinstance(exc, RangeNotSatisfiable):
            return ErrorReply(reply.status, reply.body, reply.detail, f"bytes */{exc.size}")
        return reply
    if isinstance(exc, UpstreamError):
        log.warning("backend unavailable: %s", exc)
        title = "insufficient storage" if exc.http_status == 507 else "backend unavailable"
        return error(exc.http_status, title, str(exc))
    if isinstance(exc, AzuldError):
        log.error("unexpected azuld error", exc_info=exc)
        return error(500, "internal error", str(exc))
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 404:
            detail = "no such route; see docs/protocol.md for the API"
        return error(status, exc.name.lower(), detail)
    log.error("unhandled error in request", exc_info=exc)
    return error(500, "internal error", f"{type(exc).__name__}: the error was logged")
