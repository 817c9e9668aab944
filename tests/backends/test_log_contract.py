"""The EventLog contract, run unchanged on the embedded log and on Kafka."""

from __future__ import annotations

import time
from contextlib import aclosing

import trio

from azuld.core.cursor import Commit, TopicPartition
from azuld.core.keys import binary_topic, system_topic
from azuld.core.publish import Outgoing
from azuld.ports import EventLog


def records(topic: str, *values: str, key: str = "k") -> list[Outgoing]:
    return [
        Outgoing(topic, f"{key}-{i}" if key == "each" else key, v.encode())
        for i, v in enumerate(values)
    ]


async def read_all(log: EventLog, tp: TopicPartition) -> list[tuple[int, bytes]]:
    """Every record up to the end this instance knows (on Kafka, a read at the live edge may
    come back empty until the tail has read what an append just stored)."""
    with trio.fail_after(20):
        out: list[tuple[int, bytes]] = []
        while (offset := out[-1][0] + 1 if out else 0) < log.known_end(tp):
            batch = await log.read(tp, offset, 100)
            out.extend(batch)
            if not batch:
                await trio.sleep(0.01)
        assert await log.read(tp, log.known_end(tp), 100) == []
        return out


async def test_append_then_read_in_order(event_log: EventLog, topic_prefix: str) -> None:
    topic = binary_topic(topic_prefix, "samples", "sourced")
    await event_log.append(records(topic, "a", "b", "c"))
    tp = TopicPartition(topic, 0)
    assert await read_all(event_log, tp) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert (await event_log.offsets([tp]))[tp] == (0, 3)
    assert await event_log.read(tp, 3, 10) == []
    assert await event_log.read(tp, 1, 1) == [(1, b"b")]


async def test_partitions_and_owned_partitions(event_log: EventLog, topic_prefix: str) -> None:
    topic = binary_topic(topic_prefix, "multi", "sourced")
    await event_log.append(records(topic, "x"))
    expected = [TopicPartition(topic, p) for p in range(3)]
    assert await event_log.partitions(topic.__eq__, owned=False) == expected
    with trio.fail_after(20):  # Kafka assigns a new topic's partitions after a metadata refresh
        while await event_log.partitions(topic.__eq__) != expected:
            await trio.sleep(0.1)


async def test_same_key_same_partition(event_log: EventLog, topic_prefix: str) -> None:
    topic = binary_topic(topic_prefix, "multi", "sourced")
    await event_log.append(records(topic, *"abcdef", key="same"))
    await event_log.append(records(topic, *"ghijkl", key="each"))
    tps = await event_log.partitions(topic.__eq__, owned=False)
    per_partition = {tp: await read_all(event_log, tp) for tp in tps}
    holding_same = [
        tp for tp, got in per_partition.items() if {v for _, v in got} >= set(b"abcdef".split())
    ]
    values = sorted(v for got in per_partition.values() for _, v in got)
    assert values == sorted(c.encode() for c in "abcdefghijkl")
    assert sum(1 for got in per_partition.values() if b"a" in {v for _, v in got}) == 1
    same_tp = next(tp for tp, got in per_partition.items() if b"a" in {v for _, v in got})
    assert {c.encode() for c in "abcdef"} <= {v for _, v in per_partition[same_tp]}
    assert holding_same == [] or holding_same == [same_tp]


async def test_commits_round_trip_with_metadata(event_log: EventLog, topic_prefix: str) -> None:
    topic = binary_topic(topic_prefix, "multi", "sourced")
    await event_log.append(records(topic, "x"))
    group = f"{topic_prefix}-azul-P-1-binary-allsrc-alltype-LH-historic"
    assert await event_log.committed(group) == {}
    commits = {
        TopicPartition(topic, 0): Commit(5, frozenset({7, 8, 12}), stop=40),
        TopicPartition(topic, 2): Commit(0),
    }
    await event_log.commit({group: commits})
    assert await event_log.committed(group) == commits
    await event_log.commit({group: {TopicPartition(topic, 0): Commit(9)}})
    assert (await event_log.committed(group))[TopicPartition(topic, 0)] == Commit(9)


async def test_a_commit_of_the_largest_window_is_stored(
    event_log: EventLog, topic_prefix: str
) -> None:
    # Every other offset of a 20,000-offset window (dispatch.window's maximum) finished: Kafka
    # stores it (its commit metadata is limited to 4 KiB) and gives it back whole.
    topic = binary_topic(topic_prefix, "wide", "sourced")
    await event_log.append(records(topic, "x"))
    group = f"{topic_prefix}-azul-W-1-binary-allsrc-alltype-LH-live"
    commit = Commit(100, frozenset(range(101, 100 + 20_000, 2)), handed_out=100 + 20_000)
    await event_log.commit({group: {TopicPartition(topic, 0): commit}})
    assert await event_log.committed(group) == {TopicPartition(topic, 0): commit}


async def test_one_commit_call_stores_several_groups(
    event_log: EventLog, topic_prefix: str
) -> None:
    topic = binary_topic(topic_prefix, "samples", "sourced")
    await event_log.append(records(topic, "x"))
    tp = TopicPartition(topic, 0)
    live = f"{topic_prefix}-azul-P-1-binary-allsrc-alltype-LH-live"
    historic = f"{topic_prefix}-azul-P-1-binary-allsrc-alltype-LH-historic"
    await event_log.commit({live: {tp: Commit(1)}, historic: {tp: Commit(0, stop=1)}})
    assert await event_log.committed(live) == {tp: Commit(1)}
    assert await event_log.committed(historic) == {tp: Commit(0, stop=1)}


async def test_concurrent_commits_of_a_group_keep_the_furthest(
    event_log: EventLog, topic_prefix: str
) -> None:
    # A fleet of workers finishing jobs of one key, each committing the position it computed,
    # in that order: every commit returns once stored, the last (furthest) one is what stays,
    # and on Kafka they share round trips.
    topic = binary_topic(topic_prefix, "samples", "sourced")
    await event_log.append(records(topic, "x"))
    tp = TopicPartition(topic, 0)
    group = f"{topic_prefix}-azul-P-1-binary-allsrc-alltype-LH-live"
    requests_before = getattr(event_log, "commit_requests", 0)
    returned: list[int] = []
    turns = [trio.Event() for _ in range(18)]
    turns[1].set()

    async def finish(offset: int) -> None:
        await turns[offset].wait()
        turns[offset + 1].set()  # the next caller runs once this one is inside `commit`
        await event_log.commit({group: {tp: Commit(offset, frozenset({offset + 2}))}})
        returned.append(offset)

    async with trio.open_nursery() as nursery:
        for offset in range(1, 17):
            nursery.start_soon(finish, offset)
    assert sorted(returned) == list(range(1, 17))
    assert await event_log.committed(group) == {tp: Commit(16, frozenset({18}))}
    if hasattr(event_log, "commit_requests"):  # Kafka: 16 commits, far fewer requests
        assert event_log.commit_requests - requests_before <= 4


async def test_concurrent_appends_keep_each_callers_order(
    event_log: EventLog, topic_prefix: str
) -> None:
    # Sixteen count=1 posts and one of 300 records over three partitions, all at once: each
    # caller's records stay in its order on their partitions, and on Kafka they share rounds.
    topic = binary_topic(topic_prefix, "multi", "sourced")
    rounds_before = getattr(getattr(event_log, "rounds", None), "rounds", 0)

    async def post(name: str, count: int) -> None:
        await event_log.append(
            [Outgoing(topic, f"{name}-{i % 5}", f"{name}:{i}".encode()) for i in range(count)]
        )

    async with trio.open_nursery() as nursery:
        for worker in range(16):
            nursery.start_soon(post, f"w{worker}", 2)
        nursery.start_soon(post, "big", 300)
    tps = await event_log.partitions(topic.__eq__, owned=False)
    seen: dict[str, list[int]] = {}
    for tp in tps:
        stored = await read_all(event_log, tp)
        assert event_log.known_end(tp) == (stored[-1][0] + 1 if stored else 0)
        for _, value in stored:
            name, index = value.decode().split(":")
            seen.setdefault(name, []).append(int(index))
    assert sorted(seen) == sorted([*(f"w{w}" for w in range(16)), "big"])
    assert all(sorted(indexes) == list(range(len(indexes))) for indexes in seen.values())
    assert sum(len(indexes) for indexes in seen.values()) == 16 * 2 + 300
    if hasattr(event_log, "rounds"):  # Kafka: 17 appends, a few produce rounds
        assert event_log.rounds.rounds - rounds_before <= 4


async def test_an_append_larger_than_a_batch(event_log: EventLog, topic_prefix: str) -> None:
    # Three records of 600 KB on one partition need three record batches on Kafka (1 MB each
    # at most): one append, stored in order.
    topic = binary_topic(topic_prefix, "samples", "sourced")
    values = [bytes([65 + i]) * 600_000 for i in range(3)]
    await event_log.append([Outgoing(topic, "k", v) for v in values])
    tp = TopicPartition(topic, 0)
    assert [v for _, v in await read_all(event_log, tp)] == values
    assert event_log.known_end(tp) == 3


async def test_known_end_follows_appends(event_log: EventLog, topic_prefix: str) -> None:
    topic = binary_topic(topic_prefix, "samples", "sourced")
    tp = TopicPartition(topic, 0)
    assert event_log.known_end(tp) == 0
    await event_log.append(records(topic, "a", "b"))
    assert event_log.known_end(tp) == 2
    assert event_log.known_end(tp) == (await event_log.offsets([tp]))[tp][1]
    assert await event_log.read(tp, event_log.known_end(tp), 10) == []


async def test_first_registration_wins(event_log: EventLog, topic_prefix: str) -> None:
    topic = binary_topic(topic_prefix, "samples", "sourced")
    await event_log.append(records(topic, "x"))  # Kafka refuses commits for unknown topics
    tp = TopicPartition(topic, 0)
    first = {"g-live": {tp: Commit(3)}}
    second = {"g-live": {tp: Commit(9)}}
    assert await event_log.register_consumer("P-1-binary", b'{"name":"P"}', first) == first
    assert await event_log.register_consumer("P-1-binary", b'{"name":"P"}', second) == first
    assert (await event_log.consumers())["P-1-binary"] == b'{"name":"P"}'
    await event_log.commit({"g-live": {tp: Commit(4)}})
    await event_log.forget_consumer("P-1-binary", ["g-live"])
    assert "P-1-binary" not in await event_log.consumers()
    assert await event_log.committed("g-live") == {}
    assert await event_log.register_consumer("P-1-binary", b"{}", second) == second


async def test_follow_sees_only_new_values(event_log: EventLog, topic_prefix: str) -> None:
    topic = system_topic(topic_prefix, "status")
    await event_log.append(records(topic, "before"))
    seen: list[bytes] = []

    async def follow() -> None:
        async with aclosing(event_log.follow(topic)) as values:
            async for value in values:
                seen.append(value)
                if len(seen) == 2:
                    return

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.sleep(0.5)
            await event_log.append(records(topic, "after-1"))
            await event_log.append(records(topic, "after-2"))
    assert seen == [b"after-1", b"after-2"]


async def test_append_wakes_waiters(event_log: EventLog, topic_prefix: str) -> None:
    generation = event_log.generation
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(event_log.wait_for_change, generation)
            await trio.sleep(0.1)
            await event_log.append(records(binary_topic(topic_prefix, "samples", "sourced"), "v"))
    assert event_log.generation != generation


async def test_health_is_ok(event_log: EventLog) -> None:
    assert await event_log.health() is None


async def test_shared_says_whether_other_instances_append(
    event_log: EventLog, backend: str
) -> None:
    # Kafka: other azuld instances post statuses there; the embedded log has one writer.
    assert event_log.shared is (backend == "kafka")


async def test_latest_values_keeps_the_newest_per_key(
    event_log: EventLog, topic_prefix: str
) -> None:
    topic = system_topic(topic_prefix, "handover")
    assert await event_log.latest_values(topic) == {}
    await event_log.append(
        [Outgoing(topic, "a", b"1"), Outgoing(topic, "b", b"2"), Outgoing(topic, "a", b"3")]
    )
    # Read your writes: what was appended before the call is in the answer.
    assert await event_log.latest_values(topic) == {"a": b"3", "b": b"2"}


async def test_offsets_at_find_what_was_appended_since(
    event_log: EventLog, topic_prefix: str
) -> None:
    topic = system_topic(topic_prefix, "status")
    await event_log.append(records(topic, "old", key="each"))
    tps = await event_log.partitions(topic.__eq__, owned=False)
    since = time.time()
    await trio.sleep(0.05)
    await event_log.append(records(topic, "new-1", "new-2", key="each"))
    starts = await event_log.offsets_at(tps, since)
    found = set()
    for tp in tps:
        offset = starts[tp]
        while batch := await event_log.read(tp, offset, 100):
            found.update(value for _, value in batch)
            offset = batch[-1][0] + 1
    # At or before the first record since (the embedded log marks time once a minute).
    assert {b"new-1", b"new-2"} <= found
    later = await event_log.offsets_at(tps, time.time() + 3600)
    for tp, (start, end) in (await event_log.offsets(tps)).items():
        assert start <= later[tp] <= end
