"""Deferred jobs in delivery (core.delivery), as `max-security` uses them: examples, then a
property test (Hypothesis).

`DeferredMachine` drives one plugin key over two lanes as the dispatcher does when its fetches
carry `max-security`: records carry security labels, each take has a clearance, and the judge
asks a checker that knows only some (clearance, label) pairs; an unknown pair defers the job
(`Deferred`), and deciding the pair later puts its jobs back (`requeue_deferred`). Leases expire,
plugins finish what they hold, partitions move away and back (from the last commit).

After every step: no handed-out job is above its take's clearance, a parked job is never offered
before its pair is decided, parked jobs count as neither handed out nor skipped, and no commit
passes a parked (or leased, or queued) job. At the end, once every pair is decided, the lanes
drain: every record was handed out or filtered, and the commits reach the end of the log.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from azuld.core.cursor import Commit, TopicPartition
from azuld.core.delivery import Deferred, Job, JobRef, Lane, PluginLanes
from azuld.core.jobs import JobState
from azuld.core.security import SECURITY_FILTER, AccessDecisions, EventLabel, LabelModel

KEY = "P-1-binary-allsrc-alltype-LH"
MODEL = LabelModel(
    classifications=["LOW", "MEDIUM", "HIGH"],
    caveats=["MOD1"],
    markings=["TLP:AMBER", "TLP:AMBER+STRICT"],
    enforced_markings=["TLP:AMBER+STRICT"],
)
# Event labels, as `event_label` gives them: "" is an unlabelled event, "BOGUS" is unreadable.
LABELS = ["", "LOW", "MEDIUM", "MEDIUM MOD1", "HIGH", "LOW TLP:AMBER+STRICT", "LOW|HIGH", "BOGUS"]
CLEARANCES = ["", "LOW", "MEDIUM", "MEDIUM MOD1", "HIGH MOD1 TLP:AMBER+STRICT"]
LANES = (Lane.LIVE, Lane.HISTORIC)
TOPICS = {Lane.LIVE: "azul.t.s.binary.sourced", Lane.HISTORIC: "azul.t.s.binary.extracted"}
MAX_ATTEMPTS = 3

Pair = tuple[str, EventLabel]


def label_of(value: bytes) -> EventLabel:
    text = value.decode().split("#")[0]
    return tuple(text.split("|")) if text else ()


@dataclass
class PartModel:
    """One (lane, partition): its records' labels, and what is known of each offset."""

    labels: list[str] = field(default_factory=list)  # by offset
    durable: Commit = field(default_factory=lambda: Commit(0))  # the last commit sent
    finished: set[int] = field(default_factory=set)


# -- examples ---------------------------------------------------------------------------------

TP = TopicPartition(TOPICS[Lane.LIVE], 0)


def parking_judge(waiting: dict[int, str]) -> Callable[[Job], str | Deferred | None]:
    """Defers the jobs at the offsets in `waiting` on the pair named there; hands out the rest."""

    def judge(job: Job) -> str | Deferred | None:
        on = waiting.get(job.ref.offset)
        return None if on is None else Deferred(on)

    return judge


def test_a_deferred_job_holds_its_offset_but_not_the_lane() -> None:
    pl = PluginLanes(KEY, (Lane.LIVE,), window=100)
    pl.assign(Lane.LIVE, TP, Commit(0))
    pl.add_records(Lane.LIVE, TP, [(o, b"x") for o in range(5)])
    handout = pl.take(10, now=0, lease_seconds=None, skip_reason=parking_judge({1: "slow"}))
    assert [job.ref.offset for job in handout.jobs] == [0, 2, 3, 4]  # the lane kept flowing
    assert (handout.deferred, handout.skipped) == (1, {})
    assert (pl.queued, pl.deferred) == (0, 1)
    assert pl.holds(JobRef(KEY, Lane.LIVE, TP, 1))
    commit = pl.dirty_commits()[(Lane.LIVE, TP)]
    assert (commit.offset, commit.finished) == (1, frozenset({2, 3, 4}))  # stays below it
    assert pl.requeue_deferred("other") == 0
    assert pl.requeue_deferred("slow") == 1
    (job,) = pl.take(10, now=0, lease_seconds=None, skip_reason=parking_judge({})).jobs
    assert (job.ref.offset, pl.deferred) == (1, 0)
    assert pl.dirty_commits()[(Lane.LIVE, TP)] == Commit(5)


def test_requeued_jobs_go_back_in_front_in_the_order_they_were_parked() -> None:
    pl = PluginLanes(KEY, (Lane.LIVE,), window=100)
    pl.assign(Lane.LIVE, TP, Commit(0))
    pl.add_records(Lane.LIVE, TP, [(o, b"x") for o in range(6)])
    judge = parking_judge({0: "a", 2: "b", 3: "a"})
    first = pl.take(2, now=0, lease_seconds=None, skip_reason=judge)
    assert ([job.ref.offset for job in first.jobs], first.deferred) == ([1, 4], 3)
    assert pl.requeue_deferred("a") == 2
    then = pl.take(10, now=0, lease_seconds=None, skip_reason=parking_judge({})).jobs
    assert [job.ref.offset for job in then] == [0, 3, 5]  # offset 2 still waits on "b"


def test_a_moved_partition_or_a_late_status_drops_parked_jobs() -> None:
    pl = PluginLanes(KEY, (Lane.LIVE,), window=100)
    pl.assign(Lane.LIVE, TP, Commit(0))
    pl.add_records(Lane.LIVE, TP, [(o, b"x") for o in range(3)])
    pl.take(10, now=0, lease_seconds=None, skip_reason=parking_judge({0: "a", 1: "a", 2: "b"}))
    assert pl.finish(JobRef(KEY, Lane.LIVE, TP, 1), JobState.COMPLETED)  # a late status
    assert pl.deferred == 2
    pl.unassign(Lane.LIVE, TP)
    assert pl.deferred == 0
    assert (pl.requeue_deferred("a"), pl.requeue_deferred("b")) == (0, 0)


# -- the machine --------------------------------------------------------------------------------


class DeferredMachine(RuleBasedStateMachine):
    @initialize(
        partitions=st.integers(1, 2),
        window=st.integers(2, 8),
        read_ahead=st.integers(1, 6),
        known=st.sets(st.tuples(st.sampled_from(CLEARANCES), st.sampled_from(LABELS))),
    )
    def create(
        self, partitions: int, window: int, read_ahead: int, known: set[tuple[str, str]]
    ) -> None:
        self.window = window
        self.read_ahead = read_ahead
        self.truth = AccessDecisions(MODEL)
        # What the checker has answered (the command's cache); the rest is undecided.
        self.known: set[Pair] = {(c, label_of(lbl.encode())) for c, lbl in known}
        self.parts: dict[tuple[str, TopicPartition], PartModel] = {
            (lane, TopicPartition(TOPICS[lane], p)): PartModel()
            for lane in LANES
            for p in range(partitions)
        }
        self.parked: dict[Pair, list[JobRef]] = {}
        self.held: dict[JobRef, float] = {}  # leased jobs: ref -> lease deadline
        self.now = 0.0
        self.pl = PluginLanes(KEY, LANES, window=window, read_ahead=read_ahead)
        for (lane, tp), part in self.parts.items():
            self.pl.assign(lane, tp, part.durable)

    # -- helpers -----------------------------------------------------------------------------

    @property
    def parked_refs(self) -> set[JobRef]:
        return {ref for refs in self.parked.values() for ref in refs}

    def _fill(self) -> None:
        for want in self.pl.reads_wanted():
            part = self.parts[(want.lane, want.tp)]
            records = [
                (offset, f"{part.labels[offset]}#{offset}".encode())
                for offset in range(want.offset, min(len(part.labels), want.offset + want.limit))
            ]
            self.pl.add_records(want.lane, want.tp, records)

    def _take(self, count: int, clearance: str, lease: float | None) -> None:
        answers: list[tuple[Job, str | Deferred | None]] = []
        parked = self.parked_refs

        def judge(job: Job) -> str | Deferred | None:
            assert job.ref not in parked, "a parked job was offered before its pair was decided"
            assert job.ref not in self.held
            label = label_of(job.value)
            answer: str | Deferred | None = None
            if clearance and label:
                pair = (clearance, label)
                if pair not in self.known:
                    answer = Deferred(pair)
                elif not self.truth.decide(clearance, label):
                    answer = SECURITY_FILTER
            answers.append((job, answer))
            return answer

        handout = self.pl.take(count, now=self.now, lease_seconds=lease, skip_reason=judge)
        given = [job for job, answer in answers if answer is None]
        deferred = [(job, answer) for job, answer in answers if isinstance(answer, Deferred)]
        assert [id(job) for job in handout.jobs] == [id(job) for job in given]
        assert handout.deferred == len(deferred)
        assert sum(handout.skipped.values()) == len(answers) - len(given) - len(deferred)
        assert set(handout.skipped) <= {SECURITY_FILTER}
        for job in handout.jobs:
            # The property: nothing handed out is above the clearance.
            assert self.truth.decide(clearance, label_of(job.value))
            if lease is None:
                self.parts[(job.ref.lane, job.ref.tp)].finished.add(job.ref.offset)
            else:
                self.held[job.ref] = self.now + lease
        for job, answer in answers:
            if answer == SECURITY_FILTER:
                self.parts[(job.ref.lane, job.ref.tp)].finished.add(job.ref.offset)
        for job, answer in deferred:
            assert isinstance(answer, Deferred)
            assert job.state is JobState.QUEUED
            self.parked.setdefault(answer.on, []).append(job.ref)  # type: ignore[arg-type]

    def _decide(self, pair: Pair) -> None:
        self.known.add(pair)
        refs = self.parked.pop(pair, [])
        assert self.pl.requeue_deferred(pair) == len(refs)

    def _commit(self) -> None:
        for (lane, tp), commit in self.pl.dirty_commits().items():
            self.parts[(lane, tp)].durable = commit

    # -- rules -------------------------------------------------------------------------------

    @rule(
        data=st.data(),
        labels=st.lists(st.sampled_from(LABELS), min_size=1, max_size=6),
    )
    def append(self, data: st.DataObject, labels: list[str]) -> None:
        pair = data.draw(st.sampled_from(sorted(self.parts)), label="partition")
        self.parts[pair].labels += labels

    @rule()
    def fill(self) -> None:
        self._fill()

    @rule(
        count=st.integers(1, 6),
        clearance=st.sampled_from(CLEARANCES),
        lease=st.sampled_from([None, 2.0, 5.0]),
    )
    def take(self, count: int, clearance: str, lease: float | None) -> None:
        self._take(count, clearance, lease)

    @precondition(lambda self: self.parked)
    @rule(data=st.data())
    def decide(self, data: st.DataObject) -> None:
        """The checker answers a pair that jobs are parked on."""
        self._decide(data.draw(st.sampled_from(sorted(self.parked)), label="pair"))

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.held, key=str)), label="held")
        del self.held[ref]
        assert self.pl.finish(ref, JobState.COMPLETED)
        self.parts[(ref.lane, ref.tp)].finished.add(ref.offset)

    @rule(elapsed=st.sampled_from([1.0, 3.0, 6.0]))
    def expire(self, elapsed: float) -> None:
        self.now += elapsed
        for ref in [ref for ref, deadline in self.held.items() if deadline <= self.now]:
            del self.held[ref]  # offered again (queued), or out of attempts
        for job in self.pl.expire(self.now, max_attempts=MAX_ATTEMPTS):
            self.pl.store_failed(job)
            self.parts[(job.ref.lane, job.ref.tp)].finished.add(job.ref.offset)
        assert self.pl.leased == len(self.held)

    @rule()
    def commit(self) -> None:
        self._commit()

    @rule(data=st.data())
    def move_partition(self, data: st.DataObject) -> None:
        """The partition goes to another instance and comes back: it restarts from the last
        commit, and what was parked, queued or leased here is read again."""
        lane, tp = data.draw(st.sampled_from(sorted(self.parts)), label="partition")
        self._commit()
        self.pl.unassign(lane, tp)
        for pair, refs in list(self.parked.items()):
            self.parked[pair] = [ref for ref in refs if (ref.lane, ref.tp) != (lane, tp)]
            if not self.parked[pair]:
                del self.parked[pair]
        for ref in [ref for ref in self.held if (ref.lane, ref.tp) == (lane, tp)]:
            del self.held[ref]
        self.pl.assign(lane, tp, self.parts[(lane, tp)].durable)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def no_commit_passes_an_open_job(self) -> None:
        assert self.pl.deferred == len(self.parked_refs)
        open_refs = self.parked_refs | set(self.held)
        for (lane, tp), part in self.parts.items():
            commit = self.pl.cursors[lane][tp].commit()
            waiting = [ref.offset for ref in open_refs if (ref.lane, ref.tp) == (lane, tp)]
            if waiting:
                assert commit.offset <= min(waiting), "a commit passed a parked or leased job"
            cursor = self.pl.cursors[lane][tp]
            unfinished = [
                o for o in range(commit.offset, cursor.position) if o not in part.finished
            ]
            assert all(o not in commit.finished for o in unfinished)
            # Parked jobs pile up only within the read window.
            assert cursor.position - commit.offset <= self.window

    # -- the end -----------------------------------------------------------------------------

    def teardown(self) -> None:
        if not hasattr(self, "pl") or sys.exc_info()[1] is not None:
            return
        for pair in sorted(self.parked):
            self._decide(pair)
        for clearance in CLEARANCES:  # the checker now knows every pair
            for text in LABELS:
                self.known.add((clearance, label_of(text.encode())))
        for ref in list(self.held):
            del self.held[ref]
            self.pl.finish(ref, JobState.COMPLETED)
            self.parts[(ref.lane, ref.tp)].finished.add(ref.offset)
        for _ in range(1000):
            self._fill()
            if not self.pl.queued:
                break
            self._take(1000, "MEDIUM", None)
        assert self.pl.queued == 0
        assert self.pl.deferred == 0
        assert self.pl.leased == 0
        for (lane, tp), part in self.parts.items():
            cursor = self.pl.cursors[lane][tp]
            assert cursor.position == len(part.labels)
            assert cursor.committed == len(part.labels), f"{lane} {tp}: records were stranded"


DeferredMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDeferredMachine = DeferredMachine.TestCase
