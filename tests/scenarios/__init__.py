"""Fault scenarios against the real azuld daemon, shared by `tests/test_faults.py` (which asserts
their checks) and `scripts/reliability-report` (which runs them repeatedly and writes
docs/reliability.md).

Each scenario starts `azuld serve` as a subprocess with short leases, injects one fault while a
well-behaved client keeps working beside it, and fills in an `Outcome`: named checks of the
documented behaviour (asserted by the tests), what was served and how fast (measured, reported,
never asserted), and what was lost (computed afterwards, must be zero).

    profile.py   the daemon's config under test; how hard a run pushes (QUICK, SOAK)
    outcome.py   Scenario (made with @fault) and Outcome (checks, served, lost, notes)
    wire.py      events, statuses, fetches and read-backs, as a well-behaved client sends them
    raw.py       HTTP/1.1 on raw sockets, for clients that do not play by the rules
    harness.py   daemons and plugin processes of a run; its data folder; a small filesystem
    good.py      the good client that works beside every fault, and the abuse window
    plugins.py   a plugin that crashes, hangs, or heartbeats forever
    statuses.py  duplicate, foreign and forged statuses
    kills.py     SIGKILL during uploads, fetches and status posts
    disk.py      a full data folder
    abuse.py     slow bodies, a long-poll flood, clients that never hang up, unread downloads
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.scenarios import abuse, disk, kills, plugins, statuses
from tests.scenarios.outcome import Outcome, Scenario
from tests.scenarios.profile import (
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    MAX_JOB_SECONDS,
    MAX_POLLS_PER_KEY,
    QUICK,
    SOAK,
    Profile,
)

__all__ = [
    "LEASE_SECONDS",
    "MAX_ATTEMPTS",
    "MAX_JOB_SECONDS",
    "MAX_POLLS_PER_KEY",
    "QUICK",
    "SCENARIOS",
    "SOAK",
    "Outcome",
    "Profile",
    "Scenario",
    "cleanup",
    "scenario",
]

# In the report's order.
SCENARIOS: list[Scenario] = [
    plugins.crash,
    plugins.hang,
    plugins.heartbeat_forever,
    statuses.bogus_statuses,
    statuses.forged_future_status,
    kills.during_uploads,
    kills.during_fetches,
    kills.during_status_posts,
    disk.full,
    disk.full_under_own_writes,
    abuse.slow_uploads,
    abuse.long_poll_flood,
    abuse.abandoned_connections,
    abuse.unread_downloads,
]


def scenario(key: str) -> Scenario:
    """The scenario named `key`; `KeyError` if there is none."""
    for each in SCENARIOS:
        if each.key == key:
            return each
    raise KeyError(key)


def cleanup(workdir: Path) -> None:
    """Remove a run's folder (the report script runs many)."""
    shutil.rmtree(workdir, ignore_errors=True)
