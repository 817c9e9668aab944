"""Which instance owns which partitions: aiokafka's side of `core.assignment`.

Every instance is a member of one consumer group, `<prefix>-azul-dispatchers`, subscribed to every
azul topic with all partitions paused: Kafka's rebalancing decides which instance owns which
partitions, for every plugin key at once (`KafkaLog` in `kafka.py`). `EvenShares` is the group's
assignor (even per topic, sticky); `Ownership` tracks what this instance owns and hands work over
before partitions move.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import trio
import trio_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from azuld.core.assignment import Member, decode_claim, encode_claim, share_partitions
from azuld.core.cursor import TopicPartition
from azuld.ports import GroupMember, RevokeHook
from azuld.topics import INTERNAL_TOPICS

__all__ = [
    "HANDOVER_SECONDS",
    "MEMBERSHIP",
    "EvenShares",
    "Ownership",
    "dispatch_pattern",
    "group_members",
    "instances_group",
    "to_kafka",
    "to_ours",
]

log = logging.getLogger("azuld.backends.kafka")

# How long a rebalance waits for this instance to hand over the partitions it gives up. Kafka
# waits for every member to rejoin within the rebalance timeout, which is longer: a slow hand-over
# (a loaded machine) must not get its instance put out of the group, its leases unknown.
HANDOVER_SECONDS = 20.0
# The membership consumer's group timings: Kafka notices a dead instance within the session
# timeout; a rebalance waits for every member (and its hand-over) up to the rebalance timeout.
MEMBERSHIP = {
    "session_timeout_ms": 10_000,
    "rebalance_timeout_ms": 30_000,
    "heartbeat_interval_ms": 2_000,
}


def instances_group(prefix: str) -> str:
    """The consumer group every instance of the prefix is a member of."""
    return f"{prefix}-azul-dispatchers"


def dispatch_pattern(prefix: str) -> str:
    """The topics whose partitions the instances share out: every azul topic of the prefix
    except azuld's own bookkeeping, which every instance reads whole."""
    internal = "|".join(re.escape(t) for t in sorted(INTERNAL_TOPICS))
    return rf"^azul\.{re.escape(prefix)}\.(?!system\.(?:{internal})$)"


def to_ours(tp: KafkaTP) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def to_kafka(tp: TopicPartition) -> KafkaTP:
    return KafkaTP(tp.topic, tp.partition)


class EvenShares(AbstractPartitionAssignor):  # type: ignore[misc]
    """aiokafka's side of `core.assignment`: each member's claim (what it owns) travels as the
    user data of its membership; the leader shares every topic's partitions evenly, keeping them
    where they are when it can. aiokafka calls these as class methods, so the claim lives in
    class attributes: each log uses its own subclass (`for_one_log`)."""

    name = "azuld-even-sticky"
    version = 0
    owned: frozenset[TopicPartition] = frozenset()
    generation = -1

    @classmethod
    def for_one_log(cls) -> type[EvenShares]:
        return type("EvenShares", (cls,), {})

    @classmethod
    def metadata(cls, topics: Any) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            cls.version, sorted(topics), encode_claim(cls.generation, cls.owned)
        )

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        counts: dict[str, int] = {}
        for metadata in members.values():
            for topic in metadata.subscription:
                counts[topic] = len(cluster.partitions_for_topic(topic) or ())
        claims = {}
        for member_id, metadata in members.items():
            generation, owned = decode_claim(metadata.user_data)
            claims[member_id] = Member(frozenset(metadata.subscription), owned, generation)
        shares = share_partitions(counts, claims)
        assignments = {}
        for member_id, tps in shares.items():
            by_topic: dict[str, list[int]] = {}
            for tp in tps:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            assignments[member_id] = ConsumerProtocolMemberAssignment(
                cls.version, sorted(by_topic.items()), b""
            )
        return assignments

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        cls.owned = frozenset(to_ours(tp) for tp in assignment.partitions())


class Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tracks which partitions Kafka gave this instance; pauses them (it only holds them).

    Before partitions move (Kafka revokes every partition of every member at the start of a
    rebalance), the revoke hook hands their work over: the rebalance waits for it, so the
    partitions' next owner, assigned after every member rejoined, finds what was handed over.
    """

    def __init__(self, consumer: AIOKafkaConsumer, assignor: type[EvenShares]) -> None:
        self.consumer = consumer
        self.assignor = assignor
        self.owned: set[TopicPartition] = set()
        self.version = 0
        self.assigned_once = False
        self.hook: RevokeHook | None = None
        self.rebalances = 0

    async def on_partitions_revoked(self, revoked: Any) -> None:
        lost = frozenset(to_ours(tp) for tp in revoked)
        if lost and self.hook is not None:
            try:
                await trio_asyncio.trio_as_aio(self._hand_over)(self.hook, lost)
            except Exception:  # the partitions move anyway; their next owner re-offers
                log.exception("handing over %d partitions failed", len(lost))
        self.owned -= lost
        self.rebalances += 1
        self.version += 1

    @staticmethod
    async def _hand_over(hook: RevokeHook, lost: frozenset[TopicPartition]) -> None:
        with trio.move_on_after(HANDOVER_SECONDS) as late:
            await hook(lost)
        if late.cancelled_caught:
            log.warning("handing over %d partitions took over %g s", len(lost), HANDOVER_SECONDS)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # The claim's generation: of two claims on one partition (a member that missed a
        # rebalance), the newer wins.
        self.assignor.generation = self.consumer._coordinator.generation
        self.consumer.pause(*assigned)
        self.owned |= {to_ours(tp) for tp in assigned}
        self.assigned_once = True
        self.version += 1


def group_members(described: Any) -> list[GroupMember]:
    """The members of a DescribeGroups reply's group: instance id (the client id), host, and the
    partitions the group's leader assigned each."""
    members = []
    for _, client_id, host, _, assigned in described:
        tps = ConsumerProtocolMemberAssignment.decode(assigned).partitions() if assigned else []
        members.append(
            GroupMember(
                client_id.removeprefix("azuld-"),
                host.lstrip("/"),
                tuple(sorted(TopicPartition(t, p) for t, p in tps)),
            )
        )
    return members
