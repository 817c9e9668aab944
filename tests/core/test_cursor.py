"""Cursors and commits (core.cursor): the low-water mark, what a commit carries, and its
metadata codec."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azuld.core.cursor import (
    Commit,
    PartitionCursor,
    Snapshot,
    TopicPartition,
    decode_snapshot,
    encode_snapshot,
)

# -- commits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "commit",
    [
        Commit(0),
        Commit(5, stop=9),
        Commit(10, frozenset({11, 12, 13, 20, 22, 23})),
        Commit(0, frozenset({1}), stop=100),
    ],
)
def test_commit_metadata_round_trip(commit: Commit) -> None:
    assert Commit.parse(commit.offset, commit.metadata()) == commit


def test_commit_metadata_is_compact() -> None:
    commit = Commit(1000, frozenset(range(1001, 1900)))
    assert commit.metadata() == "azd1;done=1-899"


def test_foreign_metadata_is_a_plain_offset() -> None:
    assert Commit.parse(7, "something else") == Commit(7)


# -- cursor -----------------------------------------------------------------------------------


def test_low_water_mark_never_passes_an_open_offset() -> None:
    cursor = PartitionCursor(Commit(0))
    for offset in range(5):
        assert cursor.accept(offset)
    cursor.finish(1)
    cursor.finish(2)
    assert cursor.committed == 0
    cursor.finish(0)
    assert cursor.committed == 3
    cursor.finish(4)
    assert cursor.committed == 3
    assert cursor.commit() == Commit(3, frozenset({4}))
    cursor.finish(3)
    assert cursor.commit() == Commit(5)


def test_restart_skips_offsets_finished_above_the_mark() -> None:
    cursor = PartitionCursor(Commit(3, frozenset({4, 6})))
    accepted = [o for o in range(3, 8) if cursor.accept(o)]
    assert accepted == [3, 5, 7]


def test_late_finish_of_an_unread_offset_is_remembered() -> None:
    cursor = PartitionCursor(Commit(0))
    cursor.finish(2)
    assert [o for o in range(4) if cursor.accept(o)] == [0, 1, 3]


def test_many_open_offsets_finished_out_of_order() -> None:
    """The mark and the finished-above set stay exact however the finishes interleave (the
    cursor keeps them in O(1) amortized steps, not by scanning the open offsets)."""
    cursor = PartitionCursor(Commit(0))
    for offset in range(1000):
        cursor.accept(offset)
    for offset in range(999, 0, -2):  # the odd offsets, newest first
        cursor.finish(offset)
    assert cursor.committed == 0
    assert cursor.commit().finished == frozenset(range(1, 1000, 2))
    for offset in range(0, 500, 2):  # the even offsets up to 498: the mark passes 499
        cursor.finish(offset)
    assert cursor.committed == 500
    assert cursor.commit() == Commit(500, frozenset(range(501, 1000, 2)))
    assert cursor.open_count == 250
    assert cursor.is_finished(499)
    assert cursor.is_finished(501)
    assert not cursor.is_finished(500)
    assert not cursor.is_finished(1000)  # not read yet


def test_accepting_above_open_offsets_keeps_the_mark() -> None:
    """Only the first open offset (after a gap or a restart) moves the mark when accepted."""
    cursor = PartitionCursor(Commit(3, frozenset({5})))
    assert not cursor.accept(2)  # below the commit: done before
    assert cursor.accept(4)  # 3 was never read: a gap, the mark moves to the open 4
    assert cursor.committed == 4
    assert not cursor.accept(5)  # finished above the mark before a restart
    assert cursor.accept(6)
    assert cursor.committed == 4
    cursor.finish(4)
    assert cursor.commit() == Commit(6)
    cursor.finish(6)
    assert cursor.accept(9)  # after a gap, with nothing open: the mark moves to 9
    assert cursor.commit() == Commit(9)


def test_readable_respects_stop_and_window() -> None:
    cursor = PartitionCursor(Commit(0, stop=3))
    assert cursor.readable(window=100) == 3
    cursor = PartitionCursor(Commit(0))
    cursor.accept(0)
    assert cursor.readable(window=10) == 9


def test_gap_in_the_log_moves_the_mark() -> None:
    cursor = PartitionCursor(Commit(0))
    cursor.skip_to(50)
    assert cursor.committed == 50


# -- properties (Hypothesis) -----------------------------------------------------------------------

# No example database: keep runs free of files in the working tree. A failure prints its minimal
# example (and a `@reproduce_failure` blob) all the same.
PLAIN = settings(max_examples=100, database=None)

OFFSETS = st.integers(0, 2**63 - 1)


@st.composite
def commits(draw: st.DrawFn) -> Commit:
    """Any commit the cursor can make: finished offsets at or above the commit offset."""
    offset = draw(OFFSETS)
    deltas = set(draw(st.frozensets(st.integers(0, 64) | st.integers(0, 2**40), max_size=30)))
    for start, length in draw(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 60)))):
        deltas.update(range(start, start + length))
    stop = draw(st.none() | OFFSETS)
    return Commit(offset, frozenset(offset + d for d in deltas), stop)


@PLAIN
@given(commits())
def test_commit_metadata_round_trips(commit: Commit) -> None:
    metadata = commit.metadata()
    assert metadata.startswith("azd1")
    assert Commit.parse(commit.offset, metadata) == commit
    snapshot: Snapshot = {"group": {TopicPartition("t", 0): commit}}
    assert decode_snapshot(json.loads(json.dumps(encode_snapshot(snapshot)))) == snapshot


@PLAIN
@given(OFFSETS, st.text())
def test_foreign_commit_metadata_is_a_plain_offset(offset: int, metadata: str) -> None:
    if metadata.split(";")[0] != "azd1":
        assert Commit.parse(offset, metadata) == Commit(offset)


def test_alternating_finished_offsets_go_as_a_bitmap_within_kafkas_metadata_limit() -> None:
    # Kafka refuses commit metadata over offset.metadata.max.bytes (4096 by default): the largest
    # window (dispatch.window) must fit however its finished offsets alternate.
    commit = Commit(7, frozenset(range(8, 7 + 20_000, 2)), stop=10**12, handed_out=7 + 20_000)
    metadata = commit.metadata()
    assert ";bits=" in metadata
    assert len(metadata.encode()) < 4096
    assert Commit.parse(7, metadata) == commit
    assert Commit.parse(7, metadata).handed_out == commit.handed_out


def test_a_commit_in_ranges_is_still_read() -> None:
    # What daemons before the bitmap wrote, however alternating.
    assert Commit.parse(10, "azd1;done=1,3,5-6") == Commit(10, frozenset({11, 13, 15, 16}))
