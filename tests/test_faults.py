"""Faults injected against the real daemon, each asserting the documented outcome.

The scenarios live in `tests/faults.py` (shared with `scripts/reliability-report`, which runs them
repeatedly and writes docs/reliability.md); each returns an `Outcome` whose checks and computed
losses are asserted here. Every scenario starts `azuld serve` as a subprocess with short leases
(`lease_seconds = 2`, `max_attempts = 2`, `max_job_seconds = 4`) while a well-behaved client keeps
uploading, publishing, fetching, downloading and completing jobs beside the fault.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import faults

pytestmark = [
    pytest.mark.slow,
    # httpcore leaves a request's body generator unfinished when the server dies under it (the
    # point of the SIGKILL scenarios); trio then warns when it is garbage collected.
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
        ":ResourceWarning"
    ),
]


async def run(key: str, tmp_path: Path) -> faults.Outcome:
    outcome = await faults.scenario(key).run(tmp_path, faults.QUICK)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.ok, outcome.explain()
    return outcome


async def test_plugin_crash_mid_job(tmp_path: Path) -> None:
    """Re-offered after the lease; after the last attempt an `error-timeout` is stored."""
    await run("plugin-crash", tmp_path)


async def test_plugin_hang_without_heartbeats(tmp_path: Path) -> None:
    """As a crash, and other plugin keys are served meanwhile; a late status ends nothing twice."""
    outcome = await run("plugin-hang", tmp_path)
    assert outcome.served["while_hung"]["requests"] >= 10


async def test_plugin_heartbeating_forever(tmp_path: Path) -> None:
    """Heartbeats cannot keep a job past `dispatch.max_job_seconds`."""
    await run("heartbeat-forever", tmp_path)


async def test_duplicate_and_foreign_statuses(tmp_path: Path) -> None:
    """200 and stored; no job finished twice; the real key's fetches and commits undisturbed."""
    await run("bogus-statuses", tmp_path)


async def test_forged_status_for_a_future_offset(tmp_path: Path) -> None:
    """A status naming an offset that does not exist yet must not hide the event written there."""
    await run("forged-future-status", tmp_path)


async def test_sigkill_during_uploads(tmp_path: Path) -> None:
    """Acknowledged blobs survive, the half upload is nowhere, spool cleaned, SQLite intact."""
    await run("kill-during-uploads", tmp_path)


async def test_sigkill_during_fetches(tmp_path: Path) -> None:
    """Exactly the unfinished jobs come back after the restart."""
    await run("kill-during-fetches", tmp_path)


async def test_sigkill_during_status_posts(tmp_path: Path) -> None:
    """Acknowledged statuses and their results are durable and never offered again."""
    await run("kill-during-status-posts", tmp_path)


async def test_disk_full(tmp_path: Path) -> None:
    """507 on a full data folder, nothing corrupted, and it works again once space is back."""
    await run("disk-full", tmp_path)


async def test_disk_full_background_writes(tmp_path: Path) -> None:
    """The daemon's own writes failing on a full disk (lease reaper, commits) do not stop it."""
    await run("disk-full-background", tmp_path)


async def test_slow_upload_body(tmp_path: Path) -> None:
    await run("slow-upload", tmp_path)


async def test_long_poll_flood(tmp_path: Path) -> None:
    await run("long-poll-flood", tmp_path)


async def test_unread_downloads(tmp_path: Path) -> None:
    await run("unread-download", tmp_path)


async def test_abandoned_connections_are_closed(tmp_path: Path) -> None:
    await run("abandoned-connections", tmp_path)
