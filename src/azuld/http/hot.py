"""The hot routes as raw ASGI, in front of Quart.

Plugins call three things all the time: publish (`POST /api/v2/event` and the seed's names for
it), fetch (`GET /api/v2/event/<model>/<mode>`, `GET /api/v1/processing/<entity_type>`) and
download (`GET`/`HEAD /api/v3/stream/<source>/<label>/<sha256>`); plugins and `azuld submit`
upload (`POST /api/v3/stream/<source>/<label>`, `POST /api/v1/data/<sha256>`). Through Quart
and werkzeug each of those cost several times the dispatcher's own work in framework CPU.
`HotRoutes` answers the routes the table marks `hot` (`azuld.http.routes`) straight from the ASGI
scope, with the handlers in `azuld.http.events` and `azuld.http.streams`, and hands every other
request to Quart untouched.

Same behaviour, by construction where it can be:

- The per-request steps are the ones the Quart path runs (`azuld.http.steps`): `take_request_id`,
  `authorize`, `error_reply` and `record_request`, with the table's rule strings (which are also
  Quart's) as the metrics' route labels.
- Routing is exact, as werkzeug's (`azuld.http.router.Router`): the method upper-cased, leading
  slashes folded, `root_path` stripped. Anything else (an empty segment, a trailing slash, another
  method) goes to Quart, which answers 404, 308 or 405 as before: `create_app` puts the hot rules
  in Quart's URL map too, with a view that never runs.
- The query string is parsed as werkzeug's `request.args` (`azuld.http.asgi.parse_qsl`); request
  bodies are capped at `server.max_event_body_bytes` (413) and must arrive within Quart's
  `BODY_TIMEOUT` (408), with werkzeug's own exceptions, so the error bodies are Quart's.

Cancellation: quart-trio cancels a handler when its client disconnects, which takes a task per
request reading `receive()`; here only the requests that take long get one. A task per fetch
would cost more than the rest of a fetch that finds its jobs at once (most of them, under load).
So a fetch only registers itself, and every `_WATCH_AFTER_SECONDS` a task of the app's lifespan
gives each fetch still in flight a watcher: a client that hangs up on a long-poll is noticed at
once after that (so the poll stops counting against `dispatch.max_polls_per_key`). Without a
lifespan (a bare ASGI call) a fetch gets a watcher of its own at once. A download that streams (a
blob bigger than one read of the store; a smaller one is a single send) has its own watcher. A
publish has none once its body is in: the events of a client that left are stored all the same.

A watcher never interrupts a `send` (the server's own bookkeeping runs in it; see
`azuld.http.hypercorn_server._Front`): a fetch replies after its watched scope, and a streaming
download shields each send, with a deadline. A client that goes away gets no reply and is not
counted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar
from urllib.parse import urlparse

import trio
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from azuld.core.params import ConsumeParams, parse_consume_params
from azuld.dispatch import Dispatcher, FetchResult
from azuld.http.asgi import ClientGone, Message, Query, Receive, Reply, Request, Send
from azuld.http.rejections import REJECTIONS, SUMMARY_EVERY_SECONDS
from azuld.http.router import Router
from azuld.http.routes import ROUTES, Route
from azuld.http.server import SEND_TIMEOUT_SECONDS
from azuld.http.steps import (
    ERROR_CONTENT_TYPE,
    Services,
    authorize,
    error_reply,
    record_rejection,
    record_request,
    take_request_id,
)

__all__ = ["HotRoutes"]

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

log = logging.getLogger(__name__)

# How often fetches in flight are given a task that watches for their client's disconnect.
_WATCH_AFTER_SECONDS = 0.25
_WANTED_HEADERS = frozenset({b"authorization", b"content-length", b"range", b"x-request-id"})

# Plugin workers send the same query string on every call (a fleet of them, thousands of times a
# second), so its parse, and a fetch's `ConsumeParams`, are remembered per query string: up to
# `_MEMO_ENTRIES` distinct ones (the oldest forgotten first), of at most `_MEMO_MAX_QUERY_BYTES`
# each, so that a client sending endless distinct queries costs a bounded amount of memory.
_MEMO_ENTRIES = 256
_MEMO_MAX_QUERY_BYTES = 2048

_ERROR_CONTENT_TYPE = ERROR_CONTENT_TYPE.encode()

_Key = TypeVar("_Key")
_Value = TypeVar("_Value")


class _Memo(Generic[_Key, _Value]):
    """A dict of at most `limit` entries that forgets its oldest first."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._entries: dict[_Key, _Value] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _Key) -> _Value | None:
        return self._entries.get(key)

    def put(self, key: _Key, value: _Value) -> None:
        entries = self._entries
        if len(entries) >= self.limit:
            del entries[next(iter(entries))]
        entries[key] = value


def _error(error: Exception) -> tuple[Reply, str]:
    """The reply to `error`, and its detail."""
    reply = error_reply(error)
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"content-type", _ERROR_CONTENT_TYPE),
        (b"content-length", b"%d" % len(reply.body)),
    ]
    if reply.content_range is not None:
        headers.append((b"content-range", reply.content_range.encode()))
    return Reply(reply.status, headers, reply.body), reply.detail


def _rejected(scope: Message, route: str, method: str, reply: Reply, reason: str, rid: str) -> None:
    """Log a 4xx (rarely needed: the user agent is looked up only then)."""
    user_agent = next((v for k, v in scope["headers"] if k.lower() == b"user-agent"), b"")
    client = scope.get("client")
    record_rejection(
        route,
        method,
        reply.status,
        reason,
        client[0] if client else "<local>",
        user_agent.decode("latin-1"),
        rid,
    )


async def _close(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()


def _route_path(scope: Message) -> str | None:
    """The path Quart routes on (`None`: one Quart answers 404 to before routing)."""
    path: str = scope["path"]
    if path[:1] != "/":
        path = urlparse(path).path  # an absolute-form target, as Quart
    root_path: str = scope.get("root_path", "")
    if root_path:
        if path == root_path or not path.startswith(root_path):
            return None
        path = path.removeprefix(root_path)
    if path[1:2] == "/" or not path:
        path = "/" + path.lstrip("/")  # as werkzeug's `Request.path`
    return path


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel `scope` once the client disconnects. Request body messages (a GET's is empty) are
    read and dropped."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _watch(receive: Receive, fetch: trio.CancelScope, watcher: trio.CancelScope) -> None:
    """`_cancel_on_disconnect` in the lifespan's nursery, until `watcher` is cancelled."""
    with watcher:
        try:
            await _cancel_on_disconnect(receive, fetch)
        except Exception:  # the server's `receive` failed: the fetch ends on its own
            log.exception("cannot watch a long-poll for its client's disconnect")


class HotRoutes:
    """ASGI middleware: answers the hot routes, passes everything else to `fallback` (Quart's
    `asgi_app`). Install with `app.asgi_app = HotRoutes(svc, app.asgi_app, ...)`. Its handlers
    are given it as their `Front` (`azuld.http.asgi`)."""

    def __init__(
        self,
        svc: Services,
        fallback: ASGIApp,
        *,
        body_timeout_seconds: float,
        routes: Iterable[Route] = ROUTES,
    ) -> None:
        self.svc = svc
        self.fallback = fallback
        self._router = Router(route for route in routes if route.hot is not None)
        self.max_body_bytes = svc.settings.server.max_event_body_bytes
        self.body_timeout_seconds = body_timeout_seconds
        # The lifespan's nursery, for the watchers of long-polls (`None` outside a lifespan).
        self._nursery: trio.Nursery | None = None
        # Fetches in flight by their cancel scope: not yet watched (with their `receive`), and
        # watched (with their watcher's scope).
        self._unwatched: dict[trio.CancelScope, Receive] = {}
        self._watched: dict[trio.CancelScope, trio.CancelScope] = {}
        self._queries: _Memo[bytes, Query] = _Memo(_MEMO_ENTRIES)
        self._consume_params: _Memo[tuple[Any, ...], ConsumeParams] = _Memo(_MEMO_ENTRIES)

    def query(self, raw: bytes) -> Query:
        """The parsed query string, remembered (see `_MEMO_ENTRIES`)."""
        query = self._queries.get(raw)
        if query is None:
            query = Query(raw)
            if len(raw) <= _MEMO_MAX_QUERY_BYTES:
                self._queries.put(raw, query)
        return query

    def consume_params(self, model: str, active: bool, query: Query) -> ConsumeParams:
        """`parse_consume_params` of a fetch, remembered per query (only the valid ones).

        Raises:
            Unprocessable: see `parse_consume_params`.
        """
        dispatch = self.svc.dispatcher.settings  # the dispatcher's: SIGHUP replaces them
        limits = (
            dispatch.default_deadline_seconds,
            dispatch.max_deadline_seconds,
            dispatch.max_count,
        )
        key = (model, active, query.raw, limits)
        params = self._consume_params.get(key)
        if params is None:
            params = parse_consume_params(
                model,
                active,
                query.pairs,
                default_deadline_seconds=limits[0],
                max_deadline_seconds=limits[1],
                max_count=limits[2],
            )
            if len(query.raw) <= _MEMO_MAX_QUERY_BYTES:
                self._consume_params.put(key, params)
        return params

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = _route_path(scope)
            if path is not None:
                method = scope["method"].upper()
                found = self._router.match(method, path)
                if found is not None:
                    await self._serve(scope, method, path, found, receive, send)
                    return
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.fallback(scope, receive, send)

    async def _lifespan(self, scope: Message, receive: Receive, send: Send) -> None:
        """Quart's lifespan, inside the nursery where long-polls are watched."""
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_long_polls, nursery)
            nursery.start_soon(_sum_up_rejections)
            self._nursery = nursery
            try:
                await self.fallback(scope, receive, send)
            except Exception as exc:  # raised past the nursery, not wrapped in a group
                failure = exc
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _watch_long_polls(self, nursery: trio.Nursery) -> None:
        """Give every fetch in flight at each pass a task that watches for its disconnect."""
        while True:
            await trio.sleep(_WATCH_AFTER_SECONDS)
            for fetch, receive in self._unwatched.items():
                watcher = trio.CancelScope()
                self._watched[fetch] = watcher
                nursery.start_soon(_watch, receive, fetch, watcher)
            self._unwatched.clear()

    async def fetch_unless_gone(
        self, receive: Receive, params: ConsumeParams
    ) -> FetchResult | None:
        """`Dispatcher.fetch(params)`, or `None` if the client disconnected first (the fetch is
        then cancelled: jobs it took come back when their leases expire).

        Raises:
            What `Dispatcher.fetch` raises.
        """
        if self._nursery is None:  # no lifespan (a bare ASGI call): a watcher of its own
            return await _fetch_watched(self.svc.dispatcher, receive, params)
        with trio.CancelScope() as fetch:
            self._unwatched[fetch] = receive
            try:
                return await self.svc.dispatcher.fetch(params)
            finally:
                if self._unwatched.pop(fetch, None) is None:
                    self._watched.pop(fetch).cancel()
        return None

    async def _serve(
        self,
        scope: Message,
        method: str,
        path: str,
        found: tuple[Route, list[str]],
        receive: Receive,
        send: Send,
    ) -> None:
        started = trio.current_time()
        route, parts = found
        handler = route.hot
        assert handler is not None
        headers: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            name = name.lower()
            if name in _WANTED_HEADERS and name not in headers:
                headers[name] = value.decode("latin-1")
        request_id = take_request_id(headers.get(b"x-request-id", ""))
        reply: Reply | None
        try:
            query = self.query(scope["query_string"])
            client = scope.get("client")
            authorize(
                self.svc,
                route.access,
                query.get("model"),
                query.getlist("reset"),
                headers.get(b"authorization", ""),
                client[0] if client else "<local>",
            )
            reply = await handler(self, Request(method, path, headers, query, receive), parts)
        except ClientGone:
            reply = None
        except Exception as error:
            reply, reason = _error(error)
            if 400 <= reply.status < 500:
                _rejected(scope, route.rule, method, reply, reason, request_id)
        if reply is None:
            return
        record_request(self.svc, route.rule, method, reply.status, started)
        reply.headers.append((b"x-request-id", request_id.encode()))
        start = {"type": "http.response.start", "status": reply.status, "headers": reply.headers}
        if reply.rest is not None:
            await self._stream(start, reply.body, reply.rest, receive, send)
            return
        await send(start)
        body = b"" if method == "HEAD" else reply.body
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def read_body(self, request: Request) -> bytes:
        """The whole request body.

        Raises:
            RequestEntityTooLarge: more than `server.max_event_body_bytes` (413).
            RequestTimeout: it did not all arrive within the body timeout (408).
            ClientGone: the client disconnected.
        """
        limit = self.max_body_bytes
        declared = request.headers.get(b"content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise RequestEntityTooLarge()
        chunks: list[bytes] = []
        size = 0
        # An absolute deadline: `move_on_after`'s relative one costs half as much again per POST.
        deadline = trio.current_time() + self.body_timeout_seconds
        with trio.CancelScope(deadline=deadline) as timeout:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise RequestEntityTooLarge()
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if timeout.cancelled_caught:
            raise RequestTimeout()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _stream(
        self, start: Message, first: bytes, rest: AsyncIterator[bytes], receive: Receive, send: Send
    ) -> None:
        """Send `start`, `first`, then `rest` as it is read, until the client disconnects. Once
        the reply has started, a read that fails is logged, and the short body tells the client."""
        try:
            await send(start)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
                await _send_chunks(first, rest, _shielded(send))
                nursery.cancel_scope.cancel()
        finally:
            await _close(rest)


async def _sum_up_rejections() -> None:
    """The summary of rejections not logged (`azuld.http.rejections`), when one is due."""
    while True:
        await trio.sleep(SUMMARY_EVERY_SECONDS / 2)
        REJECTIONS.flush(trio.current_time())


async def _fetch_watched(
    dispatcher: Dispatcher, receive: Receive, params: ConsumeParams
) -> FetchResult | None:
    result: FetchResult | None = None
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        try:
            result = await dispatcher.fetch(params)
        except Exception as exc:  # raised past the nursery, not wrapped in a group
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


def _shielded(send: Send) -> Send:
    async def shielded_send(message: Message) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT_SECONDS):
            await send(message)

    return shielded_send


async def _send_chunks(first: bytes, rest: AsyncIterator[bytes], send: Send) -> None:
    await send({"type": "http.response.body", "body": first, "more_body": True})
    try:
        async for chunk in rest:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except Exception:
        log.exception("a download failed after its reply started; the client gets a short body")
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})
