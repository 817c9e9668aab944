"""The unit files (azuld.service, and the azuld@.service template as an instance) verify with
systemd-analyze and their sandbox scores well (exposure <= 2.0)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
UNIT = UNITS / "azuld.service"
TEMPLATE = UNITS / "azuld@.service"
# The name each unit is verified under: the template as one of its instances.
INSTANCES = {UNIT: "azuld.service", TEMPLATE: "azuld@8111.service"}


@pytest.fixture(params=[UNIT, TEMPLATE], ids=["azuld.service", "azuld@.service"])
def unit(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_unit_has_what_the_daemon_relies_on(unit: Path) -> None:
    text = unit.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        "KillMode=mixed",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=azuld",  # azuld-%i for the template's instances
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


def test_the_template_gives_each_instance_its_port_and_data_folder() -> None:
    text = TEMPLATE.read_text()
    assert "--listen ${BIND_HOST}:%i" in text
    assert "StateDirectory=azuld-%i\n" in text
    # The rest is azuld.service's: the same sandbox and lifetime settings.
    service = {line for line in UNIT.read_text().splitlines() if not line.startswith("#")}
    template = {line for line in text.splitlines() if not line.startswith("#")}
    assert {line for line in service - template if line} == {
        "Description=azuld dispatcher for Azul-style analysis plugins",
        "ExecStart=/opt/azuld/.venv/bin/azuld serve --config /etc/azuld/azuld.toml",
        "StateDirectory=azuld",
    }


@pytest.fixture
def unit_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's azuld, so verify can check it."""
    azuld = Path(sys.executable).with_name("azuld")
    copy = tmp_path / INSTANCES[unit]
    copy.write_text(unit.read_text().replace("/opt/azuld/.venv/bin/azuld", str(azuld)))
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
    match = re.search(
        rf"Overall exposure level for {re.escape(unit_copy.name)}: ([\d.]+)", done.stdout
    )
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match.group(1)) <= 2.0
