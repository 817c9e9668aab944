"""Hand-overs: the leases an instance gives up with a partition, for its next owner.

On Kafka, partitions move between instances at a rebalance (an instance joining or leaving, a new
source). The instance giving one up stores, for each of its consumer groups, a note of the leases it
holds there: offset, attempt, and until when (wall-clock seconds: the next owner runs on another
machine). The next owner takes those leases over as they are: a plugin still at work keeps its job,
its heartbeats and its status count wherever they are posted, and the job is offered again only when
the lease ends. Notes live in a compacted topic, the newest per (group, partition) counting; a note
older than its leases is harmless (they have ended). Sans-I/O.
"""

from __future__ import annotations

import msgspec

from azuld.core.cursor import LeaseNote, TopicPartition

__all__ = ["Handover", "handover_key"]


def handover_key(group: str, tp: TopicPartition) -> str:
    """The record key of a group's note for one partition."""
    return f"{group}|{tp.topic}|{tp.partition}"


class Handover(msgspec.Struct, frozen=True, kw_only=True):
    """One group's leases on one partition, as handed over. Times are wall-clock seconds."""

    group: str
    tp: TopicPartition
    at: float  # when it was handed over
    by: str  # the instance that handed it over
    leases: list[LeaseNote] = []

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, value: bytes) -> Handover | None:
        """The note, or `None` for a value that is not one (a newer format, a damaged record)."""
        try:
            return _decoder.decode(value)
        except msgspec.DecodeError:
            return None

    def clocked(self, wall_now: float, clock_now: float) -> list[LeaseNote]:
        """The leases still running at `wall_now`, with times moved to a clock reading
        `clock_now` at that moment (the trio clock of the instance taking them over)."""
        shift = clock_now - wall_now
        return [
            msgspec.structs.replace(
                note, deadline=note.deadline + shift, leased_at=note.leased_at + shift
            )
            for note in self.leases
            if note.deadline > wall_now
        ]


_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(Handover)
