"""Read-only views over the log for people: what a source holds, as a tree of binaries with the
features each plugin found. Reads the source's topics from the start, so it is meant for small
sources and demos (bounded by `limit` events), not as a metastore."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import msgspec

from azuld.core.keys import binary_topic
from azuld.dispatch.scan import scan
from azuld.models.events import BINARY_ACTIONS, BinaryEvent
from azuld.ports import EventLog

__all__ = ["source_tree"]

_decode = msgspec.json.Decoder(BinaryEvent).decode


async def source_tree(
    log: EventLog, prefix: str, source: str, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Binaries of `source` as a forest: each node has `sha256`, `filename`, `file_format`,
    `features` ({plugin: {feature: [values]}}) and `children`."""
    topics = {binary_topic(prefix, source, action) for action in BINARY_ACTIONS}
    events: list[BinaryEvent] = []
    async with aclosing(scan(log, topics.__contains__, owned=True)) as values:
        async for value in values:
            if len(events) >= limit:
                break
            events.append(_decode(value))
    events.sort(key=lambda e: e.timestamp)

    nodes: dict[str, dict[str, Any]] = {}
    parents: dict[str, str] = {}

    def node(sha256: str) -> dict[str, Any]:
        return nodes.setdefault(
            sha256,
            {
                "sha256": sha256,
                "filename": "",
                "file_format": "",
                "size": 0,
                "features": {},
                "children": [],
            },
        )

    for event in events:
        entity = event.entity
        item = node(entity.sha256)
        last = event.source.path[-1]
        item["file_format"] = item["file_format"] or entity.file_format
        item["size"] = item["size"] or entity.size
        if event.action in ("sourced", "extracted"):
            item["filename"] = item["filename"] or last.filename
            if event.action == "extracted" and len(event.source.path) > 1:
                parents.setdefault(entity.sha256, event.source.path[-2].sha256)
        if event.action in ("enriched", "augmented"):
            found = item["features"].setdefault(event.author.name, {})
            for feature in entity.features:
                found.setdefault(feature.name, []).append(feature.value)
    roots = []
    for sha256, item in nodes.items():
        parent = parents.get(sha256)
        if parent in nodes and parent != sha256:
            nodes[parent]["children"].append(item)
        else:
            roots.append(item)
    return roots
