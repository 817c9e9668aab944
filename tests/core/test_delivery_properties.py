"""Property tests (Hypothesis) for delivery (core.delivery): a state machine against a model.

`DeliveryMachine` drives one plugin key the way the dispatcher does: a simulated log per partition
(with holes and retention), fills from `reads_wanted()`, hand-outs (leased, passive, skipped),
heartbeats and statuses (current, stale, late and repeated), expiry and failed jobs, commits (some
lost and sent again) and restarts from what was committed, as after a kill. A model kept next to
it checks after every step that a commit never passes an unfinished job, that a finish known to
the dispatcher (or committed before a restart) is never offered again, lane priority, and, when
the run is drained at the end, that every record was finished. The dispatcher's steps and the
model are in `delivery_sim.py`; here are the rules that drive them, the invariants and the drain.

The plain `@given` properties of the commit metadata codec, job ids, `Range` headers and fetch
parameters are with the other tests of their modules (`test_cursor.py`, `test_jobids.py`,
`test_ranges.py`, `test_params.py`).
"""

from __future__ import annotations

import itertools
import sys

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from azuld.core.cursor import Commit, Snapshot, TopicPartition
from azuld.core.delivery import JobRef, Lane, PluginLanes
from azuld.core.jobs import JobState
from tests.core.delivery_sim import (
    ENDINGS,
    EXP,
    LANE_SETS,
    SRC,
    DispatcherSim,
    Pair,
    SimLog,
    covering_lane,
)

# How the dispatcher answers one read: in full (the dispatcher's way: `skip_to` over a gap),
# later, partly, without `skip_to`, or repeating records already read.
FILL_MODES = st.sampled_from(["full"] * 5 + ["later", "partial", "implicit", "overlap"])


class DeliveryMachine(DispatcherSim, RuleBasedStateMachine):
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
