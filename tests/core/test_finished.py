"""The index of recently stored final statuses: first wins, remembered for a while, bounded."""

from __future__ import annotations

from azuld.core.cursor import TopicPartition
from azuld.core.delivery import JobRef
from azuld.core.finished import MAIN, RecentlyFinished

TP = TopicPartition("azul.t.s.binary.sourced", 1)


def ref(offset: int, key: str = "Unbox-1", lane: str = "live") -> JobRef:
    return JobRef(key, lane, TP, offset)


def test_a_final_status_is_known_once_per_author() -> None:
    index = RecentlyFinished(keep_seconds=60)
    assert index.add(ref(5), "Unbox", now=0)
    assert not index.add(ref(5), "Unbox", now=1)  # a second post of the same status
    assert index.seen(ref(5), "Unbox")
    # A runner's multiplugin posts under its own author name: remembered apart.
    assert not index.seen(ref(5), "Unbox-sevenzip")
    assert index.add(ref(5), "Unbox-sevenzip", now=1)
    # Other keys, lanes and offsets are other jobs.
    assert not index.seen(ref(5, key="Other-1"), "Unbox")
    assert not index.seen(ref(5, lane="historic"), "Unbox")
    assert not index.seen(ref(6), "Unbox")


def test_a_new_owner_finds_what_the_main_plugin_finished_above_the_commit() -> None:
    index = RecentlyFinished(keep_seconds=60)
    for offset in (3, 7, 9):
        index.add(ref(offset), MAIN, now=0)
    index.add(ref(8), "Unbox-sevenzip", now=0)  # a multiplugin alone does not finish the job
    assert index.finished_in("Unbox-1", "live", TP, at_or_above=5) == [7, 9]
    assert index.finished_in("Unbox-1", "historic", TP, at_or_above=0) == []


def test_entries_are_forgotten_after_keep_seconds_and_past_the_bound() -> None:
    index = RecentlyFinished(keep_seconds=10, max_entries=3)
    index.add(ref(1), "P", now=0)
    index.add(ref(2), "P", now=5)
    index.prune(now=10.5)
    assert not index.seen(ref(1), "P")
    assert index.seen(ref(2), "P")
    for offset in (3, 4, 5):
        index.add(ref(offset), "P", now=6)
    assert len(index) == 3
    assert not index.seen(ref(2), "P")  # the oldest went first
    assert all(index.seen(ref(o), "P") for o in (3, 4, 5))
    index.prune(now=100)
    assert len(index) == 0
    assert index.finished_in("Unbox-1", "live", TP, 0) == []
