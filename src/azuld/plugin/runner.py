"""The plugin runner: register, long-poll, run jobs, heartbeat, post results, and keep at it
while the dispatcher comes and goes.

`serve` owns two nurseries: a background one for the heartbeat scheduler (one task for all jobs,
which posts a job's heartbeat in a task of its own only when it is due) and, inside it, the
`workers` worker tasks; each takes one job at a time and runs it under a cancel scope that
enforces the plugin's run timeout. Every request goes through the `DispatcherLink`: a dispatcher
that is not up yet, restarts or dies costs retries with backoff, never the process.

What is retried, and for how long (the lease is `lease_seconds` from the handout, extended by
each heartbeat the dispatcher took):
- registration: until it is taken; again before the first fetch after each outage;
- a fetch: until it is answered (a failed fetch handed out nothing the plugin knows of);
- a download or upload, a heartbeat and the final status: until the job's lease would end. A
  final status not delivered by then is logged with the job id and dropped (the dispatcher
  offers the job again); a job whose data could not be read by then is dropped the same way.
  Once a job has finished, only its final status is retried.
A refusal (a 4xx, but 408/425/429) is not retried: of a registration or a fetch it ends `serve`
(`DispatcherRefused`: the plugin's request is wrong); of a status it is logged and the status
dropped.

A job handed out again while this process still holds it (running it, or retrying its status;
e.g. re-offered by a dispatcher restarted under it) is left to the attempt already here, so it
ends with one final status: the dispatcher ends a job with its first final status, whatever the
attempt.

Stopping (`stop`, e.g. on SIGTERM) cancels fetches and their retries at once and gives running
jobs, and statuses being retried, `grace_seconds`; a job still running then is abandoned without
a status, and the dispatcher offers it again when its lease expires.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import trio

from azuld.models.events import (
    CURRENT_MODEL_VERSION,
    Author,
    BinaryEvent,
    Datastream,
    PluginEntity,
    PluginEvent,
    StatusEntity,
    StatusEvent,
)
from azuld.models.events import PluginFeature as WireFeature
from azuld.plugin.api import Job, OptOut, Plugin
from azuld.plugin.client import DispatcherClient, DispatcherError, DispatcherRefused
from azuld.plugin.link import DispatcherLink, GaveUp
from azuld.plugin.results import Outcome, build_status, stripped_input, uploads_needed

__all__ = ["DEFAULT_LEASE_SECONDS", "PluginRunner"]

log = logging.getLogger(__name__)

T = TypeVar("T")

FETCH_DEADLINE_SECONDS = 10
# azuld's `dispatch.lease_seconds` default (the Go dispatcher's is longer): when the daemon's
# own settings are not known, the runner assumes this.
DEFAULT_LEASE_SECONDS = 120.0

# A handed-out event, as the plugin recognises it when it is handed out again (the job id
# differs between attempts; the event does not).
JobKey = tuple[str, str, str, datetime, str]


def _now() -> datetime:
    return datetime.now(UTC)


def _key(event: BinaryEvent) -> JobKey:
    return (event.kafka_key, event.entity.sha256, event.source.name, event.timestamp, event.action)


@dataclass(slots=True)
class _Held:
    """A job this process holds: until when its lease lasts, and how many outages the link
    had begun when it was handed out."""

    job: Job
    lease_ends_at: float
    outages: int
    started: float
    next_beat_at: float
    beating: trio.CancelScope | None = None


class PluginRunner:
    """Runs one plugin against one dispatcher. `serve` until `stop` is set."""

    def __init__(
        self,
        plugin: Plugin,
        client: DispatcherClient,
        *,
        workers: int = 1,
        grace_seconds: float = 30.0,
        max_jobs: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        link: DispatcherLink | None = None,
    ) -> None:
        self.plugin = plugin
        self.client = client
        self.workers = workers
        self.grace_seconds = grace_seconds
        self.max_jobs = max_jobs
        self.lease_seconds = lease_seconds
        self.link = link or DispatcherLink(client.url)
        self.jobs_done = 0
        self.statuses: list[str] = []
        cls = type(plugin)
        self.author = Author(name=cls.name, version=cls.version, category="plugin")
        self._declared = cls.declared_features()
        self._stop = trio.Event()
        self._fetch_scopes: set[trio.CancelScope] = set()
        self._job_scopes: set[trio.CancelScope] = set()
        self._held: dict[JobKey, _Held] = {}
        # Jobs finished here that an outage overlapped: a dispatcher restarted meanwhile may
        # hand them out again until their lease would have ended (key -> that time).
        self._recent: dict[JobKey, float] = {}
        self._registered_for = -1  # the link's `outages` when the registration was last taken
        self._registering = trio.Lock()
        self._refused: DispatcherRefused | None = None
        self._query = self._fetch_query()

    # -- lifecycle -------------------------------------------------------------------------

    def registration(self) -> PluginEvent:
        cls = type(self.plugin)
        config = {
            k: v for k, v in sorted(self.plugin.config.items()) if not k.startswith("secret_")
        }
        return PluginEvent(
            model_version=CURRENT_MODEL_VERSION,
            kafka_key="runner-placeholder",
            timestamp=_now(),
            author=self.author,
            entity=PluginEntity(
                name=cls.name,
                version=cls.version,
                category="plugin",
                contact=cls.contact,
                description=cls.description or (cls.__doc__ or "").strip(),
                features=[
                    WireFeature(name=f.name, desc=f.desc, type=f.type)
                    for f in sorted(self._declared.values(), key=lambda f: f.name)
                ],
                config=config,
            ),
        )

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop polling now; give running jobs `grace_seconds`, then abandon them."""
        if self._stop.is_set():
            return
        self._stop.set()
        for scope in self._fetch_scopes:
            scope.cancel()
        deadline = trio.current_time() + self.grace_seconds
        for scope in self._job_scopes:
            scope.deadline = min(scope.deadline, deadline)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, then run the workers until stopped (or `max_jobs` done).

        Raises:
            DispatcherRefused: the dispatcher refused the registration or a fetch.
        """
        await self._stoppable(self.link.call(self._register, what="registration"))
        task_status.started()
        if self._stop.is_set():
            return
        async with trio.open_nursery() as background:
            background.start_soon(self._heartbeats, background)
            async with trio.open_nursery() as nursery:
                for index in range(self.workers):
                    nursery.start_soon(self._worker, index)
            background.cancel_scope.cancel()
        if self._refused is not None:
            raise self._refused

    async def _stoppable(self, call: Awaitable[T]) -> T | None:
        """`await call`, unless `stop` cancels it first (then None)."""
        with trio.CancelScope() as scope:
            self._fetch_scopes.add(scope)
            if self._stop.is_set():
                scope.cancel()
            try:
                return await call
            finally:
                self._fetch_scopes.discard(scope)
        return None

    async def _register(self) -> None:
        async with self._registering:
            outages = self.link.outages
            if self._registered_for != outages:
                await self.client.register(self.registration())
                self._registered_for = outages

    # -- workers ---------------------------------------------------------------------------

    def _fetch_query(self) -> list[tuple[str, str]]:
        cls = type(self.plugin)
        return [
            ("name", cls.name),
            ("version", cls.version),
            ("deployment_key", cls.name),
            ("count", "1"),
            ("deadline", str(FETCH_DEADLINE_SECONDS)),
            *cls.filters.query(),
        ]

    async def _fetch_once(self) -> list[BinaryEvent]:
        if self._registered_for != self.link.outages:
            await self._register()  # the dispatcher may have lost it, or be another one
        return await self.client.fetch(self._query)

    async def _worker(self, index: int) -> None:
        while not self._stop.is_set():
            if self.max_jobs is not None and self.jobs_done >= self.max_jobs:
                self.stop()
                return
            try:
                events = await self._stoppable(self.link.call(self._fetch_once, what="fetch"))
            except DispatcherRefused as exc:
                # The query (or the registration) is wrong: asking again cannot help.
                self._refused = self._refused or exc
                self.stop()
                return
            for event in events or ():
                if self._is_held(event):
                    continue
                await self.run_job(event)

    def _is_held(self, event: BinaryEvent) -> bool:
        key = _key(event)
        held = self._held.get(key)
        if held is not None:
            log.info(
                "job %s handed out again (as %s) while this plugin still holds it: left to it",
                held.job.id,
                event.dequeued,
            )
            return True
        until = self._recent.get(key)
        if until is not None and trio.current_time() < until:
            log.info("job %s handed out again after its status was posted: skipped", event.dequeued)
            return True
        return False

    # -- one job ---------------------------------------------------------------------------

    async def _retried(self, held: _Held, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """A request of a held job, retried until its lease would end (`GaveUp` then)."""
        return await self.link.call(operation, give_up_at=held.lease_ends_at, what=what)

    async def _execute(self, job: Job) -> tuple[str, str, str]:
        """Run the plugin's `execute`; `(status, error, message)`.

        Raises:
            GaveUp: the job's data could not be read before its lease ended.
        """
        cls = type(self.plugin)
        if len(job.event.source.path) >= cls.depth_limit:
            return "opt-out", "depth", f"{cls.name} reached its depth limit of {cls.depth_limit}"
        if cls.requires_content and job.stream("content") is None:
            return "opt-out", "no-content", "plugin requires data but none exists"
        try:
            await self.plugin.execute(job)
        except OptOut as opted:
            return "opt-out", opted.reason, opted.message
        except GaveUp:
            raise
        except FileNotFoundError as missing:
            if cls.requires_content:
                return "opt-out", "content-missing", str(missing)
            return "error-exception", type(missing).__name__, traceback.format_exc()
        except Exception as exc:
            return "error-exception", type(exc).__name__, traceback.format_exc()
        return "completed", "", ""

    async def run_job(self, event: BinaryEvent) -> None:
        """Run one job to its final status and deliver it (see the module for the retries).

        Cancellation (stop past grace): the job is abandoned without a status.
        """
        now = trio.current_time()
        held = _Held(
            job=Job(event, self._declared, lambda s, o, n: self._read(held, s, o, n)),
            lease_ends_at=now + self.lease_seconds,
            outages=self.link.outages,
            started=now,
            next_beat_at=now + type(self.plugin).heartbeat_interval_seconds,
        )
        key = _key(event)
        self._held[key] = held
        phase = "running"
        with trio.CancelScope() as abandon:
            self._job_scopes.add(abandon)
            if self._stop.is_set():
                abandon.deadline = now + self.grace_seconds
            try:
                final = await self._run(held)
                self._stop_beating(held)
                if final is not None:
                    phase = "delivering"
                    await self._deliver(held, final)
            finally:
                self._stop_beating(held)
                self._job_scopes.discard(abandon)
                if self._held.get(key) is held:  # (run_job may be called for one event twice)
                    del self._held[key]
                if self.link.outages != held.outages:
                    self._remember(key, held.lease_ends_at)
        if abandon.cancelled_caught:
            if phase == "running":
                log.warning(
                    "job %s abandoned on shutdown: the dispatcher will offer it again", held.job.id
                )
            else:
                log.error(
                    "job %s: status not delivered before shutdown; dropped (the "
                    "dispatcher will offer the job again)",
                    held.job.id,
                )

    async def _run(self, held: _Held) -> StatusEvent | None:
        """The job's final status; None if its data could not be moved before its lease ended."""
        cls = type(self.plugin)
        job = held.job
        try:
            with trio.move_on_after(cls.run_timeout_seconds) as timeout:
                status, error, message = await self._execute(job)
            if timeout.cancelled_caught:
                status, error = "error-timeout", "PluginTimeout Error"
                message = f"{cls.name} timed out on job '{job.sha256}'"
            uploaded: Mapping[tuple[str, str], Datastream] = {}
            if status == "completed":
                try:
                    uploaded = await self._upload(held)
                except DispatcherRefused as exc:
                    status, error, message = "error-output", type(exc).__name__, str(exc)
        except GaveUp as exc:
            log.error("job %s dropped: %s (the dispatcher will offer it again)", job.id, exc)
            return None
        outcome = Outcome(status, trio.current_time() - held.started, error, message)
        return build_status(self.author, job, outcome, uploaded, _now())

    async def _deliver(self, held: _Held, final: StatusEvent) -> None:
        job = held.job
        status = final.entity.status
        try:
            await self._retried(
                held, f"{status} status of job {job.id}", lambda: self.client.post_status(final)
            )
        except GaveUp as exc:
            log.error(
                "job %s: %s status not delivered before its lease ended; dropped (the "
                "dispatcher will offer the job again): %s",
                job.id,
                status,
                exc.__cause__ or exc,
            )
            return
        except DispatcherRefused as exc:
            log.error("job %s: the dispatcher refused its %s status: %s", job.id, status, exc)
            return
        self.jobs_done += 1
        self.statuses.append(status)
        if status.startswith("error"):
            log.info("job %s %s: %s (%s)", job.sha256[:12], job.id, status, final.entity.error)
        else:
            log.debug("job %s %s: %s", job.sha256[:12], job.id, status)

    def _remember(self, key: JobKey, until: float) -> None:
        now = trio.current_time()
        for old in [k for k, t in self._recent.items() if t <= now]:
            del self._recent[old]
        self._recent[key] = until

    async def _read(
        self, held: _Held, stream: Datastream, offset: int, length: int | None
    ) -> bytes:
        source = held.job.event.source.name
        return await self._retried(
            held,
            f"download for job {held.job.id}",
            lambda: self.client.read(source, stream, offset, length),
        )

    async def _upload(self, held: _Held) -> dict[tuple[str, str], Datastream]:
        source = held.job.event.source.name
        uploaded = {}
        for (label, digest), data in uploads_needed(held.job).items():
            uploaded[(label, digest)] = await self._retried(
                held,
                f"upload for job {held.job.id}",
                functools.partial(self.client.upload, source, label, data),
            )
        return uploaded

    # -- heartbeats ------------------------------------------------------------------------

    async def _heartbeats(self, nursery: trio.Nursery) -> None:
        """Post each running job's heartbeat when it is due, each in a task of its own (one
        being retried holds up no other). Wakes at the next due heartbeat, and at least once an
        interval: a job starting meanwhile is due an interval after it started, never earlier."""
        interval = type(self.plugin).heartbeat_interval_seconds
        while True:
            now = trio.current_time()
            wake = now + interval
            for held in self._held.values():
                if held.next_beat_at <= now:
                    held.next_beat_at += interval
                    if held.beating is None:  # the previous one is still being retried
                        nursery.start_soon(self._beat, held)
                wake = min(wake, held.next_beat_at)
            await trio.sleep_until(wake)

    async def _beat(self, held: _Held) -> None:
        job = held.job
        with trio.CancelScope() as scope:
            held.beating = scope
            sent = trio.current_time()
            status = StatusEvent(
                model_version=CURRENT_MODEL_VERSION,
                kafka_key="runner-placeholder",
                timestamp=_now(),
                author=self.author,
                entity=StatusEntity(
                    input=stripped_input(job.event),
                    status="heartbeat",
                    runtime=float(int(sent - held.started)),
                ),
            )
            try:
                await self._retried(
                    held, f"heartbeat of job {job.id}", lambda: self.client.post_status(status)
                )
                held.lease_ends_at = max(held.lease_ends_at, sent + self.lease_seconds)
            except GaveUp as exc:
                log.warning(
                    "job %s: heartbeat not delivered before its lease ended: %s",
                    job.id,
                    exc.__cause__ or exc,
                )
            except DispatcherError as exc:
                log.warning("job %s: the dispatcher refused its heartbeat: %s", job.id, exc)
            finally:
                held.beating = None

    def _stop_beating(self, held: _Held) -> None:
        """The job finished: a heartbeat being posted or retried is of no use any more."""
        if held.beating is not None:
            held.beating.cancel()
            held.beating = None
        held.next_beat_at = float("inf")
