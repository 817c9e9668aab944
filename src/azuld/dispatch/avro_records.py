"""The Avro encodings of log records, for fetch answers in Avro (Go plugins' `avro-format=true`).

An event in the log goes to every plugin key that wants it, so each record is written as Avro
once and kept, keyed by where it lives (topic, partition, offset: a record never changes). A
binary event is kept in two halves around `dequeued`, the one field a handout sets per job:
`dequeued` is the 8th of the event's 13 fields in the v6 schema, so a job's datum is the head,
its own `dequeued` as an Avro string, and the tail, with no re-encoding. Bounded by bytes; the
oldest entries go first.
"""

from __future__ import annotations

from typing import Any, Final

from azuld.core.delivery import Job
from azuld.core.posts import DECODERS
from azuld.models.avro import FAST, check_avro_model
from azuld.models.avro_fast import encode_long
from azuld.models.events import BinaryEvent

__all__ = ["DEFAULT_MAX_BYTES", "AvroRecords"]

DEFAULT_MAX_BYTES: Final = 32 * 1024 * 1024
_ENTRY_OVERHEAD_BYTES: Final = 200  # the key, the tuple and two bytes objects, roughly


class AvroRecords:
    """Avro datums of log records, by (topic, partition, offset), at most `max_bytes`."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[tuple[str, int, int], tuple[bytes, bytes]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def render(self, model: str, job: Job, event: Any) -> bytes:
        """The Avro datum of `job`'s event as handed out: `event` if the caller decoded it
        (for a binary event, with the `dequeued` it hands out), else the job's record.

        Raises:
            Unprocessable: no Avro schema for `model` (checked when the fetch was parsed).
            msgspec.DecodeError: the record is not JSON of the model (the fetch's filter skips
                those before they are handed out).
        """
        ref = job.ref
        key = (ref.tp.topic, ref.tp.partition, ref.offset)
        entry = self._entries.get(key)
        if entry is None:
            if event is None:
                check_avro_model(model)
                event = DECODERS[model].decode(job.value)
            entry = self._store(key, model, event)
        head, tail = entry
        if not tail:
            return head
        if event is None:  # not decoded by the fetch's filter (it decodes binary events)
            event = DECODERS[model].decode(job.value)
        dequeued = event.dequeued.encode()
        return b"".join((head, encode_long(len(dequeued)), dequeued, tail))

    def _store(self, key: tuple[str, int, int], model: str, event: Any) -> tuple[bytes, bytes]:
        if isinstance(event, BinaryEvent):
            entry = FAST.binary_halves(event)
        else:
            entry = (FAST.write(model, event), b"")
        size = len(entry[0]) + len(entry[1]) + _ENTRY_OVERHEAD_BYTES
        entries = self._entries
        while entries and self.bytes + size > self.max_bytes:
            oldest = next(iter(entries))
            head, tail = entries.pop(oldest)
            self.bytes -= len(head) + len(tail) + _ENTRY_OVERHEAD_BYTES
        if size <= self.max_bytes:
            entries[key] = entry
            self.bytes += size
        return entry
