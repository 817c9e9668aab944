"""A small typed client of the daemon's HTTP API for the command line: each method makes one
request and returns its reply decoded into a struct (`azuld.cli.replies`, `azuld.models`).

Raises (every method):
    Unreachable: nothing answers at the server URL.
    ConnectionLost: the connection failed after that (the daemon stopped, or a timeout).
    Refused: the daemon answered with an error (its status, title and detail).
    DaemonError: the reply is not what azuld sends (another server at that URL?).
"""

from __future__ import annotations

from collections.abc import Sequence
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

__all__ = ["AzuldClient"]

_Reply = TypeVar("_Reply")
_CONNECT_SECONDS = 5.0


class AzuldClient:
    """The daemon at `server` (a URL). Close it, or use it as a context manager."""

    def __init__(
        self,
        server: str,
        *,
        timeout_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server
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
        return self._decode(response, parts.get("events", b""), StatusFeed).events

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
        return self._decode(response, response.content, reply)

    def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(self.server) from exc
        except httpx.TransportError as exc:
            raise ConnectionLost(self.server, exc) from exc
        if response.status_code != 200:
            raise _refused(response)
        return response

    def _decode(self, response: httpx.Response, body: bytes, reply: type[_Reply]) -> _Reply:
        try:
            return msgspec.json.decode(body, type=reply)
        except msgspec.DecodeError as exc:  # ValidationError too
            where = f"{response.request.method} {response.request.url.path}"
            raise DaemonError(
                f"{self.server} did not answer {where} as azuld does: {exc}"
            ) from None


def _refused(response: httpx.Response) -> Refused:
    try:
        error = msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.DecodeError:
        return Refused(response.status_code, "", response.text[:200])
    return Refused(response.status_code, error.title, error.detail)
