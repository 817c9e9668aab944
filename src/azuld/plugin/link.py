"""Talking to a dispatcher that may be away: retries with capped exponential backoff and
jitter, one log line per outage, and giving up at a deadline (a job's lease end).

An outage begins with the first request that gets no HTTP answer at all
(`DispatcherUnreachable`) and ends with the first that gets any answer, an error included. It is
logged twice, whatever the number of tasks retrying meanwhile: "dispatcher unreachable at URL
(why), retrying in N s" when it begins, "dispatcher back at URL after N s" when it ends. A
request that waits out its backoff wakes as soon as any other request gets through, so what
queued up during an outage goes out at once when the dispatcher is back.

A "not now" answer (`DispatcherBusy`: 5xx, 408, 425, 429) is retried the same way, after the
`Retry-After` the dispatcher asked for if any, and logged once per request that meets it.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from azuld.plugin.client import (
    DispatcherBusy,
    DispatcherError,
    DispatcherUnavailable,
)

__all__ = ["Backoff", "DispatcherLink", "GaveUp"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: retry `n` (from 0) waits `first * 2**n` seconds, at most
    `cap`, less a random part of up to `jitter` of it (so a fleet of plugins does not retry in
    step)."""

    first_seconds: float = 0.5
    cap_seconds: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, draw: float) -> float:
        """The wait before retry number `attempt`; `draw` is uniform in [0, 1)."""
        ceiling = min(self.cap_seconds, self.first_seconds * 2.0 ** min(attempt, 32))
        return ceiling * (1.0 - self.jitter * draw)


class GaveUp(DispatcherError):
    """Retried until the deadline it was given, without an answer that ended it."""


class DispatcherLink:
    """How the plugin's requests to one dispatcher are doing; shared by all its tasks.

    `outages` counts the outages begun so far (the runner registers again after each).
    """

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.backoff = backoff or Backoff()
        self.outages = 0
        self.down_since: float | None = None
        self._draw = draw
        self._back = trio.Event()

    @property
    def up(self) -> bool:
        return self.down_since is None

    def answered(self) -> None:
        """A request got an answer: an outage, if one was on, is over."""
        if self.down_since is not None:
            log.warning(
                "dispatcher back at %s after %.1f s",
                self.url,
                trio.current_time() - self.down_since,
            )
            self.down_since = None
            self._back.set()

    def _unanswered(self, error: DispatcherUnavailable, delay: float) -> None:
        if self.down_since is None:
            self.down_since = trio.current_time()
            self.outages += 1
            self._back = trio.Event()
            log.warning(
                "dispatcher unreachable at %s (%s), retrying in %.1f s", self.url, error, delay
            )

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        give_up_at: float = math.inf,
        what: str = "request",
    ) -> T:
        """`await operation()` until it gets an answer, waiting a backoff between tries.

        Never starts a try at or after `give_up_at` (trio time). Cancellation: at once, also
        during a wait.

        Raises:
            GaveUp: the next try would start at or after `give_up_at`.
            DispatcherRefused: the dispatcher said no (not retried).
            whatever else `operation` raises.
        """
        attempt = 0
        while True:
            try:
                result = await operation()
            except DispatcherUnavailable as exc:
                delay = exc.retry_after_seconds
                if delay is None:
                    delay = self.backoff.delay(attempt, self._draw())
                if trio.current_time() + delay >= give_up_at:
                    if isinstance(exc, DispatcherBusy):
                        self.answered()
                    raise GaveUp(f"{what}: still no answer: {exc}") from exc
                if isinstance(exc, DispatcherBusy):
                    self.answered()
                    if attempt == 0:
                        log.warning("%s: %s; retrying", what, exc)
                    await trio.sleep(delay)
                else:
                    self._unanswered(exc, delay)
                    with trio.move_on_after(delay):
                        await self._back.wait()
                attempt += 1
                continue
            except DispatcherError:
                self.answered()
                raise
            self.answered()
            return result
