"""azuld's topics on Kafka: creating those missing, and learning their partition counts.
Both are asyncio coroutines, for one bridge call each (`KafkaLog._call`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import suppress

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from azuld.topics import TopicSpec

__all__ = ["create_topics", "describe_topics"]


async def create_topics(
    admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec], replication_factor: int
) -> list[str]:
    """(asyncio) Create the topics of `specs` that do not exist (others are left as they are;
    one another instance creates meanwhile too); returns the names created here."""
    existing = set(await admin.list_topics())
    new = [
        NewTopic(
            s.name,
            s.partitions,
            replication_factor,
            topic_configs={"retention.ms": str(s.retention_ms), "cleanup.policy": s.cleanup_policy},
        )
        for s in specs
        if s.name not in existing
    ]
    if new:
        with suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
    return [t.name for t in new]


async def describe_topics(admin: AIOKafkaAdminClient, pattern: re.Pattern[str]) -> dict[str, int]:
    """(asyncio) The partition count of every topic whose name `pattern` matches (from the
    metadata of every topic: a consumer's client only tracks the topics it reads)."""
    cluster = await admin._client.fetch_all_metadata()
    found = {}
    for topic in cluster.topics():
        if pattern.match(topic):
            partitions = cluster.partitions_for_topic(topic) or set()
            if partitions:
                found[topic] = len(partitions)
    return found
