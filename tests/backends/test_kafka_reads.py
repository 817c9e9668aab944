"""`azuld.backends.kafka_reads.ReadAhead`: what a fetch behind the live edge brought, kept for the
reads after it."""

from __future__ import annotations

from azuld.backends.kafka_reads import ReadAhead
from azuld.core.delivery import TopicPartition

A, B, C, D = (TopicPartition("azul.t.s.binary.sourced", p) for p in range(4))


def fetched(first: int, count: int, size: int = 100) -> list[tuple[int, bytes]]:
    return [(o, b"x" * size) for o in range(first, first + count)]


def test_reads_within_a_fetch_are_answered_from_it() -> None:
    kept = ReadAhead(max_bytes=1_000_000)
    kept.keep(A, fetched(100, 200))
    assert [o for o, _ in kept.get(A, 100, 64)] == list(range(100, 164))
    assert [o for o, _ in kept.get(A, 164, 64)] == list(range(164, 228))
    assert [o for o, _ in kept.get(A, 290, 64)] == list(range(290, 300))  # what is left
    assert kept.hits == 3
    # Outside what was fetched: a fetch must start there.
    assert kept.get(A, 300, 64) == []
    assert kept.get(A, 99, 64) == []
    assert kept.get(B, 150, 64) == []
    assert kept.hits == 3


def test_a_compacted_gap_reads_on_from_the_next_record() -> None:
    kept = ReadAhead(max_bytes=1_000_000)
    kept.keep(A, [(10, b"a"), (11, b"b"), (15, b"c"), (16, b"d")])
    assert kept.get(A, 12, 2) == [(15, b"c"), (16, b"d")]


def test_a_new_fetch_replaces_the_partitions_last_and_the_oldest_go_past_the_budget() -> None:
    kept = ReadAhead(max_bytes=3 * (100 * 164))  # three fetches of 100 records of 100 bytes
    kept.keep(A, fetched(0, 100))
    kept.keep(A, fetched(500, 100))
    assert kept.get(A, 0, 10) == []
    assert len(kept.get(A, 500, 10)) == 10
    kept.keep(B, fetched(0, 100))
    kept.keep(C, fetched(0, 100))
    assert len(kept) == 3
    kept.keep(D, fetched(0, 100))  # over the budget: A, fetched longest ago, goes
    assert len(kept) == 3
    assert kept.get(A, 500, 10) == []
    assert all(len(kept.get(tp, 0, 10)) == 10 for tp in (B, C, D))
    kept.keep(C, [])  # a fetch that brought nothing keeps nothing
    assert kept.get(C, 0, 10) == []
    kept.keep(B, fetched(0, 1000))  # larger than the whole budget: not kept
    assert kept.get(B, 0, 10) == []
