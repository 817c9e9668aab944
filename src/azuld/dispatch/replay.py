"""The result replay cache as the dispatcher runs it: loaded from `system.replay` at start-up,
followed for the entries other instances add, consulted by a fetch's filter, and used to answer a
job without the plugin. The cache itself, its entries and the status of a cached answer are pure
(`azuld.core.replay`, which explains the cache); this module does their I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import aclosing
from datetime import UTC, datetime

from azuld.core.delivery import Job
from azuld.core.jobids import JobIds
from azuld.core.keys import system_topic
from azuld.core.params import ConsumeParams
from azuld.core.publish import Outgoing, prepare_status
from azuld.core.replay import CacheEntry, ReplayCache, replay_status
from azuld.dispatch.keys import KeyState
from azuld.dispatch.scan import scan
from azuld.errors import UpstreamError
from azuld.metrics import Metrics
from azuld.ports import BlobStore, EventLog

__all__ = ["REPLAY_LOAD_RECORDS", "Replay"]

# At start-up, the replay cache reads at most this many of the newest entries per partition.
REPLAY_LOAD_RECORDS = 20_000

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

    def remember(self, values: Iterable[bytes]) -> None:
        """Keep entries a post has just stored in `system.replay`."""
        for value in values:
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
        """Publish the cached results of jobs the plugin already did, under their new source.

        Raises:
            UpstreamError: the log failed; nothing was answered (a blob that cannot be copied
                is logged and left: the results stand, and a plugin may get a 404 for it).
        """
        now = datetime.now(UTC)
        records: list[Outgoing] = []
        for job, entry in cached:
            status = replay_status(entry, job.event, self.ids.make(job.ref, job.attempt), now)
            if self.blobs is not None and job.event.source.name != entry.input_source:
                for result in status.entity.results:
                    for stream in result.entity.datastreams:
                        try:
                            await self.blobs.copy(
                                entry.input_source,
                                job.event.source.name,
                                stream.label,
                                stream.sha256,
                            )
                        except UpstreamError as exc:  # the results stand; a plugin may 404
                            log.warning("replay: cannot copy blob %s: %s", stream.sha256, exc)
            records += prepare_status(self.prefix, status)
        await self.log.append(records)
        for _, entry in cached:
            ks.finished["cached"] += 1
            ks.history.add("done")
            self.metrics.replay_hits.labels(entry.plugin).inc()
            self.metrics.replay_saved_seconds.labels(entry.plugin).inc(entry.runtime)
            ks.replay_saved_seconds += entry.runtime
