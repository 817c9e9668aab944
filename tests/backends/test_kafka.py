"""What only the Kafka log does: share partitions between instances and hand work over when they
move. Two logs in one process form the instances' group on the suite's real broker."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import trio
import trio_asyncio

from azuld.backends.kafka import KafkaLog, open_kafka_log
from azuld.core.cursor import TopicPartition
from azuld.core.keys import binary_topic, system_topic
from azuld.core.publish import Outgoing
from tests.backends.conftest import kafka_settings
from tests.services import KafkaBroker


@asynccontextmanager
async def instance(broker: KafkaBroker, prefix: str) -> AsyncIterator[KafkaLog]:
    async with open_kafka_log(kafka_settings(broker.bootstrap, prefix)) as kafka:
        with trio.fail_after(30):
            while await kafka.health():
                await trio.sleep(0.1)
        yield kafka


async def topics(log: KafkaLog) -> set[str]:
    return {tp.topic for tp in await log.partitions(lambda topic: True, owned=False)}


def dispatched(log: KafkaLog, prefix: str) -> set[TopicPartition]:
    """The partitions of the configured source's topics this instance owns."""
    return {tp for tp in log.ownership.owned if tp.topic.startswith(f"azul.{prefix}.multi.")}


async def test_a_second_instance_takes_partitions_after_they_are_handed_over(
    kafka_broker: KafkaBroker,
) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    handover = system_topic(prefix, "handover")
    async with trio_asyncio.open_loop(), instance(kafka_broker, prefix) as first:
        with trio.fail_after(30):  # five topics of three partitions, all here
            while len(before := dispatched(first, prefix)) < 15:
                await trio.sleep(0.1)
        calls: list[tuple[frozenset[TopicPartition], set[TopicPartition]]] = []

        async def hand_over(lost: frozenset[TopicPartition]) -> None:
            calls.append((lost, set(first.ownership.owned)))
            await first.append([Outgoing(handover, "work", b"handed over by the first")])

        first.on_revoke(hand_over)
        async with instance(kafka_broker, prefix) as second:
            with trio.fail_after(30):
                while not dispatched(second, prefix) or dispatched(first, prefix) == before:
                    await trio.sleep(0.1)
            kept, taken = dispatched(first, prefix), dispatched(second, prefix)
            # Revoked while still owned: the hook ran before the partitions moved.
            lost, owned_then = calls[0]
            assert lost <= owned_then
            assert kept.isdisjoint(taken)
            assert kept | taken == before
            assert kept
            assert taken
            # The new owner sees what was handed over before it was given the partitions.
            assert (await second.latest_values(handover))["work"] == b"handed over by the first"
            # azuld's own bookkeeping topics are read whole by every instance, owned by none.
            internal = {system_topic(prefix, name) for name in ("handover", "replay", "consumers")}
            assert not {tp.topic for tp in first.ownership.owned | second.ownership.owned} & (
                internal
            )
            # Either instance describes the group: both members, each with what it owns.
            seen = await second.membership()
            assert seen.instance == second.instance
            assert seen.rebalances == second.ownership.rebalances
            owned = {member.instance: set(member.partitions) for member in seen.members}
            assert owned == {
                first.instance: first.ownership.owned,
                second.instance: second.ownership.owned,
            }
            assert {member.host for member in seen.members} == {"127.0.0.1"}
            assert (await first.membership()).members == seen.members


async def test_azulds_own_topics_exist_from_the_start_and_a_new_source_at_once(
    kafka_broker: KafkaBroker,
) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    async with trio_asyncio.open_loop(), instance(kafka_broker, prefix) as kafka:
        rebalances = kafka.ownership.rebalances
        for name in ("replay", "reoffer", "handover", "status", "plugin", "expedite"):
            assert system_topic(prefix, name) in await topics(kafka)
        await kafka.append([Outgoing(system_topic(prefix, "replay"), "k", b"entry")])
        await kafka.append([Outgoing(system_topic(prefix, "reoffer"), "k", b"offer")])
        await kafka.append([Outgoing(binary_topic(prefix, "late", "extracted"), "k", b"child")])
        for action in ("sourced", "extracted", "augmented", "enriched", "mapped"):
            assert binary_topic(prefix, "late", action) in await topics(kafka)
        # No rebalance for azuld's own topics; at most one (in progress) for the new source.
        await trio.sleep(3)
        assert kafka.ownership.rebalances <= rebalances + 1


async def test_caught_up_means_what_other_instances_stored_has_been_followed(
    kafka_broker: KafkaBroker,
) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    topic = system_topic(prefix, "status")
    async with (
        trio_asyncio.open_loop(),
        instance(kafka_broker, prefix) as first,
        instance(kafka_broker, prefix) as second,
    ):
        if True:
            seen: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def follow() -> None:
                    async with aclosing(second.follow(topic)) as values:
                        async for value in values:
                            seen.append(value)

                nursery.start_soon(follow)
                await trio.sleep(0.2)
                for round_ in range(3):
                    values = [f"{round_}-{i}".encode() for i in range(20)]
                    await first.append([Outgoing(topic, f"k{i}", v) for i, v in enumerate(values)])
                    with trio.fail_after(30):
                        await second.caught_up(topic)
                    assert set(values) <= set(seen), sorted(set(values) - set(seen))
                nursery.cancel_scope.cancel()


async def test_what_an_append_stored_is_read_at_the_live_edge_at_once(
    kafka_broker: KafkaBroker,
) -> None:
    # A poll waiting at the live edge is woken by the append itself, and takes what it stored
    # from the tail's cache before the tail has fetched it back from Kafka.
    prefix = f"t{secrets.token_hex(4)}"
    topic = binary_topic(prefix, "edge", "sourced")
    tp = TopicPartition(topic, 0)
    async with trio_asyncio.open_loop(), instance(kafka_broker, prefix) as kafka:
        await kafka.append([Outgoing(topic, "k", b"first")])
        with trio.fail_after(20):  # the tail has read the first one
            while not await kafka.read(tp, 0, 10):
                await trio.sleep(0.05)
        values = [f"v{i}".encode() for i in range(50)]
        await kafka.append([Outgoing(topic, "k", v) for v in values])
        assert [v for _, v in await kafka.read(tp, 1, 100)] == values
        # Another instance's record in between: what follows it waits for the tail.
        async with instance(kafka_broker, prefix) as other:
            await other.append([Outgoing(topic, "k", b"theirs")])
            await kafka.append([Outgoing(topic, "k", b"mine")])
            with trio.fail_after(20):
                while len(got := await kafka.read(tp, 51, 10)) < 2:
                    await trio.sleep(0.05)
            assert [v for _, v in got] == [b"theirs", b"mine"]
