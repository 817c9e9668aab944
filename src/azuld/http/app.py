"""Building the app and translating errors to HTTP, once, for every route."""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from dataclasses import dataclass
from typing import cast

import msgspec
import trio
from quart import Response, current_app, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from azuld.dispatcher import Dispatcher
from azuld.errors import AzuldError, ClientError, RangeNotSatisfiable, UpstreamError
from azuld.http.auth import Authorizer, required_roles
from azuld.models.responses import ErrorBody
from azuld.ports import BlobStore
from azuld.settings import Settings

__all__ = ["REQUEST_ID", "Services", "create_app", "error_response", "services"]

_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")

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


def error_response(status: int, title: str, detail: str, error_enum: str = "") -> Response:
    body = ErrorBody(
        status=str(status),
        title=title,
        detail=detail,
        error_enum=error_enum or "ErrorStringEnumUnset",
    )
    return Response(
        msgspec.json.encode(body),
        status=status,
        content_type="application/json; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def _azuld_error(error: AzuldError) -> Response:
    if isinstance(error, ClientError):
        response = error_response(error.http_status, error.title, error.detail, error.error_enum)
        if isinstance(error, RangeNotSatisfiable):
            response.headers["Content-Range"] = f"bytes */{error.size}"
        return response
    if isinstance(error, UpstreamError):
        log.warning("backend unavailable: %s", error)
        title = "insufficient storage" if error.http_status == 507 else "backend unavailable"
        return error_response(error.http_status, title, str(error))
    log.error("unexpected azuld error", exc_info=error)
    return error_response(500, "internal error", str(error))


async def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    detail = error.description or error.name
    if status == 404:
        detail = "no such route; see docs/protocol.md for the API"
    return error_response(status, error.name.lower(), detail)


async def _unexpected(error: Exception) -> Response:
    log.error("unhandled error in request", exc_info=error)
    return error_response(500, "internal error", f"{type(error).__name__}: the error was logged")


async def _start_request() -> None:
    g.started = trio.current_time()
    offered = request.headers.get("X-Request-Id", "")
    # A caller's id is kept only if it is plain: it goes into every log line and the reply.
    g.request_id = offered if _REQUEST_ID_PATTERN.fullmatch(offered) else secrets.token_hex(8)
    REQUEST_ID.set(g.request_id)
    reset = request.args.get("reset", "") in {"1", "t", "T", "true", "True", "TRUE"}
    roles = required_roles(request.method, request.path, request.args.get("model", ""), reset)
    g.caller = services().auth.check(
        roles, request.headers.get("Authorization", ""), request.remote_addr or ""
    )


async def _finish_request(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics = services().dispatcher.metrics
    metrics.http_requests.labels(route, request.method, str(response.status_code)).inc()
    started = getattr(g, "started", None)
    if started is not None:
        metrics.http_latency.labels(route).observe(trio.current_time() - started)
    response.headers["X-Request-Id"] = getattr(g, "request_id", "")
    return response


def create_app(svc: Services) -> QuartTrio:
    """The quart-trio app serving every route over `svc`."""
    from azuld.http import events, openapi, ops, streams, ui

    app = QuartTrio("azuld")
    app.config["AZULD_SERVICES"] = svc
    app.config["MAX_CONTENT_LENGTH"] = svc.settings.server.max_event_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.register_blueprint(events.blueprint)
    app.register_blueprint(streams.blueprint)
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(ui.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.register_error_handler(AzuldError, _azuld_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app
