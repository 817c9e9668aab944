"""Indexer: a passive consumer that records every binary event (a retrohunt-style index).

It takes no jobs: it reads the passive feed and appends one JSON line per event to the file in
its `path` setting (default `azuld-index.jsonl`): sha256, source, action, file format, filename
and the time it was seen. `azuld plugin run indexer -c path=/var/lib/index.jsonl`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import trio

from azuld.models.events import BinaryEvent
from azuld.plugin import Consumer, Filters

__all__ = ["Indexer"]


class Indexer(Consumer):
    """Every binary event, as JSON lines."""

    name = "Indexer"
    version = "1.0.0"
    filters = Filters(
        actions=("sourced", "extracted", "augmented", "mapped", "enriched"),
        data_types={},
        max_content_bytes=0,
        expedite=False,
    )

    async def consume(self, event: BinaryEvent) -> None:
        record = {
            "sha256": event.entity.sha256,
            "source": event.source.name,
            "action": event.action,
            "file_format": event.entity.file_format,
            "filename": event.source.path[-1].filename,
            "seen": datetime.now(UTC).isoformat(),
        }
        path = trio.Path(self.config.get("path", "azuld-index.jsonl"))
        async with await path.open("a") as handle:
            await handle.write(json.dumps(record) + "\n")
