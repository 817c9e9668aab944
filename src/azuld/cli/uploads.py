"""The engine of `azuld submit`: upload files a few at a time and publish their `sourced` events
as the uploads complete, so that what is reported is what the daemon holds.

Theory of operation. `uploads_at_once` tasks take files from one list, upload each and pass it
on through a bounded channel. One publisher gathers what arrives into a batch and posts it when
it holds `batch_files` files or `flush_seconds` after its first file, whichever comes first; a
file is reported only once the post that carries its event is acknowledged. Every file's fate is
kept in a `Ledger`, so whatever ends the run, the files not published are named with a reason.

Stopping. The first SIGINT/SIGTERM cancels the uploads (no new ones; those in flight are
abandoned) and gives the publisher `grace_seconds` to post what was uploaded; a second signal
cancels it too. A daemon that stops answering (refused or lost connections, 502/503/504) is
retried with backoff for up to `retry_seconds` from the first failure, said once on one line;
then the run gives up, cancelling everything. Any other refusal fails the file (or the batch)
with the daemon's reason and the run goes on.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec
import trio

from azuld.cli.errors import ConnectionLost, DaemonError, Refused, Unreachable
from azuld.cli.ledger import Item, Ledger, State
from azuld.models.events import BinaryEvent, Datastream
from azuld.models.responses import PostFailure, PostResponse

__all__ = ["IngestClient", "Pacing", "Reporter", "Submission"]

_T = TypeVar("_T")

# Answers that mean "not now" rather than "no": the daemon or a backend behind it is down.
_RETRY_STATUSES = frozenset({502, 503, 504})
_FIRST_BACKOFF_SECONDS = 0.25
_MAX_BACKOFF_SECONDS = 2.0


class IngestClient(Protocol):
    """What the engine needs of a client (`azuld.cli.client.AsyncAzuldClient`)."""

    server: str

    async def check(self) -> None: ...

    async def upload(self, source: str, label: str, path: Path) -> Datastream: ...

    async def publish(self, events: Sequence[BinaryEvent]) -> PostResponse: ...


@dataclass(frozen=True, slots=True)
class Pacing:
    uploads_at_once: int = 8
    batch_files: int = 50
    flush_seconds: float = 0.2
    grace_seconds: float = 5.0
    retry_seconds: float = 60.0


class Reporter(Protocol):
    """Where the engine reports: each published file, and notices (one line each)."""

    def published(self, item: Item, stream: Datastream, count: int) -> None: ...

    def say(self, message: str) -> None: ...


class _RefusedEntity(msgspec.Struct):
    sha256: str = ""


class _RefusedNode(msgspec.Struct):
    filename: str = ""


class _RefusedSource(msgspec.Struct):
    path: list[_RefusedNode] = []


class _Refused(msgspec.Struct):
    """The part of a refused event (`PostResponse.failures[].event`) that names its file."""

    entity: _RefusedEntity
    source: _RefusedSource


class Submission:
    """One run over `ledger.items`, uploading to `source` through `client`; `make_event` turns an
    uploaded file into its `sourced` event."""

    def __init__(
        self,
        client: IngestClient,
        source: str,
        ledger: Ledger,
        make_event: Callable[[Item, Datastream], BinaryEvent],
        reporter: Reporter,
        pacing: Pacing = Pacing(),
    ) -> None:
        self.client = client
        self.source = source
        self.ledger = ledger
        self.make_event = make_event
        self.reporter = reporter
        self.pacing = pacing
        self.stop_reason = ""  # why the run ended early ("" when it did not)
        self.signal: signal.Signals | None = None  # the signal that stopped it, if one did
        self._uploads = trio.CancelScope()
        self._publishing = trio.CancelScope()
        self._outage_since: float | None = None
        self._outage_said = False

    async def run(self) -> None:
        """Upload and publish every file, until done or stopped (see the module). The outcome
        is in `ledger`, `stop_reason` and `signal`.

        Raises:
            Unreachable: the daemon never answered (within the client's `wait_seconds`); nothing
                was uploaded.
        """
        await self.client.check()
        send, receive = trio.open_memory_channel[tuple[Item, Datastream]](
            4 * self.pacing.batch_files
        )
        async with trio.open_nursery() as outer:
            # Signals can only be caught in the main thread (tests run `main` in others).
            if threading.current_thread() is threading.main_thread():
                await outer.start(self._watch_signals)
            async with trio.open_nursery() as work:
                work.start_soon(self._publish_all, receive)
                await self._upload_all(send)
            outer.cancel_scope.cancel()

    # -- stopping --------------------------------------------------------------------------

    async def _watch_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            await self._on_signals(signals)

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self.signal is None:
                self.signal = signal.Signals(signum)
                self._stop(f"{name}")
                waiting = sum(
                    self.ledger.state(item) in (State.UPLOADED, State.PUBLISHING)
                    for item in self.ledger.items
                )
                self.reporter.say(
                    f"{name}: publishing the {waiting} file(s) uploaded so far (up to "
                    f"{self.pacing.grace_seconds:g} s; a second signal stops at once)"
                )
                self._publishing.deadline = min(
                    self._publishing.deadline, trio.current_time() + self.pacing.grace_seconds
                )
            else:
                self.reporter.say(f"second {name}: stopping now")
                self._publishing.cancel()

    def _stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self._uploads.cancel()

    def _give_up(self, reason: str) -> None:
        self._stop(reason)
        self._publishing.cancel()

    # -- uploads ---------------------------------------------------------------------------

    async def _upload_all(self, send: trio.MemorySendChannel[tuple[Item, Datastream]]) -> None:
        """Upload every file, `uploads_at_once` at a time, until done or `_uploads` is cancelled;
        then close `send`."""
        async with send:
            files = iter(self.ledger.items)  # shared by the tasks: each file goes to one of them
            with self._uploads:
                async with trio.open_nursery() as nursery:
                    for _ in range(min(self.pacing.uploads_at_once, len(self.ledger.items))):
                        nursery.start_soon(self._upload_each, files, send.clone())

    async def _upload_each(
        self, files: Iterator[Item], send: trio.MemorySendChannel[tuple[Item, Datastream]]
    ) -> None:
        async with send:
            for item in files:
                self.ledger.move([item], State.UPLOADING)
                try:
                    stream = await self._retrying(
                        functools.partial(self.client.upload, self.source, "content", item.path)
                    )
                except OSError as exc:
                    self.ledger.fail(item, f"cannot read it: {exc.strerror or exc}")
                    continue
                except DaemonError as exc:
                    self.ledger.fail(item, f"upload refused: {exc}")
                    continue
                self.ledger.move([item], State.UPLOADED)
                # Handed on even when the uploads are being cancelled: what is uploaded is
                # published within the grace. The channel breaks if the publisher has stopped.
                with trio.CancelScope(shield=True):
                    try:
                        await send.send((item, stream))
                    except trio.BrokenResourceError:
                        return

    # -- publishing ------------------------------------------------------------------------

    async def _publish_all(
        self, receive: trio.MemoryReceiveChannel[tuple[Item, Datastream]]
    ) -> None:
        with self._publishing:
            async with receive:
                done = False
                while not done:
                    try:
                        batch = [await receive.receive()]
                    except trio.EndOfChannel:
                        return
                    with trio.move_on_after(self.pacing.flush_seconds):
                        while len(batch) < self.pacing.batch_files:
                            try:
                                batch.append(await receive.receive())
                            except trio.EndOfChannel:
                                done = True
                                break
                    await self._publish(batch)

    async def _publish(self, batch: list[tuple[Item, Datastream]]) -> None:
        items = [item for item, _ in batch]
        events = [self.make_event(item, stream) for item, stream in batch]
        self.ledger.move(items, State.PUBLISHING)
        try:
            reply: PostResponse = await self._retrying(
                functools.partial(self.client.publish, events)
            )
        except DaemonError as exc:
            for item in items:
                self.ledger.fail(item, f"publish refused: {exc}")
            return
        refused = _refused_files(reply.failures)
        unnamed = reply.total_failures - len(refused)
        for item, stream in batch:
            problem = refused.get((stream.sha256, item.filename))
            if problem is None and unnamed > 0:
                # Never report as published what may not be: the daemon refused some events
                # of this post without a way to tell which (it always says, today).
                problem = f"{reply.total_failures} of the {len(batch)} events posted with it"
            if problem is not None:
                self.ledger.fail(item, f"publish refused: {problem}")
                continue
            self.ledger.move([item], State.PUBLISHED)
            self.reporter.published(item, stream, self.ledger.published)

    # -- an outage -------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """`call()`, again and again while the daemon is down, for up to `retry_seconds` from
        the outage's first failure; then the run gives up (this task is cancelled).

        Raises:
            DaemonError: a refusal that is not an outage (a 4xx, a reply azuld would not send).
        """
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            started = trio.current_time()
            try:
                result = await call()
            except (Unreachable, ConnectionLost) as exc:
                problem: DaemonError = exc
            except Refused as exc:
                if exc.status not in _RETRY_STATUSES:
                    raise
                problem = exc
            else:
                self._outage_over(started)
                return result
            now = trio.current_time()
            if self._outage_since is None:
                self._outage_since = now
            if now - self._outage_since >= self.pacing.retry_seconds:
                self._give_up(
                    f"azuld at {self.client.server} did not answer for "
                    f"{self.pacing.retry_seconds:g} s: {problem}"
                )
                await trio.sleep_forever()  # `_give_up` cancelled this task's scope
            if not self._outage_said:
                self._outage_said = True
                self.reporter.say(
                    f"{problem}; retrying for up to {self.pacing.retry_seconds:g} s "
                    "(Ctrl-C stops, listing what is not published)"
                )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)

    def _outage_over(self, started: float) -> None:
        """A request that `started` then succeeded: the outage is over if it began after it."""
        if self._outage_since is None or started <= self._outage_since:
            return
        if self._outage_said:
            lasted = trio.current_time() - self._outage_since
            self.reporter.say(f"azuld at {self.client.server} answers again ({lasted:.1f} s)")
        self._outage_since = None
        self._outage_said = False


def _refused_files(failures: list[PostFailure]) -> dict[tuple[str, str], str]:
    """The files (sha256, filename) of the events a post refused, with the reason."""
    refused: dict[tuple[str, str], str] = {}
    for failure in failures:
        try:
            event = msgspec.json.decode(failure.event, type=_Refused)
        except msgspec.DecodeError:
            continue
        filename = event.source.path[-1].filename if event.source.path else ""
        refused[(event.entity.sha256, filename)] = failure.error
    return refused
