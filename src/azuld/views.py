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

__all__ = ["forest", "source_tree"]

_decode = msgspec.json.Decoder(BinaryEvent).decode


async def source_tree(
    log: EventLog, prefix: str, source: str, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Binaries of `source` as a forest (see `forest`): each node has `sha256`, `filename`,
    `file_format`, `size`, `features` ({plugin: {feature: [values]}}) and `children`."""
    topics = {binary_topic(prefix, source, action) for action in BINARY_ACTIONS}
    events: list[BinaryEvent] = []
    async with aclosing(scan(log, topics.__contains__, owned=True)) as values:
        async for value in values:
            if len(events) >= limit:
                break
            events.append(_decode(value))
    events.sort(key=lambda e: e.timestamp)
    return forest(events)


def forest(events: list[BinaryEvent]) -> list[dict[str, Any]]:
    """The tree of `events` (in time order). A node is a position: a binary where it was
    submitted or extracted, told by the path of sha256s in an event's `source.path`. So a binary
    submitted and also extracted from an archive is a node in both places, each with its own
    filename. Features belong to the binary: every position of it shows them, each value once."""
    info: dict[str, dict[str, Any]] = {}  # sha256 -> file_format, size
    found: dict[str, dict[str, dict[str, dict[str, None]]]] = {}  # sha256 -> plugin -> feature
    positions: dict[tuple[str, ...], dict[str, Any]] = {}  # the path's sha256s -> node
    for event in events:
        entity = event.entity
        known = info.setdefault(entity.sha256, {"file_format": "", "size": 0})
        known["file_format"] = known["file_format"] or entity.file_format
        known["size"] = known["size"] or entity.size
        if event.action in ("enriched", "augmented"):
            features = found.setdefault(entity.sha256, {}).setdefault(event.author.name, {})
            for feature in entity.features:
                features.setdefault(feature.name, {})[feature.value] = None
        path, filename = _position(event)
        node = positions.setdefault(path, {"sha256": entity.sha256, "filename": "", "children": []})
        node["filename"] = node["filename"] or filename
    # Linked once every position is known: the topics are read one after another, so a child's
    # event may come before its parent's.
    shortest: dict[str, tuple[str, ...]] = {}
    for path in positions:
        if path[-1] not in shortest or len(path) < len(shortest[path[-1]]):
            shortest[path[-1]] = path
    roots: list[dict[str, Any]] = []
    for path, node in positions.items():
        parent = positions.get(path[:-1]) if len(path) > 1 else None
        if parent is None and len(path) > 1:
            # The parent's own events were not read (past `limit`): its shortest position will
            # do, if shorter than this one (so that no position ends up under itself).
            elsewhere = shortest.get(path[-2], path)
            parent = positions[elsewhere] if len(elsewhere) < len(path) else None
        (parent["children"] if parent is not None else roots).append(node)
    for path, node in positions.items():
        node.update(info[path[-1]])
        node["features"] = {
            plugin: {name: list(values) for name, values in features.items()}
            for plugin, features in found.get(path[-1], {}).items()
        }
    return [_ordered(root) for root in roots]


def _position(event: BinaryEvent) -> tuple[tuple[str, ...], str]:
    """Where `event`'s binary is (the sha256s of its path; a node that keeps the binary, as an
    enrichment's does, is no step) and the filename it has there."""
    path: list[str] = []
    filename = ""
    for node in event.source.path:
        if path and path[-1] == node.sha256:
            filename = filename or node.filename
        else:
            path.append(node.sha256)
            filename = node.filename
    if not path or path[-1] != event.entity.sha256:
        path.append(event.entity.sha256)
        filename = ""
    return tuple(path), filename


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """The node's keys in the reply's order (children last)."""
    keys = ("sha256", "filename", "file_format", "size", "features")
    return {
        **{key: node[key] for key in keys},
        "children": [_ordered(child) for child in node["children"]],
    }
