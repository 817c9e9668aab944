"""What the tail (`KafkaLog`'s tail consumer) has read, and what it feeds.

* How far it has read each partition (`Tables.read_to`: read your writes, `caught_up`).
* What every instance reads whole, from the start: the registry of plugin keys
  (`system.consumers`: a key's first registration wins, so every instance starts the key from the
  same snapshot; it also keeps `EventLog.first_value`s, under keys no plugin key can have) and the
  table topics (`system.handover`: the newest value per key).
* The followers of topics (`Followers`: `EventLog.follow`), each fed every value from its start,
  with a count of those it has not handled yet (`caught_up` waits for none).

No I/O here: the tail hands each batch over (`take`, `feed`), and waiters are woken as it moves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import trio

from azuld.core.cursor import Snapshot, TopicPartition, decode_snapshot

__all__ = ["KEPT_PREFIX", "Follower", "Followers", "Tables"]

log = logging.getLogger("azuld.backends.kafka")

# Registry keys of `first_value`s: a ':' no plugin key can contain.
KEPT_PREFIX = "azuld:"
# A follower takes up to this many values at a time (see `Followers.follow`).
FOLLOW_BURST = 512


class Tables:
    """How far the tail has read, and the registry and table topics as far as it has."""

    def __init__(self, registry_topic: str, table_topics: frozenset[str]) -> None:
        self.registry_topic = registry_topic
        self.table_topics = table_topics
        self.whole = table_topics | {registry_topic}  # the topics read from their start
        self.registry: dict[str, tuple[bytes, Snapshot]] = {}  # key -> (info, snapshot)
        self.kept: dict[str, bytes] = {}  # `first_value`s, by their registry key
        self.registry_position = 0
        self.values: dict[str, dict[str, bytes]] = {t: {} for t in table_topics}
        self._read_up_to: dict[TopicPartition, int] = {}  # where the tail has read each to
        self._moved = trio.Event()

    def started_at(self, positions: Mapping[TopicPartition, int]) -> None:
        """The tail starts these partitions there (their end): it has read them that far."""
        for tp, position in positions.items():
            self._read_up_to[tp] = max(self._read_up_to.get(tp, 0), position)

    def take(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        """Note what the tail read of `tp` (aiokafka's records, in order), applying the
        registry's and the tables' records."""
        if not messages:
            return
        if tp.topic == self.registry_topic:
            for message in messages:
                self._register(message.key, message.value)
            self.registry_position = messages[-1].offset + 1
        elif tp.topic in self.table_topics:
            table = self.values[tp.topic]
            for message in messages:
                if message.key is not None:
                    table[message.key.decode()] = message.value or b""
        self._read_up_to[tp] = messages[-1].offset + 1
        self._moved.set()
        self._moved = trio.Event()

    def _register(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        record = json.loads(value)
        name = key.decode()
        if name.startswith(KEPT_PREFIX):
            self.kept.setdefault(name, record["value"].encode())  # the first wins
            return
        if record.get("deleted"):
            self.registry.pop(name, None)
        elif name not in self.registry:  # the first registration wins
            self.registry[name] = (record["info"].encode(), decode_snapshot(record["snapshot"]))

    async def registered(self, key: str) -> Snapshot:
        """The snapshot in force for `key`, once the tail has read its registration. Cancelled
        by the caller's deadline."""
        while key not in self.registry:
            await self._moved.wait()
        return self.registry[key][1]

    async def kept_value(self, name: str) -> bytes:
        """The first value kept under `name`, once the tail has read it. Cancelled by the
        caller's deadline."""
        while name not in self.kept:
            await self._moved.wait()
        return self.kept[name]

    async def read_to(self, ends: Mapping[TopicPartition, int]) -> None:
        """Wait until the tail has read the partitions to `ends`. Cancelled by the caller's
        deadline."""
        while any(self._read_up_to.get(tp, 0) < end for tp, end in ends.items()):
            await self._moved.wait()


class Follower:
    """One `follow()`: its channel, the end of each partition when it started, and how many
    values the tail sent it that it has not handled yet."""

    __slots__ = ("receive", "send", "starts", "unhandled")

    def __init__(self, buffer: int, starts: dict[TopicPartition, int]) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](buffer)
        self.starts = starts
        self.unhandled = 0


class Followers:
    """Every topic's followers, fed by the tail."""

    def __init__(self, buffer: int) -> None:
        self.buffer = buffer  # values a follower may have unhandled before the tail drops some
        self._by_topic: dict[str, list[Follower]] = {}
        self._done = trio.Event()  # set when a follower has handled all it was sent

    def add(self, topic: str, starts: dict[TopicPartition, int]) -> Follower:
        follower = Follower(self.buffer, starts)
        self._by_topic.setdefault(topic, []).append(follower)
        return follower

    def remove(self, topic: str, follower: Follower) -> None:
        """Off the list, then its channel closed (no checkpoint between: the tail never sends
        into a closed one)."""
        self._by_topic[topic].remove(follower)
        follower.receive.close()

    def of(self, topic: str) -> list[Follower]:
        return self._by_topic.get(topic, [])

    @staticmethod
    def feed(followers: list[Follower], tp: TopicPartition, offset: int, value: bytes) -> None:
        """Send a value the tail read to the followers that started before it."""
        for follower in followers:
            if offset < follower.starts.get(tp, 0):
                continue  # appended before the follower started
            try:
                follower.send.send_nowait(value)
                follower.unhandled += 1
            except trio.WouldBlock:
                log.warning("a follower of %s fell behind; value dropped", tp.topic)
            except trio.BrokenResourceError:
                pass  # a follower that stopped: it is being taken off the list

    def handled(self, follower: Follower) -> None:
        """The follower's consumer asked for the next value: it is done with the last one."""
        follower.unhandled -= 1
        if not follower.unhandled:
            self._done.set()
            self._done = trio.Event()

    async def follow(
        self, topic: str, ends: Mapping[TopicPartition, int]
    ) -> AsyncGenerator[bytes, None]:
        """`EventLog.follow`: what the tail reads of `topic` beyond `ends` (as they are when the
        first value is asked for), each counted handled when the next is asked for."""
        starts = {tp: end for tp, end in ends.items() if tp.topic == topic}
        follower = self.add(topic, starts)
        receive, handled = follower.receive, self.handled
        try:
            async for value in receive:
                yield value
                handled(follower)
                # What else has come, without a scheduler pass per value (a busy daemon gives a
                # task one pass per round of all its tasks: one value a pass fell behind the
                # tail and dropped values at count=100).
                for _ in range(FOLLOW_BURST):
                    try:
                        value = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    yield value
                    handled(follower)
        finally:
            self.remove(topic, follower)

    async def settled(self, topic: str) -> None:
        """Wait until every follower of `topic` has handled what it was sent. Cancelled by the
        caller's deadline."""
        while any(follower.unhandled for follower in self.of(topic)):
            await self._done.wait()
