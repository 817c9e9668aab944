"""Reading topics through to their end, in batches: how the replay cache is loaded at start-up and
how `azuld failed`, the re-offer audit trail and the source views read the log."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from azuld.ports import EventLog

__all__ = ["BATCH_RECORDS", "scan"]

# Records asked of the log per read.
BATCH_RECORDS = 500


async def scan(
    log: EventLog,
    topic_filter: Callable[[str], bool],
    *,
    newest: int | None = None,
    since: float | None = None,
    owned: bool = False,
) -> AsyncGenerator[bytes, None]:
    """The values in every partition of the topics `topic_filter` passes, partition by partition
    and oldest first in each: from the partition's start, or only its `newest` records, or those
    appended since the wall-clock time `since` (and maybe a few before), up to the end it had
    when the scan began. `owned=True` reads only this instance's share of the partitions
    (`EventLog.partitions`).

    Close it with `contextlib.aclosing` when stopping early.

    Raises:
        UpstreamError: the log failed.
    """
    tps = await log.partitions(topic_filter, owned=owned)
    firsts = await log.offsets_at(tps, since) if since is not None else {}
    for tp, (start, end) in (await log.offsets(tps)).items():
        offset = start if newest is None else max(start, end - newest)
        offset = max(offset, firsts.get(tp, offset))
        while offset < end:
            batch = await log.read(tp, offset, BATCH_RECORDS)
            if not batch:
                break
            offset = batch[-1][0] + 1
            for _, value in batch:
                yield value
