"""How the plugin runner talks to a dispatcher: a small Protocol and its HTTP implementation.

The HTTP client makes the same requests azul-runner makes (runner reference section 2), so an
azuld plugin also runs against the Go dispatcher. Its errors say whether asking again can help:
`DispatcherUnreachable` (no HTTP answer at all) and `DispatcherBusy` (a 5xx, 408, 425 or 429:
"not now") are both `DispatcherUnavailable`, worth retrying; `DispatcherRefused` (any other 4xx,
or a post the dispatcher stored none of) gives the same answer every time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import msgspec

from azuld.models.events import BinaryEvent, Datastream, PluginEvent, StatusEvent
from azuld.models.responses import DataResponse
from azuld.plugin.http1 import Http1Client, HttpFailure, HttpReply

__all__ = [
    "DispatcherBusy",
    "DispatcherClient",
    "DispatcherError",
    "DispatcherRefused",
    "DispatcherUnavailable",
    "DispatcherUnreachable",
    "HttpDispatcherClient",
    "multipart_parts",
    "open_dispatcher",
]

# A long-poll may take its `deadline`; a reply later than this past it means trouble.
FETCH_MARGIN_SECONDS = 20.0
# Any other request: the longest the dispatcher may stay silent (an upload is read meanwhile).
REQUEST_WAIT_SECONDS = 60.0
# Answers that mean "not now": asked again after a pause (RFC 9110 and 8470, and 429).
RETRYABLE_STATUSES = frozenset({408, 425, 429})

_encode = msgspec.json.Encoder().encode
_events_decoder = msgspec.json.Decoder(dict[str, list[BinaryEvent]])
_post_reply_decoder = msgspec.json.Decoder(dict[str, Any])
_data_decoder = msgspec.json.Decoder(DataResponse)


class DispatcherError(Exception):
    """The dispatcher answered with an error, or not at all."""


class DispatcherUnavailable(DispatcherError):
    """Asking again later may work. `retry_after_seconds`: how long the dispatcher said to wait."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DispatcherUnreachable(DispatcherUnavailable):
    """No HTTP answer: no connection, a connection lost or silent too long, or not HTTP."""


class DispatcherBusy(DispatcherUnavailable):
    """The dispatcher answered "not now": a 5xx, 408, 425 or 429."""


class DispatcherRefused(DispatcherError):
    """The dispatcher said no (a 4xx, or a post of which it stored nothing): the same request
    gets the same answer. `status` is the HTTP status (200 for a post with failures)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status != 200 else message)
        self.status = status
        self.message = message


class DispatcherClient(Protocol):
    url: str

    async def register(self, event: PluginEvent) -> None: ...

    async def fetch(self, query: Sequence[tuple[str, str]]) -> list[BinaryEvent]: ...

    async def read(self, source: str, stream: Datastream, offset: int, length: int | None) -> bytes:
        """Bytes of a blob. Raises `FileNotFoundError` if the dispatcher has no such blob."""
        ...

    async def upload(self, source: str, label: str, data: bytes) -> Datastream: ...

    async def post_status(self, event: StatusEvent) -> None: ...


def multipart_parts(body: bytes, content_type: str) -> dict[str, bytes]:
    kind, _, rest = content_type.partition(";")
    boundary = ""
    for option in rest.split(";"):
        name, _, value = option.strip().partition("=")
        if name == "boundary":
            boundary = value.strip('"')
    if kind.strip() != "multipart/form-data" or not boundary:
        raise DispatcherError(f"fetch reply is not multipart/form-data: {content_type!r}")
    parts: dict[str, bytes] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        marker = b'name="'
        if marker in head:
            name = head.split(marker, 1)[1].split(b'"', 1)[0].decode()
            parts[name] = payload.removesuffix(b"\r\n")
    return parts


def _explain(reply: HttpReply) -> str:
    """The dispatcher's own words for an error reply (azuld's and Go's `title`/`detail`)."""
    try:
        body = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict) and (body.get("detail") or body.get("title")):
        title, detail = str(body.get("title") or ""), str(body.get("detail") or "")
        return f"{title}: {detail}" if title and detail else title or detail
    return reply.body[:500].decode(errors="replace").strip() or "(no message)"


def _retry_after(reply: HttpReply) -> float | None:
    value = reply.headers.get("retry-after", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: not worth parsing, the backoff applies


class HttpDispatcherClient:
    """`DispatcherClient` over HTTP/1.1 (`Http1Client`: one keep-alive pool for every worker)."""

    def __init__(self, http: Http1Client) -> None:
        self.http = http
        self.url = http.base_url
        self._queries: dict[tuple[tuple[str, str], ...], str] = {}

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        wait_seconds: float = REQUEST_WAIT_SECONDS,
        accept: tuple[int, ...] = (200,),
    ) -> HttpReply:
        """One request; the reply if its status is in `accept`.

        Raises:
            DispatcherUnreachable, DispatcherBusy, DispatcherRefused: as the module says.
        """
        try:
            reply = await self.http.request(
                method, path, body=body, headers=headers, wait_seconds=wait_seconds
            )
        except HttpFailure as exc:
            raise DispatcherUnreachable(str(exc)) from exc
        if reply.status in accept:
            return reply
        where = f"{method} {path.partition('?')[0]}"
        if reply.status >= 500 or reply.status in RETRYABLE_STATUSES:
            raise DispatcherBusy(
                f"{where} gave {reply.status}: {_explain(reply)}",
                retry_after_seconds=_retry_after(reply),
            )
        raise DispatcherRefused(reply.status, f"{where}: {_explain(reply)}")

    async def _post_events(self, model: str, body: bytes) -> None:
        reply = await self._request(
            "POST",
            f"/api/v2/event?avro-format=false&model={model}",
            body=body,
            headers=(("content-type", "application/json"),),
        )
        try:
            answer = _post_reply_decoder.decode(reply.body)
        except msgspec.DecodeError as exc:
            raise DispatcherUnreachable(f"the {model} post's reply is not JSON: {exc}") from exc
        if answer.get("total_failures"):
            raise DispatcherRefused(
                200, f"the dispatcher stored none of the {model} event: {answer.get('failures')}"
            )

    async def register(self, event: PluginEvent) -> None:
        await self._post_events("plugin", _encode([event]))

    def _query(self, query: Sequence[tuple[str, str]]) -> str:
        key = tuple(query)
        encoded = self._queries.get(key)
        if encoded is None:
            if len(self._queries) > 64:
                self._queries.clear()
            encoded = self._queries[key] = urlencode(key, safe=",/", quote_via=quote)
        return encoded

    async def fetch(
        self, query: Sequence[tuple[str, str]], *, passive: bool = False
    ) -> list[BinaryEvent]:
        mode = "passive" if passive else "active"
        deadline = next((float(v) for k, v in query if k == "deadline"), 0.0)
        reply = await self._request(
            "GET",
            f"/api/v2/event/binary/{mode}?{self._query(query)}",
            wait_seconds=(deadline or REQUEST_WAIT_SECONDS) + FETCH_MARGIN_SECONDS,
        )
        try:
            parts = multipart_parts(reply.body, reply.headers.get("content-type", ""))
            if "events" not in parts:
                raise DispatcherError("fetch reply has no 'events' part")
            return _events_decoder.decode(parts["events"])["events"]
        except (DispatcherError, msgspec.DecodeError) as exc:
            # Not a dispatcher's reply (a proxy's page, a server starting up): try again later.
            raise DispatcherUnreachable(f"fetch reply not understood: {exc}") from exc

    async def read(self, source: str, stream: Datastream, offset: int, length: int | None) -> bytes:
        if length == 0:
            return b""
        end = "" if length is None else str(offset + length - 1)
        reply = await self._request(
            "GET",
            f"/api/v3/stream/{source}/{stream.label}/{stream.sha256}",
            headers=(("range", f"bytes={offset}-{end}"),),
            accept=(200, 206, 404, 416),
        )
        if reply.status == 404:
            raise FileNotFoundError(f"the dispatcher has no blob {stream.sha256}")
        if reply.status == 416:
            return b""
        return reply.body

    async def upload(self, source: str, label: str, data: bytes) -> Datastream:
        reply = await self._request("POST", f"/api/v3/stream/{source}/{label}", body=data)
        try:
            return _data_decoder.decode(reply.body).data
        except msgspec.DecodeError as exc:
            raise DispatcherUnreachable(f"the upload's reply is not understood: {exc}") from exc

    async def post_status(self, event: StatusEvent) -> None:
        await self._post_events("status", _encode([event]))


@asynccontextmanager
async def open_dispatcher(url: str, plugin_name: str) -> AsyncIterator[HttpDispatcherClient]:
    """The client `azuld plugin run` talks to the dispatcher at `url` with; its connections are
    closed on exit.

    Raises:
        ValueError: `url` is not an http:// or https:// URL.
    """
    http = Http1Client(url, headers=(("user-agent", f"azuld-plugin-{plugin_name}"),))
    try:
        yield HttpDispatcherClient(http)
    finally:
        await http.aclose()
