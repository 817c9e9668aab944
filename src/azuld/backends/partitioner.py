"""Which partition a record goes to: as Sarama's hash partitioner (the Go dispatcher's), FNV-1a
of the key modulo the topic's partition count."""

from __future__ import annotations

__all__ = ["fnv1a_32", "partition_of"]


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bit: the hash Sarama's partitioner uses."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def partition_of(key: bytes, count: int) -> int:
    """The partition of a record with `key` in a topic of `count` partitions."""
    return fnv1a_32(key) % count if count > 1 else 0
