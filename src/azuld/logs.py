"""Logging set-up: key=value lines on stderr (journald adds the time under systemd)."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    # hypercorn's per-request access log is off; its errors still come through.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
