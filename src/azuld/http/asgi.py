"""What a hot route's handler is given and gives back: the `Request` read straight from the ASGI
scope, the `Reply` it answers with, and the `Front` (`azuld.http.hot.HotRoutes`) that serves it.

A hot handler is `async def handler(front, request, parts) -> Reply | None`, with `parts` the
values of the rule's `<...>` parts in order; `None` means the client went away (nothing is sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol
from urllib.parse import unquote

import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler)

from azuld.core.params import ConsumeParams
from azuld.dispatch import FetchResult
from azuld.http.steps import Services

__all__ = [
    "ClientGone",
    "Front",
    "HotHandler",
    "Message",
    "Query",
    "Receive",
    "Reply",
    "Request",
    "Send",
    "bytes_reply",
    "parse_qsl",
]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Bytes that are not UTF-8 after percent-decoding stay percent-encoded, as in `request.args`.
_KEEP_ESCAPED = "werkzeug.url_quote"


class ClientGone(Exception):
    """The client disconnected before the reply: nothing is sent and nothing counted."""


class Query:
    """The query's pairs in order, read as werkzeug's `MultiDict`: `get` is the first value.
    Immutable: one is shared by every request with the same query string (`HotRoutes.query`)."""

    __slots__ = ("pairs", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        # Strict UTF-8, as werkzeug: a query that is not is an unexpected error (a 500) on both
        # paths. HTTP/1.1 servers only pass ASCII here.
        self.pairs = tuple(parse_qsl(raw.decode())) if raw else ()

    def get(self, name: str, default: str = "") -> str:
        for key, value in self.pairs:
            if key == name:
                return value
        return default

    def getlist(self, name: str) -> Iterator[str]:
        return (value for key, value in self.pairs if key == name)


def parse_qsl(query: str) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(query, keep_blank_values=True, errors=werkzeug's)`, what werkzeug's
    `request.args` is made of, in a third of its time."""
    pairs = []
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unquote_plus(name), _unquote_plus(value)))
    return pairs


def _unquote_plus(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" in text:
        text = unquote(text, errors=_KEEP_ESCAPED)
    return text


class Request:
    """What the handlers read of one request (header names lower-case, as bytes)."""

    __slots__ = ("headers", "method", "path", "query", "receive")

    def __init__(
        self, method: str, path: str, headers: dict[bytes, str], query: Query, receive: Receive
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.query = query
        self.receive = receive


class Reply:
    """A reply: status and headers, then `body`, then `rest` streamed (a download)."""

    __slots__ = ("body", "headers", "rest", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        rest: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.rest = rest


def bytes_reply(content_type: bytes, body: bytes) -> Reply:
    """A 200 with `body`, whole."""
    return Reply(
        200, [(b"content-type", content_type), (b"content-length", b"%d" % len(body))], body
    )


class Front(Protocol):
    """What a hot handler may ask of the front serving it (`azuld.http.hot.HotRoutes`)."""

    @property
    def svc(self) -> Services: ...

    async def read_body(self, request: Request) -> bytes:
        """The whole request body, within the event body limits.

        Raises:
            RequestEntityTooLarge, RequestTimeout: over `server.max_event_body_bytes`, too slow.
            ClientGone: the client disconnected.
        """

    def consume_params(self, model: str, active: bool, query: Query) -> ConsumeParams:
        """A fetch's parameters (remembered per query).

        Raises:
            Unprocessable: see `azuld.core.params.parse_consume_params`.
        """

    async def fetch_unless_gone(
        self, receive: Receive, params: ConsumeParams
    ) -> FetchResult | None:
        """`Dispatcher.fetch(params)`, or `None` if the client disconnected first."""


HotHandler = Callable[[Front, Request, list[str]], Awaitable[Reply | None]]
