"""Fetching: `Dispatcher.fetch`, a plugin's long-poll for jobs.

Theory of operation: a fetch tops up its key's lanes from the log, takes jobs in lane order,
commits what moved (skips, passive handouts; on a shared log an active key's commit is left to
the background, `KeyRegistry.commit_in_background`) and, if it has fewer than `count`, waits for
a wake-up until its deadline. Wake-ups are per key: new records the key can read, a status that
moved its window, re-offered leases (all keys), new partitions (all keys); an append that concerns
no waiting key (most are statuses) wakes nobody.

The filter a take applies (`_judge`) runs inside `core.delivery.PluginLanes.take`, synchronously,
once per event: it decodes the event, applies the plugin's filters and then its `max-security`
(`security.py`). What it cannot do there it collects, and the fetch does it after the take:
answering a job from the replay cache (which appends to the log) before the commit moves past
those jobs, and starting the access checks of jobs it deferred because their check has not
answered yet (they wait, parked, while the take goes on with the jobs behind them).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import trio

from azuld.core.delivery import Deferred, Job, Lane
from azuld.core.filters import skip_reason
from azuld.core.params import ConsumeParams
from azuld.core.posts import DECODERS
from azuld.core.replay import CacheEntry, ReplayCache, settings_digest
from azuld.core.security import SECURITY_FILTER
from azuld.dispatch.avro_records import AvroRecords
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.leases import Leases
from azuld.dispatch.replay import Replay
from azuld.dispatch.security import Pair, Security
from azuld.errors import TooManyRequests, UpstreamError
from azuld.metrics import Metrics
from azuld.models.admin import Reoffer
from azuld.models.events import BinaryEvent
from azuld.models.responses import FetchInfo
from azuld.ports import EventLog
from azuld.settings import DispatchSettings

__all__ = ["BACKEND_GRACE_SECONDS", "FetchResult", "Fetcher"]

# How far past its deadline a fetch may wait for a slow backend before answering not-ready.
BACKEND_GRACE_SECONDS = 5.0
# A skip reason for bookkeeping, not reported as a filter.
OTHER_KEY = "_other-key"

# The logger name operators filter on, one for the whole dispatcher (as before the split).
log = logging.getLogger("azuld.dispatcher")

_encode = msgspec.json.Encoder().encode
_REOFFER_DECODER = msgspec.json.Decoder(Reoffer)


@dataclass(slots=True)
class FetchResult:
    """A fetch's reply: the `info` part and the events handed out, encoded: as JSON, or as
    Avro datums when the fetch asked for `avro-format`."""

    info: FetchInfo
    events: list[bytes]


class Fetcher:
    """Serves long-polls: fills lanes from the log, filters, hands out leases, waits."""

    def __init__(
        self,
        log: EventLog,
        settings: DispatchSettings,
        metrics: Metrics,
        registry: KeyRegistry,
        replay: Replay,
        leases: Leases,
        security: Security,
    ) -> None:
        self.log = log
        self.settings = settings
        self.metrics = metrics
        self.registry = registry
        self.replay = replay
        self.leases = leases
        self.security = security
        self._health: str | None = None
        self._health_at = -math.inf
        self.avro_records = AvroRecords()  # for fetches with avro-format=true

    async def fetch(self, params: ConsumeParams) -> FetchResult:
        """Long-poll for up to `params.count` jobs, waiting at most `params.deadline_seconds`.

        Cancellation: safe; jobs already taken by a cancelled request are leased and come back
        when their lease expires.

        A backend failure does not fail the request (plugins such as azul-runner exit on any
        non-200 fetch): the reply carries what was taken so far with `ready: false`.

        Raises:
            UnreadableLabel: the checker cannot read `max-security` (a 422).
            TooManyRequests: `dispatch.max_polls_per_key` long-polls already wait for the key.
        """
        # A fetch that finds its jobs queued may not yield at all: let it be cancelled here.
        await trio.lowlevel.checkpoint_if_cancelled()
        self.security.check_clearance(params.max_security)
        deadline = trio.current_time() + params.deadline_seconds
        known = self.registry.states.get(params.key)
        if known is not None:
            self._admit(known)  # refuse before touching the key's state
        try:
            ks = await self.registry.state_for_fetch(params, known)
        except UpstreamError as exc:
            log.warning("fetch for %s: backend unavailable: %s", params.key, exc)
            await trio.sleep_until(min(deadline, trio.current_time() + 1.0))
            return FetchResult(
                FetchInfo(
                    filtered=0,
                    fetched=0,
                    ready=False,
                    paused=False,
                    consumers_not_ready=",".join(params.lanes),
                ),
                [],
            )
        ks.idle_since = trio.current_time()  # not forgotten while this poll starts
        lease = self.settings.lease_seconds if params.active and params.model == "binary" else None
        skipped: Counter[str] = Counter()
        events: list[bytes] = []
        not_ready = ",".join(params.lanes) if await self.log_problem() else ""
        # Again after the awaits above: polls that queued behind the key's creation (or a health
        # check) were not counted when they were first checked.
        self._admit(ks)
        ks.polls += 1
        leased: list[Job] = []
        try:
            not_ready = await self._take_until(
                ks, params, deadline, lease, skipped, events, not_ready, leased
            )
        finally:
            ks.polls -= 1
            ks.idle_since = trio.current_time()
            if ks.polls and ks.lanes.queued:
                ks.wake()  # jobs this poll read but did not take: for those still waiting
        if leased and lease is not None:
            # The leases start now, as the answer goes out (taken, they lasted past the deadline).
            now = trio.current_time()
            ks.lanes.renew_leases(leased, now=now, lease_seconds=lease)
            self.leases.added(now + lease)
        ks.fetched += len(events)
        if events:
            ks.history.add("fetched", len(events))
        ks.last_seen = time.time()
        for hidden in [reason for reason in skipped if reason.startswith("_")]:
            del skipped[hidden]  # bookkeeping (another key's re-offer), not a filter
        filtered = sum(skipped.values())
        if not params.ephemeral:  # a watcher is no plugin: its name would stay in the metrics
            if events:
                fetched = self.metrics.child(
                    self.metrics.fetched, params.name, params.key, params.model
                )
                fetched.inc(len(events))
            for reason, count in skipped.items():
                filtered_by = self.metrics.child(
                    self.metrics.filtered, params.name, params.key, params.model, reason
                )
                filtered_by.inc(count)
        info = FetchInfo(
            filtered=filtered,
            fetched=len(events),
            ready=not not_ready,
            paused=False,
            consumers_not_ready=not_ready,
            filters=dict(skipped),
        )
        return FetchResult(info, events)

    async def log_problem(self, *, fresh: bool = False) -> str | None:
        """The log's health, asked at most once a second (a fetch asks every time); `fresh`
        asks now (readiness checks), which also updates what fetches see."""
        now = trio.current_time()
        if fresh or now - self._health_at >= 1.0:
            self._health = await self.log.health()
            self._health_at = now
        return self._health

    def _admit(self, ks: KeyState) -> None:
        """Refuse a long-poll when `dispatch.max_polls_per_key` are already waiting for its key."""
        if ks.polls >= self.settings.max_polls_per_key:
            raise TooManyRequests(
                f"{ks.polls} long-polls are already waiting for plugin key {ks.params.key}; the "
                f"limit is {self.settings.max_polls_per_key} (dispatch.max_polls_per_key)"
            )

    async def _take_until(
        self,
        ks: KeyState,
        params: ConsumeParams,
        deadline: float,
        lease: float | None,
        skipped: Counter[str],
        events: list[bytes],
        not_ready: str,
        leased: list[Job],
    ) -> str:
        """Top up, take and commit until `count` jobs or the deadline; returns `not_ready`.
        Jobs handed out are leased until `lease` past the deadline (the caller counts their
        leases from when it answers) and collected in `leased`."""
        cached: list[tuple[Job, CacheEntry]] = []
        undecided: set[Pair] = set()
        judge = self._judge(params, cached, undecided)
        while True:
            wakeup = ks.wakeup
            added = 0
            try:
                if self._fill_wanted(ks, params.count - len(events)):
                    # A slow backend must not hold a long-poll far past its deadline.
                    with trio.move_on_at(deadline + BACKEND_GRACE_SECONDS) as slow:
                        added = await self._fill(ks, params.count - len(events))
                    if slow.cancelled_caught:
                        raise UpstreamError("the event log did not answer in time")
            except UpstreamError as exc:
                log.warning("fetch for %s: cannot read the log: %s", params.key, exc)
                self.metrics.backend_errors.labels("log").inc()
                not_ready = ",".join(params.lanes)
            share = params.historic_share
            now = trio.current_time()
            handout = ks.lanes.take(
                params.count - len(events),
                now=now,
                lease_seconds=None if lease is None else max(deadline - now, 0.0) + lease,
                skip_reason=judge,
                historic_share=self.settings.historic_share if share is None else share,
            )
            events.extend(self._render(params, job) for job in handout.jobs)
            if lease is not None:
                leased += handout.jobs
            if handout.skipped:
                skipped.update(handout.skipped)
            if undecided:
                for pair in undecided:
                    self.security.defer(pair)
                undecided.clear()
            if cached:
                try:
                    await self.replay.answer(ks, cached)
                except UpstreamError as exc:
                    # Their offsets must not be committed unanswered: give up for this round.
                    log.warning("fetch for %s: cannot replay cached results: %s", params.key, exc)
                    not_ready = ",".join(params.lanes)
                    return not_ready
                cached.clear()
            try:
                if lease is not None and self.registry.commits_in_background:
                    # Active jobs: what moved the commit (skips, statuses, cached answers)
                    # needs no commit before the answer; a passive handout does.
                    self.registry.commit_soon(ks)
                    dirty = {}
                else:
                    dirty = ks.lanes.dirty_commits()  # skips and passive handouts move commits
                if dirty:
                    with trio.move_on_at(deadline + BACKEND_GRACE_SECONDS) as slow:
                        await self.registry.store_commits(ks, dirty)
                    if slow.cancelled_caught:
                        raise UpstreamError("the event log did not take the commit in time")
            except UpstreamError as exc:
                # Not lost: the cursor stays dirty and the next commit carries it.
                log.warning("fetch for %s: cannot commit: %s", params.key, exc)
                self.metrics.backend_errors.labels("log").inc()
                not_ready = ",".join(params.lanes)
            if not_ready or len(events) >= params.count or trio.current_time() >= deadline:
                return not_ready
            if added:
                # The log had more: read on at once rather than wait for a wake-up (with a
                # checkpoint: the embedded log's reads never yield).
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_at(deadline):
                await wakeup.wait()

    def _fill_wanted(self, ks: KeyState, at_least: int = 0) -> bool:
        """Whether `_fill` has anything to do (cheap: no lock, no I/O)."""
        return ks.topology_seen != self.log.topology or bool(self.registry.reads(ks, at_least))

    async def _fill(self, ks: KeyState, at_least: int = 0) -> int:
        """Top the key's lanes up from the log; returns how many records were queued."""
        added = 0
        try:
            # Uncontended (the usual case), take the lock without a trip through the scheduler.
            ks.lock.acquire_nowait()
        except trio.WouldBlock:
            await ks.lock.acquire()
        try:
            topology = self.log.topology
            if ks.topology_seen != topology:
                await self.registry.assign_partitions(ks)
                ks.topology_seen = topology
            for want in self.registry.reads(ks, at_least):
                records = await self.log.read(want.tp, want.offset, want.limit)
                if records and records[0][0] > want.offset:
                    ks.lanes.skip_to(want.lane, want.tp, records[0][0])
                added += ks.lanes.add_records(want.lane, want.tp, records)
        finally:
            ks.lock.release()
        return added

    def _judge(
        self,
        params: ConsumeParams,
        cached: list[tuple[Job, CacheEntry]],
        undecided: set[Pair],
    ) -> Callable[[Job], str | Deferred | None]:
        """The request's filter: its filters, then its `max-security`, then the replay cache.
        Jobs the replay cache can answer are skipped and collected in `cached` (the caller
        publishes their results); jobs whose access check has not answered yet are deferred and
        their (clearance, label) pairs collected in `undecided` (the caller starts the checks)."""
        decoder = DECODERS.get(params.model)
        if decoder is None or params.model == "plugin":
            return lambda job: None
        key_prefix = self.replay.key_prefix(params)
        cache_get = self.replay.cache.get
        clearance = params.max_security
        label_of = self.security.label
        decided = self.security.decided

        def judge(job: Job) -> str | Deferred | None:
            reoffered = job.ref.lane == Lane.REOFFER
            try:
                if reoffered:
                    offer = _REOFFER_DECODER.decode(job.value)
                    if offer.plugin_key != params.key:
                        return OTHER_KEY  # another key's re-offer: not this plugin's business
                    job.event = offer.event  # an admin asked for it: only max-security applies
                else:
                    job.event = decoder.decode(job.value)
                    reason = skip_reason(job.event, params)
                    if reason is not None:
                        return reason
            except msgspec.DecodeError:
                log.warning("skipping undecodable record %s", job.ref)
                return "FilterDecode-undecodable"
            if clearance:
                label = label_of(job.event)
                allowed = decided(clearance, label)
                if allowed is None:
                    pair = (clearance, label)
                    undecided.add(pair)
                    job.event = None  # not kept while parked: decoded again when judged again
                    return Deferred(pair)
                if not allowed:
                    return SECURITY_FILTER
            if reoffered or key_prefix is None or job.event.flags.bypass_cache:
                return None
            event = job.event
            settings = settings_digest(event.source.settings)
            entry = cache_get(key_prefix + ReplayCache.job_key(settings, event.entity.sha256))
            if entry is not None:
                cached.append((job, entry))
                return "ReplayPluginCompletion-cached"
            return None

        return judge

    def _render(self, params: ConsumeParams, job: Job) -> bytes:
        """The job as handed out; its decoded event is let go (a lease may last minutes, and
        thousands of decoded events kept that long make every garbage collection slower). A
        re-offered job keeps its event: its value is the `Reoffer` record, not the event."""
        event = job.event
        if job.ref.lane != Lane.REOFFER:
            job.event = None  # decoded again from `job.value` if it is ever needed
        if params.active and isinstance(event, BinaryEvent):
            event.dequeued = self.registry.ids.make(job.ref, job.attempt)
            if params.avro:  # the record's cached Avro halves around this `dequeued`
                return self.avro_records.render(params.model, job, event)
            return _encode(event)
        if params.avro:
            return self.avro_records.render(params.model, job, event)
        return job.value
