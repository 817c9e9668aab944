"""Delivery: the lanes, jobs and leases of one plugin key. Sans-I/O.

Theory of operation
-------------------
A plugin key (reference 5.1) reads up to three lanes, in strict priority: expedite (its own topic),
live and historic (both over the source topics). Each lane is one consumer group; its progress on
each partition it owns is a `core.cursor.PartitionCursor`, whose commits never pass an unfinished
job, and whose historic stop keeps live and historic from both delivering an event (see there).

A handed-out job is a lease with a deadline. Heartbeats push the deadline; the plugin's final
status finishes the offset. An expired lease goes back to the front of its lane to be offered again,
up to `max_attempts` offers in all; then the job fails (the caller publishes an `error-timeout`
status) and its offset is finished.

Job ids (`dequeued`, `core.jobids`) carry the plugin key, lane, partition, offset and attempt
(signed), so a status can finish its offset on any instance and after a restart, without shared
lease state.

A job the request's judge cannot decide yet (a `max-security` check still running) is *deferred*:
parked beside its lane with its offset still open, so commits stay below it as they do below a
lease, while the take goes on with the jobs behind it (no head-of-line blocking). When what it
waits on is decided, `requeue_deferred()` puts it back at the front of its lane, to be judged
again. The read window bounds how many jobs can be parked.

`PluginLanes` is driven by the service: it asks `reads_wanted()`, feeds the records it read with
`add_records()`, hands jobs out with `take()`, and reports statuses with `heartbeat()`/`finish()`.
Time is always passed in as `now`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from azuld.core.cursor import Commit, LeaseNote, PartitionCursor, TopicPartition
from azuld.core.jobs import JobState, transition

__all__ = [
    "Deferred",
    "Handout",
    "Job",
    "JobRef",
    "Lane",
    "PluginLanes",
    "ReadRequest",
]


class Lane:
    """Lane names, in priority order. Plain strings: they appear in group names and metrics."""

    REOFFER = "reoffer"  # jobs an admin put back in front (azuld's own; not in plugin keys)
    EXPEDITE = "expedite"
    LIVE = "live"
    HISTORIC = "historic"
    ORDER = (REOFFER, EXPEDITE, LIVE, HISTORIC)


# Fair lanes look at this many recent handouts to decide whether historic is owed one.
FAIR_WINDOW = 100


class JobRef(msgspec.Struct, frozen=True, gc=False):
    """Where a job's event lives: enough to finish it anywhere, from its id alone."""

    plugin_key: str
    lane: str
    tp: TopicPartition
    offset: int


class Job(msgspec.Struct, gc=False):
    """One event offered to one plugin key. (Untracked by the cycle collector: a job refers to
    its ref, bytes and decoded event, never back to anything that refers to it; thousands are
    queued or leased at once and would each be promoted to, and make longer, every full
    collection.)"""

    ref: JobRef
    value: bytes
    attempt: int = 0
    state: JobState = JobState.QUEUED
    deadline: float = 0.0
    leased_at: float = 0.0  # when this attempt was handed out
    event: Any = None  # the decoded event, cached by whoever decoded it first

    def move(self, target: JobState) -> None:
        self.state = transition(self.state, target)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    lane: str
    tp: TopicPartition
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class Deferred:
    """A judge's answer for a job it cannot decide yet: park the job until `on` (e.g. a
    (clearance, label) pair whose access check is running) is decided."""

    on: Hashable


@dataclass(slots=True)
class Handout:
    jobs: list[Job] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # per filter (a plain dict is cheaper)
    deferred: int = 0  # jobs this take parked (neither handed out nor skipped yet)


class PluginLanes:
    """The lanes of one plugin key on this instance (see the module notes)."""

    def __init__(
        self,
        plugin_key: str,
        lanes: Sequence[str],
        *,
        window: int = 1000,
        read_ahead: int = 64,
    ) -> None:
        self.plugin_key = plugin_key
        self.lanes = tuple(lane for lane in Lane.ORDER if lane in lanes)
        self.window = window
        self.read_ahead = read_ahead
        self.cursors: dict[str, dict[TopicPartition, PartitionCursor]] = {
            lane: {} for lane in self.lanes
        }
        self._queued: dict[str, deque[Job]] = {lane: deque() for lane in self.lanes}
        self._leased: dict[JobRef, Job] = {}
        self._deadlines: list[tuple[float, int, JobRef]] = []
        self._heap_seq = 0
        self._recent_lanes: deque[str] = deque(maxlen=FAIR_WINDOW)
        # Deferred jobs, by what they wait on, in the order they were parked.
        self._parked: dict[Hashable, list[Job]] = {}

    # -- partitions and reading --------------------------------------------------------------

    def assign(self, lane: str, tp: TopicPartition, commit: Commit) -> None:
        """Own `tp` in `lane` from `commit`. Re-assigning an owned partition is a no-op."""
        self.cursors[lane].setdefault(tp, PartitionCursor(commit))

    def unassign(self, lane: str, tp: TopicPartition) -> None:
        """Stop reading `tp` in `lane`: its cursor, queued jobs and leases here are dropped (the
        partition's new owner offers them from the committed position)."""
        self.cursors[lane].pop(tp, None)
        queue = self._queued[lane]
        kept = [job for job in queue if job.ref.tp != tp]
        queue.clear()
        queue.extend(kept)
        for ref in [r for r in self._leased if r.lane == lane and r.tp == tp]:
            del self._leased[ref]
        self._unpark(lambda job: job.ref.lane == lane and job.ref.tp == tp)

    def reads_wanted(self, at_least: int = 0) -> list[ReadRequest]:
        """Reads that would top up each lane's queue to `read_ahead` jobs (or `at_least`, for a
        request that wants more than that at once).

        A lane is topped up once its queue is down to half of `read_ahead` (or below
        `at_least`), not after every handout: one read of many records costs much less than
        many reads of one.
        """
        wanted: list[ReadRequest] = []
        target = max(self.read_ahead, at_least)
        low = self.read_ahead // 2
        for lane in self.lanes:
            queued = len(self._queued[lane])
            if queued > low and queued >= at_least:
                continue
            room = target - queued
            if room <= 0:
                continue
            for tp, cursor in self.cursors[lane].items():
                limit = min(room, cursor.readable(self.window))
                if limit > 0:
                    wanted.append(ReadRequest(lane, tp, cursor.position, limit))
        return wanted

    def add_records(
        self, lane: str, tp: TopicPartition, records: Iterable[tuple[int, bytes]]
    ) -> int:
        """Queue records read from the log (in offset order); returns how many were queued.

        Records of a partition not assigned here (any more: it moved while they were read) are
        dropped. A record whose lease was handed over becomes that lease again.
        """
        cursor = self.cursors[lane].get(tp)
        if cursor is None:
            return 0
        queue = self._queued[lane]
        added = 0
        for offset, value in records:
            if cursor.stop is not None and offset >= cursor.stop:
                break
            if not cursor.accept(offset):
                continue
            ref = JobRef(self.plugin_key, lane, tp, offset)
            note = cursor.expected.pop(offset, None)
            if note is not None:
                job = Job(ref, value, note.attempt, leased_at=note.leased_at)
                job.move(JobState.LEASED)
                self._lease(job, note.deadline)
                continue
            # Below where the previous owner's hand-outs got to, and not handed over: perhaps
            # leased by an instance that is gone. Its plugin's status may still come (the first
            # final status wins); offering it again is a new attempt.
            queue.append(Job(ref, value, 1 if offset < cursor.presumed_out else 0))
            added += 1
        return added

    def expect_leases(self, lane: str, tp: TopicPartition, notes: Iterable[LeaseNote]) -> None:
        """Leases the partition's previous owner handed over: each offset, when read, is leased
        as the note says (and expires, or is heartbeated or finished, like any lease here)."""
        cursor = self.cursors[lane][tp]
        for note in notes:
            if note.offset >= cursor.position and note.offset not in cursor._finished_above:
                cursor.expected[note.offset] = note

    def finished_elsewhere(self, lane: str, tp: TopicPartition, offsets: Iterable[int]) -> None:
        """Offsets another instance finished (their statuses are stored) that the commit this
        partition was assigned from does not show yet: they are skipped when read."""
        cursor = self.cursors[lane][tp]
        for offset in offsets:
            cursor.finish(offset)

    def renew_leases(self, jobs: Iterable[Job], *, now: float, lease_seconds: float) -> None:
        """Count the leases of `jobs` from `now`: when the answer carrying them is sent, not when
        they were taken (a fetch that waits for more jobs holds the first ones meanwhile, and a
        plugin must get its whole lease). Jobs no longer leased as handed out are left alone."""
        for job in jobs:
            if self._leased.get(job.ref) is job and job.state is JobState.LEASED:
                job.leased_at = now
                self._lease(job, now + lease_seconds)

    def suspect(self, lane: str, tp: TopicPartition, below: int) -> None:
        """The partition was assigned from another owner's commit (a takeover, a restart):
        offsets below `below` that are not finished may also be in the hands of that owner's
        plugins. Offered here, they are new attempts; their statuses are not `sure_report`s."""
        cursor = self.cursors[lane][tp]
        cursor.suspect_below = max(cursor.suspect_below, below)
        cursor.presumed_out = max(cursor.presumed_out, below)

    def sure_report(self, ref: JobRef, attempt: int) -> bool:
        """Whether a final status for `attempt` of the job can only be its one final status: the
        job is leased here as that attempt, handed out by this instance past any offset an
        earlier owner may have handed out. Any other status may meet another plugin's for the
        same job, posted elsewhere."""
        job = self._leased.get(ref)
        if job is None or job.attempt != attempt:
            return False
        cursor = self.cursors.get(ref.lane, {}).get(ref.tp)
        return cursor is not None and ref.offset >= cursor.suspect_below

    def leases_on(self, lane: str, tp: TopicPartition) -> list[LeaseNote]:
        """The leases of one partition, to hand over: those held here, and those handed over
        to this instance whose offsets it has not read yet."""
        notes = [
            LeaseNote(ref.offset, job.attempt, job.deadline, job.leased_at)
            for ref, job in self._leased.items()
            if ref.lane == lane and ref.tp == tp
        ]
        cursor = self.cursors.get(lane, {}).get(tp)
        if cursor is not None:
            notes += cursor.expected.values()
        return sorted(notes, key=lambda note: note.offset)

    def skip_to(self, lane: str, tp: TopicPartition, offset: int) -> None:
        cursor = self.cursors[lane].get(tp)
        if cursor is not None:
            cursor.skip_to(offset)

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queued.values())

    @property
    def leased(self) -> int:
        return len(self._leased)

    def leased_jobs(self) -> list[Job]:
        """The jobs leased here now (for the admin views)."""
        return list(self._leased.values())

    @property
    def deferred(self) -> int:
        """Jobs parked until what they wait on is decided (see `take`)."""
        return sum(len(jobs) for jobs in self._parked.values())

    def caught_up(self, lane: str, ends: dict[TopicPartition, int]) -> bool:
        """True if `lane` has read everything up to `ends` (or its stop) and queues nothing
        (nor parks anything)."""
        if self._queued[lane]:
            return False
        if any(job.ref.lane == lane for jobs in self._parked.values() for job in jobs):
            return False
        for tp, cursor in self.cursors[lane].items():
            end = ends.get(tp, 0)
            if cursor.stop is not None:
                end = min(end, cursor.stop)
            if cursor.position < end:
                return False
        return True

    # -- handing out -------------------------------------------------------------------------

    def _next_lane(self, historic_share: float) -> str | None:
        """The lane to take from next: the highest with queued jobs (strict priority), unless
        historic has a backlog and got less than `historic_share` of the recent handouts."""
        if historic_share > 0 and self._queued.get(Lane.HISTORIC):
            recent = self._recent_lanes
            if recent.count(Lane.HISTORIC) <= historic_share * len(recent):
                return Lane.HISTORIC
        for lane in self.lanes:
            if self._queued[lane]:
                return lane
        return None

    def take(
        self,
        count: int,
        *,
        now: float,
        lease_seconds: float | None,
        skip_reason: Callable[[Job], str | Deferred | None],
        historic_share: float = 0.0,
    ) -> Handout:
        """Hand out up to `count` jobs, highest lane first.

        `skip_reason` judges each job for the asking request (its filters); skipped jobs are
        finished on the spot. A job it answers `Deferred(on)` for is parked, its offset left
        open, until `requeue_deferred(on)`; the take goes on with the jobs behind it. With
        `lease_seconds=None` (passive consumers) jobs are finished as they are handed out;
        otherwise each becomes a lease until `now + lease_seconds`. A `historic_share` above 0
        keeps historic at that share of handouts while it has a backlog (fair lanes; the default
        is strict priority).
        """
        handout = Handout()
        while len(handout.jobs) < count:
            lane = self._next_lane(historic_share)
            if lane is None:
                break
            job = self._queued[lane].popleft()
            reason = skip_reason(job)
            if reason is not None:
                if isinstance(reason, Deferred):
                    self._parked.setdefault(reason.on, []).append(job)
                    handout.deferred += 1
                    continue
                job.move(JobState.SKIPPED)
                self._store(job)
                handout.skipped[reason] = handout.skipped.get(reason, 0) + 1
                continue
            handout.jobs.append(job)
            self._recent_lanes.append(lane)
            if lease_seconds is None:
                job.move(JobState.LEASED)
                job.move(JobState.COMPLETED)
                self._store(job)
            else:
                job.move(JobState.LEASED)
                job.leased_at = now
                self._lease(job, now + lease_seconds)
                cursor = self.cursors[lane].get(job.ref.tp)
                if cursor is not None and job.ref.offset >= cursor.handed_out:
                    cursor.handed_out = job.ref.offset + 1
        return handout

    def requeue_deferred(self, on: Hashable) -> int:
        """Put the jobs parked on `on` back at the front of their lanes, in the order they were
        parked (their read order), to be judged again; returns how many."""
        jobs = self._parked.pop(on, None)
        if not jobs:
            return 0
        for job in reversed(jobs):
            self._queued[job.ref.lane].appendleft(job)
        return len(jobs)

    def _unpark(self, drop: Callable[[Job], bool]) -> None:
        for on, jobs in list(self._parked.items()):
            kept = [job for job in jobs if not drop(job)]
            if not kept:
                del self._parked[on]
            elif len(kept) < len(jobs):
                self._parked[on] = kept

    def _lease(self, job: Job, deadline: float) -> None:
        job.deadline = deadline
        self._leased[job.ref] = job
        self._heap_seq += 1
        heapq.heappush(self._deadlines, (deadline, self._heap_seq, job.ref))

    def _store(self, job: Job) -> None:
        job.move(JobState.STORED)
        cursor = self.cursors[job.ref.lane].get(job.ref.tp)
        if cursor is not None:
            cursor.finish(job.ref.offset)

    # -- statuses ----------------------------------------------------------------------------

    def heartbeat(
        self,
        ref: JobRef,
        attempt: int,
        *,
        now: float,
        lease_seconds: float,
        max_job_seconds: float = 0.0,
    ) -> bool:
        """Extend the lease of the current attempt; `False` if it is not leased here any more.

        With `max_job_seconds`, heartbeats cannot keep a job past that long after it was handed
        out: a plugin that heartbeats forever loses the lease like a silent one.
        """
        job = self._leased.get(ref)
        if job is None:
            # A lease handed over to this instance whose offset it has not read yet.
            cursor = self.cursors.get(ref.lane, {}).get(ref.tp)
            if cursor is None:
                return False
            note = cursor.expected.get(ref.offset)
            if note is None or note.attempt != attempt:
                return False
            deadline = now + lease_seconds
            if max_job_seconds > 0:
                deadline = min(deadline, note.leased_at + max_job_seconds)
            cursor.expected[ref.offset] = msgspec.structs.replace(
                note, deadline=max(note.deadline, deadline)
            )
            return True
        if job.attempt != attempt:
            return False
        job.move(JobState.LEASED)
        deadline = now + lease_seconds
        if max_job_seconds > 0:
            deadline = min(deadline, job.leased_at + max_job_seconds)
        self._lease(job, max(job.deadline, deadline))
        return True

    def is_finished(self, ref: JobRef) -> bool:
        """Whether the job's offset is done here: a status for it changes nothing (a duplicate,
        or on Kafka our own status followed back). O(1)."""
        cursor = self.cursors.get(ref.lane, {}).get(ref.tp)
        return cursor is not None and cursor.is_finished(ref.offset)

    def holds(self, ref: JobRef) -> bool:
        """Whether the job is leased, queued or parked here."""
        if ref in self._leased:
            return True
        if any(job.ref == ref for job in self._queued.get(ref.lane, ())):
            return True
        return any(job.ref == ref for jobs in self._parked.values() for job in jobs)

    def leased_job(self, ref: JobRef, attempt: int) -> Job | None:
        """Attempt `attempt` of the job, if it is leased here (its `leased_at` says since when)."""
        job = self._leased.get(ref)
        return job if job is not None and job.attempt == attempt else None

    def finish_leased(self, ref: JobRef, ending: JobState) -> bool:
        """`finish` for a job leased here (the usual status); `False`, changing nothing, if it is
        not leased here: then see `is_finished`, `holds` and `finish`."""
        job = self._leased.pop(ref, None)
        if job is None:
            return False
        job.move(ending)
        self._store(job)
        return True

    def finish(self, ref: JobRef, ending: JobState) -> bool:
        """End a job with the plugin's final status (any attempt: the results are as good).

        Returns `True` if this call finished an offset that was open here.
        """
        if self.finish_leased(ref, ending):
            return True
        # Not leased: a late status for a job that expired and sits queued again, or one handed
        # out before a restart. Either way the offset is done; drop any queued or parked copy.
        lane_queue = self._queued.get(ref.lane)
        if lane_queue is not None:
            for queued in list(lane_queue):
                if queued.ref == ref:
                    lane_queue.remove(queued)
        if self._parked:
            self._unpark(lambda job: job.ref == ref)
        cursor = self.cursors.get(ref.lane, {}).get(ref.tp)
        return cursor.finish(ref.offset) if cursor is not None else False

    # -- expiry ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        while self._deadlines:
            deadline, _, ref = self._deadlines[0]
            job = self._leased.get(ref)
            if job is not None and job.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)  # stale: extended or finished
        return None

    def expire(self, now: float, *, max_attempts: int) -> list[Job]:
        """Put back every lease past its deadline; return the jobs out of attempts.

        A returned job is CRITICAL_FAILURE and still open: the caller stores its `error-timeout`
        status, then calls `store_failed(job)`.
        """
        failed: list[Job] = []
        requeue: list[Job] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, ref = heapq.heappop(self._deadlines)
            job = self._leased.pop(ref)
            if job.attempt + 1 >= max_attempts:
                job.move(JobState.CRITICAL_FAILURE)
                failed.append(job)
            else:
                job.move(JobState.QUEUED)
                job.attempt += 1
                requeue.append(job)
        # Expired jobs go to the front of their lane, oldest first.
        for job in reversed(requeue):
            self._queued[job.ref.lane].appendleft(job)
        return failed

    def store_failed(self, job: Job) -> None:
        self._store(job)

    # -- commits -----------------------------------------------------------------------------

    def redirty(self, pairs: Iterable[tuple[str, TopicPartition]]) -> None:
        """A commit did not reach the log: send it again with the next one."""
        for lane, tp in pairs:
            cursor = self.cursors.get(lane, {}).get(tp)
            if cursor is not None:
                cursor.dirty = True

    def all_commits(self) -> dict[tuple[str, TopicPartition], Commit]:
        """Every partition's commit as it stands (stopping: hand-outs move no commit)."""
        out: dict[tuple[str, TopicPartition], Commit] = {}
        for lane, cursors in self.cursors.items():
            for tp, cursor in cursors.items():
                cursor.dirty = False
                out[(lane, tp)] = cursor.commit()
        return out

    def dirty_commits(self) -> dict[tuple[str, TopicPartition], Commit]:
        """Commits that moved since the last call, by (lane, partition)."""
        out: dict[tuple[str, TopicPartition], Commit] = {}
        for lane, cursors in self.cursors.items():
            for tp, cursor in cursors.items():
                if cursor.dirty:
                    cursor.dirty = False
                    out[(lane, tp)] = cursor.commit()
        return out
