"""sd_notify over `$NOTIFY_SOCKET` with the standard library; a no-op outside systemd."""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` (e.g. `READY=1`) to systemd. Returns False outside systemd; never raises."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("sd_notify %r failed: %s", state, exc)
        return False
    return True
