"""`max-security` enforcement: which events a fetch's clearance lets through, decided without
stalling a lane.

Theory of operation: a fetch that carries `max-security` asks the checker (`azuld.ports.
SecurityCheck`, built once at start-up by `azuld.security_check.open_security_check`) about each
event that passed its other filters, by (clearance, label) pair (`core.security.event_label`).
The label model always answers at once. The `can-access` command answers from its cache; a pair it
has not answered yet is *undecided*: the fetch's judge defers the job (`core.delivery` parks it,
its offset left open, and the take goes on with the jobs behind it) and hands the pair to
`defer`. `run` checks each undecided pair once, in the background (the checker bounds how many
commands run at once), then puts the jobs parked on it back at the front of their lanes and wakes
their keys' waiting polls, whose judges now find the pair decided.

Denied events are skips counted as `core.security.SECURITY_FILTER`, like other filters.
"""

from __future__ import annotations

import logging
import math

import trio

from azuld.core.security import EventLabel, event_label
from azuld.dispatch.keys import KeyRegistry
from azuld.models.events import BinaryEvent, StatusEvent
from azuld.ports import SecurityCheck

__all__ = ["RETRY_SECONDS", "Pair", "Security"]

# After a checker fails unexpectedly (it should deny instead), wait this long before the parked
# jobs are judged again, rather than asking again at once.
RETRY_SECONDS = 1.0

log = logging.getLogger("azuld.dispatcher")

Pair = tuple[str, EventLabel]


class Security:
    """The dispatcher's checker, and the background checks of undecided pairs."""

    def __init__(
        self, check: SecurityCheck, registry: KeyRegistry, default_label: str = ""
    ) -> None:
        self.check = check
        self.registry = registry
        self.default_label = default_label
        self.decided = check.decided
        self._pending: set[Pair] = set()  # pairs sent to `run`, not decided yet
        # Unbounded, but it holds each pending pair at most once.
        self._send, self._receive = trio.open_memory_channel[Pair](math.inf)

    def check_clearance(self, clearance: str) -> None:
        """Refuse a `max-security` the checker can tell is unreadable (the model can; the
        command cannot, and denies every labelled event instead).

        Raises:
            UnreadableLabel: a 422 naming what is wrong with it.
        """
        self.check.check_clearance(clearance)

    def label(self, event: BinaryEvent | StatusEvent) -> EventLabel:
        """The event's label (its security strings, or the configured default)."""
        return event_label(event, self.default_label)

    def defer(self, pair: Pair) -> None:
        """Have `run` decide `pair`, unless it is being decided already."""
        if pair not in self._pending:
            self._pending.add(pair)
            self._send.send_nowait(pair)

    async def run(self) -> None:
        """Decide the pairs `defer` is given, each in a task of its own, until cancelled.

        Cancellation: checks in progress are cancelled (the command checker kills its runs);
        jobs parked on them stay parked, and their offsets uncommitted.
        """
        async with trio.open_nursery() as nursery:
            async for pair in self._receive:
                nursery.start_soon(self._decide, pair)

    async def _decide(self, pair: Pair) -> None:
        clearance, label = pair
        try:
            await self.check.can_access(clearance, label)
        except Exception:
            # A checker denies what it cannot decide; one that raises is a bug. Judge the jobs
            # again later (they defer again, and start another check) rather than at once.
            log.exception("max-security check of %r for %r failed", label, clearance)
            await trio.sleep(RETRY_SECONDS)
        # Synchronously, so no job is parked on `pair` between these steps and then forgotten:
        # a job deferred after this starts a check of its own.
        self._pending.discard(pair)
        for ks in self.registry.states.values():
            if ks.lanes.requeue_deferred(pair):
                ks.wake()
