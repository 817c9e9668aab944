"""Posted events and the statuses that finish jobs: `Dispatcher.publish` and what it does after.

A post is decoded, checked and encoded by `core.posts` (no I/O), appended to the log, and then
acted on. A posted status is appended to the log first and only then finishes its job and moves
the commit, so an acknowledged result is always durable and an unacknowledged one is offered
again. Heartbeats extend a lease; final statuses end the job, here or (following the status
topic) on whichever instance holds it. The endings are counted per key, for `azuld status`, the
dashboard and the metrics.

A job's final status is stored once: the first one wins. One posted again (a plugin that retried
a post whose answer it lost, or whose job was offered again after its dispatcher died) is
answered like the first but not stored, so its results (children, features) are not published
twice. What was stored is known from the job's lanes here and, for jobs other instances hold,
from the index of final statuses every instance builds from the status topic
(`KeyRegistry.finished`). A runner plugin's multiplugins (`Unbox-sevenzip`) post their own
final statuses, with results, before the plugin's own: each is stored once too, and only the
plugin's own status ends the job (and its lease).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import aclosing

import msgspec
import trio

from azuld.core.delivery import Job, JobRef
from azuld.core.finished import MAIN
from azuld.core.jobids import author_may_report
from azuld.core.jobs import JobState, ending_for_status
from azuld.core.keys import is_main_status, system_topic
from azuld.core.posts import PreparedPost, StatusSummary, decode_status_summary, prepare_post
from azuld.core.publish import prepare_status
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.replay import Replay
from azuld.dispatch.scan import scan
from azuld.errors import UpstreamError
from azuld.metrics import Metrics
from azuld.models.admin import PluginFailure
from azuld.models.events import StatusEvent
from azuld.models.responses import PostResponse
from azuld.ports import EventLog
from azuld.settings import DispatchSettings

__all__ = ["Statuses"]

# Endings that count as failed (and are kept for `azuld status`).
_FAILED_ENDINGS = (JobState.EXCEPTION, JobState.CRITICAL_FAILURE)

# The logger name operators filter on, one for the whole dispatcher (as before the split).
log = logging.getLogger("azuld.dispatcher")


class Statuses:
    """Stores posted events and applies the statuses among them to their jobs."""

    def __init__(
        self,
        log: EventLog,
        settings: DispatchSettings,
        prefix: str,
        metrics: Metrics,
        registry: KeyRegistry,
        replay: Replay,
    ) -> None:
        self.log = log
        self.settings = settings
        self.prefix = prefix
        self.metrics = metrics
        self.registry = registry
        self.replay = replay
        # Final statuses being stored by a post right now, by (job, author): a second post of
        # the same waits for the first, then finds it stored.
        self._storing: dict[tuple[JobRef, str], trio.Event] = {}
        self._not_stored: list[str] = []  # the plugins whose statuses the last post did not store
        self._status_topic = system_topic(prefix, "status")

    async def publish(
        self, model: str, body: bytes, *, include_ok: bool = False, avro: bool = False
    ) -> PostResponse:
        """Validate, store and act on posted events (reference 2.2); `avro`: the body is an
        Avro bulk record (`core.posts.prepare_post`).

        Raises:
            BadRequest: empty body or unknown model.
            PayloadTooLarge: more than `dispatch.max_events_per_post` events.
            Unprocessable: not JSON, an old `model_version`, or an event of the wrong shape.
            AllFiltered: no event was valid.
            UpstreamError: the log could not store them; nothing was acknowledged.
        """
        post = self._prepare(model, body, avro=avro)
        if self.log.shared and not self._all_sure(post):
            # A final status that another plugin may have reported for the same job (a job its
            # dispatcher was gone for, offered again elsewhere): first read what every instance
            # stored until now, then decide (the first stored wins).
            await self.log.caught_up(self._status_topic)
            post = self._prepare(model, body, avro=avro)
        busy = [self._storing[k] for k in self._finals(post) if k in self._storing]
        if busy:
            for storing in busy:
                await storing.wait()
            post = self._prepare(model, body, avro=avro)  # decide again, knowing what those stored
        finals = self._finals(post)
        stored = trio.Event()
        for final in finals:
            self._storing[final] = stored
        try:
            await self.log.append(post.records)
        finally:
            for final in finals:
                del self._storing[final]
            stored.set()
        now = trio.current_time()
        for ref, author in finals:
            self.registry.finished.add(ref, author, now)
        if self._not_stored:
            for plugin in self._not_stored:
                self.metrics.child(self.metrics.not_stored, plugin).inc()
            log.info(
                "%d final statuses answered, not stored: their jobs' were already",
                len(self._not_stored),
            )
        self.replay.configs.update(post.configs)
        records = post.records
        self.replay.remember(post.replay)
        for author, count in post.authors.items():
            self.metrics.child(self.metrics.published, model, author).inc(count)
        if post.statuses:
            try:
                await self.apply(post.statuses)
            except UpstreamError as exc:
                # The statuses are stored: the plugin gets its 200. The commit that failed is
                # retried by the reaper's next tick (until then a restart re-offers the job).
                log.warning("statuses stored, but their commits failed for now: %s", exc)
        ok = [msgspec.json.decode(r.value) for r in records] if include_ok else []
        return PostResponse(
            total_ok=post.total_ok,
            total_failures=len(post.failures),
            failures=post.failures,
            ok=ok,
        )

    def _prepare(self, model: str, body: bytes, *, avro: bool) -> PreparedPost:
        self._not_stored = []
        return prepare_post(
            model,
            body,
            prefix=self.prefix,
            max_events=self.settings.max_events_per_post,
            cache=(
                self.replay.rules(
                    self.registry, self._storing, self.settings.replay_min_runtime_seconds
                )
                if model == "status"
                else None
            ),
            store=self._not_stored_yet if model == "status" else None,
            vet=self._vet,
            avro=avro,
        )

    def _vet(self, status: StatusEvent) -> str | None:
        """A status naming a job azuld did not hand out (a made-up or changed id), or signed by
        a plugin other than the job's (or one of its multiplugins), is refused."""
        job_id = status.entity.input.dequeued
        problem = self.registry.ids.problem(job_id)
        if problem is not None:
            return problem
        parsed = self.registry.ids.parse(job_id)
        if parsed is None:
            return None  # another dispatcher's id: stored, finishes nothing
        key = parsed[0].plugin_key
        ks = self.registry.get(key)
        author = status.author.name
        if ks is not None:
            allowed = author_may_report(author, ks.params.name)
        else:  # a key not loaded here: its name is one of the key's `<name>-` prefixes
            allowed = any(
                author_may_report(author, key[:index])
                for index, char in enumerate(key)
                if char == "-"
            )
        if not allowed:
            return (
                f"status author {author!r} may not report job {job_id[:200]!r}: it was handed "
                "to another plugin"
            )
        return None

    def _not_stored_yet(self, status: StatusEvent) -> bool:
        """Whether to store a posted status: any but a final status whose job already has its
        final status from this author, or has ended (a multiplugin's status after the job's)."""
        entity = status.entity
        final = self._final(entity.input.dequeued, entity.status, status.author.name)
        if final is None:
            return True
        ref, author = final
        finished = self.registry.finished
        ks = self.registry.get(ref.plugin_key)
        if (
            finished.seen(ref, author)
            or finished.seen(ref, MAIN)
            or (ks is not None and ks.lanes.is_finished(ref))
        ):
            self._not_stored.append(ks.params.name if ks is not None else "unknown")
            return False
        return True

    def _final(self, job_id: str, status: str, author: str) -> tuple[JobRef, str] | None:
        """(job, author) of a final status for an azuld job: `MAIN` for the plugin key's own
        plugin, else the multiplugin's name; `None` for a heartbeat or another dispatcher's id."""
        if ending_for_status(status) is None:
            return None
        parsed = self.registry.ids.parse(job_id)
        if parsed is None:
            return None
        ref = parsed[0]
        ks = self.registry.get(ref.plugin_key)
        main = is_main_status(ref.plugin_key, author, ks.params.name if ks is not None else None)
        return ref, MAIN if main else author

    def _all_sure(self, post: PreparedPost) -> bool:
        """Whether each final status of the post is a `sure_report` (the usual case)."""
        for summary in post.statuses:
            if ending_for_status(summary.status) is None:
                continue
            parsed = self.registry.ids.parse(summary.job_id)
            if parsed is None:
                continue  # not ours: finishes nothing
            ref, attempt = parsed
            ks = self.registry.get(ref.plugin_key)
            if ks is None or not ks.lanes.sure_report(ref, attempt):
                return False
        return True

    def _finals(self, post: PreparedPost) -> list[tuple[JobRef, str]]:
        """The (job, author) of each final status the post stores."""
        finals = []
        for summary in post.statuses:
            final = self._final(summary.job_id, summary.status, summary.author)
            if final is not None:
                finals.append(final)
        return finals

    async def follow(self) -> None:
        """Apply statuses posted to any instance to the jobs this instance holds (heartbeats
        extend, final statuses finish) and remember every final status (`KeyRegistry.finished`).
        A final status known already (posted here, or followed before) is not applied again.
        Runs until cancelled."""
        async with aclosing(self.log.follow(system_topic(self.prefix, "status"))) as values:
            async for value in values:
                summary = decode_status_summary(value)
                if summary is None:
                    continue
                final = self._final(summary.job_id, summary.status, summary.author)
                if final is not None and not self.registry.finished.add(
                    *final, trio.current_time()
                ):
                    continue  # known: posted here (and applied), or seen before
                try:
                    await self.apply([summary], load_missing=False)
                except UpstreamError as exc:
                    log.warning("could not apply a followed status: %s", exc)

    async def remember_recent(self) -> None:
        """At start-up: the final statuses stored in the last `finished_memory_seconds`, into
        `KeyRegistry.finished` (a partition taken over from an instance that died, or this
        process's before a restart, must not offer them again, nor store them twice).

        Raises:
            UpstreamError: the log failed.
        """
        keep = self.settings.finished_memory_seconds
        if keep <= 0:
            return
        topic = system_topic(self.prefix, "status")
        remembered = 0
        now = trio.current_time()
        async with aclosing(scan(self.log, topic.__eq__, since=time.time() - keep)) as values:
            async for value in values:
                summary = decode_status_summary(value)
                if summary is None:
                    continue
                final = self._final(summary.job_id, summary.status, summary.author)
                if final is not None and self.registry.finished.add(*final, now):
                    remembered += 1
        if remembered:
            log.info("remembered %d final statuses of the last %g s", remembered, keep)

    async def apply(self, statuses: Iterable[StatusSummary], *, load_missing: bool = True) -> None:
        """Apply stored statuses to their jobs: heartbeats extend leases, final statuses finish
        jobs; then store the commits that moved (on a shared log: have them stored within
        `commit_interval_seconds`). `load_missing` loads a key this process has not seen (a
        status posted here after a restart).

        Raises:
            UpstreamError: the log failed; what was finished stays finished, and the commits
                are stored by the next commit of their keys.
        """
        now = trio.current_time()
        touched: dict[str, KeyState] = {}
        endings: dict[tuple[str, JobState], int] = {}  # counted once per post, not per job
        try:
            for status in statuses:
                parsed = self.registry.ids.parse(status.job_id)
                if parsed is None:
                    continue  # not one of ours (another dispatcher's id): stored, nothing to finish
                ref, attempt = parsed
                ending = ending_for_status(status.status)
                if ending is None:
                    ks = self.registry.get(ref.plugin_key)
                    if ks is not None:
                        # A heartbeat only ever moves a deadline later: the reaper need not know.
                        ks.lanes.heartbeat(
                            ref,
                            attempt,
                            now=now,
                            lease_seconds=self.settings.lease_seconds,
                            max_job_seconds=self.settings.max_job_seconds,
                        )
                    continue
                ks = self.registry.get(ref.plugin_key)
                if not is_main_status(
                    ref.plugin_key, status.author, ks.params.name if ks is not None else None
                ):
                    # A multiplugin's: results of the job, which its plugin's own status ends.
                    if ks is not None:
                        ks.count_multiplugin(status.author, status.status)
                        self.metrics.child(
                            self.metrics.multiplugin_statuses,
                            ks.params.name,
                            ks.params.key,
                            ending.value,
                        ).inc()
                    continue
                if ks is not None and ks.lanes.finish_leased(ref, ending):
                    finished = True  # the usual case: a job leased here
                else:
                    if ks is None and load_missing:
                        ks = await self.registry.state_for_job(ref)
                    if ks is None or ks.lanes.is_finished(ref):
                        continue  # a key we do not know, or a status for a job already done
                    if not ks.lanes.holds(ref):
                        # Not handed out here: a late status after a restart, or a forged id. An
                        # offset the log has not reached yet cannot have been handed out by anyone.
                        end = (await self.log.offsets([ref.tp])).get(ref.tp, (0, 0))[1]
                        if ref.offset >= end:
                            log.warning("ignoring a status for a job that cannot exist: %s", ref)
                            continue
                    finished = ks.lanes.finish(ref, ending)
                if finished:
                    counted = (ref.plugin_key, ending)
                    endings[counted] = endings.get(counted, 0) + 1
                    self._record_failure(ks, ending, status)
                touched[ref.plugin_key] = ks
        finally:
            for (key, ending), count in endings.items():
                self._count_endings(touched[key], ending, count)
        # On a shared log, the commits can wait: the statuses are stored, and every instance
        # knows them (`KeyRegistry.finished`), so none offers their jobs again meanwhile.
        later = self.registry.commits_in_background
        for ks in touched.values():
            if ks.polls and self.registry.reads(ks):
                ks.wake()  # the window moved: a poll that waited on a full window may read
            if later:
                self.registry.commit_soon(ks)
            else:
                await self.registry.commit(ks)

    async def store_own_failure(self, ks: KeyState, job: Job, status: StatusEvent) -> None:
        """Store a final status the dispatcher authors itself for a job (the `error-timeout` of
        a job out of attempts) and finish the job with it.

        Raises:
            UpstreamError: the log failed; the job is not finished.
        """
        finished = self.registry.finished
        if finished.seen(job.ref, MAIN):
            # Its plugin's status was stored elsewhere (posted to another instance) meanwhile.
            ks.lanes.store_failed(job)
            return
        await self.log.append(prepare_status(self.prefix, status))
        finished.add(job.ref, MAIN, trio.current_time())
        ks.lanes.store_failed(job)
        summary = StatusSummary.of(status)
        self._count_endings(ks, JobState.CRITICAL_FAILURE, 1)
        self._record_failure(ks, JobState.CRITICAL_FAILURE, summary)

    def _count_endings(self, ks: KeyState, ending: JobState, count: int) -> None:
        """`count` jobs of `ks` ended in `ending`: the key's counts, history and metrics."""
        ks.finished[ending.value] += count
        failed = ending in _FAILED_ENDINGS
        ks.history.add("failed" if failed else "done", count)
        params = ks.params
        self.metrics.child(self.metrics.finished, params.name, params.key, ending.value).inc(count)

    def _record_failure(self, ks: KeyState, ending: JobState, status: StatusSummary) -> None:
        """Keep a job that ended badly for `azuld status` and the dashboard."""
        if ending in _FAILED_ENDINGS:
            ks.failures.append(
                PluginFailure(
                    at=time.time(),
                    sha256=status.sha256,
                    status=status.status,
                    error=status.error,
                    message=status.message[-2000:],
                    job_id=status.job_id,
                )
            )
