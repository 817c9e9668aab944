"""The result replay cache: a plugin that already finished a binary is not run on it again (pure:
the cache, its entries and the status a cached answer stores; `azuld.dispatch.replay` does the I/O).

When a plugin (name, version, registered config) completes a binary, its results are kept, keyed
by the binary's sha256. When the same binary reaches that plugin again through another event (a
resubmission, another source, another parent), azuld answers the job itself: it republishes the
earlier results under the new event's source and path, stores a status saying so, and the plugin
never sees the job. `flags.bypass_cache` on an event skips the cache.

Only runs of at least `dispatch.replay_min_runtime_seconds` are kept. The cache is bounded
(`dispatch.replay_cache_bytes`, least recently used out first) and persistent:
every entry is also appended to the topic `system.replay`, read back at start-up and followed, so
it survives restarts and is shared by instances on one Kafka. The Go dispatcher has a cache like
this off by default and in memory only.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import msgspec

from azuld.models.events import (
    COMPLETED_STATUSES,
    CURRENT_MODEL_VERSION,
    Author,
    BinaryEvent,
    StatusEntity,
    StatusEvent,
)

__all__ = ["CacheEntry", "ReplayCache", "cache_entries", "config_digest", "replay_status"]


def config_digest(config: Mapping[str, str]) -> str:
    """A short digest of a plugin's registered config: a change of config misses the cache."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True).encode()).hexdigest()[:16]


class CacheEntry(msgspec.Struct, kw_only=True):
    """What a plugin found in a binary, as stored in `system.replay`."""

    key: str
    plugin: str
    version: str
    sha256: str
    status: str
    runtime: float
    input_depth: int  # len(source.path) of the job the results were found in
    input_source: str
    job_id: str
    results: list[BinaryEvent]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(CacheEntry).decode


@dataclass
class ReplayCache:
    """An LRU of entries, bounded in bytes."""

    max_bytes: int
    _entries: OrderedDict[str, tuple[bytes, int]]
    _size: int = 0
    hits: int = 0

    @classmethod
    def create(cls, max_bytes: int) -> ReplayCache:
        return cls(max_bytes=max_bytes, _entries=OrderedDict())

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @staticmethod
    def key(plugin: str, version: str, digest: str, sha256: str) -> str:
        return ReplayCache.key_prefix(plugin, version, digest) + sha256

    @staticmethod
    def key_prefix(plugin: str, version: str, digest: str) -> str:
        """What the keys of one plugin's entries start with: `key_prefix(...) + sha256` is the
        key (a fetch builds the prefix once, not once per job)."""
        return f"{plugin}|{version}|{digest}|"

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, value: bytes) -> CacheEntry | None:
        """Keep an encoded entry; returns it decoded (None if it is not one)."""
        try:
            entry = _decode(value)
        except msgspec.DecodeError:
            return None
        if not self.enabled or len(value) > self.max_bytes:
            return entry
        old = self._entries.pop(entry.key, None)
        if old is not None:
            self._size -= old[1]
        self._entries[entry.key] = (value, len(value))
        self._size += len(value)
        while self._size > self.max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self._size -= size
        return entry

    def get(self, key: str) -> CacheEntry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return _decode(found[0])

    @staticmethod
    def encode(entry: CacheEntry) -> bytes:
        return _encode(entry)


def replay_status(entry: CacheEntry, job: BinaryEvent, job_id: str, now: datetime) -> StatusEvent:
    """The status azuld stores for a job it answered from the cache: the cached results moved
    under the new event's source and path."""
    results = []
    for cached in entry.results:
        result = msgspec.json.decode(msgspec.json.encode(cached), type=BinaryEvent)
        added = result.source.path[entry.input_depth :]
        for node in added:
            node.timestamp = now
        result.source = msgspec.structs.replace(job.source, path=[*job.source.path, *added])
        result.timestamp = now
        result.kafka_key = ""
        results.append(result)
    stripped = msgspec.structs.replace(
        job,
        dequeued=job_id,
        entity=msgspec.structs.replace(job.entity, features=[], datastreams=[], info={}),
    )
    return StatusEvent(
        model_version=CURRENT_MODEL_VERSION,
        timestamp=now,
        author=Author(name=entry.plugin, version=entry.version, category="plugin"),
        entity=StatusEntity(
            input=stripped,
            status=entry.status,  # type: ignore[arg-type]
            runtime=0.0,
            message=(
                f"replayed from the result cache: {entry.plugin} {entry.version} already "
                f"finished this binary (job {entry.job_id}, {entry.runtime:.3g} s)"
            ),
            results=results,
        ),
    )


def cache_entries(
    statuses: Iterable[StatusEvent],
    configs: Mapping[tuple[str, str], str],
    *,
    min_runtime_seconds: float,
) -> list[CacheEntry]:
    """Entries for completed statuses, taken before their results split off. `configs` holds
    the config digest each (plugin, version) registered with."""
    entries = []
    for status in statuses:
        entity = status.entity
        if entity.status not in COMPLETED_STATUSES or entity.message.startswith("replayed"):
            continue
        if entity.runtime < min_runtime_seconds:
            continue  # cheaper to run again than to keep
        job = entity.input
        name, version = status.author.name, status.author.version
        digest = configs.get((name, version), "")
        entries.append(
            CacheEntry(
                key=ReplayCache.key(name, version, digest, job.entity.sha256),
                plugin=name,
                version=version,
                sha256=job.entity.sha256,
                status=entity.status,
                runtime=entity.runtime,
                input_depth=len(job.source.path),
                input_source=job.source.name,
                job_id=job.dequeued,
                results=msgspec.json.decode(
                    msgspec.json.encode(entity.results), type=list[BinaryEvent]
                ),
            )
        )
    return entries
