"""`azuld watch`: follow job statuses as they are stored, through a passive status feed.

The feed is an ephemeral key (`ephemeral=true`): the daemon does not register it, stores no
commits for it and forgets it soon after the watcher stops, so watching leaves nothing behind in
`azuld status`, `/ui` or `/metrics`. It starts a few seconds back (`--since`) or some records
back (`--last`), so a watch started just before a submit sees that submit's statuses.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from datetime import UTC, datetime

from azuld.cli.client import AzuldClient
from azuld.cli.errors import UsageError
from azuld.cli.replies import StatusSeen

__all__ = ["DEFAULT_SINCE", "parse_since", "watch"]

# A watch starts this far back unless told otherwise: the statuses of a submit started at the
# same moment are stored before the first poll reaches the daemon.
DEFAULT_SINCE = "5s"

# Statuses asked for per poll.
BATCH = 100

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float | None:
    """`--since` as Unix seconds: a duration back from `now` (`30s`, `5m`, `2h`, `1d`), an
    ISO 8601 time (UTC unless it names a zone), or `now` (`None`: from the end of the log).

    Raises:
        UsageError: none of these.
    """
    if text == "now":
        return None
    if match := _DURATION.fullmatch(text):
        return max(now - float(match[1]) * _UNIT_SECONDS[match[2]], 0.0)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: expected a duration (30s, 5m, 2h, 1d), an ISO 8601 time "
            "(2026-12-08T10:00:00Z) or now"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _stored_before(event: StatusSeen, since: float) -> bool:
    """Whether a status is older than `since` (the log may start a little earlier than asked:
    the embedded log knows its offsets by the minute). Unreadable timestamps are shown."""
    try:
        stamp = datetime.fromisoformat(event.timestamp)
    except ValueError:
        return False
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp() < since


def watch(args: argparse.Namespace) -> int:
    """Print statuses until Ctrl-C (exit 0).

    Raises:
        UsageError: a bad `--since` or `--last`.
    """
    if args.last is not None and args.last < 0:
        raise UsageError(f"--last {args.last}: must not be negative")
    since = None if args.last is not None else parse_since(args.since, time.time())
    query = [
        ("name", f"azuld-watch-{secrets.token_hex(4)}"),
        ("version", "1"),
        ("r-live", "true"),
        ("ephemeral", "true"),
        ("count", str(BATCH)),
        ("deadline", "10"),
    ]
    # Where to start matters only to the poll that creates the feed.
    start = [("last", str(args.last))] if args.last is not None else []
    if since is not None:
        start = [("since", f"{since:.3f}")]
    catching_up = since is not None  # until the feed has caught up with the log
    print(f"following statuses on {args.server} (Ctrl-C to stop)", file=sys.stderr)
    with AzuldClient(args.server, wait_seconds=args.wait, timeout_seconds=30.0) as client:
        try:
            while True:
                events = client.statuses([*query, *start])
                for event in events:
                    author = event.author.name
                    if args.plugin and author != args.plugin:
                        continue
                    if catching_up and since is not None and _stored_before(event, since):
                        continue
                    entity = event.entity
                    sha = entity.input.entity.sha256[:16]
                    when = event.timestamp[:19]
                    print(
                        f"{when} {author:20} {entity.status:22} {sha} {entity.error or ''}",
                        flush=True,
                    )
                start = []
                catching_up = catching_up and len(events) >= BATCH
        except KeyboardInterrupt:
            return 0
