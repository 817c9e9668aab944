"""sd_notify over `$NOTIFY_SOCKET` with the standard library; a no-op outside systemd."""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify", "watchdog_interval_seconds"]

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` (e.g. `READY=1`) to systemd. Returns False outside systemd; never raises."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        # Non-blocking: a reader that falls behind (its queue is a few datagrams deep) must
        # never stall the event loop; the message is dropped instead.
        kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        with socket.socket(socket.AF_UNIX, kind) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", state, exc)
        return False
    return True


def watchdog_interval_seconds() -> float | None:
    """Half of `WATCHDOG_USEC` when the watchdog is on for this process (sd_watchdog_enabled)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None
