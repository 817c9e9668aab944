"""How the plugin runner talks to a dispatcher: a small Protocol and its HTTP implementation.

The HTTP client makes the same requests azul-runner makes (runner reference section 2), so an
azuld plugin also runs against the Go dispatcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import httpx
import msgspec

from azuld.models.events import BinaryEvent, Datastream, PluginEvent, StatusEvent
from azuld.models.responses import DataResponse

__all__ = ["DispatcherClient", "DispatcherError", "HttpDispatcherClient", "multipart_parts"]

_encode = msgspec.json.Encoder().encode
_events_decoder = msgspec.json.Decoder(dict[str, list[BinaryEvent]])


class DispatcherError(Exception):
    """The dispatcher answered with an error, or not at all."""


class DispatcherClient(Protocol):
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


class HttpDispatcherClient:
    """`DispatcherClient` over HTTP with httpx (which runs on Trio through anyio)."""

    def __init__(self, client: httpx.AsyncClient, plugin_name: str) -> None:
        self._client = client
        self._headers = {"user-agent": f"azuld-plugin-{plugin_name}"}

    async def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code != 200:
            raise DispatcherError(
                f"{response.request.method} {response.request.url.path} gave "
                f"{response.status_code}: {response.text[:500]}"
            )
        return response

    async def _post_events(self, model: str, body: bytes) -> None:
        response = await self._client.post(
            "/api/v2/event",
            params={"model": model},
            content=body,
            headers={**self._headers, "content-type": "application/json"},
        )
        reply = (await self._check(response)).json()
        if reply.get("total_failures"):
            raise DispatcherError(f"dispatcher rejected the {model} event: {reply['failures']}")

    async def register(self, event: PluginEvent) -> None:
        await self._post_events("plugin", _encode([event]))

    async def fetch(
        self, query: Sequence[tuple[str, str]], *, passive: bool = False
    ) -> list[BinaryEvent]:
        mode = "passive" if passive else "active"
        response = await self._client.get(
            f"/api/v2/event/binary/{mode}", params=list(query), headers=self._headers
        )
        await self._check(response)
        parts = multipart_parts(response.content, response.headers.get("content-type", ""))
        if "events" not in parts:
            raise DispatcherError("fetch reply has no 'events' part")
        return _events_decoder.decode(parts["events"])["events"]

    async def read(self, source: str, stream: Datastream, offset: int, length: int | None) -> bytes:
        if length == 0:
            return b""
        end = "" if length is None else str(offset + length - 1)
        response = await self._client.get(
            f"/api/v3/stream/{source}/{stream.label}/{stream.sha256}",
            headers={**self._headers, "range": f"bytes={offset}-{end}"},
        )
        if response.status_code == 404:
            raise FileNotFoundError(f"the dispatcher has no blob {stream.sha256}")
        if response.status_code == 416:
            return b""
        if response.status_code not in (200, 206):
            await self._check(response)
        return response.content

    async def upload(self, source: str, label: str, data: bytes) -> Datastream:
        response = await self._client.post(
            f"/api/v3/stream/{source}/{label}", content=data, headers=self._headers
        )
        await self._check(response)
        return msgspec.json.decode(response.content, type=DataResponse).data

    async def post_status(self, event: StatusEvent) -> None:
        await self._post_events("status", _encode([event]))
