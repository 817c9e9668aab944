"""Logging: one line per record on stderr, as text, key=value (under journald) or JSON.

Every line carries an RFC 3339 time with milliseconds and the zone, the request id when it is
written during a request, and nothing that looks like a secret: settings are printed through
`azuld.settings.redacted`.

What an operator reads is azuld's own lines. Other libraries' loggers (aiokafka, aiobotocore's
HTTP client, hypercorn, …) show only warnings and errors, one step quieter than azuld: at
`log_level = "debug"` their INFO lines appear too. aiokafka reports a few conditions as ERROR that
are part of every normal start or rebalance (a group coordinator not elected yet, a new topic's
leader not known yet, a commit refused while the group rebalances); those are shown as DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = [
    "BENIGN_THIRD_PARTY",
    "Benign",
    "JsonFormatter",
    "KeyValueFormatter",
    "TextFormatter",
    "ThirdPartyFilter",
    "configure_logging",
    "rfc3339",
    "set_level",
]

LogFormat = Literal["auto", "text", "json", "keyvalue"]

# Loggers known to be chatty, set to the third-party level so their records are not even built.
# Others outside `azuld` are held to the same level by `ThirdPartyFilter` on the handler.
_NOISY = (
    "aiobotocore",
    "aiokafka",
    "asyncio",
    "botocore",
    "hypercorn",
    "httpcore",
    "httpx",
    "httpx2",  # aiobotocore[httpx2]: one INFO line per S3 request
    "kafka",
    "quart",
    "trio_asyncio",
    "urllib3",
)


@dataclass(frozen=True, slots=True)
class Benign:
    """A third-party ERROR/WARNING that normal operation produces: `logger` writes `template`
    (the record's unformatted message) about one of `errors` (an error class name in its text)."""

    logger: str
    template: str
    errors: tuple[str, ...]


_NEW_TOPIC = ("NotLeaderForPartitionError", "LeaderNotAvailableError", "UnknownTopicOrPartition")
_NO_COORDINATOR = (
    "GroupCoordinatorNotAvailableError",
    "CoordinatorNotAvailableError",
    "GroupLoadInProgressError",
    "CoordinatorLoadInProgressError",
    "NotCoordinatorForGroupError",
    "NotCoordinatorError",
)

BENIGN_THIRD_PARTY: tuple[Benign, ...] = (
    # The group's coordinator is not elected yet (a new group, a broker just started).
    Benign(
        "aiokafka.consumer.group_coordinator",
        "Group Coordinator Request failed: %s",
        _NO_COORDINATOR,
    ),
    # A topic azuld just created has no leader yet; aiokafka retries.
    Benign("aiokafka.consumer.fetcher", "Failed fetch offsets from %s: %s", _NEW_TOPIC),
    Benign("aiokafka.cluster", "Topic %s not found in cluster metadata", ("",)),
    Benign(
        "aiokafka.cluster", "Topic %s is not available during auto-create initialization", ("",)
    ),
    # Said after each of those (and after real errors, which aiokafka logs as ERROR first).
    Benign(
        "aiokafka.consumer.group_coordinator",
        "Marking the coordinator dead (node %s)for group %s.",
        ("",),
    ),
    # Another instance joined or left: commits wait for the rebalance (azuld hands work over).
    Benign(
        "aiokafka.consumer.group_coordinator",
        "OffsetCommit failed for group %s due to group error (%s), will rejoin",
        ("RebalanceInProgressError",),
    ),
)


def rfc3339(created: float) -> str:
    """`created` (epoch seconds) as local time with milliseconds and the zone's offset, e.g.
    `2026-12-07T21:39:33.950+00:00`."""
    return datetime.fromtimestamp(created).astimezone().isoformat(timespec="milliseconds")


def _own(name: str) -> bool:
    return name == "azuld" or name.startswith("azuld.")


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


class ThirdPartyFilter(logging.Filter):
    """Records of loggers outside `azuld` pass from `level` up, except a `benign` one, which is
    shown as DEBUG: only when azuld itself logs at DEBUG (`show_benign`)."""

    def __init__(self, benign: tuple[Benign, ...] = BENIGN_THIRD_PARTY) -> None:
        super().__init__()
        self.benign = benign
        self.level = logging.WARNING
        self.show_benign = False

    def filter(self, record: logging.LogRecord) -> bool:
        if _own(record.name):
            return True
        if record.levelno >= logging.WARNING and self._is_benign(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.show_benign
        return record.levelno >= self.level

    def _is_benign(self, record: logging.LogRecord) -> bool:
        for rule in self.benign:
            if record.name == rule.logger and record.msg == rule.template:
                message = record.getMessage()
                return any(error in message for error in rule.errors)
        return False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": rfc3339(record.created),
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
    """`time=2026-12-07T21:39:33.950+00:00 level=info logger=azuld.service request_id=-
    msg="..."` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        worker = getattr(record, "worker", None)
        return (
            f"time={rfc3339(record.created)} level={record.levelname.lower()} "
            f"{f'worker={worker} ' if worker else ''}"
            f"logger={record.name} request_id={getattr(record, 'request_id', '-')} "
            f"msg={json.dumps(message, ensure_ascii=False)}"
        )


class TextFormatter(logging.Formatter):
    """`2026-12-07T21:39:33.950+00:00 INFO azuld.service [-] message` (with `w1 ` before the
    logger name in a worker of `azuld serve --processes N`)."""

    def __init__(self, worker: str | None = None) -> None:
        tag = f"{worker} " if worker else ""
        super().__init__(f"%(asctime)s %(levelname)s {tag}%(name)s [%(request_id)s] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return rfc3339(record.created)


def configure_logging(
    level: str, log_format: LogFormat = "auto", worker: str | None = None
) -> None:
    """Log to stderr. `auto` is key=value under journald (`JOURNAL_STREAM` set), else text.
    `worker` (`w0`, `w1`… of `azuld serve --processes N`) goes on every line."""
    if log_format == "auto":
        log_format = "keyvalue" if os.environ.get("JOURNAL_STREAM") else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter(worker))
    handler.addFilter(ThirdPartyFilter())
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter()
    elif log_format == "keyvalue":
        formatter = KeyValueFormatter()
    else:
        formatter = TextFormatter(worker)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    """azuld's loggers at `level`; other libraries' one step quieter (at least INFO, usually
    WARNING). Applies to the handlers `configure_logging` installed, on reload too."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    own = root.level
    third_party = max(logging.INFO if own <= logging.DEBUG else logging.WARNING, own)
    for name in _NOISY:
        logging.getLogger(name).setLevel(third_party)
    for handler in root.handlers:
        for found in handler.filters:
            if isinstance(found, ThirdPartyFilter):
                found.level = third_party
                found.show_benign = own <= logging.DEBUG
