"""Exactly once per plugin key: a job's final status is stored once, multiplugin statuses do not end
the job, leases are handed over with their partitions, a partition taken over finishes what other
instances stored, and a lease counts from the answer that carries it."""

from __future__ import annotations

import msgspec
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.core.delivery import JobRef
from azuld.core.finished import MAIN
from azuld.core.keys import system_topic
from azuld.core.posts import prepare_post
from azuld.dispatch import Dispatcher
from azuld.models.events import Author, BinaryEvent, StatusEntity, StatusEvent
from azuld.settings import DispatchSettings
from tests.conftest import NOW, make_binary
from tests.dispatch.conftest import LEASE, decode, fetch_one, params, status, submit


async def stored_statuses(log: EmbeddedLog, prefix: str = "test") -> list[StatusEvent]:
    topic = system_topic(prefix, "status")
    found: list[StatusEvent] = []
    for tp in await log.partitions(topic.__eq__, owned=False):
        for _, value in await log.read(tp, 0, 10_000):
            found.append(msgspec.json.decode(value, type=StatusEvent))
    return found


def ref_of(dispatcher: Dispatcher, job: BinaryEvent) -> JobRef:
    parsed = dispatcher.ids.parse(job.dequeued)
    assert parsed is not None
    return parsed[0]


async def test_a_final_status_posted_again_is_answered_not_stored(
    dispatcher: Dispatcher, event_log: EmbeddedLog
) -> None:
    parent, other = make_binary("archive"), make_binary("other")
    await submit(dispatcher, parent, other)
    job = await fetch_one(dispatcher)
    assert job is not None
    child = make_binary("member", action="extracted")
    first = await dispatcher.publish("status", status(job, "completed", results=[child]))
    again = await dispatcher.publish("status", status(job, "completed", results=[child]))
    late_error = await dispatcher.publish("status", status(job, "error-exception"))
    # Every post is answered as accepted (a plugin must not retry it) ...
    assert first.total_ok == again.total_ok == late_error.total_ok == 1
    # ... but the job's status, and the child it brought, are stored once.
    statuses = [s for s in await stored_statuses(event_log) if s.entity.input.dequeued]
    assert [s.entity.status for s in statuses] == ["completed"]
    children = decode(await dispatcher.fetch(params("Q", r_action=["extracted"], count="5")))
    assert [c.entity.sha256 for c in children] == [child.entity.sha256]
    assert dispatcher.metrics.not_stored.labels("P")._value.get() == 2
    # The other job is untouched.
    assert (await fetch_one(dispatcher)) is not None


async def test_concurrent_posts_of_one_final_status_store_it_once(
    dispatcher: Dispatcher, event_log: EmbeddedLog
) -> None:
    await submit(dispatcher, make_binary("a"))
    job = await fetch_one(dispatcher)
    assert job is not None
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(dispatcher.publish, "status", status(job, "completed"))
    statuses = [s for s in await stored_statuses(event_log) if s.entity.input.dequeued]
    assert len(statuses) == 1


async def test_multiplugin_statuses_are_stored_once_and_do_not_end_the_job(
    dispatcher: Dispatcher, event_log: EmbeddedLog, autojump_clock: trio.testing.MockClock
) -> None:
    # A runner plugin with multiplugins: each posts its results under its own name, then the
    # plugin's own status ends the job.
    await submit(dispatcher, make_binary("archive"))
    job = await fetch_one(dispatcher, name="Unbox")
    assert job is not None
    member = make_binary("member", action="extracted")
    await dispatcher.publish(
        "status", status(job, "completed", author="Unbox-sevenzip", results=[member])
    )
    await dispatcher.publish("status", status(job, "opt-out", author="Unbox-rar"))
    (ks,) = dispatcher.keys()
    assert ks.lanes.leased == 1  # still the plugin's: its own status has not come
    # A runner that retries posts the multiplugin's status again: stored once.
    await dispatcher.publish(
        "status", status(job, "completed", author="Unbox-sevenzip", results=[member])
    )
    await dispatcher.publish("status", status(job, "completed-empty", author="Unbox"))
    assert ks.lanes.leased == 0
    assert ks.finished == {"completed": 1}
    assert ks.multiplugins == {"Unbox-sevenzip: completed": 1, "Unbox-rar: opt-out": 1}
    stored = [
        (s.author.name, s.entity.status)
        for s in await stored_statuses(event_log)
        if s.entity.input.dequeued
    ]
    assert stored == [
        ("Unbox-sevenzip", "completed"),
        ("Unbox-rar", "opt-out"),
        ("Unbox", "completed-empty"),
    ]
    # After the job ended, a late multiplugin status is not stored either.
    await dispatcher.publish("status", status(job, "completed", author="Unbox-zip"))
    assert len([s for s in await stored_statuses(event_log) if s.entity.input.dequeued]) == 3


async def test_statuses_stored_by_another_instance_are_remembered(
    dispatcher: Dispatcher, event_log: EmbeddedLog, nursery: trio.Nursery
) -> None:
    # The status follower runs on shared logs; here it follows what a second dispatcher on the
    # same log stores, as an instance follows the others on Kafka.
    nursery.start_soon(dispatcher.statuses.follow)
    await submit(dispatcher, make_binary("a"))
    job = await fetch_one(dispatcher)
    assert job is not None
    other = Dispatcher(event_log, dispatcher.settings, "test")
    other.ids.secret = dispatcher.ids.secret  # instances of one log share it
    await other.publish("status", status(job, "completed"))
    with trio.fail_after(10):
        while not dispatcher.registry.finished.seen(ref_of(dispatcher, job), MAIN):
            await trio.sleep(0.01)
    (ks,) = dispatcher.keys()
    assert ks.lanes.leased == 0  # and the job held here is finished
    # The job's status posted here now is answered, not stored again.
    await dispatcher.publish("status", status(job, "completed"))
    assert len([s for s in await stored_statuses(event_log) if s.entity.input.dequeued]) == 1


async def test_leases_are_handed_over_with_their_partitions(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Two instances of one log: the first gives its partitions up (as a Kafka rebalance asks);
    # the second takes them with the first's leases, which run on there.
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=8)
    first = Dispatcher(event_log, settings, "test")
    await nursery.start(first.run)
    await submit(first, *(make_binary(f"f{i}") for i in range(4)))
    jobs = decode(await first.fetch(params(count="3")))
    assert len(jobs) == 3
    await first.publish("status", status(jobs[0], "completed"))
    states = first.registry.states.values()
    tps = {tp for ks in states for cursors in ks.lanes.cursors.values() for tp in cursors}
    await first.registry.hand_over(frozenset(tps))
    assert not any(cursors for ks in states for cursors in ks.lanes.cursors.values())

    second = Dispatcher(event_log, settings, "test")
    await nursery.start(second.run)
    # The leased jobs are not offered again; the one nobody had comes.
    assert [j.entity.sha256 for j in decode(await second.fetch(params(count="5")))] == [
        make_binary("f3").entity.sha256
    ]
    (ks,) = second.keys()
    assert ks.lanes.leased == 3  # two handed over, one handed out here
    # A plugin of the first instance finishes its job through the second.
    await second.publish("status", status(jobs[1], "completed"))
    assert ks.lanes.leased == 2
    # The last handed-over lease runs out there (with the one handed out here): offered again
    # as a new attempt.
    await trio.sleep(LEASE + 1)
    again = {j.entity.sha256: j.dequeued for j in decode(await second.fetch(params(count="5")))}
    assert again.keys() == {jobs[2].entity.sha256, make_binary("f3").entity.sha256}
    assert again[jobs[2].entity.sha256].split("|")[6] == "1"
    assert second.metrics.handed_over.labels("taken")._value.get() == 2


async def test_a_partition_taken_over_skips_what_others_finished(
    dispatcher: Dispatcher, event_log: EmbeddedLog
) -> None:
    # An instance that died stored a job's status but not the commit that covers it: the next
    # owner knows the status (it followed the status topic) and does not offer the job again.
    await submit(dispatcher, make_binary("a"), make_binary("b"))
    a = await fetch_one(dispatcher, name="Gone")
    assert a is not None
    ref = ref_of(dispatcher, a)
    other = Dispatcher(event_log, dispatcher.settings, "test")
    other.ids.secret = dispatcher.ids.secret  # instances of one log share it
    other.registry.finished.add(ref, MAIN, trio.current_time())  # what it followed
    got = decode(await other.fetch(params("Gone", count="5")))
    assert [j.entity.sha256 for j in got] == [make_binary("b").entity.sha256]


async def test_a_lease_counts_from_the_answer_that_carries_it(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    # A fetch for two jobs takes the first at once and waits for a second until its deadline:
    # the plugin gets the first only then, and must get its whole lease.
    await submit(dispatcher, make_binary("a"))
    started = trio.current_time()
    got = decode(await dispatcher.fetch(params(count="2", deadline=str(int(LEASE) + 10))))
    assert len(got) == 1
    answered = trio.current_time()
    assert answered - started >= LEASE + 10
    await dispatcher.expire_leases(answered + LEASE - 1)
    (ks,) = dispatcher.keys()
    assert ks.lanes.leased == 1
    await dispatcher.expire_leases(answered + LEASE + 1)
    assert ks.lanes.leased == 0


async def test_the_dispatchers_own_error_timeout_yields_to_a_status_stored_elsewhere(
    dispatcher: Dispatcher, event_log: EmbeddedLog, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, make_binary("a"))
    job = await fetch_one(dispatcher)
    assert job is not None
    dispatcher.registry.finished.add(ref_of(dispatcher, job), MAIN, trio.current_time())
    for _ in range(3):
        await dispatcher.expire_leases(trio.current_time() + 10 * LEASE)
        await fetch_one(dispatcher)
    statuses = [s for s in await stored_statuses(event_log) if s.entity.input.dequeued]
    assert statuses == []


async def test_heartbeats_and_other_dispatchers_ids_are_always_stored(
    dispatcher: Dispatcher, event_log: EmbeddedLog
) -> None:
    await submit(dispatcher, make_binary("a"))
    job = await fetch_one(dispatcher)
    assert job is not None
    for _ in range(2):
        await dispatcher.publish("status", status(job, "heartbeat"))
    foreign = msgspec.structs.replace(job, dequeued="a5f3c6a0-go-style-id")
    for _ in range(2):
        await dispatcher.publish(
            "status",
            msgspec.json.encode(
                [
                    StatusEvent(
                        model_version=6,
                        timestamp=NOW,
                        author=Author(name="P", version="1"),
                        entity=StatusEntity(input=foreign, status="completed"),
                    )
                ]
            ),
        )
    kinds = [s.entity.status for s in await stored_statuses(event_log)]
    assert kinds.count("heartbeat") == 2
    assert kinds.count("completed") == 2


async def test_a_status_stored_before_a_crash_is_not_stored_again_after_it(
    event_log: EmbeddedLog, nursery: trio.Nursery
) -> None:
    # The daemon stored a job's status and was killed before its commit (and before its answer):
    # the plugin posts again after the restart. Restarted, the daemon remembers what was stored
    # lately, so the status is stored once and the job is not offered again.
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=8)
    first = Dispatcher(event_log, settings, "test")
    await nursery.start(first.run)
    await submit(first, make_binary("a"), make_binary("b"))
    job = await fetch_one(first)
    assert job is not None
    post = prepare_post("status", status(job, "completed"), prefix="test", max_events=10)
    await event_log.append(post.records)  # stored; then the kill: no commit, no answer

    restarted = Dispatcher(event_log, settings, "test")
    restarted.ids.secret = first.ids.secret
    await nursery.start(restarted.run)
    await restarted.publish("status", status(job, "completed"))  # the plugin posts again
    assert len([s for s in await stored_statuses(event_log) if s.entity.input.dequeued]) == 1
    got = decode(await restarted.fetch(params(count="5")))
    assert [j.entity.sha256 for j in got] == [make_binary("b").entity.sha256]


async def test_only_a_job_handed_out_here_since_the_takeover_is_a_sure_report(
    dispatcher: Dispatcher, event_log: EmbeddedLog
) -> None:
    await submit(dispatcher, make_binary("a"))
    job = await fetch_one(dispatcher)
    assert job is not None
    ref, attempt = dispatcher.ids.parse(job.dequeued)  # type: ignore[misc]
    (ks,) = dispatcher.keys()
    assert ks.lanes.sure_report(ref, attempt)
    assert not ks.lanes.sure_report(ref, attempt + 1)  # another attempt's
    # The same partition assigned from a commit (a takeover): what lies below its end then may
    # be another owner's plugin's too.
    ks.lanes.suspect(ref.lane, ref.tp, ref.offset + 1)
    assert not ks.lanes.sure_report(ref, attempt)
