"""Final statuses stored recently, anywhere: so that a job is not offered, nor stored, twice.

A job's final status is stored once. Two things can try to store another:

* a plugin that posts again (its first post was stored but the answer was lost, or it retried after
  its dispatcher died), or a plugin whose job was offered again after its dispatcher died while the
  first plugin was still at work. The first final status wins; later ones are answered but not
  stored (`seen`).
* an instance that takes a partition over from one that died before it committed the jobs it had
  finished (a commit follows each status by milliseconds). Every instance follows the status topic,
  so the new owner finishes those jobs before it offers anything (`finished_in`).

This index remembers, for `keep_seconds`, which (job, author) pairs have a stored final status: the
main plugin's status finishes the job; a multiplugin's (a runner plugin's sub-plugin, whose author
name differs) is remembered so that its results are stored once too. Past `keep_seconds` the commits
have long covered the jobs. Sans-I/O: time is passed in.
"""

from __future__ import annotations

from collections import deque

from azuld.core.cursor import TopicPartition
from azuld.core.delivery import JobRef

__all__ = ["MAIN", "RecentlyFinished"]

MAIN = ""
"""The author recorded for a job's main status (the plugin key's own plugin): the one that
finishes the job. A multiplugin's status is recorded under its own name."""

_Partition = tuple[str, str, TopicPartition]  # plugin key, lane, partition


class RecentlyFinished:
    """(job, author) pairs with a stored final status, for `keep_seconds` (and at most
    `max_entries`: the oldest go first)."""

    def __init__(self, keep_seconds: float, max_entries: int = 500_000) -> None:
        self.keep_seconds = keep_seconds
        self.max_entries = max_entries
        self._by_partition: dict[_Partition, dict[int, tuple[str, ...]]] = {}
        self._order: deque[tuple[float, _Partition, int]] = deque()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, ref: JobRef, author: str, now: float) -> bool:
        """Remember that `author`'s final status for `ref` is stored (`MAIN` for the key's own
        plugin); `False` if it was known."""
        part = (ref.plugin_key, ref.lane, ref.tp)
        offsets = self._by_partition.setdefault(part, {})
        authors = offsets.get(ref.offset, ())
        if author in authors:
            return False
        offsets[ref.offset] = (*authors, author)
        self._order.append((now, part, ref.offset))
        self.prune(now)
        return True

    def seen(self, ref: JobRef, author: str) -> bool:
        """Whether `author`'s final status for `ref` was stored (within `keep_seconds`)."""
        offsets = self._by_partition.get((ref.plugin_key, ref.lane, ref.tp))
        return offsets is not None and author in offsets.get(ref.offset, ())

    def authors(self, ref: JobRef) -> tuple[str, ...]:
        """Every author with a stored final status for `ref` (within `keep_seconds`), `MAIN`
        for the key's own plugin."""
        offsets = self._by_partition.get((ref.plugin_key, ref.lane, ref.tp))
        return offsets.get(ref.offset, ()) if offsets is not None else ()

    def finished_in(
        self, plugin_key: str, lane: str, tp: TopicPartition, at_or_above: int
    ) -> list[int]:
        """Offsets of one partition at or above `at_or_above` whose main status is stored: a new
        owner marks them finished before it reads the partition."""
        offsets = self._by_partition.get((plugin_key, lane, tp), {})
        return sorted(o for o, authors in offsets.items() if o >= at_or_above and MAIN in authors)

    def prune(self, now: float) -> None:
        """Forget what is older than `keep_seconds`, and the oldest past `max_entries`."""
        order, horizon = self._order, now - self.keep_seconds
        while order and (order[0][0] < horizon or len(order) > self.max_entries):
            _, part, offset = order.popleft()
            offsets = self._by_partition.get(part)
            if offsets is None:
                continue
            offsets.pop(offset, None)  # every author of the offset: they came within moments
            if not offsets:
                del self._by_partition[part]
