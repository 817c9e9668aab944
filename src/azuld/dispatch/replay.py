"""The result replay cache as the dispatcher runs it: loaded from `system.replay` at start-up,
followed for the entries other instances add, fed by posts (a job's multiplugin statuses kept
until its own status makes an entry), consulted by a fetch's filter, and used to answer a job
without the plugin. The cache itself, its entries and the statuses of a cached answer are pure
(`azuld.core.replay`, which explains the cache); this module does their I/O and knows the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from contextlib import aclosing
from datetime import UTC, datetime

import msgspec
import trio

from azuld.core.delivery import Job, JobRef
from azuld.core.finished import MAIN
from azuld.core.jobids import JobIds
from azuld.core.keys import is_main_status, system_topic
from azuld.core.params import ConsumeParams
from azuld.core.publish import Outgoing, prepare_status
from azuld.core.replay import (
    CacheEntry,
    CacheRules,
    CacheUpdates,
    PendingStatuses,
    ReplayCache,
    replay_statuses,
)
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.scan import scan
from azuld.errors import UpstreamError
from azuld.metrics import Metrics
from azuld.models.events import BinaryEvent, StatusEvent
from azuld.ports import BlobStore, EventLog

__all__ = ["REPLAY_LOAD_RECORDS", "Replay"]

# At start-up, the replay cache reads at most this many of the newest entries per partition.
REPLAY_LOAD_RECORDS = 20_000
# The multiplugin statuses of jobs not finished yet take at most this much memory (and at most
# the cache's own bound); past it the oldest jobs' are let go, and those jobs are not cached.
PENDING_MAX_BYTES = 16 * 1024 * 1024
# A plugin's runtime may exceed the time since its job was handed out by this much (the runner
# reports whole seconds) before the run counts as one that began before the hand-out.
RUNTIME_SLACK_SECONDS = 1.0

# The logger name operators filter on, one for the whole dispatcher (as before the split).
log = logging.getLogger("azuld.dispatcher")


class Replay:
    """The replay cache of this instance and the config digest each plugin version registered
    (a change of config misses the cache)."""

    def __init__(
        self,
        log: EventLog,
        prefix: str,
        metrics: Metrics,
        blobs: BlobStore | None,
        *,
        max_bytes: int,
        ids: JobIds,
    ) -> None:
        self.log = log
        self.ids = ids
        self.prefix = prefix
        self.metrics = metrics
        self.blobs = blobs
        self.cache = ReplayCache.create(max_bytes)
        self.pending = PendingStatuses(min(max_bytes, PENDING_MAX_BYTES))
        self.configs: dict[tuple[str, str], str] = {}  # (plugin, version) -> config digest

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

    async def load(self) -> None:
        """The newest entries of `system.replay` (this backend's share is the whole topic).

        Raises:
            UpstreamError: the log failed.
        """
        if not self.enabled:
            return
        topic = system_topic(self.prefix, "replay")
        async with aclosing(scan(self.log, topic.__eq__, newest=REPLAY_LOAD_RECORDS)) as values:
            async for value in values:
                self.cache.put(value)
        if len(self.cache):
            log.info("replay cache: %d entries loaded", len(self.cache))

    async def follow(self) -> None:
        """Entries other instances add (our own come back too; putting them again is harmless).
        Runs until cancelled."""
        if not self.enabled:
            return
        async with aclosing(self.log.follow(system_topic(self.prefix, "replay"))) as values:
            async for value in values:
                self.cache.put(value)

    def rules(
        self,
        registry: KeyRegistry,
        storing: Collection[tuple[JobRef, str]],
        min_runtime_seconds: float,
    ) -> CacheRules | None:
        """What decides the cache's share of a post of statuses (`None` when the cache is off).
        `storing`: the (job, author) of final statuses other posts are storing right now."""
        if not self.enabled:
            return None
        jobs = _JobsSeen(registry, self.pending, storing, trio.current_time())
        return CacheRules(jobs=jobs, configs=self.configs, min_runtime_seconds=min_runtime_seconds)

    def remember(self, updates: CacheUpdates) -> None:
        """What a post has just stored: multiplugin statuses kept for their jobs, the jobs that
        ended, and the entries it stored in `system.replay`."""
        for job_id, author, value in updates.pending:
            self.pending.add(job_id, author, value)
        for job_id in updates.ended:
            self.pending.forget(job_id)
        for _, value in updates.entries:
            self.cache.put(value)

    def key_prefix(self, params: ConsumeParams) -> str | None:
        """What the cache keys of the fetching plugin's entries start with (`+ sha256` is the
        key); `None` when the cache does not answer this fetch (off, or not an active binary
        fetch)."""
        if not (self.enabled and params.active and params.model == "binary"):
            return None
        digest = self.configs.get((params.name, params.version), "")
        return ReplayCache.key_prefix(params.name, params.version, digest)

    async def answer(self, ks: KeyState, cached: list[tuple[Job, CacheEntry]]) -> None:
        """Store every cached status of jobs the plugin already did (its multiplugins', then its
        own) for the new jobs, their results under the new source, their blobs copied there.

        Raises:
            UpstreamError: the log failed; nothing was answered (a blob that cannot be copied
                is logged and left: the results stand, and a plugin may get a 404 for it).
        """
        now = datetime.now(UTC)
        records: list[Outgoing] = []
        for job, entry in cached:
            target = job.event.source.name
            job_id = self.ids.make(job.ref, job.attempt)
            for status in replay_statuses(entry, job.event, job_id, now):
                if self.blobs is not None and target != entry.input_source:
                    await _copy_blobs(self.blobs, status, entry.input_source, target)
                records += prepare_status(self.prefix, status)
        await self.log.append(records)
        for _, entry in cached:
            ks.finished["cached"] += 1
            ks.history.add("done")
            self.metrics.replay_hits.labels(entry.plugin).inc()
            self.metrics.replay_saved_seconds.labels(entry.plugin).inc(entry.runtime)
            ks.replay_saved_seconds += entry.runtime


async def _copy_blobs(blobs: BlobStore, status: StatusEvent, source: str, target: str) -> None:
    """Copy the blobs of a replayed status's results from the cached job's source to the new
    job's (one that cannot be copied is logged and left: a plugin may get a 404 for it)."""
    for result in status.entity.results:
        for stream in result.entity.datastreams:
            try:
                await blobs.copy(source, target, stream.label, stream.sha256)
            except UpstreamError as exc:
                log.warning("replay: cannot copy blob %s: %s", stream.sha256, exc)


class _Sha(msgspec.Struct, frozen=True):
    sha256: str = ""


class _Settings(msgspec.Struct, frozen=True):
    settings: dict[str, str] = {}


class _KeyFields(msgspec.Struct):
    """What an entry's key takes from a job's event."""

    entity: _Sha = _Sha()
    source: _Settings = _Settings()


_decode_key_fields = msgspec.json.Decoder(_KeyFields).decode


class _JobsSeen:
    """`core.replay.JobStatuses` as this instance knows its jobs. A job's earlier statuses are
    all known here when this instance handed this attempt out (so the run began after this
    process started, and what was posted here since is in `pending`), every multiplugin status
    the status topic shows for the job (`KeyRegistry.finished`, which follows other instances)
    is among them, and none is being stored by another post."""

    def __init__(
        self,
        registry: KeyRegistry,
        pending: PendingStatuses,
        storing: Collection[tuple[JobRef, str]],
        now: float,
    ) -> None:
        self.registry = registry
        self.pending = pending
        self.storing = storing
        self.now = now

    def is_main(self, status: StatusEvent) -> bool:
        parsed = self.registry.ids.parse(status.entity.input.dequeued)
        if parsed is None:
            return True  # another dispatcher's job: nothing is kept for it
        ref = parsed[0]
        ks = self.registry.get(ref.plugin_key)
        name = ks.params.name if ks is not None else None
        return is_main_status(ref.plugin_key, status.author.name, name)

    def earlier(self, status: StatusEvent) -> list[bytes] | None:
        job = status.entity.input
        parsed = self.registry.ids.parse(job.dequeued)
        if parsed is None:
            return None
        ref, attempt = parsed
        ks = self.registry.get(ref.plugin_key)
        leased = ks.lanes.leased_job(ref, attempt) if ks is not None else None
        if leased is None:
            return None  # handed out by another instance, or before a restart
        if status.entity.runtime > self.now - leased.leased_at + RUNTIME_SLACK_SECONDS:
            return None  # the run began before this hand-out (an earlier process's, same id)
        if not _is_the_job(leased, job):
            return None
        if any(storing == ref for storing, _ in self.storing):
            return None
        kept = self.pending.earlier(job.dequeued)
        if kept is None:
            return None
        stored = set(self.registry.finished.authors(ref)) - {MAIN}
        if not stored <= kept.keys():
            return None  # some were stored by another instance, or by an earlier attempt
        return list(kept.values())


def _is_the_job(leased: Job, posted: BinaryEvent) -> bool:
    """Whether a status's input names the binary and settings of the job handed out (the key
    is made of them: a plugin may not file results under another binary or other settings)."""
    if isinstance(leased.event, BinaryEvent):
        sha256, settings = leased.event.entity.sha256, leased.event.source.settings
    else:
        try:
            fields = _decode_key_fields(leased.value)
        except msgspec.DecodeError:
            return False
        sha256, settings = fields.entity.sha256, fields.source.settings
    return sha256 == posted.entity.sha256 and settings == posted.source.settings
