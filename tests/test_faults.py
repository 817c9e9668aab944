"""Faults injected against the real daemon, each asserting the documented outcome.

The scenarios live in `tests/scenarios/` (shared with `scripts/reliability-report`, which runs them
repeatedly and writes docs/reliability.md). Every scenario starts `azuld serve` as a subprocess
with short leases (`lease_seconds = 2`, `max_attempts = 2`, `max_job_seconds = 4`) while a
well-behaved client keeps uploading, publishing, fetching, downloading and completing jobs beside
the fault, and fills in an `Outcome` whose checks and computed losses are asserted here.

The checks are behaviour (served, not starved, limits enforced, counts, every request answered),
never how fast: a loaded CI machine is slow, not wrong. The latencies and recovery times are
measured into `Outcome.served`, which the reliability report prints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import scenarios
from tests.scenarios import abuse, disk, kills, plugins, statuses

pytestmark = [
    # httpcore leaves a request's body generator unfinished when the server dies under it (the
    # point of the SIGKILL scenarios); trio then warns when it is garbage collected.
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
        ":ResourceWarning"
    ),
]
slow = pytest.mark.slow


async def run(scenario: scenarios.Scenario, tmp_path: Path) -> scenarios.Outcome:
    outcome = await scenario.run(tmp_path, scenarios.QUICK)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.ok, outcome.explain()
    return outcome


def test_every_scenario_is_asserted_here() -> None:
    """The report's "Rerun" column names these tests."""
    tests = {name for name in globals() if name.startswith("test_")}
    assert [s.test for s in scenarios.SCENARIOS if s.test not in tests] == []
    assert len({s.key for s in scenarios.SCENARIOS}) == len(scenarios.SCENARIOS)


@slow
async def test_plugin_crash_mid_job(tmp_path: Path) -> None:
    """Re-offered after the lease; after the last attempt an `error-timeout` is stored."""
    await run(plugins.crash, tmp_path)


@slow
async def test_plugin_hang_without_heartbeats(tmp_path: Path) -> None:
    """As a crash, and other plugin keys are served meanwhile; a late status ends nothing twice."""
    await run(plugins.hang, tmp_path)


@slow
async def test_plugin_heartbeating_forever(tmp_path: Path) -> None:
    """Heartbeats cannot keep a job past `dispatch.max_job_seconds`."""
    await run(plugins.heartbeat_forever, tmp_path)


@slow
async def test_duplicate_and_foreign_statuses(tmp_path: Path) -> None:
    """200 and stored; no job finished twice; the real key's fetches and commits undisturbed."""
    await run(statuses.bogus_statuses, tmp_path)


@slow
async def test_forged_status_for_a_future_offset(tmp_path: Path) -> None:
    """A status naming an offset that does not exist yet must not hide the event written there."""
    await run(statuses.forged_future_status, tmp_path)


@slow
async def test_sigkill_during_uploads(tmp_path: Path) -> None:
    """Acknowledged blobs survive, the half upload is nowhere, spool cleaned, SQLite intact."""
    await run(kills.during_uploads, tmp_path)


@slow
async def test_sigkill_during_fetches(tmp_path: Path) -> None:
    """Exactly the unfinished jobs come back after the restart."""
    await run(kills.during_fetches, tmp_path)


@slow
async def test_sigkill_during_status_posts(tmp_path: Path) -> None:
    """Acknowledged statuses and their results are durable and never offered again."""
    await run(kills.during_status_posts, tmp_path)


@slow
async def test_disk_full(tmp_path: Path) -> None:
    """507 on a full data folder, nothing corrupted, and it works again once space is back."""
    await run(disk.full, tmp_path)


@slow
async def test_disk_full_background_writes(tmp_path: Path) -> None:
    """The daemon's own writes failing on a full disk (lease reaper, commits) do not stop it."""
    await run(disk.full_under_own_writes, tmp_path)


@slow
async def test_slow_upload_body(tmp_path: Path) -> None:
    """Bodies at 1 byte/s are all accepted; the good client is served meanwhile."""
    await run(abuse.slow_uploads, tmp_path)


@slow
async def test_long_poll_flood(tmp_path: Path) -> None:
    """Exactly `max_polls_per_key` wait, every other long-poll gets 429, slots free on hang-up."""
    await run(abuse.long_poll_flood, tmp_path)


@slow
async def test_unread_downloads(tmp_path: Path) -> None:
    """Unread responses are not buffered in memory; the blob still downloads whole."""
    await run(abuse.unread_downloads, tmp_path)


@slow
async def test_abandoned_connections_are_closed(tmp_path: Path) -> None:
    """Every `Connection: close` answer is followed by azuld closing its end; no fds pile up."""
    await run(abuse.abandoned_connections, tmp_path)
