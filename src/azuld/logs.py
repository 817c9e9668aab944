"""Logging: one line per record on stderr, as text, key=value (under journald) or JSON.

Every line carries the request id when it is written during a request, and nothing that looks
like a secret: settings are printed through `azuld.settings.redacted`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Literal

__all__ = ["configure_logging", "set_level"]

LogFormat = Literal["auto", "text", "json", "keyvalue"]


class _RequestIdFilter(logging.Filter):
    def __init__(self, worker: str | None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        from azuld.http.steps import REQUEST_ID

        record.request_id = REQUEST_ID.get()
        if self.worker is not None:
            record.worker = self.worker
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if worker := getattr(record, "worker", None):
            entry["worker"] = worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """`level=info logger=azuld.service request_id=- msg="..."`; journald adds the time."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        worker = getattr(record, "worker", None)
        return (
            f"level={record.levelname.lower()} {f'worker={worker} ' if worker else ''}"
            f"logger={record.name} "
            f"request_id={getattr(record, 'request_id', '-')} msg={json.dumps(message)}"
        )


def configure_logging(
    level: str, log_format: LogFormat = "auto", worker: str | None = None
) -> None:
    """Log to stderr. `auto` is key=value under journald (`JOURNAL_STREAM` set), else text.
    `worker` (`w0`, `w1`… of `azuld serve --processes N`) goes on every line."""
    if log_format == "auto":
        log_format = "keyvalue" if os.environ.get("JOURNAL_STREAM") else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter(worker))
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif log_format == "keyvalue":
        handler.setFormatter(KeyValueFormatter())
    else:
        tag = f"{worker} " if worker else ""
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s {tag}%(name)s [%(request_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    # hypercorn's per-request access log is off; its errors still come through. httpx logs
    # every request at INFO.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
