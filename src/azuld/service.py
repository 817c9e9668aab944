"""The one root nursery: backends, the dispatcher's background tasks and the HTTP server.

Lifetimes nest: the event log and blob store outlive the dispatcher, which outlives the HTTP
server. Readiness goes through `nursery.start`: `serve` reports the bound URLs (and systemd gets
`READY=1`) only once the backends are open, the dispatcher runs and the socket is bound.

Shutdown: the first SIGTERM/SIGINT stops accepting connections and lets in-flight requests finish
within `server.graceful_timeout_seconds` (hypercorn's graceful shutdown); jobs still leased are
simply not committed, so they are offered again after the restart. A second signal cancels
everything at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from azuld.backends.embedded import open_embedded_log
from azuld.dispatcher import Dispatcher
from azuld.http import Services, create_app
from azuld.settings import Settings
from azuld.storage.local import LocalBlobStore
from azuld.systemd import notify

__all__ = ["hypercorn_config", "open_services", "serve"]

log = logging.getLogger(__name__)


def hypercorn_config(settings: Settings) -> HypercornConfig:
    """The one place azuld settings become hypercorn settings."""
    config = HypercornConfig()
    config.bind = [settings.server.listen]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.server.graceful_timeout_seconds
    # Long-polls may hold a request for `max_deadline_seconds`; keep idle connections a while.
    config.keep_alive_timeout = 75.0
    return config


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the configured backends and build the dispatcher over them (not yet running)."""
    data_dir = settings.data_dir
    partitions = settings.events.default_partitions
    async with open_embedded_log(
        data_dir / "events.sqlite3",
        partitions_for=lambda topic: partitions,
        synchronous=settings.events.embedded_synchronous,
    ) as event_log:
        blobs = LocalBlobStore(data_dir / "blobs")
        dispatcher = Dispatcher(event_log, settings.dispatch, settings.events.topic_prefix)
        yield Services(dispatcher=dispatcher, blobs=blobs, settings=settings)


async def _watch_signals(
    shutdown: trio.Event, root: trio.CancelScope, *, task_status: trio.TaskStatus[None]
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if shutdown.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                root.cancel()
                return
            log.info("%s: draining (a second signal stops at once)", signal.Signals(signum).name)
            notify("STOPPING=1")
            shutdown.set()


async def serve(
    settings: Settings,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run azuld until a signal (or cancellation) stops it.

    Reports the bound URLs through `task_status` once it serves requests.
    """
    async with open_services(settings) as services:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(_watch_signals, shutdown, nursery.cancel_scope)
            await nursery.start(services.dispatcher.run)
            binds: list[str] = await nursery.start(
                _serve_http, create_app(services), settings, shutdown, nursery.cancel_scope
            )
            log.info("azuld serving on %s (data in %s)", ", ".join(binds), settings.data_dir)
            notify("READY=1\nSTATUS=serving on " + " ".join(binds))
            task_status.started(binds)


async def _serve_http(
    app: object,
    settings: Settings,
    shutdown: trio.Event,
    root: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Serve HTTP until `shutdown` is set and in-flight requests drained, then stop the rest."""
    await hypercorn_serve(
        app,  # type: ignore[arg-type]
        hypercorn_config(settings),
        shutdown_trigger=shutdown.wait,
        task_status=task_status,
    )
    root.cancel()
