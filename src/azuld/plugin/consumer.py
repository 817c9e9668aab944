"""Running a passive `Consumer`: long-poll the passive feed in batches and hand each event to
`consume`, until stopped (or `max_events` consumed)."""

from __future__ import annotations

import trio

from azuld.plugin.api import Consumer
from azuld.plugin.client import HttpDispatcherClient
from azuld.plugin.link import DispatcherLink

__all__ = ["ConsumerRunner"]

# A batch returns after this long even when it is not full, so events are not held back long.
FETCH_DEADLINE_SECONDS = 2


class ConsumerRunner:
    def __init__(
        self, consumer: Consumer, client: HttpDispatcherClient, *, max_events: int | None = None
    ) -> None:
        self.consumer = consumer
        self.client = client
        self.max_events = max_events
        self.link = DispatcherLink(client.url)
        self.consumed = 0
        self._stop = trio.Event()
        self._fetch_scope: trio.CancelScope | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()

    def _query(self) -> list[tuple[str, str]]:
        cls = type(self.consumer)
        return [
            ("name", cls.name),
            ("version", cls.version),
            ("count", str(cls.batch_size)),
            ("deadline", str(FETCH_DEADLINE_SECONDS)),
            *cls.filters.query(),
        ]

    async def serve(self) -> None:
        """Consume until stopped. A dispatcher that is away is waited for (`DispatcherLink`).

        Raises:
            DispatcherRefused: the dispatcher refused the fetch (the query is wrong).
        """
        query = self._query()
        while not self._stop.is_set():
            events = []
            with trio.CancelScope() as scope:
                self._fetch_scope = scope
                events = await self.link.call(
                    lambda: self.client.fetch(query, passive=True), what="fetch"
                )
            for event in events:
                await self.consumer.consume(event)
                self.consumed += 1
                if self.max_events is not None and self.consumed >= self.max_events:
                    self.stop()
                    return
