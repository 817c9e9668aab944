"""Leases: a handed-out job is a lease that heartbeats extend and a final status ends; here is
what happens when one runs out.

The reaper sleeps until the earliest lease deadline of any key (at most `TICK_SECONDS`, so its
tick shows the dispatch loop is alive), then puts expired jobs back at the front of their lanes.
A job out of attempts (`dispatch.max_attempts`) gets a final `error-timeout` status the dispatcher
authors itself. The commits that moved are stored, and waiting long-polls woken for the jobs put
back.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

import msgspec
import trio

from azuld.core.delivery import Job
from azuld.core.posts import DECODERS
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.statuses import Statuses
from azuld.errors import UpstreamError
from azuld.metrics import Metrics
from azuld.models.events import (
    CURRENT_MODEL_VERSION,
    Author,
    BinaryEvent,
    StatusEntity,
    StatusEvent,
)
from azuld.settings import DispatchSettings

__all__ = ["TICK_SECONDS", "Leases"]

# The lease reaper wakes at least this often, so its tick shows the dispatch loop is alive.
TICK_SECONDS = 1.0

# The logger name operators filter on, one for the whole dispatcher (as before the split).
log = logging.getLogger("azuld.dispatcher")


class Leases:
    """The lease reaper and what an expired lease leads to."""

    def __init__(
        self,
        settings: DispatchSettings,
        metrics: Metrics,
        registry: KeyRegistry,
        statuses: Statuses,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.statuses = statuses
        self._changed = trio.Event()  # set when a lease ends before the reaper would wake
        self._wakes_at = math.inf  # when the reaper wakes by itself next
        # When the reaper last ran: the watchdog pings systemd only while this moves.
        self.last_tick = trio.current_time()

    async def reap(self) -> None:
        """Expire leases as their deadlines pass, until cancelled. A failure of the log is
        logged and retried at the next tick."""
        while True:
            self.last_tick = trio.current_time()
            changed = self._changed
            wake_at = min(self._next_deadline(), self.last_tick + TICK_SECONDS)
            self._wakes_at = wake_at
            with trio.move_on_at(wake_at):
                await changed.wait()
                continue
            try:
                await self.expire(trio.current_time())
            except UpstreamError as exc:
                log.warning("lease reaper: %s", exc)

    def added(self, deadline: float) -> None:
        """A lease was handed out: wake the reaper if it ends before the reaper would wake by
        itself."""
        if deadline < self._wakes_at:
            self._changed.set()
            self._changed = trio.Event()

    def _next_deadline(self) -> float:
        deadlines = [
            d for ks in self.registry.states.values() if (d := ks.lanes.next_deadline()) is not None
        ]
        return min(deadlines, default=math.inf)

    async def expire(self, now: float) -> None:
        """Put expired leases back in their lanes; fail those out of attempts; store the commits
        that moved (including any an earlier failure left behind).

        Raises:
            UpstreamError: the log failed; a job whose `error-timeout` was not stored is failed
                again by the next call.
        """
        requeued = False
        for ks in list(self.registry.states.values()):
            before = ks.lanes.queued
            failed = ks.lanes.expire(now, max_attempts=self.settings.max_attempts)
            requeued |= ks.lanes.queued > before
            expired = len(failed) + ks.lanes.queued - before
            if expired:
                self.metrics.leases_expired.labels(ks.params.name, ks.params.key).inc(expired)
            # Failures whose status could not be stored last time go first; a job out of
            # attempts stays in this list until its error-timeout is stored.
            pending, ks.unsaved_failures = [*ks.unsaved_failures, *failed], []
            for index, job in enumerate(pending):
                try:
                    await self.statuses.store_own_failure(ks, job, self._timeout_status(ks, job))
                except UpstreamError:
                    ks.unsaved_failures = pending[index:]
                    raise
            await self.registry.commit(ks)
        if requeued:
            self.registry.wake_all()

    def _timeout_status(self, ks: KeyState, job: Job) -> StatusEvent:
        """The dispatcher's own final `error-timeout` status for a job out of attempts, authored
        by the plugin (not copied from the input, as Go's lost-task job does)."""
        event = (
            job.event
            if isinstance(job.event, BinaryEvent)
            else DECODERS["binary"].decode(job.value)
        )
        job_input = msgspec.structs.replace(
            event,
            dequeued=self.registry.ids.make(job.ref, job.attempt),
            entity=msgspec.structs.replace(event.entity, features=[], datastreams=[], info={}),
        )
        return StatusEvent(
            model_version=CURRENT_MODEL_VERSION,
            timestamp=datetime.now(UTC),
            author=Author(name=ks.params.name, version=ks.params.version, category="plugin"),
            entity=StatusEntity(
                input=job_input,
                status="error-timeout",
                error="lease expired",
                message=(
                    f"{ks.params.name} did not finish the job within its lease "
                    f"({self.settings.lease_seconds:g} s without a heartbeat, or longer than "
                    f"dispatch.max_job_seconds={self.settings.max_job_seconds:g} s) "
                    f"after {self.settings.max_attempts} attempts"
                ),
            ),
        )
