"""The dispatcher the delivery property tests drive (`test_delivery_properties.py`): one
`PluginLanes` per incarnation, the plugins holding its jobs, and a simulated log per partition
(with holes and retention); each step it takes (serve a read, take, finish, store a failed job,
commit, restart from the commits) is checked against a model kept next to it (`CursorModel`, the
lanes' queues, the leases)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from azuld.core.cursor import Commit, Snapshot, TopicPartition, decode_snapshot, encode_snapshot
from azuld.core.delivery import Job, JobRef, Lane, PluginLanes, ReadRequest
from azuld.core.jobids import JobIds
from azuld.core.jobs import JobState

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


class DispatcherSim:
    """A dispatcher (one `PluginLanes` per incarnation) and its plugins, against a model. The
    state is set up by `DeliveryMachine.create_key`; its steps are this class's methods."""

    pl: PluginLanes | None

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
