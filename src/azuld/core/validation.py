"""Per-event checks on publish, Go's `CheckValid` (reference 3.2-3.4), plus azuld's name rules.

Each function returns `None` for a valid event or a sentence saying what is wrong; the caller lists
invalid events in `failures[]` and publishes the others.
"""

from __future__ import annotations

import re

from azuld.core.keys import NAME_PATTERN
from azuld.models.events import BinaryEvent, GenericEvent, PluginEvent, StatusEvent

__all__ = ["SHA256_PATTERN", "check_binary", "check_event"]

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

_NEEDS_CONTENT = frozenset({"sourced", "extracted", "augmented"})
_is_sha256 = SHA256_PATTERN.fullmatch


def check_binary(event: BinaryEvent, where: str = "") -> str | None:
    """Go's BinaryEvent `CheckValid`, with source names and hashes held to azuld's rules."""
    if not event.author.name:
        return f"{where}event is missing 'author.name'"
    source = event.source
    if not NAME_PATTERN.fullmatch(source.name):
        return (
            f"{where}event has invalid 'source.name' {source.name!r}: "
            "use 1-100 letters, digits, '_' or '-'"
        )
    path = source.path
    if not path:
        return f"{where}event is missing 'source.path' entries"
    # Hashes repeat (an enriched result's nodes and entity all name one binary): one equal to
    # the last hash found valid is not matched again.
    valid_sha256: str | None = None
    last = len(path) - 1
    for index, node in enumerate(path):
        if node.sha256 != valid_sha256:
            if not _is_sha256(node.sha256):
                return f"{where}'source.path[{index}].sha256' must be 64 lowercase hex characters"
            valid_sha256 = node.sha256
        if not node.author.name:
            return f"{where}'source.path[{index}].author.name' is missing"
        if node.action == "enriched" and index != last:
            return f"{where}an 'enriched' node may only be the last of 'source.path'"
    entity = event.entity
    if entity.sha256 != valid_sha256 and not _is_sha256(entity.sha256):
        return f"{where}'entity.sha256' must be 64 lowercase hex characters"
    streams = entity.datastreams
    for index, stream in enumerate(streams):
        if not _is_sha256(stream.sha256):
            return (
                f"{where}'entity.datastreams[{index}].sha256' must be 64 lowercase hex characters"
            )
    action = event.action
    if not streams:  # most results (enriched): of the label rules, only this one can fail
        if action in _NEEDS_CONTENT:
            return f"{where}a '{action}' event must have a 'content' datastream"
        return None
    labels = {stream.label for stream in streams}
    if action == "enriched" and labels:
        return f"{where}an 'enriched' event must not have datastreams"
    if action == "mapped" and "content" in labels:
        return f"{where}a 'mapped' event must not have a 'content' datastream"
    if action in _NEEDS_CONTENT and "content" not in labels:
        return f"{where}a '{action}' event must have a 'content' datastream"
    if action == "augmented" and not labels - {"content"}:
        return f"{where}an 'augmented' event needs a datastream besides 'content'"
    return None


def check_event(event: BinaryEvent | StatusEvent | PluginEvent | GenericEvent) -> str | None:
    """Validate one decoded event of any model."""
    if isinstance(event, BinaryEvent):
        return check_binary(event)
    if not event.author.name:
        return "event is missing 'author.name'"
    if isinstance(event, StatusEvent):
        if not event.entity.input.dequeued:
            return "status event is missing 'entity.input.dequeued' (echo the fetched job's id)"
        for index, result in enumerate(event.entity.results):
            problem = check_binary(result, where=f"entity.results[{index}]: ")
            if problem:
                return problem
    return None
