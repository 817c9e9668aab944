"""Property tests (Hypothesis) for delivery (core.delivery) and the request parsers.

`DeliveryMachine` drives one plugin key the way the dispatcher does: a simulated log per partition
(with holes and retention), fills from `reads_wanted()`, hand-outs (leased, passive, skipped),
heartbeats and statuses (current, stale, late and repeated), expiry and failed jobs, commits (some
lost and sent again) and restarts from what was committed, as after a kill. A model kept next to
it checks after every step that a commit never passes an unfinished job, that a finish known to
the dispatcher (or committed before a restart) is never offered again, lane priority, and, when
the run is drained at the end, that every record was finished.

The other tests are plain `@given` ones: the commit metadata codec, job ids, `Range` headers and
fetch parameters.
"""

from __future__ import annotations

import itertools
import json
import string
import sys
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from azuld.core.cursor import Commit, Snapshot, TopicPartition, decode_snapshot, encode_snapshot
from azuld.core.delivery import Job, JobRef, Lane, PluginLanes, ReadRequest
from azuld.core.jobids import JobIds
from azuld.core.jobs import JobState
from azuld.core.params import ConsumeParams, parse_consume_params
from azuld.core.ranges import parse_range
from azuld.errors import BadRequest, RangeNotSatisfiable, Unprocessable
from azuld.models.events import BINARY_ACTIONS, MODELS

# No example database: keep runs free of files in the working tree. A failure prints its minimal
# example (and a `@reproduce_failure` blob) all the same.
PLAIN = settings(max_examples=100, database=None)

IDS = JobIds(b"property tests")
KEY = "Entropy-2024.01.01-binary-allsrc-alltype-ELH"
SRC = "azul.t.s.binary.sourced"
EXP = "azul.t.system.expedite"
LANE_SETS = [
    (Lane.EXPEDITE, Lane.LIVE),
    (Lane.EXPEDITE, Lane.HISTORIC),
    (Lane.LIVE, Lane.HISTORIC),
    Lane.ORDER,
]
ENDINGS = (JobState.COMPLETED, JobState.OPTED_OUT, JobState.EXCEPTION)
# How the dispatcher answers one read: in full (the dispatcher's way: `skip_to` over a gap),
# later, partly, without `skip_to`, or repeating records already read.
FILL_MODES = st.sampled_from(["full"] * 5 + ["later", "partial", "implicit", "overlap"])


def covering_lane(tp: TopicPartition) -> str:
    """The lane that reads `tp` from the key's creation on (historic stops where it began)."""
    return Lane.EXPEDITE if tp.topic == EXP else Lane.LIVE


@dataclass
class SimLog:
    """One partition of the simulated log: offsets in order, with holes (transaction markers) and
    retention (everything below `start` is gone)."""

    offsets: list[int] = field(default_factory=list)
    start: int = 0
    end: int = 0  # the next offset to be written

    def append(self, count: int, hole: int) -> None:
        self.end += hole
        for _ in range(count):
            self.offsets.append(self.end)
            self.end += 1

    def read(self, offset: int, limit: int) -> list[int]:
        first = max(offset, self.start)
        return [o for o in self.offsets if o >= first][:limit]


@dataclass
class CursorModel:
    """What one incarnation of the dispatcher knows about one (lane, partition)."""

    base: Commit  # the commit it started from
    position: int
    open: set[int] = field(default_factory=set)  # read, not finished: queued, leased or failing
    finished_here: set[int] = field(default_factory=set)  # finishes reported to this incarnation
    above: set[int] = field(default_factory=set)  # finishes the cursor must remember

    def known_finished(self, offset: int) -> bool:
        return (
            offset < self.base.offset
            or offset in self.base.finished
            or offset in self.finished_here
        )

    @property
    def committed(self) -> int:
        return min(self.open) if self.open else self.position

    def finish(self, offset: int) -> None:
        # Remembered: an open offset, or one not read yet (a late status after a restart).
        if offset in self.open or offset >= self.position:
            self.above.add(offset)
        self.open.discard(offset)
        self.finished_here.add(offset)

    def commit(self) -> Commit:
        """The commit this cursor must report: the low-water mark, every finish above it."""
        low = self.committed
        done = frozenset(o for o in self.base.finished | self.above if o >= low)
        return Commit(low, done, self.base.stop)


Pair = tuple[str, TopicPartition]


class DeliveryMachine(RuleBasedStateMachine):
    """A dispatcher (one `PluginLanes` per incarnation) and its plugins, against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.pl: PluginLanes | None = None

    # -- setup -------------------------------------------------------------------------------

    @initialize(
        lanes=st.sampled_from(LANE_SETS),
        src_partitions=st.integers(1, 3),
        exp_partitions=st.integers(1, 2),
        window=st.integers(2, 10),
        read_ahead=st.integers(1, 6),
        max_attempts=st.sampled_from([2, 3, 1]),
        data=st.data(),
    )
    def create_key(
        self,
        lanes: tuple[str, ...],
        src_partitions: int,
        exp_partitions: int,
        window: int,
        read_ahead: int,
        max_attempts: int,
        data: st.DataObject,
    ) -> None:
        self.lanes = lanes
        self.window = window
        self.read_ahead = read_ahead
        self.max_attempts = max_attempts
        self.now = 0
        self.logs: dict[TopicPartition, SimLog] = {}
        topics = [(SRC, src_partitions), (EXP, exp_partitions)]
        for topic, count in topics:
            for partition in range(count):
                log = SimLog()
                log.append(data.draw(st.integers(0, 8), label="history"), hole=0)
                log.start = min(data.draw(st.integers(0, 2), label="retained"), log.end)
                self.logs[TopicPartition(topic, partition)] = log
        # Where the lanes begin (the dispatcher's creation snapshot): expedite and live at the end
        # of the log, historic at its start, stopping where the covering lane began.
        self.created_end = {tp: log.end for tp, log in self.logs.items()}
        self.pairs: list[Pair] = []
        snapshot: Snapshot = {}
        for lane in lanes:
            for tp, log in self.logs.items():
                if lane == Lane.HISTORIC:
                    stop = log.end if covering_lane(tp) in lanes else None
                    commit = Commit(log.start, stop=stop)
                elif covering_lane(tp) == lane:
                    commit = Commit(log.end)
                else:
                    continue
                self.pairs.append((lane, tp))
                snapshot.setdefault(lane, {})[tp] = commit
        self.stops = {pair: snapshot[pair[0]][pair[1]].stop for pair in self.pairs}
        self.durable: dict[Pair, Commit] = {
            (lane, tp): commit
            for lane, commits in snapshot.items()
            for tp, commit in commits.items()
        }
        # Model state that survives restarts.
        self.finished: dict[Pair, set[int]] = {pair: set() for pair in self.pairs}
        self.read: dict[Pair, set[int]] = {pair: set() for pair in self.pairs}
        # What plugins hold: (ref, attempt, incarnation of the dispatcher that handed it out).
        self.held: list[tuple[JobRef, int, int]] = []
        self.incarnation = 0
        self.offers = 0
        self._start(snapshot)

    def _start(self, snapshot: Snapshot) -> None:
        """A new incarnation of the dispatcher: nothing in memory but the commits."""
        self.pl = PluginLanes(KEY, self.lanes, window=self.window, read_ahead=self.read_ahead)
        self.incarnation += 1
        self.cur: dict[Pair, CursorModel] = {}
        # Below where the last incarnation's hand-outs got (as committed), a job read again may
        # be in a plugin's hands: it is offered as a new attempt.
        self.presumed_out: dict[Pair, int] = {}
        for lane, commits in snapshot.items():
            for tp, commit in commits.items():
                self.pl.assign(lane, tp, commit)
                self.cur[(lane, tp)] = CursorModel(commit, commit.offset)
                self.presumed_out[(lane, tp)] = commit.handed_out
        assert set(self.cur) == set(self.pairs)
        self.queues: dict[str, list[set[JobRef]]] = {lane: [] for lane in self.lanes}
        self.attempts: dict[JobRef, int] = {}  # of queued jobs
        self.leases: dict[JobRef, list[int]] = {}  # ref: [attempt, deadline, handed out at]
        self.pending: list[Job] = []  # failed by `expire`, not stored yet
        self.last_sent: dict[Pair, Commit] = {
            (lane, tp): commit
            for lane, commits in snapshot.items()
            for tp, commit in commits.items()
        }
        self.must_be_dirty: set[Pair] = set()

    # -- model helpers -----------------------------------------------------------------------

    def owner(self, tp: TopicPartition, offset: int) -> str | None:
        """The one lane that must deliver the record at `offset`, if any."""
        covering = covering_lane(tp)
        if covering in self.lanes and offset >= self.created_end[tp]:
            return covering
        if Lane.HISTORIC in self.lanes:
            return Lane.HISTORIC
        return None

    def queued_count(self, lane: str) -> int:
        return sum(len(group) for group in self.queues[lane])

    def _mark_finished(self, ref: JobRef) -> None:
        pair = (ref.lane, ref.tp)
        self.finished[pair].add(ref.offset)
        self.cur[pair].finish(ref.offset)

    def _unqueue(self, ref: JobRef) -> None:
        for group in self.queues[ref.lane]:
            if ref in group:
                group.discard(ref)
                del self.attempts[ref]

    def _check_commit(self, pair: Pair, commit: Commit) -> None:
        lane, tp = pair
        assert commit.stop == self.stops[pair]
        assert all(offset >= commit.offset for offset in commit.finished)
        assert Commit.parse(commit.offset, commit.metadata()) == commit
        finished = self.finished[pair]
        assert commit.finished <= finished, "a commit carries an offset nobody finished"
        log = self.logs[tp]
        unfinished = [o for o in self.read[pair] if o not in finished and o >= log.start]
        if unfinished:
            assert commit.offset <= min(unfinished), "a commit passed an unfinished job"
        lost = [
            o
            for o in log.offsets
            if log.start <= o < commit.offset and self.owner(tp, o) == lane and o not in finished
        ]
        assert not lost, f"{pair}: commit {commit} passes unfinished records {lost}"

    def _check_wants(self, wants: list[ReadRequest]) -> None:
        asked = set()
        for want in wants:
            pair = (want.lane, want.tp)
            assert pair not in asked
            asked.add(pair)
            cur = self.cur[pair]
            assert want.offset == cur.position
            assert 0 < want.limit <= self.read_ahead - self.queued_count(want.lane)
            assert want.offset + want.limit <= cur.committed + self.window
            stop = self.stops[pair]
            if stop is not None:
                assert want.offset + want.limit <= stop
        for pair in self.pairs:
            if pair in asked:
                continue
            cur = self.cur[pair]
            readable = cur.committed + self.window - cur.position
            stop = self.stops[pair]
            if stop is not None:
                readable = min(readable, stop - cur.position)
            queued = self.queued_count(pair[0])
            room = self.read_ahead - queued
            topped_up = queued > self.read_ahead // 2  # reads wait until half is handed out
            assert readable <= 0 or room <= 0 or topped_up, (
                f"{pair} could read but was not asked for"
            )

    def _serve(
        self, want: ReadRequest, count: int, *, explicit_gap: bool, reset: bool, overlap: int
    ) -> bool:
        """Answer one read as the dispatcher does; `True` if the cursor moved."""
        pair = (want.lane, want.tp)
        log = self.logs[want.tp]
        cur = self.cur[pair]
        before = cur.position
        records = log.read(want.offset, count)
        if records and records[0] > want.offset and explicit_gap:
            self.pl.skip_to(want.lane, want.tp, records[0])
            cur.position = max(cur.position, records[0])
        elif not records and want.offset < log.start and reset:
            self.pl.skip_to(want.lane, want.tp, log.start)
            cur.position = max(cur.position, log.start)
        # A fetch may also repeat records already read (they must be ignored).
        older = (
            [o for o in log.offsets if log.start <= o < want.offset][-overlap:] if overlap else []
        )
        fed = older + records
        expected: list[int] = []
        stop = self.stops[pair]
        for offset in fed:
            if stop is not None and offset >= stop:
                break
            if offset < cur.position:
                continue
            cur.position = offset + 1
            if not cur.known_finished(offset):
                expected.append(offset)
        added = self.pl.add_records(want.lane, want.tp, [(o, b"event-%d" % o) for o in fed])
        assert added == len(expected)
        for offset in expected:
            ref = JobRef(KEY, want.lane, want.tp, offset)
            cur.open.add(offset)
            self.read[pair].add(offset)
            self.queues[want.lane].append({ref})
            self.attempts[ref] = 1 if offset < self.presumed_out[pair] else 0
        return cur.position != before

    def _check_offer(self, job: Job, historic_share: float) -> None:
        """Called for each job `take` pops (handed out or skipped), at that very moment."""
        ref = job.ref
        assert ref.plugin_key == KEY
        lane_index = self.lanes.index(ref.lane)
        for higher in self.lanes[:lane_index]:
            # Strict priority; only fair lanes let historic in ahead of its turn.
            if self.queued_count(higher):
                assert historic_share > 0, f"{ref.lane} job taken before {higher} jobs"
                assert ref.lane == Lane.HISTORIC
        queue = self.queues[ref.lane]
        while queue and not queue[0]:
            queue.pop(0)
        assert queue, "take returned a job the model does not have queued"
        assert ref in queue[0], "not the job at the front of its lane"
        queue[0].discard(ref)
        assert job.attempt == self.attempts.pop(ref)
        assert job.state is JobState.QUEUED
        pair = (ref.lane, ref.tp)
        cur = self.cur[pair]
        assert ref.offset in cur.open
        assert not cur.known_finished(ref.offset), "a finished offset is offered again"
        durable = self.durable[pair]
        assert ref.offset >= durable.offset, "a committed offset is offered again"
        assert ref.offset not in durable.finished, "a committed finish is offered again"
        stop = self.stops[pair]
        if stop is not None:
            assert ref.offset < stop, "historic went past its stop"
        assert IDS.parse(IDS.make(ref, job.attempt)) == (ref, job.attempt)
        self.offers += 1

    def _take(
        self, count: int, lease: int | None, skips: list[bool], historic_share: float = 0.0
    ) -> list[Job]:
        assert self.pl is not None
        flags = iter(skips)
        popped: list[tuple[Job, bool]] = []

        def judge(job: Job) -> str | None:
            self._check_offer(job, historic_share)
            skip = next(flags, False)
            popped.append((job, skip))
            return f"F-{job.ref.offset % 2}" if skip else None

        handout = self.pl.take(
            count,
            now=self.now,
            lease_seconds=lease,
            skip_reason=judge,
            historic_share=historic_share,
        )
        given_out = [job for job, skip in popped if not skip]
        assert [id(job) for job in handout.jobs] == [id(job) for job in given_out]
        assert sum(handout.skipped.values()) == len(popped) - len(given_out)
        assert len(handout.jobs) <= count
        if len(handout.jobs) < count:
            assert all(self.queued_count(lane) == 0 for lane in self.lanes)
        for job, skip in popped:
            if skip:
                assert job.state is JobState.STORED
                self._mark_finished(job.ref)
            elif lease is None:
                assert job.state is JobState.STORED  # passive: finished as handed out
                self._mark_finished(job.ref)
            else:
                assert job.state is JobState.LEASED
                self.leases[job.ref] = [job.attempt, self.now + lease, self.now]
                if job.attempt:  # the plugin that let the last attempt expire cannot extend it
                    stale = job.attempt - 1
                    assert not self.pl.heartbeat(job.ref, stale, now=self.now, lease_seconds=99)
                self.held.append((job.ref, job.attempt, self.incarnation))
        return handout.jobs

    def _finish(self, ref: JobRef, ending: JobState) -> None:
        assert self.pl is not None
        cur = self.cur[(ref.lane, ref.tp)]
        if self.leases.pop(ref, None) is not None:
            expected = True
        else:
            self._unqueue(ref)
            expected = ref.offset in cur.open
        assert self.pl.finish(ref, ending) is expected
        self._mark_finished(ref)

    def _store_failed(self, index: int) -> None:
        assert self.pl is not None
        job = self.pending.pop(index)
        self.pl.store_failed(job)
        assert job.state is JobState.STORED
        self._mark_finished(job.ref)

    def _commit(self, *, lose: bool) -> None:
        assert self.pl is not None
        dirty = self.pl.dirty_commits()
        assert self.must_be_dirty <= dirty.keys(), "a redirtied commit was not sent again"
        for pair in self.pairs:
            commit = self.pl.cursors[pair[0]][pair[1]].commit()
            if pair in dirty:
                assert dirty[pair] == commit
                self._check_commit(pair, commit)
            else:
                assert commit == self.last_sent[pair], f"{pair} moved but was not dirty"
        self.last_sent.update(dirty)
        if lose:  # the commit did not reach the log
            self.pl.redirty(dirty)
            self.must_be_dirty = set(dirty)
        else:
            self.durable.update(dirty)
            self.must_be_dirty = set()

    def _restart(self) -> None:
        """A process kill: only the commits survive (also through their metadata and JSON)."""
        snapshot: Snapshot = {}
        for (lane, tp), commit in self.durable.items():
            parsed = Commit.parse(commit.offset, commit.metadata())
            assert parsed == commit
            snapshot.setdefault(lane, {})[tp] = parsed
        restored = decode_snapshot(json.loads(json.dumps(encode_snapshot(snapshot))))
        assert restored == snapshot
        self._start(restored)

    # -- rules -------------------------------------------------------------------------------

    @rule(
        data=st.data(),
        count=st.integers(1, 5),
        hole=st.sampled_from([0, 0, 0, 1, 2]),
        retain=st.sampled_from([0, 0, 0, 0, 0, 1, 3]),
    )
    def append(self, data: st.DataObject, count: int, hole: int, retain: int) -> None:
        """New records (after a hole, sometimes), and retention deleting the oldest."""
        tp = data.draw(st.sampled_from(sorted(self.logs)), label="tp")
        log = self.logs[tp]
        log.append(count, hole)
        log.start = min(log.start + retain, log.end)

    @rule(data=st.data())
    def fill(self, data: st.DataObject) -> None:
        assert self.pl is not None
        wants = self.pl.reads_wanted()
        self._check_wants(wants)
        for want in wants:
            how = data.draw(FILL_MODES, label="how")
            if how == "later":
                continue  # this read is still on its way
            count = want.limit
            if how == "partial":
                count = data.draw(st.integers(0, want.limit - 1), label="records")
            self._serve(
                want,
                count,
                explicit_gap=how != "implicit",  # else `accept` must see the gap by itself
                reset=how != "implicit",
                overlap=2 if how == "overlap" else 0,
            )

    @rule(
        count=st.integers(1, 5),
        lease=st.sampled_from([None, 1, 2, 4, 8]),
        skips=st.lists(st.sampled_from([False, False, False, True]), max_size=6),
        historic_share=st.sampled_from([0.0, 0.0, 0.0, 0.5]),
    )
    def take(self, count: int, lease: int | None, skips: list[bool], historic_share: float) -> None:
        """Hand jobs out (leased, or passive with `lease=None`); the filters skip some."""
        self._take(count, lease, skips, historic_share)

    def _pick_held(self, data: st.DataObject) -> int:
        """A job a plugin holds: the attempt leased right now, an older attempt of a job leased
        again, one handed out before the last restart, or any (finished, expired...)."""
        kind = data.draw(st.sampled_from(["current", "stale", "restarted", "any"]), label="kind")
        picks = [
            i
            for i, (ref, attempt, incarnation) in enumerate(self.held)
            if (kind == "current" and self.is_current(ref, attempt))
            or (kind == "stale" and ref in self.leases and not self.is_current(ref, attempt))
            or (kind == "restarted" and incarnation < self.incarnation)
        ]
        if picks:
            return data.draw(st.sampled_from(picks), label="held")
        return data.draw(st.integers(0, len(self.held) - 1), label="held")

    def is_current(self, ref: JobRef, attempt: int) -> bool:
        lease = self.leases.get(ref)
        return lease is not None and lease[0] == attempt

    @precondition(lambda self: self.held)
    @rule(
        data=st.data(),
        lease=st.sampled_from([1, 2, 5, 10]),
        max_job=st.sampled_from([0, 0, 0, 6]),
    )
    def heartbeat(self, data: st.DataObject, lease: int, max_job: int) -> None:
        assert self.pl is not None
        ref, attempt, _ = self.held[self._pick_held(data)]
        expected = self.is_current(ref, attempt)
        got = self.pl.heartbeat(
            ref, attempt, now=self.now, lease_seconds=lease, max_job_seconds=max_job
        )
        assert got is expected
        if expected:
            current = self.leases[ref]
            deadline = self.now + lease
            if max_job:
                deadline = min(deadline, current[2] + max_job)
            current[1] = max(current[1], deadline)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), ending=st.sampled_from(ENDINGS), again=st.booleans())
    def finish(self, data: st.DataObject, ending: JobState, again: bool) -> None:
        index = self._pick_held(data)
        ref, _, _ = self.held[index]
        if not again:  # `again`: the plugin will post the same status once more
            del self.held[index]
        self._finish(ref, ending)

    @rule(elapsed=st.sampled_from([0, 1, 2, 4, 8]), store=st.booleans())
    def expire(self, elapsed: int, store: bool) -> None:
        assert self.pl is not None
        self.now += elapsed
        due = sorted(
            ((deadline, ref, attempt) for ref, (attempt, deadline, _) in self.leases.items()),
            key=lambda item: item[0],
        )
        due = [item for item in due if item[0] <= self.now]
        out_of_attempts = {
            (ref, attempt) for _, ref, attempt in due if attempt + 1 >= self.max_attempts
        }
        failed = self.pl.expire(self.now, max_attempts=self.max_attempts)
        assert {(job.ref, job.attempt) for job in failed} == out_of_attempts
        assert all(job.state is JobState.CRITICAL_FAILURE for job in failed)
        # The rest go back to the front of their lane, oldest deadline first (ties: any order).
        front: dict[str, list[set[JobRef]]] = {lane: [] for lane in self.lanes}
        for _deadline, group in itertools.groupby(due, key=lambda item: item[0]):
            by_lane: dict[str, set[JobRef]] = {}
            for _, ref, attempt in group:
                del self.leases[ref]
                if (ref, attempt) not in out_of_attempts:
                    self.attempts[ref] = attempt + 1
                    by_lane.setdefault(ref.lane, set()).add(ref)
            for lane, refs in by_lane.items():
                front[lane].append(refs)
        for lane, groups in front.items():
            self.queues[lane][:0] = groups
        self.pending.extend(failed)
        if store:
            while self.pending:
                self._store_failed(0)

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def store_failed(self, data: st.DataObject) -> None:
        self._store_failed(data.draw(st.integers(0, len(self.pending) - 1), label="failed"))

    @rule(action=st.sampled_from(["commit"] * 8 + ["lose", "restart", "kill"]))
    def commit_or_restart(self, action: str) -> None:
        """Commit (or fail to), or restart: `restart` commits first, `kill` does not and loses
        what moved since the last commit."""
        if action != "kill":
            self._commit(lose=action == "lose")
        if action in ("restart", "kill"):
            self._restart()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def cursors_match_the_model(self) -> None:
        if self.pl is None:
            return
        assert self.pl.queued == sum(self.queued_count(lane) for lane in self.lanes)
        assert self.pl.leased == len(self.leases)
        deadlines = [deadline for _, deadline, _ in self.leases.values()]
        assert self.pl.next_deadline() == min(deadlines, default=None)
        for ref in self.leases:  # commits carry how far hand-outs got
            assert self.pl.cursors[ref.lane][ref.tp].commit().handed_out > ref.offset
        for pair in self.pairs:
            cursor = self.pl.cursors[pair[0]][pair[1]]
            cur = self.cur[pair]
            assert cursor.position == cur.position
            assert cursor.committed == cur.committed
            commit = cursor.commit()
            assert commit == cur.commit()
            if commit != self.last_sent[pair]:
                assert cursor.dirty or pair in self.must_be_dirty, f"{pair} moved, not dirty"
            self._check_commit(pair, commit)

    # -- the end: drain everything -----------------------------------------------------------

    def teardown(self) -> None:
        # Skip the drain when a step already failed (teardown runs in a `finally`).
        if self.pl is None or sys.exc_info()[1] is not None:
            return
        self._drain()
        self._check_drained()
        # Everything finished and committed: a restart offers nothing again.
        offers = self.offers
        self._commit(lose=False)
        self._restart()
        self._drain()
        self._check_drained()
        assert self.offers == offers

    def _drain(self) -> None:
        assert self.pl is not None
        while self.held:  # every plugin reports what it holds
            ref, _, _ = self.held.pop()
            self._finish(ref, JobState.COMPLETED)
        while self.pending:
            self._store_failed(0)
        for _ in range(10_000):
            wants = self.pl.reads_wanted()
            self._check_wants(wants)
            moved = False
            for want in wants:
                moved |= self._serve(want, want.limit, explicit_gap=True, reset=True, overlap=0)
            jobs = self._take(1000, 10, [])
            for job in jobs:
                self.held.remove((job.ref, job.attempt, self.incarnation))
                self._finish(job.ref, JobState.COMPLETED)
            if not moved and not jobs:
                break
        else:
            raise AssertionError("the drain did not end")

    def _check_drained(self) -> None:
        assert self.pl is not None
        self.cursors_match_the_model()
        assert self.pl.queued == 0
        assert self.pl.leased == 0
        for tp, log in self.logs.items():
            for offset in log.offsets:
                lane = self.owner(tp, offset)
                if lane is not None and offset >= log.start:
                    assert offset in self.finished[(lane, tp)], f"{lane} {tp} {offset} was lost"
        ends = {tp: log.end for tp, log in self.logs.items()}
        for lane in self.lanes:
            assert self.pl.caught_up(lane, ends)
        for pair in self.pairs:
            cur = self.cur[pair]
            assert cur.committed == cur.position


DeliveryMachine.TestCase.settings = settings(
    max_examples=70,
    stateful_step_count=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDeliveryMachine = DeliveryMachine.TestCase


# -- commits ----------------------------------------------------------------------------------

OFFSETS = st.integers(0, 2**63 - 1)


@st.composite
def commits(draw: st.DrawFn) -> Commit:
    """Any commit the cursor can make: finished offsets at or above the commit offset."""
    offset = draw(OFFSETS)
    deltas = set(draw(st.frozensets(st.integers(0, 64) | st.integers(0, 2**40), max_size=30)))
    for start, length in draw(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 60)))):
        deltas.update(range(start, start + length))
    stop = draw(st.none() | OFFSETS)
    return Commit(offset, frozenset(offset + d for d in deltas), stop)


@PLAIN
@given(commits())
def test_commit_metadata_round_trips(commit: Commit) -> None:
    metadata = commit.metadata()
    assert metadata.startswith("azd1")
    assert Commit.parse(commit.offset, metadata) == commit
    snapshot: Snapshot = {"group": {TopicPartition("t", 0): commit}}
    assert decode_snapshot(json.loads(json.dumps(encode_snapshot(snapshot)))) == snapshot


@PLAIN
@given(OFFSETS, st.text())
def test_foreign_commit_metadata_is_a_plain_offset(offset: int, metadata: str) -> None:
    if metadata.split(";")[0] != "azd1":
        assert Commit.parse(offset, metadata) == Commit(offset)


# -- job ids ----------------------------------------------------------------------------------

PLUGIN_PART = st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20)
PLUGIN_KEYS = st.lists(PLUGIN_PART, min_size=1, max_size=6).map("-".join)
TOPICS = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=60)


@PLAIN
@given(
    key=PLUGIN_KEYS,
    lane=st.sampled_from(Lane.ORDER),
    topic=TOPICS,
    partition=st.integers(0, 2**31 - 1),
    offset=OFFSETS,
    attempt=st.integers(0, 10_000),
)
def test_job_id_round_trips(
    key: str, lane: str, topic: str, partition: int, offset: int, attempt: int
) -> None:
    ref = JobRef(key, lane, TopicPartition(topic, partition), offset)
    assert IDS.parse(IDS.make(ref, attempt)) == (ref, attempt)


@PLAIN
@given(
    st.text(max_size=80)
    | st.lists(st.text(max_size=8) | st.sampled_from(["azd2", *Lane.ORDER, "0", "-1"])).map(
        "|".join
    )
)
def test_any_text_parses_as_a_job_id_or_none(job_id: str) -> None:
    # Made-up text is never one azuld signed.
    assert IDS.parse(job_id) is None
    assert (IDS.problem(job_id) is None) is (not job_id.startswith("azd2|"))


# -- ranges -----------------------------------------------------------------------------------

POSITIONS = st.one_of(
    st.just(""),
    st.integers(0, 2**70).map(str),
    st.text(st.sampled_from("0123456789 +-,x"), max_size=6),
    # Other digits: decimal ones int() reads, superscripts it does not ('²' is latin-1, so a
    # header can carry it), and spaces.
    st.text(st.characters(categories=("Nd", "No", "Zs")), max_size=3),
)
HEADERS = st.one_of(
    st.text(max_size=30),
    st.builds(
        "{}={}{}{}{}".format,
        st.sampled_from(["bytes", " bytes ", "Bytes", "items", ""]),
        POSITIONS,
        st.sampled_from(["-", "-", "-", "--", ""]),
        POSITIONS,
        st.sampled_from(["", "", " ", ",0-1", "-"]),
    ),
)
SIZES = st.integers(0, 2**64) | st.integers(0, 20)


@PLAIN
@given(header=HEADERS, size=SIZES)
def test_parse_range_fails_only_with_client_errors(header: str, size: int) -> None:
    outcome: tuple[int, int] | RangeNotSatisfiable
    try:
        outcome = parse_range(header, size)
    except BadRequest:
        return
    except RangeNotSatisfiable as error:
        outcome = error
    if isinstance(outcome, RangeNotSatisfiable):
        assert outcome.size == size  # for `Content-Range: bytes */<size>`
        return
    start, length = outcome
    assert 0 <= start < size
    assert length >= 1
    assert start + length <= size


@pytest.mark.parametrize(
    "header",
    ["bytes=\N{SUPERSCRIPT TWO}-", "bytes=-\N{SUPERSCRIPT TWO}", "bytes=0-\N{SUPERSCRIPT ONE}"],
)
def test_parse_range_rejects_superscript_digits(header: str) -> None:
    """`str.isdigit()` is true for them, `int()` cannot read them."""
    with pytest.raises(BadRequest):
        parse_range(header, 10)


@pytest.mark.parametrize(
    "header", ["bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000]
)
def test_parse_range_very_long_positions(header: str) -> None:
    """A position past `sys.get_int_max_str_digits()` (4300) used to make `int()` raise
    ValueError (a 500): such a header fits in h11's 16 KiB limit. Now it is "very far": a huge
    end or suffix means the whole blob, a huge start is a 416."""
    try:
        start, length = parse_range(header, 10)
    except (BadRequest, RangeNotSatisfiable):
        return
    assert (start, length) == (0, 10)


@PLAIN
@given(
    first=st.none() | st.integers(0, 2**64),
    last=st.none() | st.integers(0, 2**64),
    size=SIZES,
)
def test_parse_range_arithmetic(first: int | None, last: int | None, size: int) -> None:
    """Well-formed headers against RFC 9110's arithmetic (and quirks 16-17: 416, not 200)."""
    if first is None and last is None:
        return
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    expected: object
    if first is None:
        assert last is not None
        expected = None if last == 0 or size == 0 else (max(size - last, 0), min(last, size))
    elif last is not None and last < first:
        expected = "bad"
    elif first >= size:
        expected = None
    else:
        end = size - 1 if last is None else min(last, size - 1)
        expected = (first, end - first + 1)
    try:
        got: object = parse_range(header, size)
    except BadRequest:
        got = "bad"
    except RangeNotSatisfiable:
        got = None
    assert got == expected


# -- fetch parameters -------------------------------------------------------------------------

PARAM_NAMES = [
    "name",
    "version",
    "count",
    "deadline",
    "avro-format",
    "r-expedite",
    "r-live",
    "r-historic",
    "r-source",
    "r-action",
    "d-action",
    "r-content",
    "r-under-content-size",
    "r-over-content-size",
    "r-streams",
    "d-self",
    "max-security",
    "reset",
    "debug",
    "deployment_key",
    "historic-share",
]
PARAM_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["true", "false", "1", "0", "t", "", "-1", ".", "Entropy", "1.0"]),
    st.sampled_from(["0.5", "nan", "inf", "-0", "1e-300", "1e400", "0x10", " 7 ", "1_0"]),
    st.sampled_from(BINARY_ACTIONS),
    st.integers(-(2**70), 2**70).map(str),
    st.text(st.sampled_from("0123456789"), min_size=300, max_size=400),  # past float's range
)
NUMBERS = st.integers(0, 10**6).map(str)
FLAGS = st.sampled_from(["true", "false", "1", "0", "T", "F"])
# Mostly plausible values, so that many queries get through to the checks on the result.
PLAUSIBLE = {
    "name": PLUGIN_PART,
    "version": PLUGIN_PART,
    "count": NUMBERS,
    "deadline": NUMBERS,
    "r-action": st.sampled_from(BINARY_ACTIONS),
    "d-action": st.sampled_from(BINARY_ACTIONS),
    "r-under-content-size": NUMBERS,
    "r-over-content-size": NUMBERS,
    "r-streams": st.text(max_size=12),
    "max-security": st.text(max_size=8),
    "deployment_key": st.text(max_size=8),
    "historic-share": st.sampled_from(["0", "0.25", "1"]),
}
PLAUSIBLE_PAIRS = st.sampled_from(PARAM_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), PLAUSIBLE.get(name, FLAGS))
)
ANY_PAIRS = st.tuples(st.sampled_from(PARAM_NAMES) | st.text(max_size=8), PARAM_VALUES)
QUERY_PAIRS = st.one_of(PLAUSIBLE_PAIRS, PLAUSIBLE_PAIRS, ANY_PAIRS)  # 2:1 plausible
QUERIES = st.lists(QUERY_PAIRS, max_size=10)
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "._+-")
LANE_FLAGS = st.lists(
    st.tuples(st.sampled_from(["r-live", "r-historic", "r-expedite"]), st.just("true")),
    min_size=1,
    max_size=3,
)


def parse_query(model: str, active: bool, pairs: list[tuple[str, str]]) -> ConsumeParams:
    return parse_consume_params(
        model,
        active,
        pairs,
        default_deadline_seconds=5,
        max_deadline_seconds=60,
        max_count=1000,
    )


@PLAIN
@given(
    model=st.one_of(st.just("binary"), st.sampled_from(MODELS), st.text(max_size=8)),
    active=st.booleans(),
    lane_flags=LANE_FLAGS,
    sources=st.lists(st.text(min_size=1, max_size=6), max_size=3),
    query=QUERIES,
)
def test_parse_consume_params_fails_only_with_unprocessable(
    model: str,
    active: bool,
    lane_flags: list[tuple[str, str]],
    sources: list[str],
    query: list[tuple[str, str]],
) -> None:
    pairs = [("name", "Entropy"), *lane_flags, *(("r-source", s) for s in sources), *query]
    try:
        params = parse_query(model, active, pairs)
    except Unprocessable:
        return
    assert 1 <= params.count <= 1000
    assert 0 < params.deadline_seconds <= 60
    assert params.lanes
    assert params.lanes == tuple(lane for lane in Lane.ORDER if lane in params.lanes)
    share = params.historic_share
    assert share is None or 0 <= share <= 1
    # The key names consumer groups and travels inside job ids: only the safe characters.
    assert set(params.key) <= KEY_CHARS, params.key
    ref = JobRef(params.key, params.lanes[0], TopicPartition(SRC, 0), 0)
    assert IDS.parse(IDS.make(ref, 0)) == (ref, 0)


@pytest.mark.parametrize("sources", [["|"], ["samples", "x|y"]])
def test_r_source_cannot_break_job_ids(sources: list[str]) -> None:
    """A source with '|' in the plugin key would give every job id of the key an extra field
    (`JobIds.parse` would say `None`): such r-source values are refused."""
    pairs = [("name", "a"), ("r-live", "true"), *(("r-source", s) for s in sources)]
    try:
        params = parse_query("binary", True, pairs)
    except Unprocessable:
        return  # rejected: fixed
    ref = JobRef(params.key, Lane.LIVE, TopicPartition(SRC, 0), 0)
    assert IDS.parse(IDS.make(ref, 0)) == (ref, 0)
