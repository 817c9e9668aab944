"""The event log on Apache Kafka, through aiokafka under trio-asyncio.

Theory of operation
-------------------
Everything here talks asyncio to aiokafka through `trio_asyncio.aio_as_trio`, one bridge call
per operation (batches stay inside one asyncio coroutine), under the single `open_loop()` the
service opens. This is the only module in azuld that touches asyncio.

The number of Kafka clients does not grow with the number of plugin keys. Per instance:

* a **producer** (acks=all: `append` returns once Kafka acknowledged, so a status is durable
  before the plugin hears 200). Partitions are chosen as Go does (FNV-1a of the key);
* an **admin client**, also used for group coordinator requests: commits are written with
  OffsetCommit under the standard group names (reference 5.1) as "simple" commits (generation
  -1), with azuld's metadata (stop offset, offsets finished above the mark); no consumer joins
  those groups, so 50 plugin keys cost 50 x 3 group records, not 150 consumers;
* a **membership consumer** in the group `<prefix>-azul-dispatchers`, subscribed to every azul
  topic with all partitions paused: Kafka's rebalancing decides which instance owns which
  partitions, for every plugin key at once. When an instance dies, the others take over its
  partitions and restart from the commits, offering its unfinished jobs again;
* a **tail consumer** (no group) on every partition from the end: it learns new offsets (to wake
  long-polls), keeps the last `tail_cache_records` records of each partition so that readers
  at the live edge need no fetch of their own, feeds `follow()` (the status topic), and reads
  the registry topic `system.consumers` from the start;
* a **reader consumer** (no group) for random access behind the live edge (historic lanes,
  catching up): it seeks to the asked offset with every other partition paused.

Kafka outages: aiokafka reconnects by itself. Calls fail with `UpstreamError` meanwhile (HTTP 503
for posts, `ready: false` for fetches), and `health()` names the problem until a metadata
refresh succeeds again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import trio
import trio_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.commit import OffsetCommitRequest

from azuld.backends.embedded import fnv1a_32
from azuld.core.assignment import Member, decode_claim, encode_claim, share_partitions
from azuld.core.delivery import (
    Commit,
    Snapshot,
    TopicPartition,
    decode_snapshot,
    encode_snapshot,
)
from azuld.core.keys import system_topic
from azuld.core.publish import Outgoing
from azuld.errors import UpstreamError
from azuld.ports import GroupMember, Membership, RevokeHook
from azuld.settings import EventsSettings
from azuld.topics import (
    CONSUMERS_TOPIC,
    HANDOVER_TOPIC,
    INTERNAL_TOPICS,
    TopicSpec,
    siblings,
    startup_topics,
)

__all__ = ["KafkaLog", "open_kafka_log"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often topic metadata is refreshed (new sources, new partitions) and Kafka's health probed.
REFRESH_SECONDS = 2.0
# A read behind the live edge waits at most this long for the fetch to come back.
READ_WAIT_MS = 1000
# OffsetCommit errors worth asking again: COORDINATOR_LOAD_IN_PROGRESS,
# COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR.
_COORDINATOR_RETRIABLE = frozenset({14, 15, 16})
# Followers (the status topic) buffer this many values before the tail drops some.
FOLLOW_BUFFER = 10_000
# Registry keys of `first_value`s: a ':' no plugin key can contain.
_KEPT = "azuld:"
# How long a rebalance waits for this instance to hand over the partitions it gives up. Kafka
# waits for every member to rejoin within the rebalance timeout, which is longer: a slow hand-over
# (a loaded machine) must not get its instance put out of the group, its leases unknown.
HANDOVER_SECONDS = 20.0
REBALANCE_TIMEOUT_MS = 30_000


def _partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Sarama's hash partitioner: FNV-1a of the key; no key spreads at random (time-based)."""
    ordered = sorted(all_partitions)
    if key is None:
        return ordered[time.monotonic_ns() % len(ordered)]
    return ordered[fnv1a_32(key) % len(ordered)]


def _tp(tp: KafkaTP) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _ktp(tp: TopicPartition) -> KafkaTP:
    return KafkaTP(tp.topic, tp.partition)


class _EvenShares(AbstractPartitionAssignor):  # type: ignore[misc]
    """aiokafka's side of `core.assignment`: each member's claim (what it owns) travels as the
    user data of its membership; the leader shares every topic's partitions evenly, keeping them
    where they are when it can. aiokafka calls these as class methods, so the claim lives in
    class attributes: each log uses its own subclass (`for_one_log`)."""

    name = "azuld-even-sticky"
    version = 0
    owned: frozenset[TopicPartition] = frozenset()
    generation = -1

    @classmethod
    def for_one_log(cls) -> type[_EvenShares]:
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
        cls.owned = frozenset(_tp(tp) for tp in assignment.partitions())


class _Ownership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Tracks which partitions Kafka gave this instance; pauses them (it only holds them).

    Before partitions move (Kafka revokes every partition of every member at the start of a
    rebalance), the revoke hook hands their work over: the rebalance waits for it, so the
    partitions' next owner, assigned after every member rejoined, finds what was handed over.
    """

    def __init__(self, consumer: AIOKafkaConsumer, assignor: type[_EvenShares]) -> None:
        self.consumer = consumer
        self.assignor = assignor
        self.owned: set[TopicPartition] = set()
        self.version = 0
        self.assigned_once = False
        self.hook: RevokeHook | None = None
        self.rebalances = 0

    async def on_partitions_revoked(self, revoked: Any) -> None:
        lost = frozenset(_tp(tp) for tp in revoked)
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
        self.owned |= {_tp(tp) for tp in assigned}
        self.assigned_once = True
        self.version += 1


class _Follower:
    """One `follow()`: its channel, the end of each partition when it started, and how many
    values the tail sent it that it has not handled yet (`caught_up` waits for none)."""

    __slots__ = ("send", "starts", "unhandled")

    def __init__(
        self, send: trio.MemorySendChannel[bytes], starts: dict[TopicPartition, int]
    ) -> None:
        self.send = send
        self.starts = starts
        self.unhandled = 0


class _CommitRound:
    """One OffsetCommit request of a group: the positions it carries (merged from every caller
    that joined it, later ones winning) and, once sent, whether it failed."""

    __slots__ = ("done", "error", "positions")

    def __init__(self) -> None:
        self.positions: dict[TopicPartition, Commit] = {}
        self.done = trio.Event()
        self.error: UpstreamError | None = None


class _GroupCommits:
    """A group's commits: the round in flight, if any, and the one collecting the next
    positions. Concurrent commits of a group (a fleet of workers finishing jobs of one plugin
    key) share a round trip to the coordinator instead of queueing one each."""

    __slots__ = ("collecting", "sending")

    def __init__(self) -> None:
        self.collecting = _CommitRound()
        self.sending: _CommitRound | None = None


class KafkaLog:
    """`EventLog` on Kafka. Use `open_kafka_log`; see the module notes."""

    def __init__(self, settings: EventsSettings) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self._topic_pattern = re.compile(rf"^azul\.{re.escape(self.prefix)}\.")
        self._registry_topic = system_topic(self.prefix, CONSUMERS_TOPIC)
        # Topics read whole from their start, kept as tables of their newest value per key.
        self._table_topics = frozenset({system_topic(self.prefix, HANDOVER_TOPIC)})
        self._tables: dict[str, dict[str, bytes]] = {t: {} for t in self._table_topics}
        self._read_up_to: dict[TopicPartition, int] = {}  # where the tail has read each to
        self._tail_moved = trio.Event()
        self._followers_done = trio.Event()  # set when a follower has handled all it was sent
        self._tables_moved = trio.Event()
        # Names this process in the instances' group (client id), in logs and on the dashboard.
        self.instance = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self._generation = 0
        self._topology = 0
        self._changed = trio.Event()
        self._partitions: dict[str, int] = {}  # topic -> partition count
        self._ends: dict[TopicPartition, int] = {}
        self._recent: dict[TopicPartition, deque[tuple[int, bytes]]] = {}
        self._followers: dict[str, list[_Follower]] = {}
        self._registry: dict[str, tuple[bytes, Snapshot]] = {}
        self._kept: dict[str, bytes] = {}  # `first_value`s, by their registry key
        self._registry_position = 0
        self._registry_moved = trio.Event()
        self._reader_lock = trio.Lock()
        self._reader_assigned: set[TopicPartition] = set()
        self._coordinators: dict[str, int] = {}
        self._group_commits: dict[str, _GroupCommits] = {}
        self.commit_requests = 0  # OffsetCommit requests sent (coalescing is tested by it)
        self._problem: str | None = "connecting to Kafka"
        self._ownership_version = -1
        # Created in `_start` (inside the asyncio loop).
        self.producer: AIOKafkaProducer
        self.admin: AIOKafkaAdminClient
        self.member: AIOKafkaConsumer
        self.tail: AIOKafkaConsumer
        self.reader: AIOKafkaConsumer
        self.ownership: _Ownership

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
            self.producer = AIOKafkaProducer(
                acks="all",
                partitioner=_partitioner,
                max_request_size=self.settings.kafka_message_max_bytes,
                linger_ms=1,
                **common,
            )
            await self.producer.start()
            consumer_options = {
                "enable_auto_commit": False,
                "fetch_max_wait_ms": 100,
                "max_partition_fetch_bytes": self.settings.kafka_message_max_bytes,
                **common,
            }
            self.tail = AIOKafkaConsumer(auto_offset_reset="latest", **consumer_options)
            await self.tail.start()
            self.reader = AIOKafkaConsumer(auto_offset_reset="earliest", **consumer_options)
            await self.reader.start()
            # Even per topic and sticky (core.assignment): with eager rebalancing every
            # partition is handed over and taken back, but most come back to the same instance.
            self._assignor = _EvenShares.for_one_log()
            self.member = AIOKafkaConsumer(
                group_id=f"{self.prefix}-azul-dispatchers",
                auto_offset_reset="latest",
                session_timeout_ms=10_000,
                rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
                heartbeat_interval_ms=2_000,
                partition_assignment_strategy=(self._assignor,),
                **{**consumer_options, "client_id": f"azuld-{self.instance}"},
            )
            self.ownership = _Ownership(self.member, self._assignor)
            self.member.subscribe(pattern=self._dispatch_pattern(), listener=self.ownership)
            await self.member.start()

        await self._call("start-up", start)
        await self.ensure_topics(startup_topics(self.settings))
        await self._refresh_topics()
        self._problem = None

    def _dispatch_pattern(self) -> str:
        """The topics whose partitions the instances share out: every azul topic of the prefix
        except azuld's own bookkeeping, which every instance reads whole."""
        internal = "|".join(re.escape(t) for t in sorted(INTERNAL_TOPICS))
        return rf"^azul\.{re.escape(self.prefix)}\.(?!system\.(?:{internal})$)"

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
        existing = set(await self._call("list topics", self.admin.list_topics))
        new = [
            NewTopic(
                s.name,
                s.partitions,
                self.settings.kafka_replication_factor,
                topic_configs={
                    "retention.ms": str(s.retention_ms),
                    "cleanup.policy": s.cleanup_policy,
                },
            )
            for s in missing
            if s.name not in existing
        ]
        if new:

            async def create() -> None:
                with suppress(TopicAlreadyExistsError):
                    await self.admin.create_topics(new)

            await self._call("create topics", create)
            log.info("created topics %s", ", ".join(t.name for t in new))
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

        async def describe() -> dict[str, int]:
            # Metadata of every topic (a consumer's client only tracks the topics it reads).
            cluster = await self.admin._client.fetch_all_metadata()
            found = {}
            for topic in cluster.topics():
                if self._topic_pattern.match(topic):
                    partitions = cluster.partitions_for_topic(topic) or set()
                    if partitions:
                        found[topic] = len(partitions)
            return found

        found = await self._call("refresh metadata", describe)
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
        for tp, position in skipped.items():
            self._read_up_to[tp] = max(self._read_up_to.get(tp, 0), position)
        for tp in new_tps:
            self._ends.setdefault(tp, 0)
            self._recent[tp] = deque(maxlen=max(1, self.settings.kafka_tail_cache_records))
        ends = await self._call("end offsets", self.tail.end_offsets, [_ktp(t) for t in new_tps])
        for ktp, end in ends.items():
            self._ends[_tp(ktp)] = max(self._ends.get(_tp(ktp), 0), end)
        self._topology += 1
        self._bump()

    async def _assign_tail(
        self, new_tps: list[TopicPartition], starting: bool
    ) -> dict[TopicPartition, int]:
        """(asyncio) Add partitions to the tail: the registry from its start, others from the
        end at start-up, and partitions born later from their start (all of them is new).
        Returns where the tail starts on those it starts at their end (it has read that far)."""
        before = {tp: await self.tail.position(tp) for tp in self.tail.assignment()}
        self.tail.assign([*before, *(_ktp(t) for t in new_tps)])
        for ktp, position in before.items():
            self.tail.seek(ktp, position)
        fresh = [_ktp(t) for t in new_tps]
        if starting:
            whole = self._table_topics | {self._registry_topic}
            registry = [t for t in fresh if t.topic in whole]
            others = [t for t in fresh if t.topic not in whole]
            if registry:
                await self.tail.seek_to_beginning(*registry)
            if others:
                await self.tail.seek_to_end(*others)
                return {_tp(t): await self.tail.position(t) for t in others}
        elif fresh:
            await self.tail.seek_to_beginning(*fresh)
        return {}

    # -- background tasks ------------------------------------------------------------------

    async def _run_tail(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Read every new record: ends, the recent cache, followers, the registry."""
        registry_target = await self._registry_end()
        started = False
        if self._registry_position >= registry_target:
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
                tp = _tp(ktp)
                recent = self._recent.get(tp)
                followers = self._followers.get(tp.topic, [])
                for message in messages:
                    moved = True
                    if message.offset + 1 > self._ends.get(tp, 0):
                        self._ends[tp] = message.offset + 1
                    value = message.value if message.value is not None else b""
                    if recent is not None:
                        recent.append((message.offset, value))
                    if tp.topic == self._registry_topic:
                        self._apply_registry(message.key, message.value)
                        self._registry_position = message.offset + 1
                    elif tp.topic in self._table_topics and message.key is not None:
                        self._tables[tp.topic][message.key.decode()] = value
                    for follower in followers:
                        if message.offset < follower.starts.get(tp, 0):
                            continue  # appended before the follower started
                        try:
                            follower.send.send_nowait(value)
                            follower.unhandled += 1
                        except trio.WouldBlock:
                            log.warning("a follower of %s fell behind; value dropped", tp.topic)
                        except trio.BrokenResourceError:
                            pass  # a follower that stopped: it is being taken off the list
                if messages:
                    self._read_up_to[tp] = messages[-1].offset + 1
                if tp.topic == self._registry_topic:
                    self._registry_moved.set()
                    self._registry_moved = trio.Event()
                elif tp.topic in self._table_topics:
                    self._tables_moved.set()
                    self._tables_moved = trio.Event()
            if batch:
                self._tail_moved.set()
                self._tail_moved = trio.Event()
            if moved:
                self._bump()
            if not started and self._registry_position >= registry_target:
                task_status.started()
                started = True

    async def _registry_end(self) -> int:
        tp = KafkaTP(self._registry_topic, 0)
        ends = await self._call("registry end", self.tail.end_offsets, [tp])
        return int(ends.get(tp, 0))

    def _apply_registry(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or value is None:
            return
        record = json.loads(value)
        name = key.decode()
        if name.startswith(_KEPT):
            self._kept.setdefault(name, record["value"].encode())  # the first wins
            return
        if record.get("deleted"):
            self._registry.pop(name, None)
        elif name not in self._registry:  # the first registration wins
            info = record["info"].encode()
            self._registry[name] = (info, decode_snapshot(record["snapshot"]))

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

        async def produce() -> list[Any]:
            futures = [
                await self.producer.send(r.topic, r.value, key=r.key.encode()) for r in records
            ]
            return list(await asyncio.gather(*futures))

        metadata = await self._call("produce", produce)
        for md in metadata:
            tp = TopicPartition(md.topic, md.partition)
            if md.offset + 1 > self._ends.get(tp, 0):
                self._ends[tp] = md.offset + 1
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
        ktps = [_ktp(tp) for tp in tps]

        async def both() -> tuple[dict[Any, int], dict[Any, int]]:
            return (
                await self.reader.beginning_offsets(ktps),
                await self.reader.end_offsets(ktps),
            )

        starts, ends = await self._call("list offsets", both)
        out = {}
        for ktp in ktps:
            tp = _tp(ktp)
            end = max(int(ends.get(ktp, 0)), self._ends.get(tp, 0))
            self._ends[tp] = end
            out[tp] = (int(starts.get(ktp, 0)), end)
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
        async with self._reader_lock:
            return await self._call("fetch", self._read_at, tp, offset, limit)

    async def _read_at(
        self, tp: TopicPartition, offset: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """(asyncio) Fetch from `tp` at `offset` with every other partition paused."""
        ktp = _ktp(tp)
        if tp not in self._reader_assigned:
            self._reader_assigned.add(tp)
            self.reader.assign([_ktp(t) for t in self._reader_assigned])
        self.reader.pause(*self.reader.assignment())
        self.reader.resume(ktp)
        self.reader.seek(ktp, offset)
        batch = await self.reader.getmany(ktp, timeout_ms=READ_WAIT_MS, max_records=limit)
        self.reader.pause(ktp)
        return [(m.offset, m.value or b"") for m in batch.get(ktp, [])]

    async def _coordinator(self, group: str) -> int:
        node = self._coordinators.get(group)
        if node is None:
            node = int(await self._call("find coordinator", self.admin.find_coordinator, group))
            self._coordinators[group] = node
        return node

    async def committed(self, group: str) -> dict[TopicPartition, Commit]:
        node = await self._coordinator(group)
        try:
            offsets = await self._call(
                "fetch commits", self.admin.list_consumer_group_offsets, group, node
            )
        except UpstreamError:
            self._coordinators.pop(group, None)
            raise
        return {
            _tp(ktp): Commit.parse(meta.offset, meta.metadata or "")
            for ktp, meta in offsets.items()
            if meta.offset >= 0
        }

    async def commit(self, commits: Mapping[str, Mapping[TopicPartition, Commit]]) -> None:
        for group, positions in commits.items():
            if positions:
                await self._commit_group(group, positions)

    async def _commit_group(self, group: str, commits: Mapping[TopicPartition, Commit]) -> None:
        """Commit `commits` in the group's next round; returns once a request that carried them
        (or later positions of the same partitions) succeeded.

        Raises:
            UpstreamError: that request failed, or was cut short (its sender was cancelled).
        """
        state = self._group_commits.get(group)
        if state is None:
            state = self._group_commits[group] = _GroupCommits()
        mine = state.collecting
        for tp, commit in commits.items():
            # The low-water mark only moves forward: of two callers' positions, the further.
            held = mine.positions.get(tp)
            if held is None or commit.offset >= held.offset:
                mine.positions[tp] = commit
        while not mine.done.is_set():
            if state.sending is not None:
                await state.sending.done.wait()
                continue
            # Nobody is sending: this caller sends the collected round for everyone in it.
            sending = state.sending = state.collecting
            state.collecting = _CommitRound()
            try:
                await self._commit_request(group, sending.positions)
            except UpstreamError as exc:
                sending.error = exc
            except BaseException:
                sending.error = UpstreamError(f"the commit for group {group} was cut short")
                raise
            finally:
                state.sending = None
                sending.done.set()
        if mine.error is not None:
            raise mine.error

    async def _commit_request(self, group: str, commits: Mapping[TopicPartition, Commit]) -> None:
        by_topic: dict[str, list[tuple[int, int, str]]] = {}
        for tp, commit in commits.items():
            by_topic.setdefault(tp.topic, []).append(
                (tp.partition, commit.offset, commit.metadata())
            )
        request = OffsetCommitRequest(
            group,
            OffsetCommitRequest.DEFAULT_GENERATION_ID,
            "",
            OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            list(by_topic.items()),
        )
        errors: set[int] = set()
        delay = 0.1
        with trio.move_on_after(self.settings.kafka_request_timeout_seconds):
            while True:
                node = await self._coordinator(group)
                self.commit_requests += 1
                response = await self._call("commit", self.admin._send_request, request, node)
                errors = {
                    code for _, partitions in response.topics for _, code in partitions if code
                }
                if not errors:
                    return
                self._coordinators.pop(group, None)  # maybe moved: look it up again
                if not errors <= _COORDINATOR_RETRIABLE:
                    break
                # The coordinator is moving or loading (after a broker restart): ask again.
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise UpstreamError(f"Kafka refused the commit for group {group}: error codes {errors}")

    async def register_consumer(self, key: str, info: bytes, snapshot: Snapshot) -> Snapshot:
        known = self._registry.get(key)
        if known is not None:
            return known[1]
        if not snapshot:
            return {}
        record = json.dumps({"info": info.decode(), "snapshot": encode_snapshot(snapshot)}).encode()
        await self.append([Outgoing(self._registry_topic, key, record)])
        # Wait until the tail has read the registry that far: whichever registration Kafka
        # ordered first (ours or another instance's) is the one in force.
        with trio.fail_after(self.settings.kafka_request_timeout_seconds):
            while key not in self._registry:
                await self._registry_moved.wait()
        return self._registry[key][1]

    async def caught_up(self, topic: str) -> None:
        tps = [KafkaTP(topic, p) for p in range(self._partitions.get(topic, 0))]
        if not tps:
            return
        ends = await self._call("end offsets", self.tail.end_offsets, tps)
        with trio.fail_after(self.settings.kafka_request_timeout_seconds):
            while any(self._read_up_to.get(_tp(k), 0) < end for k, end in ends.items()):
                await self._tail_moved.wait()
            # Read by the tail and sent to the followers: wait until they have handled it all.
            while any(follower.unhandled for follower in self._followers.get(topic, [])):
                await self._followers_done.wait()

    async def first_value(self, key: str, value: bytes) -> bytes:
        # Kept in the registry topic (read whole at start-up by every instance, never aged off),
        # under a key no plugin key can have; the first record Kafka ordered wins.
        name = _KEPT + key
        if name not in self._kept:
            record = json.dumps({"value": value.decode()}).encode()
            await self.append([Outgoing(self._registry_topic, name, record)])
            with trio.fail_after(self.settings.kafka_request_timeout_seconds):
                while name not in self._kept:
                    await self._registry_moved.wait()
        return self._kept[name]

    async def forget_consumer(self, key: str, groups: Sequence[str]) -> None:
        self._registry.pop(key, None)
        for group in groups:
            self._group_commits.pop(group, None)  # the next commits start the group afresh
        await self.append(
            [Outgoing(self._registry_topic, key, json.dumps({"deleted": True}).encode())]
        )
        for group in groups:
            node = await self._coordinator(group)
            await self._call(
                "delete group",
                self.admin._send_request,
                DeleteGroupsRequest([group]),
                node,
            )

    async def consumers(self) -> dict[str, bytes]:
        return {key: info for key, (info, _) in self._registry.items()}

    async def follow(self, topic: str) -> AsyncGenerator[bytes, None]:
        send, receive = trio.open_memory_channel[bytes](FOLLOW_BUFFER)
        starts = {tp: end for tp, end in self._ends.items() if tp.topic == topic}
        follower = _Follower(send, starts)
        self._followers.setdefault(topic, []).append(follower)
        try:
            async for value in receive:
                yield value
                # Asked for the next value: the consumer is done with this one.
                follower.unhandled -= 1
                if not follower.unhandled:
                    self._followers_done.set()
                    self._followers_done = trio.Event()
        finally:
            # Off the list before the channel closes: the tail never sends into a closed one.
            self._followers[topic].remove(follower)
            receive.close()

    def on_revoke(self, hook: RevokeHook | None) -> None:
        self.ownership.hook = hook

    async def latest_values(self, topic: str) -> dict[str, bytes]:
        if topic not in self._table_topics:
            raise ValueError(f"{topic} is not kept as a table")
        tps = [KafkaTP(topic, p) for p in range(self._partitions.get(topic, 0))]
        ends = await self._call("table end", self.tail.end_offsets, tps) if tps else {}
        # Read your writes: wait until the tail has read the table to where it ends now.
        with trio.fail_after(self.settings.kafka_request_timeout_seconds):
            while any(self._read_up_to.get(_tp(k), 0) < end for k, end in ends.items()):
                await self._tables_moved.wait()
        return dict(self._tables[topic])

    async def offsets_at(
        self, tps: Sequence[TopicPartition], wall_seconds: float
    ) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        stamp = int(wall_seconds * 1000)
        found = await self._call(
            "offsets for time", self.reader.offsets_for_times, {_ktp(tp): stamp for tp in tps}
        )
        ends = await self.offsets(tps)
        return {
            tp: found[_ktp(tp)].offset if found.get(_ktp(tp)) is not None else ends[tp][1]
            for tp in tps
        }

    async def membership(self) -> Membership:
        """The instances' group as its coordinator describes it now (DescribeGroups): each
        member's instance id (its client id), host and assigned partitions.

        Raises:
            UpstreamError: Kafka did not answer, or could not describe the group.
        """
        group = f"{self.prefix}-azul-dispatchers"
        node = await self._coordinator(group)
        replies = await self._call(
            "describe group", self.admin.describe_consumer_groups, [group], node
        )
        members = []
        for described in (found for reply in replies for found in reply.groups):
            if described[0]:
                self._coordinators.pop(group, None)  # it may have moved: found again next time
                raise UpstreamError(f"Kafka could not describe group {group}: error {described[0]}")
            for _, client_id, host, _, assigned in described[5]:
                tps = (
                    ConsumerProtocolMemberAssignment.decode(assigned).partitions()
                    if assigned
                    else []
                )
                members.append(
                    GroupMember(
                        client_id.removeprefix("azuld-"),
                        host.lstrip("/"),
                        tuple(sorted(TopicPartition(t, p) for t, p in tps)),
                    )
                )
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

    Must run inside `trio_asyncio.open_loop()`. Keeps trying to connect for
    `kafka_connect_timeout_seconds`, then raises `UpstreamError` naming the broker.
    """
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
            await nursery.start(kafka._run_tail)
            await nursery.start(kafka._run_member)
            nursery.start_soon(kafka._run_refresh)
            yield kafka
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await kafka._stop()
