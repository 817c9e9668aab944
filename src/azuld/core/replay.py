"""The result replay cache: a plugin that already finished a binary is not run on it again (pure:
the cache, its entries, what a post adds to it and the statuses a cached answer stores;
`azuld.dispatch.replay` does the I/O).

When a plugin (name, version, registered config) completes a binary, everything its job produced
is kept: the plugin's own status and, for a runner plugin with multiplugins, the status each
multiplugin posted before it (`Unbox-sevenzip completed` with the members it extracted), with
their results. The key is the plugin, its config digest, the job's `source.settings` (they can
change what a plugin finds: unbox tries the `passwords` setting) and the binary's sha256. When the
same binary with the same settings reaches that plugin again through another event (a
resubmission, another source, another parent), azuld answers the job itself: it stores every
cached status again for the new job, their results moved under the new event's source and path,
and the plugin never sees the job. `flags.bypass_cache` on an event skips the cache.

An entry is written when the job's own status arrives, from the multiplugin statuses kept for the
job until then (`PendingStatuses`), and only if the dispatcher knows them all (`JobStatuses`):
a job whose earlier statuses may be missing here (posted before a restart, or to another instance)
is not kept, since replaying half of a job is worse than running it again. Nor is a job in which a
multiplugin failed (the failure may not happen again), nor a run shorter than
`dispatch.replay_min_runtime_seconds`. The cache is bounded (`dispatch.replay_cache_bytes`,
least recently used out first) and persistent: every entry is also appended to the topic
`system.replay`, read back at start-up and followed, so it survives restarts and is shared by
instances on one Kafka. The Go dispatcher has a cache like this off by default, in memory only,
keyed without the settings, and it replays the results of the plugin's own status only.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import msgspec

from azuld.models.events import (
    COMPLETED_STATUSES,
    CURRENT_MODEL_VERSION,
    PROGRESS_STATUSES,
    Author,
    BinaryEvent,
    StatusEntity,
    StatusEvent,
)

__all__ = [
    "CacheEntry",
    "CacheRules",
    "CacheUpdates",
    "CachedStatus",
    "JobStatuses",
    "PendingStatuses",
    "ReplayCache",
    "cache_updates",
    "config_digest",
    "replay_statuses",
    "settings_digest",
]

REPLAYED = "replayed from the result cache"
"""How the message of every status a cached answer stores begins."""

# What a multiplugin may have ended in for its job to be kept: it found something, or nothing, or
# declined the binary. An error may not happen again.
_KEPT_MULTIPLUGIN_STATUSES = COMPLETED_STATUSES | {"opt-out"}


def config_digest(config: Mapping[str, str]) -> str:
    """A short digest of a plugin's registered config: a change of config misses the cache."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True).encode()).hexdigest()[:16]


def settings_digest(settings: Mapping[str, str]) -> str:
    """A short digest of an event's `source.settings`, whatever their order; `""` for none (most
    events). All of them count: which ones change what a plugin finds is the plugin's business
    (azul-bedrock documents `passwords`, read by unbox; any other key may be some plugin's)."""
    if not settings:
        return ""
    canonical = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class CachedStatus(msgspec.Struct, kw_only=True):
    """One status of a cached job: a multiplugin's, or the plugin's own (the last)."""

    author: Author
    status: str
    runtime: float
    error: str = ""
    results: list[BinaryEvent] = []

    @classmethod
    def of(cls, status: StatusEvent) -> CachedStatus:
        """The status as kept (its results are not copied: encode it before they change)."""
        entity = status.entity
        return cls(
            author=status.author,
            status=entity.status,
            runtime=entity.runtime,
            error=entity.error,
            results=entity.results,
        )


class CacheEntry(msgspec.Struct, kw_only=True):
    """What a plugin's job found in a binary, as stored in `system.replay`."""

    key: str
    plugin: str  # the plugin's own name and version (its multiplugins' are in `statuses`)
    version: str
    sha256: str
    runtime: float  # the plugin's own status's: the whole job
    input_depth: int  # len(source.path) of the job the results were found in
    input_source: str
    job_id: str
    statuses: list[CachedStatus]  # as they were stored: the multiplugins', then the plugin's


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(CacheEntry).decode
_decode_status = msgspec.json.Decoder(CachedStatus).decode


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
    def key(plugin: str, version: str, digest: str, settings: str, sha256: str) -> str:
        """An entry's key: the plugin, its config digest, the job's settings digest and the
        binary."""
        return ReplayCache.key_prefix(plugin, version, digest) + ReplayCache.job_key(
            settings, sha256
        )

    @staticmethod
    def key_prefix(plugin: str, version: str, digest: str) -> str:
        """What the keys of one plugin's entries start with: `key_prefix(...) + job_key(...)` is
        the key (a fetch builds the prefix once, not once per job)."""
        return f"{plugin}|{version}|{digest}|"

    @staticmethod
    def job_key(settings: str, sha256: str) -> str:
        """The job's part of a key: its settings digest (`settings_digest`) and its binary."""
        return f"{settings}|{sha256}"

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, value: bytes) -> CacheEntry | None:
        """Keep an encoded entry; returns it decoded (None if it is not one: entries of an
        older format, which lacked the multiplugins' statuses, are not kept)."""
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


class PendingStatuses:
    """The multiplugin statuses of jobs whose own status has not come yet, encoded, by job id
    and author, in the order they were stored. Bounded in bytes: past `max_bytes` the jobs least
    recently added to go first, and are remembered (the last `max_dropped` of them) as jobs whose
    statuses are not all known."""

    def __init__(self, max_bytes: int, max_dropped: int = 10_000) -> None:
        self.max_bytes = max_bytes
        self.max_dropped = max_dropped
        self._jobs: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self._size = 0
        self._dropped: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def size(self) -> int:
        return self._size

    def add(self, job_id: str, author: str, value: bytes) -> None:
        if job_id in self._dropped:
            return
        statuses = self._jobs.setdefault(job_id, {})
        self._jobs.move_to_end(job_id)
        self._size += len(value) - len(statuses.get(author, b""))
        statuses[author] = value
        while self._size > self.max_bytes and self._jobs:
            dropped, lost = self._jobs.popitem(last=False)
            self._size -= sum(len(v) for v in lost.values())
            self._dropped[dropped] = None
            if len(self._dropped) > self.max_dropped:
                self._dropped.popitem(last=False)

    def earlier(self, job_id: str) -> dict[str, bytes] | None:
        """The job's statuses kept so far, by author (none: `{}`); `None` if some were let go."""
        if job_id in self._dropped:
            return None
        return self._jobs.get(job_id, {})

    def forget(self, job_id: str) -> None:
        """The job's own status came: what was kept for it is done with."""
        statuses = self._jobs.pop(job_id, None)
        if statuses is not None:
            self._size -= sum(len(v) for v in statuses.values())
        self._dropped.pop(job_id, None)


class JobStatuses(Protocol):
    """What the cache needs to know of the job a stored status belongs to (the dispatcher knows:
    which plugin key handed it out, and what was stored for it)."""

    def is_main(self, status: StatusEvent) -> bool:
        """Whether `status` is its job's own, the plugin key's plugin's (it ends the job), not
        one of a runner plugin's multiplugins'."""
        ...

    def earlier(self, status: StatusEvent) -> list[bytes] | None:
        """For a job's own `status`: the encoded `CachedStatus` of every status stored for the
        job before it, in order; `None` if some of them may be unknown here."""
        ...


@dataclass(frozen=True, slots=True)
class CacheRules:
    """What decides a post's cache entries."""

    jobs: JobStatuses
    configs: Mapping[tuple[str, str], str]  # (plugin, version) -> its registered config digest
    min_runtime_seconds: float


@dataclass(slots=True)
class CacheUpdates:
    """What a post's statuses change in the replay cache, once they are stored."""

    entries: list[tuple[str, bytes]] = field(default_factory=list)  # (key, encoded CacheEntry)
    # Multiplugins' statuses, kept until their job's own: (job id, author, encoded CachedStatus).
    pending: list[tuple[str, str, bytes]] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)  # job ids whose own status came


def cache_updates(statuses: Iterable[StatusEvent], rules: CacheRules) -> CacheUpdates:
    """The cache's share of statuses about to be stored, taken before their results split off:
    multiplugins' statuses are kept pending, and a job's own status makes an entry of the job's
    statuses if it may be cached."""
    updates = CacheUpdates()
    posted: dict[str, dict[str, bytes]] = {}  # this post's multiplugin statuses, by job
    for status in statuses:
        entity = status.entity
        if entity.status in PROGRESS_STATUSES:
            continue
        job_id = entity.input.dequeued
        if not rules.jobs.is_main(status):
            value = _encode(CachedStatus.of(status))
            updates.pending.append((job_id, status.author.name, value))
            posted.setdefault(job_id, {})[status.author.name] = value
            continue
        updates.ended.append(job_id)
        entry = _entry(status, rules, posted.pop(job_id, {}))
        if entry is not None:
            updates.entries.append((entry.key, _encode(entry)))
    return updates


def _entry(status: StatusEvent, rules: CacheRules, posted: dict[str, bytes]) -> CacheEntry | None:
    """The entry for a job whose own `status` came (after `posted`, its multiplugins' statuses
    in the same post), or `None` if it is not to be cached."""
    entity = status.entity
    if entity.status not in COMPLETED_STATUSES or entity.message.startswith(REPLAYED):
        return None
    if entity.runtime < rules.min_runtime_seconds:
        return None  # cheaper to run again than to keep
    earlier = rules.jobs.earlier(status)
    if earlier is None:
        return None  # better run again than replay half of the job
    before = [_decode_status(value) for value in [*earlier, *posted.values()]]
    if any(cached.status not in _KEPT_MULTIPLUGIN_STATUSES for cached in before):
        return None
    job = entity.input
    name, version = status.author.name, status.author.version
    return CacheEntry(
        key=ReplayCache.key(
            name,
            version,
            rules.configs.get((name, version), ""),
            settings_digest(job.source.settings),
            job.entity.sha256,
        ),
        plugin=name,
        version=version,
        sha256=job.entity.sha256,
        runtime=entity.runtime,
        input_depth=len(job.source.path),
        input_source=job.source.name,
        job_id=job.dequeued,
        statuses=[*before, CachedStatus.of(status)],
    )


def replay_statuses(
    entry: CacheEntry, job: BinaryEvent, job_id: str, now: datetime
) -> list[StatusEvent]:
    """The statuses azuld stores for a job it answers from the cache, in the cached order (the
    multiplugins', then the plugin's own): each signed by its cached author for the new job, its
    results moved under the new event's source and path."""
    replayed = []
    for cached in entry.statuses:
        results = []
        for result in cached.results:
            result = msgspec.json.decode(msgspec.json.encode(result), type=BinaryEvent)
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
        author = cached.author
        replayed.append(
            StatusEvent(
                model_version=CURRENT_MODEL_VERSION,
                timestamp=now,
                author=author,
                entity=StatusEntity(
                    input=stripped,
                    status=cached.status,  # type: ignore[arg-type]
                    runtime=0.0,
                    error=cached.error,
                    message=(
                        f"{REPLAYED}: {author.name} {author.version} already finished this "
                        f"binary (job {entry.job_id}, {cached.runtime:.3g} s)"
                    ),
                    results=results,
                ),
            )
        )
    return replayed
