"""The event log on Apache Kafka, through aiokafka under trio-asyncio.

Theory of operation
-------------------
Everything here talks asyncio to aiokafka through `trio_asyncio.aio_as_trio`, one bridge call
per operation (batches stay inside one asyncio coroutine), under the single `open_loop()` the
service opens, whose callbacks run in bursts (`kafka_loop.py`). The `kafka*.py` modules are the
only ones in azuld that touch asyncio.

The number of Kafka clients does not grow with the number of plugin keys. Per instance:

* a **producer** (acks=all: `append` returns once Kafka acknowledged, so a status is durable
  before the plugin hears 200), sending the appends of every caller in rounds of one batch per
  partition, partitions chosen as Go does (`kafka_produce.py`);
* an **admin client**: topics, metadata, and the plugin keys' commits, written under the standard
  group names without consumers (`kafka_commits.py`);
* a **membership consumer** in the group `<prefix>-azul-dispatchers`, subscribed to every azul
  topic with all partitions paused: Kafka's rebalancing decides which instance owns which
  partitions, for every plugin key at once (`kafka_members.py`). When an instance dies, the
  others take over its partitions and restart from the commits;
* a **tail consumer** (no group) on every partition from the end: it learns new offsets (to wake
  long-polls), keeps the last `tail_cache_records` records of each partition so that readers
  at the live edge need no fetch of their own, feeds `follow()` (the status topic), and reads
  the registry of plugin keys and the hand-over table from their start (`kafka_tables.py`);
* a **reader consumer** (no group) for random access behind the live edge (historic lanes,
  catching up): it seeks to the asked offset with every other partition paused, and what the
  fetch brought beyond the read is kept for the reads after it (`kafka_reads.py`).

Kafka outages: aiokafka reconnects by itself. Calls fail with `UpstreamError` meanwhile (HTTP 503
for posts, `ready: false` for fetches), and `health()` names the problem until a metadata
refresh succeeds again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
import trio_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from azuld.backends.kafka_commits import GroupCommits
from azuld.backends.kafka_loop import run_in_bursts
from azuld.backends.kafka_members import (
    MEMBERSHIP,
    EvenShares,
    Ownership,
    dispatch_pattern,
    group_members,
    instances_group,
    to_kafka,
    to_ours,
)
from azuld.backends.kafka_produce import BATCH_BYTES, RoundProducer
from azuld.backends.kafka_reads import READ_FETCH_BYTES, Reader
from azuld.backends.kafka_tables import KEPT_PREFIX, Followers, Tables
from azuld.backends.kafka_topics import create_topics, describe_topics
from azuld.core.cursor import Commit, Snapshot, TopicPartition, encode_snapshot
from azuld.core.keys import system_topic
from azuld.core.publish import Outgoing
from azuld.errors import UpstreamError
from azuld.ports import GroupMember, Membership, RevokeHook
from azuld.settings import EventsSettings
from azuld.topics import (
    CONSUMERS_TOPIC,
    HANDOVER_TOPIC,
    TopicSpec,
    siblings,
    startup_topics,
)

__all__ = ["KafkaLog", "open_kafka_log"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often topic metadata is refreshed (new sources, new partitions) and Kafka's health probed.
REFRESH_SECONDS = 2.0
# Followers (the status topic) buffer this many values before the tail drops some.
FOLLOW_BUFFER = 10_000


class KafkaLog:
    """`EventLog` on Kafka. Use `open_kafka_log`; see the module notes."""

    def __init__(self, settings: EventsSettings) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self._topic_pattern = re.compile(rf"^azul\.{re.escape(self.prefix)}\.")
        self._registry_topic = system_topic(self.prefix, CONSUMERS_TOPIC)
        # The registry of plugin keys and the tables, read whole from their start.
        handover = system_topic(self.prefix, HANDOVER_TOPIC)
        self._tables = Tables(self._registry_topic, frozenset({handover}))
        # Names this process in the instances' group (client id), in logs and on the dashboard.
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self._generation = 0
        self._topology = 0
        self._changed = trio.Event()
        self._partitions: dict[str, int] = {}  # topic -> partition count
        self._ends: dict[TopicPartition, int] = {}
        self._recent: dict[TopicPartition, deque[tuple[int, bytes]]] = {}
        self._followers = Followers(FOLLOW_BUFFER)
        self._problem: str | None = "connecting to Kafka"
        self._ownership_version = -1
        # Created in `_start` (inside the asyncio loop).
        self.producer: AIOKafkaProducer
        self.admin: AIOKafkaAdminClient
        self.member: AIOKafkaConsumer
        self.tail: AIOKafkaConsumer
        self.reader: AIOKafkaConsumer
        self.ownership: Ownership
        self.rounds: RoundProducer
        self.commits: GroupCommits
        self.reads: Reader

    # -- bridging --------------------------------------------------------------------------

    async def _call(
        self, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """One asyncio call, bounded by the request timeout; Kafka errors become UpstreamError."""
        try:
            with trio.fail_after(self.settings.kafka_request_timeout_seconds):
                result: T = await trio_asyncio.aio_as_trio(fn)(*args, **kwargs)
                return result
        except trio.TooSlowError:
            self._problem = f"Kafka did not answer {what} within the request timeout"
            raise UpstreamError(self._problem) from None
        except (KafkaError, OSError) as exc:
            self._problem = f"Kafka at {self.settings.kafka_bootstrap} failed {what}: {exc!r}"
            raise UpstreamError(self._problem) from exc

    def _bump(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = trio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def _start(self) -> None:
        bootstrap = self.settings.kafka_bootstrap
        request_ms = int(self.settings.kafka_request_timeout_seconds * 1000)
        common: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "request_timeout_ms": request_ms,
            "metadata_max_age_ms": int(REFRESH_SECONDS * 1000),
            "client_id": "azuld",
        }

        async def start() -> None:
            self.admin = AIOKafkaAdminClient(**common)
            await self.admin.start()
            self.commits = GroupCommits(
                self.admin, self._call, self.settings.kafka_request_timeout_seconds
            )
            # Records go in batches built by `RoundProducer` (its notes); `send()` is never
            # called, so the partitioner and lingering do not apply: a round is sent at once.
            self.producer = AIOKafkaProducer(
                acks="all",
                max_request_size=self.settings.kafka_message_max_bytes,
                max_batch_size=min(BATCH_BYTES, self.settings.kafka_message_max_bytes),
                linger_ms=0,
                **common,
            )
            await self.producer.start()
            self.rounds = RoundProducer(self.producer, self._call)
            consumer_options = {
                "enable_auto_commit": False,
                "fetch_max_wait_ms": 100,
                "max_partition_fetch_bytes": self.settings.kafka_message_max_bytes,
                **common,
            }
            self.tail = AIOKafkaConsumer(auto_offset_reset="latest", **consumer_options)
            await self.tail.start()
            self.reader = AIOKafkaConsumer(
                auto_offset_reset="earliest",
                **{**consumer_options, "max_partition_fetch_bytes": READ_FETCH_BYTES},
            )
            await self.reader.start()
            self.reads = Reader(self.reader, self._call)
            # Even per topic and sticky (core.assignment): with eager rebalancing every
            # partition is handed over and taken back, but most come back to the same instance.
            self._assignor = EvenShares.for_one_log()
            self.member = AIOKafkaConsumer(
                group_id=instances_group(self.prefix),
                auto_offset_reset="latest",
                **MEMBERSHIP,
                partition_assignment_strategy=(self._assignor,),
                **{**consumer_options, "client_id": f"azuld-{self.instance}"},
            )
            self.ownership = Ownership(self.member, self._assignor)
            self.member.subscribe(pattern=dispatch_pattern(self.prefix), listener=self.ownership)
            await self.member.start()

        await self._call("start-up", start)
        await self.ensure_topics(startup_topics(self.settings))
        await self._refresh_topics()
        self._problem = None

    async def _stop(self) -> None:
        async def stop() -> None:
            for client in ("member", "tail", "reader", "producer", "admin"):
                instance = getattr(self, client, None)
                if instance is None:
                    continue
                try:
                    await (instance.close() if client == "admin" else instance.stop())
                except Exception as exc:  # closing anyway
                    log.debug("stopping Kafka %s: %r", client, exc)

        await trio_asyncio.aio_as_trio(stop)()

    # -- topics ----------------------------------------------------------------------------

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create the topics that do not exist yet (others are left as they are)."""
        missing = [s for s in specs if s.name not in self._partitions]
        if not missing:
            return
        replication = self.settings.kafka_replication_factor
        created = await self._call("create topics", create_topics, self.admin, missing, replication)
        if created:
            log.info("created topics %s", ", ".join(created))
        # Metadata lags creation: wait until the topics are visible, so that what this instance
        # does next (a plugin key's starting snapshot) sees them.
        wanted = {s.name for s in missing}
        with trio.move_on_after(self.settings.kafka_request_timeout_seconds):
            while True:
                await self._refresh_topics()
                if wanted <= self._partitions.keys():
                    break
                await trio.sleep(0.05)

    async def _refresh_topics(self) -> None:
        """Learn topics and partition counts; assign new partitions to the tail and reader."""
        found = await self._call(
            "refresh metadata", describe_topics, self.admin, self._topic_pattern
        )
        new_tps = [
            TopicPartition(topic, p)
            for topic, count in found.items()
            for p in range(count)
            if TopicPartition(topic, p) not in self._ends
        ]
        self._partitions.update(found)
        if not new_tps:
            return
        starting = not self._ends
        skipped = await self._call("assign partitions", self._assign_tail, new_tps, starting)
        self._tables.started_at(skipped)
        for tp in new_tps:
            self._ends.setdefault(tp, 0)
            self._recent[tp] = deque(maxlen=max(1, self.settings.kafka_tail_cache_records))
        ends = await self._call(
            "end offsets", self.tail.end_offsets, [to_kafka(t) for t in new_tps]
        )
        for ktp, end in ends.items():
            self._ends[to_ours(ktp)] = max(self._ends.get(to_ours(ktp), 0), end)
        self._topology += 1
        self._bump()

    async def _assign_tail(
        self, new_tps: list[TopicPartition], starting: bool
    ) -> dict[TopicPartition, int]:
        """(asyncio) Add partitions to the tail: the registry from its start, others from the
        end at start-up, and partitions born later from their start (all of them is new).
        Returns where the tail starts on those it starts at their end (it has read that far)."""
        before = {tp: await self.tail.position(tp) for tp in self.tail.assignment()}
        self.tail.assign([*before, *(to_kafka(t) for t in new_tps)])
        for ktp, position in before.items():
            self.tail.seek(ktp, position)
        fresh = [to_kafka(t) for t in new_tps]
        if starting:
            whole = self._tables.whole
            registry = [t for t in fresh if t.topic in whole]
            others = [t for t in fresh if t.topic not in whole]
            if registry:
                await self.tail.seek_to_beginning(*registry)
            if others:
                await self.tail.seek_to_end(*others)
                return {to_ours(t): await self.tail.position(t) for t in others}
        elif fresh:
            await self.tail.seek_to_beginning(*fresh)
        return {}

    # -- background tasks ------------------------------------------------------------------

    async def _run_tail(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Read every new record: ends, the recent cache, followers, the registry."""
        registry_target = await self._registry_end()
        started = False
        if self._tables.registry_position >= registry_target:
            task_status.started()
            started = True
        while True:
            try:
                batch = await self._call(
                    "tail fetch", self.tail.getmany, timeout_ms=500, max_records=2000
                )
            except UpstreamError as exc:
                log.warning("%s", exc)
                await trio.sleep(REFRESH_SECONDS)
                continue
            moved = False
            for ktp, messages in batch.items():
                tp = to_ours(ktp)
                recent = self._recent.get(tp)
                followers = self._followers.of(tp.topic)
                for message in messages:
                    moved = True
                    if message.offset + 1 > self._ends.get(tp, 0):
                        self._ends[tp] = message.offset + 1
                    value = message.value if message.value is not None else b""
                    if recent is not None and (not recent or recent[-1][0] < message.offset):
                        recent.append((message.offset, value))  # unless `append` put it there
                    if followers:
                        self._followers.feed(followers, tp, message.offset, value)
                self._tables.take(tp, messages)
            if moved:
                self._bump()
            if not started and self._tables.registry_position >= registry_target:
                task_status.started()
                started = True

    async def _registry_end(self) -> int:
        tp = KafkaTP(self._registry_topic, 0)
        ends = await self._call("registry end", self.tail.end_offsets, [tp])
        return int(ends.get(tp, 0))

    async def _run_member(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep the membership alive (aiokafka needs its consumer polled) and notice rebalances."""
        task_status.started()
        while True:
            try:
                await self._call("group poll", self.member.getmany, timeout_ms=500)
            except UpstreamError as exc:
                log.warning("%s", exc)
                await trio.sleep(REFRESH_SECONDS)
            if self.ownership.version != self._ownership_version:
                self._ownership_version = self.ownership.version
                self._topology += 1
                log.info(
                    "partition ownership changed: %d partitions owned here",
                    len(self.ownership.owned),
                )
                self._bump()

    async def _run_refresh(self) -> None:
        """Pick up new topics and partitions; probe Kafka's health."""
        while True:
            await trio.sleep(REFRESH_SECONDS)
            try:
                await self._refresh_topics()
                self._problem = None
            except UpstreamError as exc:
                log.warning("%s", exc)

    # -- EventLog --------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def topology(self) -> int:
        return self._topology

    @property
    def shared(self) -> bool:
        return True

    async def wait_for_change(self, generation: int) -> None:
        while self._generation == generation:
            await self._changed.wait()

    async def append(self, records: Sequence[Outgoing]) -> None:
        if not records:
            return
        new = {r.topic for r in records if r.topic not in self._partitions}
        if new:
            await self.ensure_topics([s for t in sorted(new) for s in siblings(self.settings, t)])

        ends, cached = self._ends, self._recent
        placed = await self.rounds.append(records)
        for record, (tp, offset) in zip(records, placed, strict=True):
            if offset + 1 > ends.get(tp, 0):
                ends[tp] = offset + 1
            # Straight into the tail's cache when it follows on from it: a poll waiting at the
            # live edge takes the record now, not after the tail has fetched it back.
            recent = cached.get(tp)
            if recent and recent[-1][0] + 1 == offset:
                recent.append((offset, record.value))
        self._bump()

    async def partitions(
        self, topic_filter: Callable[[str], bool], *, owned: bool = True
    ) -> list[TopicPartition]:
        if owned:
            candidates = self.ownership.owned
        else:
            candidates = {
                TopicPartition(topic, p)
                for topic, count in self._partitions.items()
                for p in range(count)
            }
        return sorted(tp for tp in candidates if topic_filter(tp.topic))

    async def offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        if not tps:
            return {}
        out = {}
        for tp, (start, listed_end) in (await self.reads.bounds(tps)).items():
            end = self._ends[tp] = max(listed_end, self._ends.get(tp, 0))
            out[tp] = (start, end)
        return out

    def known_end(self, tp: TopicPartition) -> int:
        # What the tail, our appends and `offsets` have seen: `read` trusts the same.
        return self._ends.get(tp, 0)

    async def read(self, tp: TopicPartition, offset: int, limit: int) -> list[tuple[int, bytes]]:
        if offset >= self._ends.get(tp, 0):
            return []
        recent = self._recent.get(tp)
        if recent and recent[0][0] <= offset:
            return [(o, v) for o, v in recent if o >= offset][:limit]
        return await self.reads.read(tp, offset, limit)

    async def committed(self, group: str) -> dict[TopicPartition, Commit]:
        return await self.commits.committed(group)

    async def commit(self, commits: Mapping[str, Mapping[TopicPartition, Commit]]) -> None:
        await self.commits.commit(commits)

    @property
    def commit_requests(self) -> int:
        """OffsetCommit requests sent (coalescing is tested by it)."""
        return self.commits.requests

    async def register_consumer(self, key: str, info: bytes, snapshot: Snapshot) -> Snapshot:
        known = self._tables.registry.get(key)
        if known is not None:
            return known[1]
        if not snapshot:
            return {}
        record = json.dumps({"info": info.decode(), "snapshot": encode_snapshot(snapshot)}).encode()
        await self.append([Outgoing(self._registry_topic, key, record)])
        # Wait until the tail has read the registry that far: whichever registration Kafka
        # ordered first (ours or another instance's) is the one in force.
        with trio.fail_after(self.settings.kafka_request_timeout_seconds):
            return await self._tables.registered(key)

    async def first_value(self, key: str, value: bytes) -> bytes:
        # Kept in the registry topic (read whole at start-up by every instance, never aged off),
        # under a key no plugin key can have; the first record Kafka ordered wins.
        name = KEPT_PREFIX + key
        if name not in self._tables.kept:
            record = json.dumps({"value": value.decode()}).encode()
            await self.append([Outgoing(self._registry_topic, name, record)])
            with trio.fail_after(self.settings.kafka_request_timeout_seconds):
                await self._tables.kept_value(name)
        return self._tables.kept[name]

    async def forget_consumer(self, key: str, groups: Sequence[str]) -> None:
        self._tables.registry.pop(key, None)
        self.commits.forget(groups)
        await self.append(
            [Outgoing(self._registry_topic, key, json.dumps({"deleted": True}).encode())]
        )
        await self.commits.delete(groups)

    async def consumers(self) -> dict[str, bytes]:
        return {key: info for key, (info, _) in self._tables.registry.items()}

    async def caught_up(self, topic: str) -> None:
        tps = [KafkaTP(topic, p) for p in range(self._partitions.get(topic, 0))]
        if not tps:
            return
        ends = await self._call("end offsets", self.tail.end_offsets, tps)
        with trio.fail_after(self.settings.kafka_request_timeout_seconds):
            await self._tables.read_to({to_ours(k): end for k, end in ends.items()})
            # Read by the tail and sent to the followers: wait until they have handled it all.
            await self._followers.settled(topic)

    def follow(self, topic: str) -> AsyncGenerator[bytes, None]:
        # From the ends known when the follower starts (its first value asked for).
        return self._followers.follow(topic, self._ends)

    def on_revoke(self, hook: RevokeHook | None) -> None:
        self.ownership.hook = hook

    async def latest_values(self, topic: str) -> dict[str, bytes]:
        if topic not in self._tables.table_topics:
            raise ValueError(f"{topic} is not kept as a table")
        tps = [KafkaTP(topic, p) for p in range(self._partitions.get(topic, 0))]
        ends = await self._call("table end", self.tail.end_offsets, tps) if tps else {}
        # Read your writes: wait until the tail has read the table to where it ends now.
        with trio.fail_after(self.settings.kafka_request_timeout_seconds):
            await self._tables.read_to({to_ours(k): end for k, end in ends.items()})
        return dict(self._tables.values[topic])

    async def offsets_at(
        self, tps: Sequence[TopicPartition], wall_seconds: float
    ) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        stamp = int(wall_seconds * 1000)
        found = await self._call(
            "offsets for time", self.reader.offsets_for_times, {to_kafka(tp): stamp for tp in tps}
        )
        ends = await self.offsets(tps)
        return {
            tp: found[to_kafka(tp)].offset if found.get(to_kafka(tp)) is not None else ends[tp][1]
            for tp in tps
        }

    async def membership(self) -> Membership:
        """The instances' group as its coordinator describes it now (DescribeGroups): each
        member's instance id (its client id), host and assigned partitions.

        Raises:
            UpstreamError: Kafka did not answer, or could not describe the group.
        """
        group = instances_group(self.prefix)
        node = await self.commits.coordinator(group)
        replies = await self._call(
            "describe group", self.admin.describe_consumer_groups, [group], node
        )
        members: list[GroupMember] = []
        for described in (found for reply in replies for found in reply.groups):
            if described[0]:
                self.commits.forget_coordinator(group)
                raise UpstreamError(f"Kafka could not describe group {group}: error {described[0]}")
            members.extend(group_members(described[5]))
        members.sort(key=lambda member: member.instance)
        return Membership(self.instance, self.ownership.rebalances, tuple(members))

    async def health(self) -> str | None:
        if self._problem:
            return self._problem
        if not self.ownership.assigned_once:
            return "waiting for Kafka to assign partitions to this instance"
        return None


@asynccontextmanager
async def open_kafka_log(settings: EventsSettings) -> AsyncIterator[KafkaLog]:
    """Connect to Kafka, create the configured topics, join the instance group; closed on exit.

    Must run inside `trio_asyncio.open_loop()`, whose loop then runs aiokafka's callbacks in
    bursts (`kafka_loop.py`). Keeps trying to connect for `kafka_connect_timeout_seconds`, then
    raises `UpstreamError` naming the broker.
    """
    run_in_bursts(trio_asyncio.current_loop.get())
    kafka = KafkaLog(settings)
    try:
        with trio.move_on_after(settings.kafka_connect_timeout_seconds) as connecting:
            while True:
                try:
                    await kafka._start()
                    break
                except UpstreamError as exc:
                    log.warning("%s; retrying", exc)
                    await kafka._stop()
                    kafka = KafkaLog(settings)
                    await trio.sleep(1.0)
        if connecting.cancelled_caught:
            raise UpstreamError(
                f"cannot reach Kafka at {settings.kafka_bootstrap} within "
                f"{settings.kafka_connect_timeout_seconds:g} s"
            )
        async with trio.open_nursery() as nursery:
            await nursery.start(kafka.rounds.run)
            await nursery.start(kafka._run_tail)
            await nursery.start(kafka._run_member)
            nursery.start_soon(kafka._run_refresh)
            yield kafka
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await kafka._stop()
