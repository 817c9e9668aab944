"""sd_notify and the watchdog interval, against a datagram socket standing in for systemd."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from azuld.systemd import notify, watchdog_interval_seconds


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_sends_the_state(notify_socket: socket.socket) -> None:
    assert notify("READY=1\nSTATUS=ok")
    assert notify_socket.recv(1024) == b"READY=1\nSTATUS=ok"


def test_notify_is_a_no_op_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_never_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "missing.sock"))
    assert notify("READY=1") is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("2000000", None, 1.0),
        ("2000000", "self", 1.0),
        ("2000000", "1", None),  # someone else's watchdog
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    import os

    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval_seconds() == expected


def test_notify_never_blocks_on_a_full_socket(notify_socket: socket.socket) -> None:
    # Nobody reads: the datagram queue fills after a few messages; notify must not block.
    results = [notify(f"WATCHDOG=1\nSTATUS={i}") for i in range(500)]
    assert results[0] is True
    assert results[-1] is False
