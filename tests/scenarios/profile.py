"""The daemon's configuration under test, and how hard each scenario pushes (`QUICK`, `SOAK`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEASE_SECONDS = 2.0
MAX_ATTEMPTS = 2
MAX_JOB_SECONDS = 4.0
MAX_POLLS_PER_KEY = 20
REQUEST_TIMEOUT_SECONDS = 15.0
# How long a scenario waits for something that must happen (a re-offer, a stored status, a
# connection closed, a slot freed) before calling it missing. Generous on purpose: on a loaded
# machine things are late, not wrong. How long they took is measured and reported, never asserted.
PATIENCE_SECONDS = 30.0
# The scenarios' own httpx clients: above PATIENCE_SECONDS, so a long-poll waiting that long ends
# with azuld's empty answer, not a client timeout.
CLIENT_TIMEOUT_SECONDS = 60.0

BASE_CONFIG: dict[str, dict[str, Any]] = {
    "dispatch": {
        "lease_seconds": LEASE_SECONDS,
        "max_attempts": MAX_ATTEMPTS,
        "max_job_seconds": MAX_JOB_SECONDS,
        "max_polls_per_key": MAX_POLLS_PER_KEY,
        "default_deadline_seconds": 1.0,
    },
    "server": {"graceful_timeout_seconds": 1.0},
}


@dataclass(frozen=True)
class Profile:
    """How hard each scenario pushes. `QUICK` for the test suite, `SOAK` for long runs."""

    name: str
    abuse_seconds: float  # how long each abusive client keeps at it
    slow_uploaders: int  # connections sending their upload body one byte a second
    long_polls: int  # concurrent long-polls opened for one plugin key
    stuck_readers: int  # connections that request a big download and never read it
    stuck_blob_mib: int
    killed_upload_mib: int  # the upload that is half-way through when the daemon dies
    killed_upload_seconds: float
    burst_statuses: int  # status posts in flight when the daemon dies
    waiting_polls: int  # long-polls waiting when the daemon dies
    baseline_seconds: float  # good client alone, before an abuse starts
    abandoned_connections: int  # clients that get their answer and never close the socket


QUICK = Profile(
    name="quick",
    abuse_seconds=3.0,
    slow_uploaders=10,
    long_polls=1000,
    stuck_readers=10,
    stuck_blob_mib=16,
    killed_upload_mib=8,
    killed_upload_seconds=4.0,
    burst_statuses=120,
    waiting_polls=30,
    baseline_seconds=0.5,
    abandoned_connections=200,
)
SOAK = Profile(
    name="soak",
    abuse_seconds=30.0,
    slow_uploaders=100,
    long_polls=5000,
    stuck_readers=50,
    stuck_blob_mib=64,
    killed_upload_mib=64,
    killed_upload_seconds=20.0,
    burst_statuses=1000,
    waiting_polls=150,
    baseline_seconds=5.0,
    abandoned_connections=2000,
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(path: Path, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """`BASE_CONFIG` with `overrides` (by section) as a TOML file at `path`."""
    sections = {name: dict(values) for name, values in BASE_CONFIG.items()}
    for name, values in (overrides or {}).items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
