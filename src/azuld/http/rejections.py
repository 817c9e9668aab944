"""One log line per rejected request (a 4xx), rate-limited.

Every place that answers a request with a 4xx calls `REJECTIONS.record`: the hot routes and
Quart's (`azuld.http.hot`, `azuld.http.app`: route, status, reason, client, user agent, request
id), and both servers for what never reached the app (malformed HTTP, refused framing). At most
`server.rejected_log_lines_per_second` lines a second go out (a burst of as many); the rest are
counted by route and status and summed up in one line, `suppressed K similar lines ...`, at most
every `SUMMARY_EVERY_SECONDS` (by the app's lifespan, `flush`, or the next rejection).

One `RejectionLog` per process (`REJECTIONS`): what it limits is the process's log.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

__all__ = ["REJECTIONS", "SUMMARY_EVERY_SECONDS", "Rejection", "RejectionLog", "printable"]

SUMMARY_EVERY_SECONDS = 10.0
# Refusals before the app (malformed or ambiguous HTTP: a broken client, or a probe) and
# refused credentials are warnings; other rejections are the client's ordinary mistakes.
_WARNING_STATUSES = frozenset({401, 403})
_MAX_FIELD = 200

log = logging.getLogger("azuld.http.rejected")


def printable(text: str, limit: int = _MAX_FIELD) -> str:
    """`text` for a log line: controls escaped (a path's `%0a` must not start a line of its
    own), cut at `limit` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request answered with a 4xx. `route` is the route table's rule (`unmatched`, or the
    path for a request that never reached the app)."""

    method: str
    route: str
    status: int
    reason: str
    client: str = "-"
    user_agent: str = "-"
    request_id: str = "-"
    before_the_app: bool = False  # refused by the server: malformed or ambiguous HTTP

    def line(self) -> str:
        return (
            f"rejected {printable(self.method, 20)} {printable(self.route)} {self.status} "
            f'from {printable(self.client)} ua="{printable(self.user_agent)}" '
            f"request_id={printable(self.request_id, 64)}: {printable(self.reason, 500)}"
        )


class RejectionLog:
    """Writes `Rejection`s to the log, at most `lines_per_second` a second (a token bucket that
    holds as many); the others are counted and summed up (`flush`). Time is passed in."""

    def __init__(
        self,
        lines_per_second: float = 10.0,
        *,
        summary_every_seconds: float = SUMMARY_EVERY_SECONDS,
        logger: logging.Logger = log,
    ) -> None:
        self.lines_per_second = lines_per_second
        self.summary_every_seconds = summary_every_seconds
        self.logger = logger
        self._tokens = lines_per_second
        self._filled_at: float | None = None
        self._suppressed: Counter[tuple[int, str, str]] = Counter()
        self._since: float | None = None  # when the first line now suppressed was

    def configure(self, lines_per_second: float) -> None:
        self.lines_per_second = lines_per_second
        self._tokens = min(self._tokens, lines_per_second)

    def record(self, rejection: Rejection, now: float) -> None:
        """Log `rejection`, or count it if this second's lines are spent."""
        self.flush(now)
        filled_at = self._filled_at
        if filled_at is not None:
            if now < filled_at:  # another clock (a new trio run in the same process): full
                self._tokens = self.lines_per_second
            else:
                added = (now - filled_at) * self.lines_per_second
                self._tokens = min(self.lines_per_second, self._tokens + added)
        self._filled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            level = (
                logging.WARNING
                if rejection.before_the_app or rejection.status in _WARNING_STATUSES
                else logging.INFO
            )
            self.logger.log(level, "%s", rejection.line())
            return
        if self._since is None:
            self._since = now
        self._suppressed[(rejection.status, rejection.method, rejection.route)] += 1

    def flush(self, now: float) -> None:
        """The summary of the lines suppressed, once `summary_every_seconds` have passed since
        the first of them."""
        since = self._since
        if since is None or 0 <= now - since < self.summary_every_seconds:
            return
        total = sum(self._suppressed.values())
        most = ", ".join(
            f"{count} x {status} {printable(method, 20)} {printable(route)}"
            for (status, method, route), count in self._suppressed.most_common(3)
        )
        self.logger.warning(
            "suppressed %d similar lines of rejected requests in the last %.0f s (most: %s)",
            total,
            max(0.0, now - since),
            most,
        )
        self._suppressed.clear()
        self._since = None


REJECTIONS = RejectionLog()
