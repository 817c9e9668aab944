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
from collections.abc import Iterable

import msgspec
import trio

from azuld.core.params import ConsumeParams
from azuld.dispatch.admin import Admin
from azuld.dispatch.fetch import Fetcher, FetchResult
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.leases import TICK_SECONDS, Leases
from azuld.dispatch.replay import Replay
from azuld.dispatch.statuses import Statuses
from azuld.metrics import Metrics
from azuld.models.admin import (
    FailedJob,
    KeySummary,
    ReofferAudit,
    ReofferOutcome,
)
from azuld.models.responses import PostResponse
from azuld.ports import BlobStore, EventLog
from azuld.settings import DispatchSettings

__all__ = ["TICK_SECONDS", "Dispatcher", "FetchResult"]


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
        self.admin = Admin(log, topic_prefix, self.metrics, self.registry)
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
        """Dead letters, newest first (`Admin.failed`).

        Raises:
            UpstreamError: the log failed.
        """
        return await self.admin.failed(plugin, limit)

    async def reoffer(self, job_ids: Iterable[str], by: str) -> list[ReofferOutcome]:
        """Put jobs back in front of their plugin key (`Admin.reoffer`).

        Raises:
            UpstreamError: the log failed; nothing was re-offered.
        """
        return await self.admin.reoffer(job_ids, by)

    async def reoffers(self, limit: int = 200) -> list[ReofferAudit]:
        """The re-offer audit trail, newest first (`Admin.reoffers`).

        Raises:
            UpstreamError: the log failed.
        """
        return await self.admin.reoffers(limit)

    # -- introspection ---------------------------------------------------------------------

    def keys(self) -> list[KeyState]:
        """The plugin keys this instance serves."""
        return list(self.registry.states.values())

    async def lag(self, ks: KeyState) -> dict[str, int]:
        """Events not yet finished, per lane (`Admin.lag`)."""
        return await self.admin.lag(ks)

    async def key_summaries(self) -> list[KeySummary]:
        """Per plugin key on this instance: lanes, lag, in flight, done, recent failures; also
        refreshes the lag and in-flight gauges (`Admin.key_summaries`).

        Raises:
            UpstreamError: the log failed.
        """
        return await self.admin.key_summaries()
