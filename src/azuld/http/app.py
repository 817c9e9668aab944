"""The quart-trio app, and the per-request steps every route shares.

A request goes through the same steps on both paths that serve it: the hot protocol routes as raw
ASGI (`azuld.http.hot`, in front of Quart) and every other route through Quart. The steps are
plain functions here, which both call: `take_request_id`, `authorize`, `error_reply` (the one
mapping of exceptions to HTTP errors) and `record_request` (metrics).
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import msgspec
import trio
from quart import Response, current_app, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from azuld.core.keys import random_hex
from azuld.core.validation import SHA256_PATTERN
from azuld.dispatcher import Dispatcher
from azuld.errors import AzuldError, BadRequest, ClientError, RangeNotSatisfiable, UpstreamError
from azuld.http.auth import Authorizer, required_roles
from azuld.models.responses import ErrorBody
from azuld.ports import BlobStore
from azuld.settings import Settings

__all__ = [
    "ERROR_CONTENT_TYPE",
    "REQUEST_ID",
    "ErrorReply",
    "Services",
    "authorize",
    "create_app",
    "error_reply",
    "error_response",
    "record_request",
    "services",
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
    """What the handlers need, built by `azuld.service` and handed to `create_app`."""

    dispatcher: Dispatcher
    blobs: BlobStore
    settings: Settings
    auth: Authorizer


def services() -> Services:
    return cast(Services, current_app.config["AZULD_SERVICES"])


# --- the steps both paths share ---------------------------------------------------------------


def take_request_id(offered: str) -> str:
    """The request's id, also set in `REQUEST_ID`: the caller's `X-Request-Id` if it is plain (it
    goes into every log line and the reply), else a new one."""
    request_id = offered if _REQUEST_ID_PATTERN.fullmatch(offered) else random_hex(8)
    REQUEST_ID.set(request_id)
    return request_id


def authorize(
    svc: Services,
    method: str,
    path: str,
    model: str,
    resets: Iterable[str],
    authorization: str,
    remote: str,
) -> str:
    """The caller's name. `resets` are the query's `reset` values: any true one needs `admin`
    (a fetch honours the last one, so checking only the first would let `reset=false&reset=true`
    past).

    Raises:
        Unauthorized, Forbidden: see `azuld.http.auth`.
    """
    auth = svc.auth
    if not auth.enabled:  # every request is allowed: skip working out the roles it needs
        return "anonymous"
    reset = any(value in _TRUE for value in resets)
    return auth.check(required_roles(method, path, model, reset), authorization, remote)


def record_request(svc: Services, route: str, method: str, status: int, started: float) -> None:
    """Count the request under its route rule (`unmatched` if none) and observe its latency."""
    requests, latency = svc.dispatcher.metrics.http_children(route, method, status)
    requests.inc()
    latency.observe(trio.current_time() - started)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error as HTTP: the status and the JSON `ErrorBody`, served as `ERROR_CONTENT_TYPE` with
    `X-Content-Type-Options: nosniff`, and a `Content-Range` for a range past the end."""

    status: int
    body: bytes
    content_range: str | None = None


def _error(status: int, title: str, detail: str, error_enum: str = "") -> ErrorReply:
    body = ErrorBody(
        status=str(status),
        title=title,
        detail=detail,
        error_enum=error_enum or "ErrorStringEnumUnset",
    )
    return ErrorReply(status, msgspec.json.encode(body))


def error_reply(error: Exception) -> ErrorReply:
    """The one translation of an exception to HTTP. Client errors say what was wrong; backend
    failures are 503/507; anything unexpected is logged with its traceback and answered with a
    500 that names only the exception's type."""
    if isinstance(error, ClientError):
        reply = _error(error.http_status, error.title, error.detail, error.error_enum)
        if isinstance(error, RangeNotSatisfiable):
            return ErrorReply(reply.status, reply.body, f"bytes */{error.size}")
        return reply
    if isinstance(error, UpstreamError):
        log.warning("backend unavailable: %s", error)
        title = "insufficient storage" if error.http_status == 507 else "backend unavailable"
        return _error(error.http_status, title, str(error))
    if isinstance(error, AzuldError):
        log.error("unexpected azuld error", exc_info=error)
        return _error(500, "internal error", str(error))
    if isinstance(error, HTTPException):
        status = error.code or 500
        detail = error.description or error.name
        if status == 404:
            detail = "no such route; see docs/protocol.md for the API"
        return _error(status, error.name.lower(), detail)
    log.error("unhandled error in request", exc_info=error)
    return _error(500, "internal error", f"{type(error).__name__}: the error was logged")


# --- the Quart side ---------------------------------------------------------------------------


def _response(reply: ErrorReply) -> Response:
    response = Response(
        reply.body,
        status=reply.status,
        content_type=ERROR_CONTENT_TYPE,
        headers={"X-Content-Type-Options": "nosniff"},
    )
    if reply.content_range is not None:
        response.headers["Content-Range"] = reply.content_range
    return response


def error_response(status: int, title: str, detail: str, error_enum: str = "") -> Response:
    return _response(_error(status, title, detail, error_enum))


async def _error_response(error: Exception) -> Response:
    return _response(error_reply(_misrouted_upload(error)))


def _misrouted_upload(error: Exception) -> Exception:
    """An upload whose source name has a `/` (`POST /api/v3/stream/a/b/content`) matches no
    upload route: routing answers 405 or 404. Say which name is wrong instead."""
    if isinstance(error, MethodNotAllowed | RouteNotFound) and request.method == "POST":
        names = request.path.removeprefix("/api/v3/stream/")
        source, _, label = names.rpartition("/")
        # `<source>/<label>/<sha256>` is the download route: a POST there is a plain 405.
        if names != request.path and "/" in source and not SHA256_PATTERN.fullmatch(label):
            return BadRequest(
                f"invalid source {source!r}: use 1-100 letters, digits, '_' or '-' (an upload "
                "is POST /api/v3/stream/<source>/<label>)",
                title="invalid name",
            )
    return error


async def _start_request() -> None:
    g.started = trio.current_time()
    g.request_id = take_request_id(request.headers.get("X-Request-Id", ""))
    g.caller = authorize(
        services(),
        request.method,
        request.path,
        request.args.get("model", ""),
        request.args.getlist("reset"),
        request.headers.get("Authorization", ""),
        request.remote_addr or "",
    )


async def _finish_request(response: Response) -> Response:
    started = getattr(g, "started", None)
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        record_request(services(), route, request.method, response.status_code, started)
    response.headers["X-Request-Id"] = getattr(g, "request_id", "")
    return response


def create_app(svc: Services) -> QuartTrio:
    """The app serving every route over `svc`: the hot protocol routes as raw ASGI
    (`azuld.http.hot.HotRoutes`, installed as Quart middleware), everything else through Quart."""
    from azuld.http import hot, openapi, ops, streams, ui

    app = QuartTrio("azuld")
    app.config["AZULD_SERVICES"] = svc
    app.config["MAX_CONTENT_LENGTH"] = svc.settings.server.max_event_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.register_blueprint(streams.blueprint)
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(ui.blueprint)
    app.register_blueprint(openapi.blueprint)
    hot.register_rules(app)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.register_error_handler(AzuldError, _error_response)
    app.register_error_handler(HTTPException, _error_response)
    app.register_error_handler(Exception, _error_response)
    # Quart's documented middleware pattern; its test client goes through `asgi_app` too.
    app.asgi_app = hot.HotRoutes(  # type: ignore[method-assign]
        svc, app.asgi_app, body_timeout_seconds=app.config["BODY_TIMEOUT"]
    )
    return app
