"""`azuld.backends.kafka_reads.ReadAhead`: what a fetch behind the live edge brought, kept for the
reads after it."""

from __future__ import annotations

from azuld.backends.kafka_reads import ReadAhead
from azuld.core.cursor import TopicPartition

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


def test_fetches_at_several_offsets_of_a_partition_are_kept_side_by_side() -> None:
    # Plugin keys replaying one partition read near each other: each reads from whichever
    # fetch covers its offset, and a fetch at a new offset does not drop the others.
    kept = ReadAhead(max_bytes=1_000_000)
    kept.keep(A, fetched(0, 100))
    kept.keep(A, fetched(50, 100))
    kept.keep(A, fetched(500, 100))
    assert [o for o, _ in kept.get(A, 10, 3)] == [10, 11, 12]
    assert [o for o, _ in kept.get(A, 120, 3)] == [120, 121, 122]
    assert [o for o, _ in kept.get(A, 599, 3)] == [599]
    assert kept.get(A, 300, 3) == []
    assert len(kept) == 3


def test_the_least_recently_read_go_first_past_the_budget() -> None:
    kept = ReadAhead(max_bytes=3 * (100 * 164))  # three fetches of 100 records of 100 bytes
    kept.keep(A, fetched(0, 100))
    kept.keep(B, fetched(0, 100))
    kept.keep(C, fetched(0, 100))
    assert kept.get(A, 0, 1)  # read: B is now the least recently read
    kept.keep(D, fetched(0, 100))
    assert len(kept) == 3
    assert kept.get(B, 0, 1) == []
    assert all(kept.get(tp, 0, 1) for tp in (A, C, D))
    kept.keep(A, fetched(0, 100))  # the same fetch again replaces it
    assert len(kept) == 3
    kept.keep(C, [])  # a fetch that brought nothing keeps nothing (and drops nothing)
    assert kept.get(C, 0, 1)
    kept.keep(B, fetched(0, 1000))  # larger than the whole budget: not kept
    assert kept.get(B, 0, 10) == []
