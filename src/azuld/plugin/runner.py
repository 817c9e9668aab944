"""The plugin runner: register, long-poll, run jobs, heartbeat, post results.

One nursery per process runs `workers` worker tasks; each takes one job at a time. A job runs in
its own nursery beside a heartbeat task, under a cancel scope that enforces the plugin's run
timeout. Stopping (`stop` set, e.g. by SIGTERM) cancels the long-polls at once and gives running
jobs `grace_seconds` to finish; a job still running then is abandoned without a status, and the
dispatcher offers it again when its lease expires.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime

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
from azuld.plugin.client import DispatcherClient, DispatcherError
from azuld.plugin.results import Outcome, build_status, stripped_input, uploads_needed

__all__ = ["PluginRunner"]

log = logging.getLogger(__name__)

FETCH_DEADLINE_SECONDS = 10
# Back-off after a fetch that failed (dispatcher down, restarting): long enough not to spin.
FETCH_RETRY_SECONDS = 5.0
# Posting a final status may not hang shutdown: bounded, and shielded from the job's cancellation.
POST_TIMEOUT_SECONDS = 30.0


def _now() -> datetime:
    return datetime.now(UTC)


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
    ) -> None:
        self.plugin = plugin
        self.client = client
        self.workers = workers
        self.grace_seconds = grace_seconds
        self.max_jobs = max_jobs
        self.jobs_done = 0
        self.statuses: list[str] = []
        cls = type(plugin)
        self.author = Author(name=cls.name, version=cls.version, category="plugin")
        self._declared = cls.declared_features()
        self._stop = trio.Event()
        self._fetch_scopes: set[trio.CancelScope] = set()
        self._job_scopes: set[trio.CancelScope] = set()

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
        """Register, then run the workers until stopped (or `max_jobs` done)."""
        await self.client.register(self.registration())
        task_status.started()
        async with trio.open_nursery() as nursery:
            for index in range(self.workers):
                nursery.start_soon(self._worker, index)

    # -- workers ---------------------------------------------------------------------------

    def _query(self) -> list[tuple[str, str]]:
        cls = type(self.plugin)
        return [
            ("name", cls.name),
            ("version", cls.version),
            ("deployment_key", cls.name),
            ("count", "1"),
            ("deadline", str(FETCH_DEADLINE_SECONDS)),
            *cls.filters.query(),
        ]

    async def _worker(self, index: int) -> None:
        query = self._query()
        while not self._stop.is_set():
            if self.max_jobs is not None and self.jobs_done >= self.max_jobs:
                self.stop()
                return
            events: list[BinaryEvent] = []
            with trio.CancelScope() as scope:
                self._fetch_scopes.add(scope)
                try:
                    events = await self.client.fetch(query)
                except (DispatcherError, OSError) as exc:
                    log.warning("worker %d: fetch failed: %s; retrying", index, exc)
                    await trio.sleep(FETCH_RETRY_SECONDS)
                finally:
                    self._fetch_scopes.discard(scope)
            for event in events:
                await self.run_job(event)

    # -- one job ---------------------------------------------------------------------------

    async def _read(
        self, event: BinaryEvent, stream: Datastream, offset: int, length: int | None
    ) -> bytes:
        return await self.client.read(event.source.name, stream, offset, length)

    async def _heartbeats(self, event: BinaryEvent, started: float) -> None:
        interval = type(self.plugin).heartbeat_interval_seconds
        while True:
            await trio.sleep(interval)
            status = StatusEvent(
                model_version=CURRENT_MODEL_VERSION,
                kafka_key="runner-placeholder",
                timestamp=_now(),
                author=self.author,
                entity=StatusEntity(
                    input=stripped_input(event),
                    status="heartbeat",
                    runtime=float(int(trio.current_time() - started)),
                ),
            )
            try:
                await self.client.post_status(status)
            except (DispatcherError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _execute(self, job: Job) -> tuple[str, str, str]:
        """Run the plugin's `execute`; `(status, error, message)`."""
        cls = type(self.plugin)
        if len(job.event.source.path) >= cls.depth_limit:
            return "opt-out", "depth", f"{cls.name} reached its depth limit of {cls.depth_limit}"
        if cls.requires_content and job.stream("content") is None:
            return "opt-out", "no-content", "plugin requires data but none exists"
        try:
            await self.plugin.execute(job)
        except OptOut as opted:
            return "opt-out", opted.reason, opted.message
        except FileNotFoundError as missing:
            if cls.requires_content:
                return "opt-out", "content-missing", str(missing)
            return "error-exception", type(missing).__name__, traceback.format_exc()
        except Exception as exc:
            return "error-exception", type(exc).__name__, traceback.format_exc()
        return "completed", "", ""

    async def run_job(self, event: BinaryEvent) -> None:
        """Run one job to its final status. Cancellation (stop past grace): no status posted."""
        cls = type(self.plugin)
        job = Job(event, self._declared, lambda s, o, n: self._read(event, s, o, n))
        started = trio.current_time()
        with trio.CancelScope() as abandon:
            self._job_scopes.add(abandon)
            if self._stop.is_set():
                abandon.deadline = started + self.grace_seconds
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeats, event, started)
                    with trio.move_on_after(cls.run_timeout_seconds) as timeout:
                        status, error, message = await self._execute(job)
                    if timeout.cancelled_caught:
                        status, error = "error-timeout", "PluginTimeout Error"
                        message = f"{cls.name} timed out on job '{event.entity.sha256}'"
                    uploaded: Mapping[tuple[str, str], Datastream] = {}
                    if status == "completed":
                        try:
                            uploaded = await self._upload(event.source.name, job)
                        except (DispatcherError, OSError) as exc:
                            status, error, message = "error-output", type(exc).__name__, str(exc)
                    nursery.cancel_scope.cancel()
            finally:
                self._job_scopes.discard(abandon)
        if abandon.cancelled_caught:
            log.warning("abandoned job %s on shutdown; the dispatcher will offer it again", job.id)
            return
        outcome = Outcome(status, trio.current_time() - started, error, message)
        final = build_status(self.author, job, outcome, uploaded, _now())
        with trio.move_on_after(POST_TIMEOUT_SECONDS) as post_scope:
            post_scope.shield = True
            try:
                await self.client.post_status(final)
            except (DispatcherError, OSError) as exc:
                # The lease will expire and the dispatcher will offer the job again.
                log.error("could not post the status of job %s: %s", job.id, exc)
                return
        self.jobs_done += 1
        self.statuses.append(final.entity.status)
        log.info("job %s: %s", job.sha256[:12], final.entity.status)

    async def _upload(self, source: str, job: Job) -> dict[tuple[str, str], Datastream]:
        return {
            key: await self.client.upload(source, key[0], data)
            for key, data in uploads_needed(job).items()
        }
