"""The dispatcher: where the sans-I/O core meets the event log.

`Dispatcher.fetch` serves long-polls, `Dispatcher.publish` accepts posted events (statuses, results,
registrations, sourced binaries), and `Dispatcher.run` is the background half: it wakes waiting
long-polls when the log changes and reaps expired leases. The HTTP handlers are thin translators
over these three.

Theory of operation: each plugin key gets a `KeyState` holding a `core.delivery.PluginLanes` (what
is queued, leased and committed) and the groups it commits to. A fetch tops up the lanes from the
log, takes jobs in lane order, commits what moved (skips, passive handouts) and, if it has fewer
than `count`, waits for a wake-up until its deadline. Wake-ups are per key: new records the key
can read, a status that moved its window, re-offered leases (all keys), new partitions (all keys);
an append that concerns no waiting key (most are statuses) wakes nobody. A posted status is
appended to the log first and only then finishes its job and moves the commit, so an
acknowledged result is always durable and an unacknowledged one is offered again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import aclosing
from datetime import UTC, datetime

import msgspec
import trio

from azuld.core.delivery import (
    JobRef,
    Lane,
)
from azuld.core.keys import system_topic
from azuld.core.params import ConsumeParams
from azuld.core.posts import DECODERS
from azuld.core.publish import Outgoing
from azuld.dispatch.fetch import Fetcher, FetchResult
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.leases import TICK_SECONDS, Leases
from azuld.dispatch.replay import Replay
from azuld.dispatch.scan import scan
from azuld.dispatch.statuses import Statuses
from azuld.metrics import Metrics
from azuld.models.admin import (
    FailedJob,
    KeySummary,
    Reoffer,
    ReofferAudit,
    ReofferOutcome,
)
from azuld.models.responses import PostResponse
from azuld.ports import BlobStore, EventLog
from azuld.settings import DispatchSettings

__all__ = ["TICK_SECONDS", "Dispatcher", "FetchResult"]

# `azuld failed` looks at this many of the newest statuses per partition.
FAILED_SCAN_RECORDS = 50_000


_REOFFER_DECODER = msgspec.json.Decoder(Reoffer)


# The logger name operators filter on, one for the whole dispatcher (as before the split).
log = logging.getLogger("azuld.dispatcher")

_encode = msgspec.json.Encoder().encode


class Dispatcher:
    """Hands out jobs, takes statuses. One per process; `run` must be running in a nursery."""

    def __init__(
        self,
        log: EventLog,
        settings: DispatchSettings,
        topic_prefix: str,
        metrics: Metrics | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.log = log
        self._settings = settings
        self.prefix = topic_prefix
        self.metrics = metrics or Metrics()
        self.blobs = blobs
        self.registry = KeyRegistry(log, settings, topic_prefix)
        self.replay = Replay(
            log, topic_prefix, self.metrics, blobs, max_bytes=settings.replay_cache_bytes
        )
        self.statuses = Statuses(
            log, settings, topic_prefix, self.metrics, self.registry, self.replay
        )
        self.leases = Leases(settings, self.metrics, self.registry, self.statuses)
        self.fetcher = Fetcher(log, settings, self.metrics, self.registry, self.replay, self.leases)

    @property
    def settings(self) -> DispatchSettings:
        """The dispatch settings in force; a reload (SIGHUP) replaces them for every part."""
        return self._settings

    @settings.setter
    def settings(self, new: DispatchSettings) -> None:
        self._settings = new
        self.registry.settings = new
        self.statuses.settings = new
        self.leases.settings = new
        self.fetcher.settings = new

    @property
    def last_tick(self) -> float:
        """When the lease reaper last ran: the watchdog pings systemd only while this moves."""
        return self.leases.last_tick

    @last_tick.setter
    def last_tick(self, value: float) -> None:
        self.leases.last_tick = value

    async def expire_leases(self, now: float) -> None:
        """Put expired leases back, fail those out of attempts (`Leases.expire`).

        Raises:
            UpstreamError: the log failed; the next call carries on.
        """
        await self.leases.expire(now)

    # -- background ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the replay cache, then follow the log and reap leases until cancelled."""
        await self.replay.load()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_log)
            if self.log.shared:
                # Statuses and replay entries other instances add. On a log only this process
                # writes, they would all be our own, applied already: following them would
                # decode and apply every status twice.
                nursery.start_soon(self.statuses.follow)
                nursery.start_soon(self.replay.follow)
            nursery.start_soon(self.leases.reap)
            task_status.started()

    async def _follow_log(self) -> None:
        """Wake the long-polls the log's changes concern: those of keys with something to read
        now (most appends are statuses and results, which concern few keys: waking every
        waiting poll for each of them would cost a task switch and a lap of `_take_until`
        apiece). New partitions, or partitions moving to or from this instance, wake them all."""
        topology = self.log.topology
        while True:
            generation = self.log.generation
            await self.log.wait_for_change(generation)
            if self.log.topology != topology:
                topology = self.log.topology
                self.registry.wake_all()
                continue
            for ks in self.registry.states.values():
                if ks.polls and (ks.lanes.queued or self.registry.reads(ks)):
                    ks.wake()

    # -- fetching ------------------------------------------------------------------------

    async def fetch(self, params: ConsumeParams) -> FetchResult:
        """Long-poll for up to `params.count` jobs, waiting at most `params.deadline_seconds`
        (`Fetcher.fetch`).

        Cancellation: safe; jobs already taken by a cancelled request are leased and come back
        when their lease expires.

        Raises:
            TooManyRequests: `dispatch.max_polls_per_key` polls already wait for the key. A
                backend failure does not fail the request: the reply says `ready: false`.
        """
        return await self.fetcher.fetch(params)

    async def log_problem(self, *, fresh: bool = False) -> str | None:
        """The log's health, asked at most once a second; `fresh` asks now (`/readyz`)."""
        return await self.fetcher.log_problem(fresh=fresh)

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, model: str, body: bytes, *, include_ok: bool = False) -> PostResponse:
        """Validate, store and act on posted events (`Statuses.publish`).

        Raises:
            BadRequest: empty body or unknown model.
            PayloadTooLarge: more than `dispatch.max_events_per_post` events.
            Unprocessable: not JSON, an old `model_version`, or an event of the wrong shape.
            AllFiltered: no event was valid.
            UpstreamError: the log could not store them; nothing was acknowledged.
        """
        return await self.statuses.publish(model, body, include_ok=include_ok)

    # -- dead letters ----------------------------------------------------------------------

    async def failed(self, plugin: str = "", limit: int = 200) -> list[FailedJob]:
        """Jobs that ended in an error status (the plugin's, or azuld's `error-timeout` after the
        last retry), newest first, from the last `FAILED_SCAN_RECORDS` statuses per partition."""
        topic = system_topic(self.prefix, "status")
        found: list[FailedJob] = []
        decode = DECODERS["status"].decode
        async with aclosing(scan(self.log, topic.__eq__, newest=FAILED_SCAN_RECORDS)) as values:
            async for value in values:
                try:
                    status = decode(value)
                except msgspec.DecodeError:
                    continue
                entity = status.entity
                if not entity.status.startswith("error-"):
                    continue
                if plugin and status.author.name != plugin:
                    continue
                lines = entity.message.strip().splitlines()
                found.append(
                    FailedJob(
                        job_id=entity.input.dequeued,
                        plugin=status.author.name,
                        version=status.author.version,
                        status=entity.status,
                        error=entity.error,
                        message=lines[-1] if lines else "",
                        sha256=entity.input.entity.sha256,
                        source=entity.input.source.name,
                        at=status.timestamp.isoformat(),
                    )
                )
        found.sort(key=lambda f: f.at, reverse=True)
        return found[:limit]

    async def reoffer(self, job_ids: Iterable[str], by: str) -> list[ReofferOutcome]:
        """Put jobs back in front of their plugin key. Each request is stored in `system.reoffer`
        (who, when, which job): the audit trail, and what the key's re-offer lane reads."""
        outcome: list[ReofferOutcome] = []
        records: list[Outgoing] = []
        now = datetime.now(UTC)
        for job_id in job_ids:
            parsed = JobRef.parse(job_id)
            if parsed is None:
                outcome.append(
                    ReofferOutcome(job_id=job_id, ok=False, reason="not an azuld job id")
                )
                continue
            ref, _ = parsed
            found = await self.log.read(ref.tp, ref.offset, 1)
            if not found or found[0][0] != ref.offset:
                outcome.append(ReofferOutcome(job_id=job_id, ok=False, reason="its event is gone"))
                continue
            value = found[0][1]
            try:
                if ref.lane == Lane.REOFFER:
                    event = _REOFFER_DECODER.decode(value).event
                else:
                    event = DECODERS["binary"].decode(value)
            except msgspec.DecodeError:
                outcome.append(
                    ReofferOutcome(job_id=job_id, ok=False, reason="its event is unreadable")
                )
                continue
            event.dequeued = ""
            offer = Reoffer(plugin_key=ref.plugin_key, job_id=job_id, by=by, at=now, event=event)
            records.append(
                Outgoing(system_topic(self.prefix, "reoffer"), ref.plugin_key, _encode(offer))
            )
            outcome.append(ReofferOutcome(job_id=job_id, ok=True, plugin_key=ref.plugin_key))
        await self.log.append(records)
        return outcome

    async def reoffers(self, limit: int = 200) -> list[ReofferAudit]:
        """The audit trail: who re-offered which job to which plugin key, and when."""
        topic = system_topic(self.prefix, "reoffer")
        trail: list[ReofferAudit] = []
        async with aclosing(scan(self.log, topic.__eq__, newest=limit)) as values:
            async for value in values:
                try:
                    offer = _REOFFER_DECODER.decode(value)
                except msgspec.DecodeError:
                    continue
                trail.append(
                    ReofferAudit(
                        at=offer.at.isoformat(),
                        by=offer.by,
                        plugin_key=offer.plugin_key,
                        job_id=offer.job_id,
                        sha256=offer.event.entity.sha256,
                    )
                )
        trail.sort(key=lambda t: t.at, reverse=True)
        return trail[:limit]

    # -- introspection ---------------------------------------------------------------------

    def keys(self) -> list[KeyState]:
        return list(self.registry.states.values())

    async def lag(self, ks: KeyState) -> dict[str, int]:
        """Events not yet finished, per lane: from each cursor's commit to the end it may read."""
        lag: dict[str, int] = {}
        for lane, cursors in ks.lanes.cursors.items():
            ends = await self.log.offsets(list(cursors))
            lag[lane] = sum(
                cursor.unfinished_below(ends.get(tp, (0, 0))[1]) for tp, cursor in cursors.items()
            )
        return lag

    async def key_summaries(self) -> list[KeySummary]:
        """Per plugin key on this instance: lanes, lag, in flight, done, recent failures."""
        hour_ago = time.time() - 3600
        summaries = []
        for key, ks in sorted(self.registry.states.items()):
            lag = await self.lag(ks)
            for lane, value in lag.items():
                self.metrics.lag.labels(key, lane).set(value)
            self.metrics.in_flight.labels(key).set(ks.lanes.leased)
            summaries.append(
                KeySummary(
                    key=key,
                    name=ks.params.name,
                    version=ks.params.version,
                    model=ks.params.model,
                    active=ks.params.active,
                    lanes=list(ks.lanes.lanes),
                    lag=lag,
                    queued=ks.lanes.queued,
                    in_flight=ks.lanes.leased,
                    fetched=ks.fetched,
                    finished=dict(ks.finished),
                    errors_last_hour=sum(1 for f in ks.failures if f.at >= hour_ago),
                    replayed=ks.finished.get("cached", 0),
                    replay_saved_seconds=round(ks.replay_saved_seconds, 3),
                    last_seen=ks.last_seen,
                    recent_failures=list(ks.failures)[-10:],
                    history=ks.history.series(),
                )
            )
        return summaries
