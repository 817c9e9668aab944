"""The ASGI app: Quart (quart-trio) for the routes the table gives it, behind the hot front.

`create_app` makes Quart's URL map from the route table (`azuld.http.routes.ROUTES`): each Quart
route's view is called with the `Services` and the rule's parts; each hot route gets a view that
never runs (so that Quart's 405s and the URL map know every route). It then installs
`azuld.http.hot.HotRoutes` in front, which answers the hot routes itself. On the Quart side the
shared steps (`azuld.http.steps`) run in `before_request`, `after_request` and the error handlers.
"""

from __future__ import annotations

import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from azuld.core.validation import SHA256_PATTERN
from azuld.errors import AzuldError, BadRequest
from azuld.http.auth import Access
from azuld.http.hot import HotRoutes
from azuld.http.rejections import REJECTIONS
from azuld.http.routes import NO_ROUTE, ROUTES, QuartView
from azuld.http.steps import (
    ERROR_CONTENT_TYPE,
    Services,
    authorize,
    error_reply,
    record_rejection,
    record_request,
    take_request_id,
)

__all__ = ["create_app"]


def create_app(svc: Services) -> QuartTrio:
    """The app serving every route over `svc`."""
    app = QuartTrio("azuld")
    REJECTIONS.configure(svc.settings.server.rejected_log_lines_per_second)
    app.config["MAX_CONTENT_LENGTH"] = svc.settings.server.max_event_body_bytes
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    get_rules = {route.rule for route in ROUTES if route.method == "GET"}
    access: dict[tuple[str, str], Access] = {}
    for route in ROUTES:
        access[(route.rule, route.method)] = route.access
        if route.method == "HEAD" and route.rule in get_rules:
            continue  # werkzeug answers HEAD with the GET rule
        view = _served_in_front if route.quart is None else _view(svc, route.quart)
        app.add_url_rule(route.rule, route.doc.operation_id, view, methods=[route.method])

    async def start_request() -> None:
        g.started = trio.current_time()
        g.request_id = take_request_id(request.headers.get("X-Request-Id", ""))
        rule = request.url_rule.rule if request.url_rule is not None else ""
        route_access = access.get((rule, request.method)) or access.get((rule, "GET"), NO_ROUTE)
        g.caller = authorize(
            svc,
            route_access,
            request.args.get("model", ""),
            request.args.getlist("reset"),
            request.headers.get("Authorization", ""),
            request.remote_addr or "",
        )

    async def finish_request(response: Response) -> Response:
        started = getattr(g, "started", None)
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        if started is not None:
            record_request(svc, route, request.method, response.status_code, started)
        request_id = getattr(g, "request_id", "")
        if 400 <= response.status_code < 500:
            record_rejection(
                route,
                request.method,
                response.status_code,
                getattr(g, "rejection", ""),
                request.remote_addr or "-",
                request.headers.get("User-Agent", ""),
                request_id or "-",
            )
        response.headers["X-Request-Id"] = request_id
        return response

    app.before_request(start_request)
    app.after_request(finish_request)
    app.register_error_handler(AzuldError, _error_response)
    app.register_error_handler(HTTPException, _error_response)
    app.register_error_handler(Exception, _error_response)
    # Quart's documented middleware pattern; its test client goes through `asgi_app` too.
    app.asgi_app = HotRoutes(  # type: ignore[method-assign]
        svc, app.asgi_app, body_timeout_seconds=app.config["BODY_TIMEOUT"]
    )
    return app


def _view(svc: Services, handler: QuartView) -> QuartView:
    async def view(**parts: str) -> Response:
        return await handler(svc, **parts)

    return view


async def _served_in_front(**parts: str) -> Response:
    """The view of the hot rules in Quart's URL map. Never runs: `HotRoutes` answers them first."""
    raise RuntimeError("a hot route reached Quart: HotRoutes must answer it in front")


async def _error_response(error: Exception) -> Response:
    reply = error_reply(_misrouted_upload(error))
    g.rejection = reply.detail  # for the log line of a 4xx (`finish_request`)
    response = Response(
        reply.body,
        status=reply.status,
        content_type=ERROR_CONTENT_TYPE,
        headers={"X-Content-Type-Options": "nosniff"},
    )
    if reply.content_range is not None:
        response.headers["Content-Range"] = reply.content_range
    return response


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
