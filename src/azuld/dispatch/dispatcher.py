"""The `Dispatcher`: one object made of the dispatcher's parts, for the service, the HTTP routes
and the tests to talk to.

`Dispatcher.fetch` serves long-polls, `Dispatcher.publish` accepts posted events (statuses, results,
registrations, sourced binaries), and `Dispatcher.run` is the background half: it wakes waiting
long-polls when the log changes and reaps expired leases. The HTTP handlers are thin translators
over these three. Each method hands its work to the part that owns it (see `azuld.dispatch`).
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from azuld.core.params import ConsumeParams
from azuld.dispatch.admin import Admin
from azuld.dispatch.background import Background
from azuld.dispatch.fetch import Fetcher, FetchResult
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.leases import Leases
from azuld.dispatch.replay import Replay
from azuld.dispatch.security import Security
from azuld.dispatch.statuses import Statuses
from azuld.metrics import Metrics
from azuld.models.admin import (
    ClusterView,
    FailedJob,
    JobsInFlight,
    PluginKeySummary,
    ReofferOutcome,
    ReofferRecord,
)
from azuld.models.responses import PostResponse
from azuld.ports import BlobStore, EventLog, SecurityCheck
from azuld.security_check import open_security_check
from azuld.settings import DispatchSettings, SecuritySettings

__all__ = ["Dispatcher"]


class Dispatcher:
    """Hands out jobs, takes statuses. One per process; `run` must be running in a nursery."""

    def __init__(
        self,
        log: EventLog,
        settings: DispatchSettings,
        topic_prefix: str,
        metrics: Metrics | None = None,
        blobs: BlobStore | None = None,
        security: SecurityCheck | None = None,
        default_label: str = "",
    ) -> None:
        """`security` decides `max-security` (`azuld.security_check.open_security_check`; by
        default the label model of a default `[security]`); `default_label` is the label of an
        event that carries none (`security.default_label`)."""
        self.log = log
        self.prefix = topic_prefix
        self.metrics = metrics or Metrics()
        self.blobs = blobs
        self.registry = KeyRegistry(log, settings, topic_prefix, self.metrics)
        self.ids = self.registry.ids
        self.replay = Replay(
            log,
            topic_prefix,
            self.metrics,
            blobs,
            max_bytes=settings.replay_cache_bytes,
            ids=self.registry.ids,
        )
        self.statuses = Statuses(
            log, settings, topic_prefix, self.metrics, self.registry, self.replay
        )
        self.leases = Leases(settings, self.metrics, self.registry, self.statuses)
        self.security = Security(
            security or open_security_check(SecuritySettings()), self.registry, default_label
        )
        self.fetcher = Fetcher(
            log, settings, self.metrics, self.registry, self.replay, self.leases, self.security
        )
        self.admin = Admin(log, topic_prefix, self.metrics, self.registry)
        self.background = Background(
            log, self.registry, self.replay, self.statuses, self.leases, self.security
        )
        self._settings = settings

    @property
    def settings(self) -> DispatchSettings:
        """The dispatch settings in force. A reload (SIGHUP) sets new ones here, which hands them
        to every part that reads them; each uses them from its next decision on."""
        return self._settings

    @settings.setter
    def settings(self, new: DispatchSettings) -> None:
        self._settings = new
        for part in (self.registry, self.statuses, self.leases, self.fetcher):
            part.settings = new

    @property
    def last_tick(self) -> float:
        """When the lease reaper last ran: the watchdog pings systemd only while this moves."""
        return self.leases.last_tick

    @last_tick.setter
    def last_tick(self, value: float) -> None:
        self.leases.last_tick = value

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the replay cache, then follow the log, reap leases and decide `max-security`
        checks until cancelled (`Background.run`).

        Raises:
            UpstreamError: the replay cache could not be loaded (before `started`).
        """
        await self.background.run(task_status=task_status)

    async def fetch(self, params: ConsumeParams) -> FetchResult:
        """Long-poll for up to `params.count` jobs, waiting at most `params.deadline_seconds`
        (`Fetcher.fetch`).

        Cancellation: safe; jobs already taken by a cancelled request are leased and come back
        when their lease expires.

        A backend failure does not fail the request (plugins such as azul-runner exit on any
        non-200 fetch): the reply carries what was taken so far with `ready: false`.

        Raises:
            UnreadableLabel: the checker cannot read `max-security` (a 422).
            TooManyRequests: `dispatch.max_polls_per_key` long-polls already wait for the key.
        """
        return await self.fetcher.fetch(params)

    async def publish(
        self, model: str, body: bytes, *, include_ok: bool = False, avro: bool = False
    ) -> PostResponse:
        """Validate, store and act on posted events (`Statuses.publish`); `avro`: the body is
        an Avro bulk record, not JSON.

        Raises:
            BadRequest: empty body or unknown model.
            PayloadTooLarge: more than `dispatch.max_events_per_post` events.
            Unprocessable: not JSON, an old `model_version`, or an event of the wrong shape.
            AllFiltered: no event was valid.
            UpstreamError: the log could not store them; nothing was acknowledged.
        """
        return await self.statuses.publish(model, body, include_ok=include_ok, avro=avro)

    async def expire_leases(self, now: float) -> None:
        """Put expired leases back and fail those out of attempts (`Leases.expire`; the reaper
        does this by itself).

        Raises:
            UpstreamError: the log failed; the next call carries on.
        """
        await self.leases.expire(now)

    async def log_problem(self, *, fresh: bool = False) -> str | None:
        """The log's health, asked at most once a second (a fetch asks every time); `fresh`
        asks now (readiness checks), which also updates what fetches see."""
        return await self.fetcher.log_problem(fresh=fresh)

    # -- admin -----------------------------------------------------------------------------

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

    async def reoffers(self, limit: int = 200) -> list[ReofferRecord]:
        """The re-offer audit trail, newest first (`Admin.reoffers`).

        Raises:
            UpstreamError: the log failed.
        """
        return await self.admin.reoffers(limit)

    def keys(self) -> list[KeyState]:
        """The plugin keys this instance serves."""
        return list(self.registry.states.values())

    async def lag(self, ks: KeyState) -> dict[str, int]:
        """Events not yet finished, per lane (`Admin.lag`).

        Raises:
            UpstreamError: the log failed.
        """
        return await self.admin.lag(ks)

    async def key_summaries(self) -> list[PluginKeySummary]:
        """Per plugin key on this instance: lanes, lag, in flight, done, recent failures; also
        sets the lag and in-flight gauges (`Admin.key_summaries`).

        Raises:
            UpstreamError: the log failed.
        """
        return await self.admin.key_summaries()

    async def cluster(self) -> ClusterView:
        """The instances sharing the log, the partitions each owns, the rebalances and the work
        that moved (`Admin.cluster`); also sets the cluster gauges. Never raises for the log:
        a failure is said in the view's `problem`."""
        return await self.admin.cluster()

    async def jobs(self, limit: int = 200) -> JobsInFlight:
        """The jobs in flight on this instance, the longest-running first (`Admin.jobs`)."""
        return await self.admin.jobs(limit)
