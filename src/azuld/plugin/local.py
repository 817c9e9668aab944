"""Local mode: run a plugin on files, without a dispatcher, and report what it found.

A `LocalDispatcher` stands in for the dispatcher: it holds the files as blobs, describes uploads
itself (hashes and type) and keeps the posted statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import trio

from azuld.core.publish import sourced_event
from azuld.models.events import Author, BinaryEvent, Datastream, PluginEvent, StatusEvent
from azuld.plugin.api import Plugin
from azuld.plugin.results import describe_bytes
from azuld.plugin.runner import PluginRunner

__all__ = ["LocalDispatcher", "local_event", "run_local"]


class LocalDispatcher:
    """An in-memory `DispatcherClient`: blobs by sha256, statuses kept in order."""

    url = "local"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.statuses: list[StatusEvent] = []

    async def register(self, event: PluginEvent) -> None:
        return None

    async def fetch(self, query: Sequence[tuple[str, str]]) -> list[BinaryEvent]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, source: str, stream: Datastream, offset: int, length: int | None) -> bytes:
        data = self.blobs.get(stream.sha256)
        if data is None:
            raise FileNotFoundError(f"no blob {stream.sha256}")
        return data[offset:] if length is None else data[offset : offset + length]

    async def upload(self, source: str, label: str, data: bytes) -> Datastream:
        stream = describe_bytes(label, data)
        self.blobs[stream.sha256] = data
        return stream

    async def post_status(self, event: StatusEvent) -> None:
        self.statuses.append(event)


def local_event(stream: Datastream, filename: str, *, source: str = "local") -> BinaryEvent:
    """A `sourced` event for a local file, as `azuld submit` would publish it."""
    event = sourced_event(
        stream,
        filename,
        source=source,
        author=Author(name="local", category="user"),
        now=datetime.now(UTC),
    )
    event.kafka_key = "local"
    event.dequeued = f"local-{stream.sha256[:16]}"
    return event


async def run_local(plugin: Plugin, paths: Sequence[Path]) -> list[StatusEvent]:
    """Run `plugin` on each file in turn; the final status of each, in order."""
    local = LocalDispatcher()
    runner = PluginRunner(plugin, local)
    for path in paths:
        data = await trio.Path(path).read_bytes()
        stream = await local.upload("local", "content", data)
        await runner.run_job(local_event(stream, path.name))
    return local.statuses
