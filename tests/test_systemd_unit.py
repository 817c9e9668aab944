"""The unit file verifies with systemd-analyze and its sandbox scores well (exposure <= 2.0)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "azuld.service"


def test_unit_has_what_the_daemon_relies_on() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        "KillMode=mixed",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=azuld",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=",
    ):
        assert line in text, line
    stop = int(re.search(r"TimeoutStopSec=(\d+)", text).group(1))  # type: ignore[union-attr]
    assert stop > 3  # longer than server.graceful_timeout_seconds


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's azuld, so verify can check it."""
    azuld = Path(sys.executable).with_name("azuld")
    copy = tmp_path / "azuld.service"
    copy.write_text(UNIT.read_text().replace("/opt/azuld/.venv/bin/azuld", str(azuld)))
    return copy


def test_systemd_analyze_verify(unit_copy: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is part of Debian's systemd package"
    done = subprocess.run(
        [tool, "verify", str(unit_copy)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_security_exposure_is_low(unit_copy: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool
    done = subprocess.run(
        [tool, "security", "--offline=yes", str(unit_copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for azuld.service: ([\d.]+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match.group(1)) <= 2.0
