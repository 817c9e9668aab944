"""A small typed client of the daemon's HTTP API for the command line: each method makes one
request and returns its reply decoded into a struct (`azuld.cli.replies`, `azuld.models`).
`AzuldClient` is synchronous; `AsyncAzuldClient` is the ingest part on trio, for `azuld submit`'s
concurrent uploads.

A daemon that is starting does not listen yet: with `wait_seconds`, a client retries a refused
connection until the daemon first answers, for up to that long, saying so once on stderr
("waiting for azuld at URL…"). After the first answer a refused connection is `Unreachable` at
once (`azuld submit` has its own retries for an outage).

Raises (every method):
    Unreachable: nothing answers at the server URL.
    ConnectionLost: the connection failed after that (the daemon stopped, or a timeout).
    Refused: the daemon answered with an error (its status, title and detail).
    DaemonError: the reply is not what azuld sends (another server at that URL?).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
import msgspec

from azuld.cli.errors import ConnectionLost, DaemonError, Refused, Unreachable
from azuld.cli.replies import (
    FailedJob,
    FailedReply,
    KeySummary,
    PluginsReply,
    ReofferOutcome,
    ReofferReply,
    SourceNode,
    SourceReply,
    StatusFeed,
    StatusSeen,
)
from azuld.models.events import BinaryEvent, Datastream
from azuld.models.responses import DataResponse, ErrorBody, PostResponse

__all__ = ["AsyncAzuldClient", "AzuldClient", "StartWait"]

_Reply = TypeVar("_Reply")
_CONNECT_SECONDS = 5.0
# How often a client waiting for a starting daemon tries again.
_START_POLL_SECONDS = 0.2
# Files up to this size are sent from memory (one read); larger ones are streamed.
_READ_WHOLE_BYTES = 4 * 1024 * 1024
_CHUNK_BYTES = 1024 * 1024


class _Health(msgspec.Struct):
    status: str


class StartWait:
    """Until the daemon first answers, how long to keep retrying a refused connection."""

    def __init__(self, server: str, seconds: float) -> None:
        self.server = server
        self.seconds = seconds
        self.answered = False
        self._deadline: float | None = None

    def retry_after(self, now: float) -> float | None:
        """Seconds to wait before trying again (the first time, said on stderr), or None: the
        daemon was reached before, or has not come up in time."""
        if self.answered or self.seconds <= 0:
            return None
        if self._deadline is None:
            self._deadline = now + self.seconds
            print(
                f"waiting for azuld at {self.server}… (up to {self.seconds:g} s; --wait N)",
                file=sys.stderr,
                flush=True,
            )
        if now >= self._deadline:
            return None
        return min(_START_POLL_SECONDS, self._deadline - now)


class AzuldClient:
    """The daemon at `server` (a URL). Close it, or use it as a context manager."""

    def __init__(
        self,
        server: str,
        *,
        wait_seconds: float = 0.0,
        timeout_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server
        self._start = StartWait(server, wait_seconds)
        self._http = httpx.Client(
            base_url=server,
            timeout=httpx.Timeout(timeout_seconds, connect=_CONNECT_SECONDS),
            transport=transport,
        )

    def __enter__(self) -> AzuldClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the admin API ---------------------------------------------------------------------

    def plugins(self) -> list[KeySummary]:
        """The plugin keys this instance serves, with their lanes, lag and counts."""
        return self._call("GET", "/api/azuld/v1/plugins", PluginsReply).plugins

    def source(self, name: str) -> list[SourceNode]:
        """A source's binaries as a forest, with the features plugins found."""
        return self._call("GET", f"/api/azuld/v1/sources/{name}", SourceReply).binaries

    def failed(self, plugin: str = "", limit: int = 50) -> list[FailedJob]:
        """Dead letters (of `plugin`, or of every plugin), newest first."""
        params = {"plugin": plugin, "limit": str(limit)}
        return self._call("GET", "/api/azuld/v1/failed", FailedReply, params=params).failed

    def reoffer(self, job_ids: Sequence[str], by: str) -> list[ReofferOutcome]:
        """Put failed jobs back in front of their plugin keys; one outcome per job."""
        body = {"job_ids": list(job_ids), "by": by}
        return self._call("POST", "/api/azuld/v1/reoffer", ReofferReply, json=body).reoffered

    def statuses(self, query: Sequence[tuple[str, str]]) -> list[StatusSeen]:
        """One passive fetch of the status feed (`azuld watch`): waits up to its `deadline`."""
        # Imported here: the `azuld.plugin` package brings in the SDK's runner (and trio).
        from azuld.plugin.client import DispatcherError, multipart_parts

        response = self._send("GET", "/api/v2/event/status/passive", params=list(query))
        try:
            parts = multipart_parts(response.content, response.headers.get("content-type", ""))
        except DispatcherError as exc:
            raise DaemonError(f"{self.server}: {exc}") from None
        return _decode(self.server, response, parts.get("events", b""), StatusFeed).events

    # -- ingest ----------------------------------------------------------------------------

    def upload(self, source: str, label: str, content: IO[bytes]) -> Datastream:
        """Store a blob (streamed from `content`); its hashes and file type."""
        path = f"/api/v3/stream/{source}/{label}"
        return self._call("POST", path, DataResponse, content=content).data

    def publish(self, events: Sequence[BinaryEvent]) -> PostResponse:
        """Publish binary events (`sourced`, …); what was stored and what was not."""
        return self._call(
            "POST",
            "/api/v2/event",
            PostResponse,
            params={"model": "binary"},
            content=msgspec.json.encode(events),
            headers={"content-type": "application/json"},
        )

    # -- one request -----------------------------------------------------------------------

    def _call(self, method: str, path: str, reply: type[_Reply], **options: Any) -> _Reply:
        response = self._send(method, path, **options)
        return _decode(self.server, response, response.content, reply)

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        while True:
            try:
                response = self._http.request(method, path, **options)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                pause = self._start.retry_after(time.monotonic())
                if pause is None:
                    raise Unreachable(self.server) from exc
                time.sleep(pause)
                continue
            except httpx.TransportError as exc:
                raise ConnectionLost(self.server, exc) from exc
            self._start.answered = True
            if response.status_code != 200:
                raise _refused(response)
            return response


class AsyncAzuldClient:
    """The daemon at `server`, for uploads and publishes on trio (several at once)."""

    def __init__(
        self,
        server: str,
        *,
        wait_seconds: float = 0.0,
        timeout_seconds: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server
        self._start = StartWait(server, wait_seconds)
        self._http = httpx.AsyncClient(
            base_url=server,
            timeout=httpx.Timeout(timeout_seconds, connect=_CONNECT_SECONDS),
            transport=transport,
        )

    async def __aenter__(self) -> AsyncAzuldClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def check(self) -> None:
        """One cheap request (`/healthz`): waits for a starting daemon (`wait_seconds`)."""
        await self._call("GET", "/healthz", _Health)

    async def upload(self, source: str, label: str, path: Path) -> Datastream:
        """Store the file at `path` as a blob (small files in one read, others streamed);
        its hashes and file type.

        Raises:
            OSError: the file cannot be read.
        """
        import trio

        size, whole = await trio.to_thread.run_sync(_small_file, path)
        content = whole if whole is not None else _chunks(path)
        return (
            await self._call(
                "POST",
                f"/api/v3/stream/{source}/{label}",
                DataResponse,
                content=content,
                headers={"content-length": str(size)},
            )
        ).data

    async def publish(self, events: Sequence[BinaryEvent]) -> PostResponse:
        """Publish binary events (`sourced`, …); what was stored and what was not."""
        return await self._call(
            "POST",
            "/api/v2/event",
            PostResponse,
            params={"model": "binary"},
            content=msgspec.json.encode(events),
            headers={"content-type": "application/json"},
        )

    async def _call(self, method: str, path: str, reply: type[_Reply], **options: Any) -> _Reply:
        import trio

        while True:
            try:
                response = await self._http.request(method, path, **options)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                pause = self._start.retry_after(time.monotonic())
                if pause is None:
                    raise Unreachable(self.server) from exc
                await trio.sleep(pause)
                continue
            except httpx.TransportError as exc:
                raise ConnectionLost(self.server, exc) from exc
            self._start.answered = True
            if response.status_code != 200:
                raise _refused(response)
            return _decode(self.server, response, response.content, reply)


def _small_file(path: Path) -> tuple[int, bytes | None]:
    """The size of the file at `path`, and its content when it is small (one thread hop)."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        return size, handle.read() if size <= _READ_WHOLE_BYTES else None


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    """The file at `path`, a chunk at a time (an async iterator of bytes)."""
    import trio

    async with await trio.open_file(path, "rb") as handle:
        while chunk := await handle.read(_CHUNK_BYTES):
            yield chunk


def _decode(server: str, response: httpx.Response, body: bytes, reply: type[_Reply]) -> _Reply:
    try:
        return msgspec.json.decode(body, type=reply)
    except msgspec.DecodeError as exc:  # ValidationError too
        where = f"{response.request.method} {response.request.url.path}"
        raise DaemonError(f"{server} did not answer {where} as azuld does: {exc}") from None


def _refused(response: httpx.Response) -> Refused:
    try:
        error = msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.DecodeError:
        return Refused(response.status_code, "", response.text[:200])
    return Refused(response.status_code, error.title, error.detail)
