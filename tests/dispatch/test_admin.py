"""The admin views the dashboard polls: the jobs in flight, the cluster, and failures that can be
offered again."""

from __future__ import annotations

import msgspec
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.dispatch import Dispatcher
from tests.conftest import make_binary
from tests.dispatch.conftest import LEASE, fetch_one, status, submit


async def test_jobs_in_flight_longest_running_first(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    named = make_binary("named")
    named.source.path[-1].filename = "dropper.exe"
    await submit(dispatcher, named, make_binary("other"))
    first = await fetch_one(dispatcher)
    await trio.sleep(10)
    second = await fetch_one(dispatcher, name="Q")
    assert first is not None
    assert second is not None
    await trio.sleep(5)

    view = await dispatcher.jobs()
    assert view.total == 2
    assert [job.job_id for job in view.jobs] == [first.dequeued, second.dequeued]
    oldest = view.jobs[0]
    assert (oldest.plugin, oldest.version, oldest.lane, oldest.attempt) == ("P", "1", "historic", 0)
    assert (oldest.sha256, oldest.filename, oldest.source) == (
        named.entity.sha256,
        "dropper.exe",
        "samples",
    )
    assert (oldest.age_seconds, oldest.lease_left_seconds) == (15.0, LEASE - 15)
    assert (view.jobs[1].plugin, view.jobs[1].age_seconds) == ("Q", 5.0)
    assert {job.instance for job in view.jobs} == {view.instance}

    assert [job.job_id for job in (await dispatcher.jobs(limit=1)).jobs] == [first.dequeued]
    await dispatcher.publish("status", status(first, "completed"))
    assert [job.job_id for job in (await dispatcher.jobs()).jobs] == [second.dequeued]


async def test_a_failure_carries_its_job_id_for_a_reoffer(dispatcher: Dispatcher) -> None:
    await submit(dispatcher, make_binary("broken"))
    job = await fetch_one(dispatcher)
    assert job is not None
    await dispatcher.publish("status", status(job, "error-exception"))
    (summary,) = await dispatcher.key_summaries()
    (failure,) = summary.recent_failures
    assert failure.job_id == job.dequeued
    (outcome,) = await dispatcher.reoffer([failure.job_id], by="dashboard")
    assert outcome.ok
    again = await fetch_one(dispatcher)
    assert again is not None
    assert again.entity.sha256 == job.entity.sha256


async def test_the_embedded_log_is_a_cluster_of_one(
    dispatcher: Dispatcher, event_log: EmbeddedLog
) -> None:
    await submit(dispatcher, make_binary("a"))
    view = await dispatcher.cluster()
    (member,) = view.members
    assert member.this
    assert member.instance == view.instance == event_log.instance
    assert member.partitions == len(await event_log.partitions(lambda topic: True))
    assert member.topics["azul.test.samples.binary.sourced"] == [0]
    assert (view.shared, view.problem, view.rebalances) == (False, "", 0)
    assert view.leases_handed_over == {"given": 0, "taken": 0}
    assert view.recent == []
    metrics = dispatcher.metrics.render().decode()
    assert "\nazuld_cluster_members 1.0\n" in metrics
    assert f"\nazuld_partitions_owned {float(member.partitions)}\n" in metrics
    assert msgspec.json.decode(msgspec.json.encode(view))["members"][0]["this"] is True
