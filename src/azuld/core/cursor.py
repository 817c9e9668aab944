"""Cursors and commits: one consumer group's progress on one partition, and what it commits.
Sans-I/O.

Theory of operation
-------------------
Each lane of a plugin key (`core.delivery`) is one consumer group, and for each partition it
owns, a `PartitionCursor` tracks:

* `position`, the next offset to read from the log;
* the *open* offsets: read, but not finished (queued, leased, or waiting to be offered again);
* `committed`, the low-water mark: the lowest open offset, or `position` when none is open. Commits
  never pass an unfinished job, so a dispatcher that dies loses nothing: it re-reads from
  `committed` after a restart;
* the offsets finished *above* the low-water mark. They travel with the commit (as metadata), so
  that after a restart they are skipped rather than offered twice;
* for historic, `stop`: the end of the log when the key was first seen, which is where live began.
  Historic never reads past it, so live and historic never both deliver an event (Go's quirk 1).

A `Commit` is what the log keeps of a cursor (`metadata()` / `parse()`: the offsets finished
above the mark as compact ranges or a bitmap, whichever is shorter, the stop, how far hand-outs
got); a `Snapshot` is where a new
plugin key's groups start. Leases handed over by a partition's previous owner (`LeaseNote`) wait
in its cursor until their offsets are read.
"""

from __future__ import annotations

import base64
import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

__all__ = [
    "Commit",
    "LeaseNote",
    "PartitionCursor",
    "Snapshot",
    "TopicPartition",
    "decode_snapshot",
    "encode_snapshot",
]


class TopicPartition(msgspec.Struct, frozen=True, order=True, gc=False):
    # A msgspec struct rather than a dataclass: hashed and compared in C, it is a several times
    # cheaper dict key (cursors, ends and leases are looked up by it for every event).
    topic: str
    partition: int


def _encode_offsets(base: int, offsets: Iterable[int]) -> str:
    """Offsets above `base` as comma-separated deltas and ranges: `0,3-7,12`."""
    deltas = sorted(o - base for o in offsets)
    runs: list[str] = []
    i = 0
    while i < len(deltas):
        j = i
        while j + 1 < len(deltas) and deltas[j + 1] == deltas[j] + 1:
            j += 1
        runs.append(str(deltas[i]) if i == j else f"{deltas[i]}-{deltas[j]}")
        i = j + 1
    return ",".join(runs)


def _decode_offsets(base: int, text: str) -> frozenset[int]:
    found: set[int] = set()
    for run in filter(None, text.split(",")):
        first, _, last = run.partition("-")
        found.update(range(base + int(first), base + int(last or first) + 1))
    return frozenset(found)


def _encode_bitmap(base: int, offsets: Iterable[int]) -> str:
    """Offsets above `base` as a bitmap (bit d of byte d // 8 for offset base + d), urlsafe
    base64 without padding: 4 bits of text per offset of the window, however they alternate."""
    deltas = [o - base for o in offsets]
    bits = bytearray(max(deltas) // 8 + 1)
    for delta in deltas:
        bits[delta >> 3] |= 1 << (delta & 7)
    return base64.urlsafe_b64encode(bits).rstrip(b"=").decode()


def _decode_bitmap(base: int, text: str) -> frozenset[int]:
    bits = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return frozenset(
        base + (i << 3) + bit
        for i, byte in enumerate(bits)
        if byte
        for bit in range(8)
        if byte >> bit & 1
    )


def _finished_field(base: int, offsets: frozenset[int]) -> str:
    # Ranges are shorter while finished offsets come in runs (the usual case); a bitmap once they
    # alternate, which keeps a commit of a 20,000-offset window under Kafka's 4 KiB of metadata.
    runs = _encode_offsets(base, offsets)
    bitmap_chars = ((max(offsets) - base) // 8 + 1) * 4 // 3 + 1  # the bitmap's length, about
    if bitmap_chars < len(runs):
        return "bits=" + _encode_bitmap(base, offsets)
    return "done=" + runs


@dataclass(frozen=True, slots=True)
class Commit:
    """A committed position: the low-water mark plus what the metadata string carries.

    `handed_out` is where the committer's hand-outs had got to (one past the highest offset it
    leased): an offset below it that is neither finished nor handed over may be in the hands of
    a plugin of an instance that is gone, so its next offer is a new attempt.
    """

    offset: int
    finished: frozenset[int] = frozenset()
    stop: int | None = None
    # A hint carried along, not part of the position: commits compare equal without it.
    handed_out: int = field(default=0, compare=False)

    def metadata(self) -> str:
        parts = ["azd1"]
        if self.stop is not None:
            parts.append(f"stop={self.stop}")
        if self.finished:
            parts.append(_finished_field(self.offset, self.finished))
        if self.handed_out > self.offset:
            parts.append(f"out={self.handed_out - self.offset}")
        return ";".join(parts)

    @classmethod
    def parse(cls, offset: int, metadata: str) -> Commit:
        """Read a commit back; metadata that is not ours is ignored (plain offset)."""
        stop: int | None = None
        finished: frozenset[int] = frozenset()
        handed_out = 0
        fields = metadata.split(";")
        if fields[0] == "azd1":
            for item in fields[1:]:
                name, _, value = item.partition("=")
                if name == "stop":
                    stop = int(value)
                elif name == "done":
                    finished = _decode_offsets(offset, value)
                elif name == "bits":
                    finished = _decode_bitmap(offset, value)
                elif name == "out":
                    handed_out = offset + int(value)
        return cls(offset, finished, stop, handed_out)


class PartitionCursor:
    """One consumer group's progress on one partition (see the module notes).

    Every step is O(1) amortized, whatever the number of open offsets: open offsets are also
    kept in read order (a deque, finished ones dropped from its front lazily), so the low-water
    mark is its first; finished-above offsets also sit in a min-heap, so moving the low-water
    mark drops exactly those it passed.
    """

    __slots__ = (
        "_finished_above",
        "_finished_heap",
        "_open",
        "_open_order",
        "committed",
        "dirty",
        "expected",
        "handed_out",
        "position",
        "presumed_out",
        "stop",
        "suspect_below",
    )

    def __init__(self, commit: Commit) -> None:
        self.committed = commit.offset
        self.position = commit.offset
        self.stop = commit.stop
        self._finished_above = set(commit.finished)
        self._finished_heap = sorted(self._finished_above)  # a sorted list is a heap
        self._open: set[int] = set()
        self._open_order: deque[int] = deque()  # open offsets (and finished ones) in read order
        self.dirty = False
        # Hand-outs: how far they got (carried on in commits, so a later owner knows too), and
        # below which the previous owner may have handed a job out (its next offer is a new
        # attempt). Leases handed over by the previous owner wait here until their offset is read.
        self.handed_out = max(commit.handed_out, commit.offset)
        self.presumed_out = commit.handed_out
        self.expected: dict[int, LeaseNote] = {}
        # Below this offset a job may also be in the hands of a plugin of this partition's
        # previous owner (see `suspect`).
        self.suspect_below = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def readable(self, window: int) -> int:
        """How many more offsets may be read now: bounded by `stop` and by the window above the
        low-water mark (which bounds the finished-above set carried in commits)."""
        limit = self.committed + window - self.position
        if self.stop is not None:
            limit = min(limit, self.stop - self.position)
        return max(limit, 0)

    @property
    def exhausted(self) -> bool:
        return self.stop is not None and self.position >= self.stop

    def accept(self, offset: int) -> bool:
        """Note a record read at `offset`; `False` if it was already finished (skip it)."""
        if offset < self.position:
            return False
        self.position = offset + 1
        if offset in self._finished_above:
            self._advance()
            return False
        self._open.add(offset)
        self._open_order.append(offset)  # offsets are accepted in increasing order
        self._advance()
        return True

    def skip_to(self, offset: int) -> None:
        """The log has nothing below `offset` any more (retention): move past the gap."""
        if offset > self.position:
            self.position = offset
            self._advance()

    def finish(self, offset: int) -> bool:
        """Finish `offset`; `True` if it was open. A finish for an offset not read yet (a late
        status after a restart) is remembered so the offset is skipped when read."""
        self.expected.pop(offset, None)
        if offset in self._open:
            self._open.discard(offset)
            low = self._lowest_open()
            if low is not None and offset > low:
                self._add_finished(offset)
                self.dirty = True  # the finished-above set travels with the commit
            self._advance()
            return True
        if offset >= self.position:
            self._add_finished(offset)
            self.dirty = True
        return False

    def is_finished(self, offset: int) -> bool:
        """Whether `offset` was read and is done (or was never in the log: a gap)."""
        return offset < self.position and offset not in self._open

    def _add_finished(self, offset: int) -> None:
        if offset not in self._finished_above:
            self._finished_above.add(offset)
            heapq.heappush(self._finished_heap, offset)

    def _lowest_open(self) -> int | None:
        order, still_open = self._open_order, self._open
        while order and order[0] not in still_open:
            order.popleft()
        return order[0] if order else None

    def _advance(self) -> None:
        low = self._lowest_open()
        if low is None:
            low = self.position
        if low != self.committed:
            self.committed = low
            self.dirty = True
            finished, heap = self._finished_above, self._finished_heap
            while heap and heap[0] < low:
                finished.discard(heapq.heappop(heap))

    def commit(self) -> Commit:
        handed_out = self.handed_out if self.handed_out > self.committed else 0
        return Commit(self.committed, frozenset(self._finished_above), self.stop, handed_out)

    def unfinished_below(self, end: int) -> int:
        """How many offsets below `end` (and below `stop`) are not finished yet: the lag."""
        if self.stop is not None:
            end = min(end, self.stop)
        done_above = sum(1 for offset in self._finished_above if offset < end)
        return max(end - self.committed - done_above, 0)


Snapshot = dict[str, dict[TopicPartition, Commit]]
"""Where a new plugin key's groups start: {group: {partition: commit}}."""


def encode_snapshot(snapshot: Snapshot) -> list[list[object]]:
    """As JSON-friendly rows `[group, topic, partition, offset, metadata]`."""
    return [
        [group, tp.topic, tp.partition, commit.offset, commit.metadata()]
        for group, commits in snapshot.items()
        for tp, commit in sorted(commits.items())
    ]


def decode_snapshot(rows: list[list[object]]) -> Snapshot:
    snapshot: Snapshot = {}
    for group, topic, partition, offset, metadata in rows:
        tp = TopicPartition(str(topic), int(partition))  # type: ignore[call-overload]
        commit = Commit.parse(int(offset), str(metadata))  # type: ignore[call-overload]
        snapshot.setdefault(str(group), {})[tp] = commit
    return snapshot


class LeaseNote(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A lease as one instance hands it over to the next owner of its partition: which offset,
    which attempt, until when and since when (in the clock of whoever holds the note)."""

    offset: int
    attempt: int
    deadline: float
    leased_at: float
