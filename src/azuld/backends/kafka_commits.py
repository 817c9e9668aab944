"""Consumer-group commits on Kafka, without consumers.

Commits are written with OffsetCommit under the standard group names (reference 5.1) as "simple"
commits (generation -1, no member), carrying azuld's metadata (`core.cursor.Commit`: the stop
offset of historic, the offsets finished above the low-water mark, how far hand-outs got). No
consumer joins those groups, so 50 plugin keys cost 50 x 3 group records, not 150 consumers.
Concurrent commits of one group share a request (`commit`): a round in flight, and one collecting
the next positions, the furthest position of each partition winning.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.commit import OffsetCommitRequest

from azuld.backends.kafka_members import to_ours
from azuld.core.cursor import Commit, TopicPartition
from azuld.errors import UpstreamError

__all__ = ["GroupCommits"]

# OffsetCommit errors worth asking again: COORDINATOR_LOAD_IN_PROGRESS,
# COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR.
_COORDINATOR_RETRIABLE = frozenset({14, 15, 16})

# A bridge call: `KafkaLog._call` (bounded by the request timeout; Kafka errors as UpstreamError).
Call = Callable[..., Awaitable[Any]]


class _CommitRound:
    """One OffsetCommit request of a group: the positions it carries (merged from every caller
    that joined it, later ones winning) and, once sent, whether it failed."""

    __slots__ = ("done", "error", "positions")

    def __init__(self) -> None:
        self.positions: dict[TopicPartition, Commit] = {}
        self.done = trio.Event()
        self.error: UpstreamError | None = None


class _GroupState:
    """A group's commits: the round in flight, if any, and the one collecting the next
    positions. Concurrent commits of a group (a fleet of workers finishing jobs of one plugin
    key) share a round trip to the coordinator instead of queueing one each."""

    __slots__ = ("collecting", "sending")

    def __init__(self) -> None:
        self.collecting = _CommitRound()
        self.sending: _CommitRound | None = None


class GroupCommits:
    """Reads, writes and deletes the commits of consumer groups through the admin client."""

    def __init__(self, admin: AIOKafkaAdminClient, call: Call, timeout_seconds: float) -> None:
        self.admin = admin
        self._call = call
        self.timeout_seconds = timeout_seconds
        self._coordinators: dict[str, int] = {}
        self._groups: dict[str, _GroupState] = {}
        self.requests = 0  # OffsetCommit requests sent (coalescing is tested by it)

    async def coordinator(self, group: str) -> int:
        """The broker coordinating `group` (looked up once, until `forget_coordinator`)."""
        node = self._coordinators.get(group)
        if node is None:
            node = int(await self._call("find coordinator", self.admin.find_coordinator, group))
            self._coordinators[group] = node
        return node

    def forget_coordinator(self, group: str) -> None:
        """The coordinator may have moved: look it up again next time."""
        self._coordinators.pop(group, None)

    async def committed(self, group: str) -> dict[TopicPartition, Commit]:
        """The group's committed positions. Raises `UpstreamError`."""
        node = await self.coordinator(group)
        try:
            offsets = await self._call(
                "fetch commits", self.admin.list_consumer_group_offsets, group, node
            )
        except UpstreamError:
            self._coordinators.pop(group, None)
            raise
        return {
            to_ours(ktp): Commit.parse(meta.offset, meta.metadata or "")
            for ktp, meta in offsets.items()
            if meta.offset >= 0
        }

    async def commit(self, commits: Mapping[str, Mapping[TopicPartition, Commit]]) -> None:
        """Store `{group: {partition: commit}}`, group after group (`EventLog.commit`).

        Raises:
            UpstreamError: a request failed, or was cut short.
        """
        for group, positions in commits.items():
            if positions:
                await self._commit_group(group, positions)

    async def _commit_group(self, group: str, commits: Mapping[TopicPartition, Commit]) -> None:
        """Commit `commits` in the group's next round; returns once a request that carried them
        (or later positions of the same partitions) succeeded.

        Raises:
            UpstreamError: that request failed, or was cut short (its sender was cancelled).
        """
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _GroupState()
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
        with trio.move_on_after(self.timeout_seconds):
            while True:
                node = await self.coordinator(group)
                self.requests += 1
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

    def forget(self, groups: Sequence[str]) -> None:
        """Start `groups` afresh here (a key reset): their next commits share no earlier round."""
        for group in groups:
            self._groups.pop(group, None)

    async def delete(self, groups: Sequence[str]) -> None:
        """Delete `groups` in Kafka (a key reset).

        Raises:
            UpstreamError: Kafka failed.
        """
        for group in groups:
            node = await self.coordinator(group)
            await self._call(
                "delete group", self.admin._send_request, DeleteGroupsRequest([group]), node
            )
