"""The two seams between azuld and its storage: small Protocols, implemented in `azuld.backends`
(event logs) and `azuld.storage` (blob stores). The service depends only on these."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from azuld.core.cursor import Commit, Snapshot, TopicPartition
from azuld.core.publish import Outgoing
from azuld.core.security import EventLabel

__all__ = ["BlobStore", "EventLog", "GroupMember", "Membership", "RevokeHook", "SecurityCheck"]

T = TypeVar("T")

RevokeHook = Callable[[frozenset[TopicPartition]], Awaitable[None]]
"""Called with partitions about to move to another instance, to hand over their work first."""


@dataclass(frozen=True, slots=True)
class GroupMember:
    """One instance sharing a log's partitions: its id, its host and the partitions it owns."""

    instance: str
    host: str
    partitions: tuple[TopicPartition, ...]


@dataclass(frozen=True, slots=True)
class Membership:
    """The instances sharing a log now, as the log sees them (`EventLog.membership`)."""

    instance: str  # this process's id among them
    rebalances: int  # partition moves this instance has been through since it started
    members: tuple[GroupMember, ...]  # by instance id


class EventLog(Protocol):
    """An ordered, durable, partitioned log with consumer-group commits (Kafka's model).

    Every method may raise `UpstreamError` when the backend fails under us.
    """

    @property
    def generation(self) -> int:
        """A counter that moves whenever records are appended (by anyone) or topics appear."""

    @property
    def topology(self) -> int:
        """A counter that moves whenever topics or partitions appear, or ownership changes."""

    @property
    def instance(self) -> str:
        """This process's id among the instances sharing the log (in logs, hand-over notes and
        the dashboard; on Kafka also its client id in the instances' group)."""

    @property
    def shared(self) -> bool:
        """Whether other processes (other azuld instances) may append to this log. When not,
        every record in it was appended by this process, and following it for statuses posted
        elsewhere finds only what this process already applied."""

    async def wait_for_change(self, generation: int) -> None:
        """Return once `self.generation != generation`. Cancellation: safe at any point."""

    async def append(self, records: Sequence[Outgoing]) -> None:
        """Append records; on return they are durable (an acknowledged write)."""

    async def partitions(
        self, topic_filter: Callable[[str], bool], *, owned: bool = True
    ) -> list[TopicPartition]:
        """The partitions this instance owns of every topic whose name passes `topic_filter`.

        With several instances on one Kafka, each owns a share (the embedded log owns all); the
        set changes on rebalance, and `generation` moves when it does. `owned=False` lists every
        partition.
        """

    async def offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """`(start, end)` of each partition: the first offset kept and the next to be written."""

    async def read(self, tp: TopicPartition, offset: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` records at or after `offset`, in order. Does not wait for new ones."""

    def known_end(self, tp: TopicPartition) -> int:
        """The end of `tp` as this instance knows it now, without I/O (0 if unknown). `read`
        at or past it returns nothing, so a reader at this offset need not ask."""

    async def committed(self, group: str) -> dict[TopicPartition, Commit]:
        """The group's committed positions."""

    async def commit(self, commits: Mapping[str, Mapping[TopicPartition, Commit]]) -> None:
        """Store positions, `{group: {partition: commit}}`; durable on return.

        Commits submitted earlier are stored before later ones, so several groups' commits go
        in one call: split into one call per group, a commit computed earlier could land after
        one computed later while the first call waits (the embedded log stores them all in one
        transaction; Kafka one request per group, in order).
        """

    async def register_consumer(self, key: str, info: bytes, snapshot: Snapshot) -> Snapshot:
        """Record a plugin key the first time it is seen, with where its groups start.

        Returns the snapshot in force: `snapshot` if this call registered the key, else the one
        the first registration stored (several instances may race; the first one wins).
        """

    async def forget_consumer(self, key: str, groups: Sequence[str]) -> None:
        """Drop a plugin key's registration and its groups' commits (a `reset`)."""

    async def consumers(self) -> dict[str, bytes]:
        """Every registered plugin key with the info it was registered with."""

    def follow(self, topic: str) -> AsyncGenerator[bytes, None]:
        """Values appended to any partition of `topic` from now on, as they arrive (every
        partition, owned or not: statuses are followed by every instance)."""

    async def health(self) -> str | None:
        """`None` if the log is usable now, else why not (for `/readyz`)."""

    def on_revoke(self, hook: RevokeHook | None) -> None:
        """Have `hook(partitions)` run before partitions this instance owns move to another
        instance (a Kafka rebalance), so that their work is handed over first: the move waits
        for it (bounded). The embedded log owns every partition for ever and never calls it."""

    async def latest_values(self, topic: str) -> dict[str, bytes]:
        """The newest value of each key of `topic` (a table kept in a compacted topic), counting
        every record appended before this call. Raises `ValueError` for a topic the log does not
        keep as a table (the system `handover` topic is one)."""

    async def caught_up(self, topic: str) -> None:
        """Return once every record appended to `topic` (by any instance) before the call has
        reached this instance's followers of it (`follow`): what they know is then current.
        Raises `UpstreamError`; cancellation: safe."""

    async def first_value(self, key: str, value: bytes) -> bytes:
        """Keep `value` under `key` unless a value is kept there already, and return the one kept:
        the first stored wins, for every instance of the log (a cluster-wide setting such as
        the job id secret). Durable on return."""

    async def offsets_at(
        self, tps: Sequence[TopicPartition], wall_seconds: float
    ) -> dict[TopicPartition, int]:
        """For each partition, an offset at or before its first record appended at or after
        `wall_seconds` (Unix time): reading on from it finds every record appended since."""

    async def membership(self) -> Membership:
        """The instances sharing this log's partitions now, each with the partitions it owns
        (Kafka: the instances' group as its coordinator describes it; the embedded log: this
        process alone, owning every partition)."""


class BlobStore(Protocol):
    """Content-addressed blobs at `<source>/<label>/<sha256>`, with a by-hash fallback."""

    @property
    def spool_dir(self) -> Path:
        """Where uploads are spooled before `put_file` (on the store's filesystem where it has
        one, so that `put_file` can rename the spool file into place)."""

    async def put_file(self, source: str, label: str, sha256: str, path: Path) -> None:
        """Store the file at `path` (a spooled upload; the store may move it). Durable on return."""

    async def put_bytes(
        self, source: str, label: str, sha256: str, data: bytes, work: Callable[[], T]
    ) -> T:
        """Store `data` (a whole upload whose sha256 is `sha256`) and return `work()`: blocking
        work of the caller's (identifying the blob), run in a worker thread, in the same hop as
        the store's own blocking I/O where it has some. Nothing is stored if `work` raises (it
        is raised here). Durable on return. Cancellation waits for the hop in flight."""

    async def size(self, source: str, label: str, sha256: str) -> int | None:
        """The blob's size, or `None` if neither `source/label/sha256` nor the fallback exists."""

    def read(
        self, source: str, label: str, sha256: str, start: int, length: int
    ) -> AsyncIterator[bytes]:
        """Stream `length` bytes from `start`. Raises `NotFound` if the blob is missing."""

    async def read_whole(
        self, source: str, label: str, sha256: str
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        """The whole blob as `(size, chunks)`, found and opened in one request where the store
        can (a download without `Range`: one S3 GET instead of a HEAD and a GET); `None` if
        neither `source/label/sha256` nor the fallback exists."""

    async def copy(self, from_source: str, to_source: str, label: str, sha256: str) -> bool:
        """Make a blob of one source available under another; `False` if it was not found."""

    async def health(self) -> str | None:
        """`None` if the store is usable now, else why not (for `/readyz`)."""


class SecurityCheck(Protocol):
    """Whether a fetch's `max-security` (the clearance) may see an event's label (its security
    strings, `azuld.core.security.event_label`). Implemented in `azuld.security_check`.

    Both methods answer `True` for an empty clearance or an empty label (nothing to check, as in
    Go), and `False` for anything they cannot read or decide (fail closed).
    """

    def check_clearance(self, clearance: str) -> None:
        """Refuse a `max-security` this checker can tell is unreadable (a fetch answers 422).

        Raises:
            UnreadableLabel: saying what is wrong with it.
        """

    def decided(self, clearance: str, label: EventLabel) -> bool | None:
        """The decision if it is known now (cached, or cheap to compute), else `None`. Never
        waits: a fetch judges most events with this alone."""

    async def can_access(self, clearance: str, label: EventLabel) -> bool:
        """The decision, working it out if need be (which may take a while: run it off the
        fetch's path). Afterwards `decided` knows it. Cancellation: safe at any point."""
