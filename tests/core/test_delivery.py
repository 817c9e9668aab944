"""Lanes, leases and the commits they move (core.delivery), on plain numbers for time."""

from __future__ import annotations

import pytest

from azuld.core.cursor import Commit, TopicPartition
from azuld.core.delivery import Job, JobRef, Lane, PluginLanes
from azuld.core.jobs import JobState

TP = TopicPartition("azul.t.s.binary.sourced", 0)
TP2 = TopicPartition("azul.t.s.binary.extracted", 0)
EXP = TopicPartition("azul.t.system.expedite", 0)


def records(*offsets: int) -> list[tuple[int, bytes]]:
    return [(o, f"event-{o}".encode()) for o in offsets]


def never_skip(job: Job) -> str | None:
    return None


# -- lanes ------------------------------------------------------------------------------------


def lanes(*names: str, **kwargs: int) -> PluginLanes:
    plugin_lanes = PluginLanes("P-1-binary-allsrc-alltype-ELH", names or Lane.ORDER, **kwargs)
    for lane in plugin_lanes.lanes:
        tp = EXP if lane == Lane.EXPEDITE else TP
        plugin_lanes.assign(lane, tp, Commit(0))
    if Lane.LIVE in plugin_lanes.lanes:
        plugin_lanes.assign(Lane.LIVE, TP2, Commit(0))
    return plugin_lanes


def take(
    pl: PluginLanes, count: int = 1, now: float = 0.0, lease: float | None = 10.0
) -> list[Job]:
    return pl.take(count, now=now, lease_seconds=lease, skip_reason=never_skip).jobs


def test_strict_lane_priority() -> None:
    pl = lanes()
    pl.add_records(Lane.HISTORIC, TP, records(0, 1))
    pl.add_records(Lane.LIVE, TP, records(5))
    pl.add_records(Lane.EXPEDITE, EXP, records(0))
    got = [(j.ref.lane, j.ref.offset) for j in take(pl, count=4)]
    assert got == [("expedite", 0), ("live", 5), ("historic", 0), ("historic", 1)]


def test_lower_lane_only_when_higher_lanes_are_empty() -> None:
    pl = lanes()
    pl.add_records(Lane.HISTORIC, TP, records(0))
    pl.add_records(Lane.LIVE, TP, records(3))
    assert take(pl)[0].ref.lane == Lane.LIVE
    assert take(pl)[0].ref.lane == Lane.HISTORIC
    assert take(pl) == []


def test_reads_wanted_tops_up_to_read_ahead() -> None:
    pl = PluginLanes("k", [Lane.LIVE], read_ahead=4)
    pl.assign(Lane.LIVE, TP, Commit(0))
    (want,) = pl.reads_wanted()
    assert (want.lane, want.tp, want.offset, want.limit) == (Lane.LIVE, TP, 0, 4)
    pl.add_records(Lane.LIVE, TP, records(0, 1, 2))
    assert pl.reads_wanted() == []  # more than half of read_ahead queued: no read yet
    (want,) = pl.reads_wanted(at_least=5)  # unless the request wants more than is queued
    assert (want.offset, want.limit) == (3, 2)
    take(pl)
    (want,) = pl.reads_wanted()  # down to half: top up to read_ahead in one read
    assert (want.offset, want.limit) == (3, 2)


def test_historic_stops_where_live_began() -> None:
    pl = PluginLanes("k", [Lane.LIVE, Lane.HISTORIC])
    pl.assign(Lane.HISTORIC, TP, Commit(0, stop=2))
    pl.assign(Lane.LIVE, TP, Commit(2))
    pl.add_records(Lane.HISTORIC, TP, records(0, 1, 2, 3))
    pl.add_records(Lane.LIVE, TP, records(2, 3))
    got = sorted((j.ref.lane, j.ref.offset) for j in take(pl, count=10))
    assert got == [("historic", 0), ("historic", 1), ("live", 2), ("live", 3)]
    assert all(w.lane != Lane.HISTORIC for w in pl.reads_wanted())


def test_skipped_jobs_are_finished_and_counted() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0, 1, 2))
    handout = pl.take(
        5, now=0, lease_seconds=10, skip_reason=lambda j: "F-x" if j.ref.offset != 1 else None
    )
    assert [j.ref.offset for j in handout.jobs] == [1]
    assert handout.skipped == {"F-x": 2}
    assert pl.dirty_commits() == {(Lane.LIVE, TP): Commit(1, frozenset({2}))}


def test_passive_handout_finishes_at_once() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0, 1))
    jobs = take(pl, count=2, lease=None)
    assert [j.state for j in jobs] == [JobState.STORED, JobState.STORED]
    assert pl.leased == 0
    assert pl.dirty_commits() == {(Lane.LIVE, TP): Commit(2)}


def test_commit_waits_for_the_lowest_lease() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0, 1, 2))
    first, second, third = take(pl, count=3)
    pl.finish(third.ref, JobState.COMPLETED)
    pl.finish(second.ref, JobState.COMPLETED)
    assert pl.dirty_commits() == {(Lane.LIVE, TP): Commit(0, frozenset({1, 2}))}
    pl.finish(first.ref, JobState.COMPLETED)
    assert pl.dirty_commits() == {(Lane.LIVE, TP): Commit(3)}


def test_expired_lease_is_reoffered_first_with_a_new_attempt() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0, 1))
    (job,) = take(pl, now=0)
    assert pl.next_deadline() == 10
    assert pl.expire(9.9, max_attempts=3) == []
    assert pl.expire(10, max_attempts=3) == []
    (again,) = take(pl, now=10)
    assert again.ref == job.ref
    assert again.attempt == 1


def test_heartbeat_extends_only_the_current_attempt() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0))
    (job,) = take(pl, now=0)
    assert pl.heartbeat(job.ref, 0, now=8, lease_seconds=10)
    assert pl.expire(17, max_attempts=3) == []
    assert pl.next_deadline() == 18
    assert not pl.heartbeat(job.ref, 5, now=9, lease_seconds=10)
    pl.expire(18, max_attempts=3)
    assert not pl.heartbeat(job.ref, 0, now=19, lease_seconds=10)


def test_out_of_attempts_fails_the_job() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0))
    now = 0.0
    for _ in range(2):
        take(pl, now=now)
        now += 10
        assert pl.expire(now, max_attempts=3) == []
    take(pl, now=now)
    (failed,) = pl.expire(now + 10, max_attempts=3)
    assert failed.state is JobState.CRITICAL_FAILURE
    assert failed.attempt == 2
    assert pl.dirty_commits() == {}
    pl.store_failed(failed)
    assert pl.dirty_commits() == {(Lane.LIVE, TP): Commit(1)}
    assert take(pl, now=now + 20) == []


def test_late_status_for_a_requeued_job_drops_the_queued_copy() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0))
    (job,) = take(pl, now=0)
    pl.expire(10, max_attempts=3)
    assert pl.queued == 1
    assert pl.finish(job.ref, JobState.COMPLETED)
    assert pl.queued == 0
    assert take(pl, now=11) == []
    assert pl.dirty_commits() == {(Lane.LIVE, TP): Commit(1)}


def test_finish_is_idempotent() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0))
    (job,) = take(pl)
    assert not pl.is_finished(job.ref)
    assert pl.finish(job.ref, JobState.COMPLETED)
    assert pl.is_finished(job.ref)  # a second status has nothing to do
    assert not pl.finish(job.ref, JobState.COMPLETED)


def test_finish_leased_finishes_only_leased_jobs() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0, 1))
    (job,) = take(pl, now=0)
    queued = JobRef(pl.plugin_key, Lane.LIVE, TP, 1)
    assert not pl.finish_leased(queued, JobState.COMPLETED)  # queued, not leased: untouched
    assert pl.queued == 1
    assert not pl.is_finished(queued)
    assert pl.finish_leased(job.ref, JobState.COMPLETED)
    assert job.state is JobState.STORED
    assert pl.is_finished(job.ref)
    assert not pl.finish_leased(job.ref, JobState.COMPLETED)  # once only
    assert pl.dirty_commits() == {(Lane.LIVE, TP): Commit(1)}


def test_a_leased_or_requeued_job_is_not_finished() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0, 1))
    (job,) = take(pl, now=0)
    assert not pl.is_finished(job.ref)
    pl.expire(100, max_attempts=3)  # back in the queue
    assert not pl.is_finished(job.ref)
    unknown = JobRef(pl.plugin_key, Lane.LIVE, TopicPartition("elsewhere", 0), 0)
    assert not pl.is_finished(unknown)


def test_heartbeats_cannot_keep_a_job_past_the_run_deadline() -> None:
    pl = lanes(Lane.LIVE)
    pl.add_records(Lane.LIVE, TP, records(0))
    (job,) = take(pl, now=0)
    for now in range(5, 100, 5):
        pl.heartbeat(job.ref, 0, now=now, lease_seconds=10, max_job_seconds=30)
    assert pl.next_deadline() == 30
    pl.expire(30, max_attempts=3)
    (again,) = take(pl, now=30)
    assert again.attempt == 1


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_fair_lanes_keep_historic_at_its_share(share: float) -> None:
    pl = lanes(Lane.LIVE, Lane.HISTORIC, read_ahead=10_000)
    pl.add_records(Lane.HISTORIC, TP, records(*range(1000)))
    got: list[str] = []
    for live in range(400):  # a flood: live always has work
        pl.add_records(Lane.LIVE, TP2, records(live))
        handout = pl.take(
            1, now=0, lease_seconds=None, skip_reason=never_skip, historic_share=share
        )
        got += [j.ref.lane for j in handout.jobs]
    assert got.count(Lane.HISTORIC) / len(got) >= share
    assert got.count(Lane.HISTORIC) / len(got) <= share + 0.02


def test_strict_priority_by_default_starves_history_under_a_flood() -> None:
    pl = lanes(Lane.LIVE, Lane.HISTORIC, read_ahead=10_000)
    pl.add_records(Lane.HISTORIC, TP, records(*range(100)))
    for offset in range(50):
        pl.add_records(Lane.LIVE, TP2, records(offset))
        (job,) = take(pl, lease=None)
        assert job.ref.lane == Lane.LIVE
