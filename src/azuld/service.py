"""The one root nursery: backends, the dispatcher's background tasks and the HTTP server.

Lifetimes nest: the event log and blob store outlive the dispatcher, which outlives the HTTP
server. Readiness goes through `nursery.start`: `serve` reports the bound URLs (and systemd gets
`READY=1`) only once the backends are open, the dispatcher runs and the socket is bound.

Signals: the first SIGTERM/SIGINT sends `STOPPING=1`, stops accepting connections and lets
in-flight requests finish within `server.graceful_timeout_seconds`; jobs still leased are not
committed, so they are offered again after the restart. A second signal cancels everything at
once. SIGHUP re-reads the config file and applies what can change at run time (log level,
dispatch limits), saying in the log what needs a restart.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from azuld.backends.embedded import open_embedded_log
from azuld.dispatch import TICK_SECONDS, Dispatcher
from azuld.errors import ConfigError
from azuld.http import Services, create_app, hypercorn_server
from azuld.http import server as http_server
from azuld.http.auth import Authorizer
from azuld.http.streams import MEMORY_BODY_BYTES, MEMORY_TOTAL_BYTES
from azuld.logs import set_level
from azuld.metrics import Metrics
from azuld.ports import BlobStore, EventLog
from azuld.process import (
    WorkerRole,
    cannot_listen,
    find_bind_error,
    keep_freed_memory,
    lock_data_dir,
    watch_lifeline,
)
from azuld.security_check import open_security_check
from azuld.settings import Settings, in_force, load_settings, settings_diff
from azuld.storage.local import LocalBlobStore
from azuld.systemd import notify, watchdog_interval_seconds
from azuld.topics import topic_spec

__all__ = ["open_services", "serve"]

log = logging.getLogger(__name__)


def _log_asyncio_error(loop: object, context: dict[str, object]) -> None:
    # trio-asyncio's default handler re-raises, which would kill the daemon (stack.md P5).
    error = context.get("exception")
    log.warning(
        "asyncio: %s",
        context.get("message"),
        exc_info=error if isinstance(error, BaseException) else None,
    )


@asynccontextmanager
async def _open_event_log(settings: Settings) -> AsyncIterator[EventLog]:
    events = settings.events
    if events.backend == "kafka":
        # The one asyncio loop of the process: aiokafka lives in it (azuld.backends.kafka).
        async with trio_asyncio.open_loop() as loop:
            loop.set_exception_handler(_log_asyncio_error)
            from azuld.backends.kafka import open_kafka_log

            async with open_kafka_log(events) as kafka:
                yield kafka
        return
    async with open_embedded_log(
        settings.data_dir / "events.sqlite3",
        partitions_for=lambda topic: topic_spec(events, topic).partitions,
        retention_ms_for=lambda topic: topic_spec(events, topic).deletes_after_ms,
        synchronous=events.embedded_synchronous,
    ) as embedded:
        yield embedded


@asynccontextmanager
async def _open_blob_store(
    settings: Settings, worker: WorkerRole | None
) -> AsyncIterator[BlobStore]:
    storage = settings.storage
    # Each store empties its spool folder when it opens: workers sharing a data folder (a
    # restarted one too) each need their own.
    spool = "spool" if worker is None else f"spool-{worker.name}"
    if storage.backend == "s3":
        from azuld.storage.s3 import open_s3_store

        async with open_s3_store(
            endpoint=storage.s3_endpoint,
            bucket=storage.s3_bucket,
            access_key=storage.s3_access_key,
            secret_key=storage.s3_secret_key,
            region=storage.s3_region,
            prefix=storage.s3_prefix,
            spool_dir=settings.data_dir / spool,
        ) as s3:
            yield s3
        return
    blobs = settings.data_dir / "blobs"
    yield LocalBlobStore(blobs, spool_dir=blobs / f".{spool}")


@asynccontextmanager
async def open_services(
    settings: Settings, worker: WorkerRole | None = None
) -> AsyncIterator[Services]:
    """Open the configured backends and build the dispatcher over them (not yet running). A
    `worker` of a supervisor shares the data folder its supervisor holds (and locks).

    Raises:
        ConfigError: another azuld uses the data folder, or a `security.*` setting is wrong.
        UpstreamError: a backend cannot be reached (named in the message).
    """
    # Built once (its decisions are cached for the daemon's life), before any backend opens.
    security = open_security_check(settings.security)
    with contextlib.ExitStack() as stack:
        if worker is None:
            stack.enter_context(lock_data_dir(settings.data_dir))
        async with (
            _open_event_log(settings) as event_log,
            _open_blob_store(settings, worker) as blobs,
        ):
            metrics = Metrics(settings.server.metrics_max_label_values)
            if worker is not None:
                metrics.identify_worker(worker.name)
            dispatcher = Dispatcher(
                event_log,
                settings.dispatch,
                settings.events.topic_prefix,
                metrics=metrics,
                blobs=blobs,
                security=security,
                default_label=settings.security.default_label,
            )
            yield Services(
                dispatcher=dispatcher,
                log=event_log,
                blobs=blobs,
                metrics=metrics,
                settings=settings,
                auth=Authorizer(settings.auth),
            )


class _Daemon:
    """State the signal and watchdog tasks share: the settings in force and the shutdown."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None,
        overrides: Mapping[str, Any],
        services: Services,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides
        self.services = services
        self.shutdown = trio.Event()
        self.stop_reason = "cancelled"  # what `serve` returns: the signal that stopped it

    def reload(self) -> None:
        """Re-read the config; apply the reloadable part; log what needs a restart."""
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            # The command line's settings (listen, data dir) still win, as they did at start.
            new = load_settings(self.config_path, overrides=self.overrides)
        except ConfigError as exc:
            log.error("reload failed, keeping the running settings: %s", exc)
            notify("READY=1")
            return
        applied, restart = settings_diff(self.settings, new)
        # Settings needing a restart keep their running values, so the next reload names them
        # again until the daemon restarts.
        self.settings = in_force(self.settings, new)
        if "log_level" in applied:
            set_level(self.settings.log_level)
        self.services.dispatcher.settings = self.settings.dispatch
        self.services.auth.reload(self.settings.auth)
        log.info(
            "reloaded %s: applied %s; needs a restart: %s",
            self.config_path or "the environment",
            ", ".join(applied) or "nothing",
            ", ".join(restart) or "nothing",
        )
        notify("READY=1")

    async def watch_signals(
        self, root: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    self.reload()
                elif self.shutdown.is_set():
                    log.warning("second %s: stopping now", name)
                    self.stop_reason = f"{self.stop_reason}, then {name}: stopped at once"
                    root.cancel()
                    return
                else:
                    log.info("%s: draining (a second signal stops at once)", name)
                    notify("STOPPING=1")
                    self.stop_reason = name
                    self.shutdown.set()

    def status_line(self) -> str:
        dispatcher = self.services.dispatcher
        keys = dispatcher.keys()
        in_flight = sum(ks.lanes.leased for ks in keys)
        fetched = sum(ks.fetched for ks in keys)
        return f"{len(keys)} plugin keys, {in_flight} jobs in flight, {fetched} fetched"

    async def watchdog(self) -> None:
        """Ping systemd at half `WATCHDOG_USEC`, only while the dispatch loop ticks."""
        interval = watchdog_interval_seconds()
        if interval is None:
            return
        dispatcher = self.services.dispatcher
        while True:
            await trio.sleep(interval)
            stalled = trio.current_time() - dispatcher.last_tick
            if stalled <= max(interval, 2 * TICK_SECONDS):
                notify(f"WATCHDOG=1\nSTATUS={self.status_line()}")
            else:
                log.error("dispatch loop stalled for %.1f s: not pinging the watchdog", stalled)


async def serve(
    settings: Settings,
    *,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    handle_signals: bool = True,
    worker: WorkerRole | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> str:
    """Run azuld until a signal (or cancellation) stops it; return why it stopped (the signal).

    Reports the bound URLs through `task_status` once it serves requests. `config_path` and
    the command line's `overrides` are what `settings` were loaded from: SIGHUP loads them again.
    As a `worker` of `azuld serve --processes N` it serves on the sockets its supervisor bound,
    tells the supervisor (its `NOTIFY_SOCKET`) what it would tell systemd, and drains when the
    supervisor is gone.

    Raises:
        ConfigError: the data folder is taken, or the listen address cannot be bound.
        UpstreamError: a backend cannot be reached.
    """
    # Upload bodies are allocated and freed all the time: reuse their memory rather than fault
    # it in again (up to what the uploads in flight may hold).
    keep_freed_memory(MEMORY_TOTAL_BYTES, 4 * MEMORY_BODY_BYTES)
    async with open_services(settings, worker) as services:
        daemon = _Daemon(settings, config_path, overrides or {}, services)
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(daemon.watch_signals, nursery.cancel_scope)
            if worker is not None:
                nursery.start_soon(watch_lifeline, worker.lifeline_fd, daemon.shutdown)
            await nursery.start(services.dispatcher.run)
            binds: list[str] = await nursery.start(
                _serve_http,
                create_app(services),
                settings,
                daemon.shutdown,
                nursery.cancel_scope,
                worker.sockets() if worker else [],
            )
            # Everything built so far (modules, settings, app) lives as long as the process: out
            # of the collector's way, so full collections only walk what requests create.
            gc.freeze()
            log.info("azuld serving on %s (data in %s)", ", ".join(binds), settings.data_dir)
            notify(f"READY=1\nSTATUS=serving on {' '.join(binds)}\nMAINPID={os.getpid()}")
            nursery.start_soon(daemon.watchdog)
            task_status.started(binds)
    return daemon.stop_reason


async def _serve_http(
    app: Any,
    settings: Settings,
    shutdown: trio.Event,
    root: trio.CancelScope,
    sockets: list[socket.socket],
    *,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Serve HTTP until `shutdown` is set and in-flight requests drained, then stop the rest.
    With `sockets` (bound by a supervisor) it listens on those instead of `server.listen`.

    Raises:
        ConfigError: `server.listen` cannot be bound (in use, not an address of this machine),
            naming the address.
    """
    server = settings.server
    hypercorn = server.http_server == "hypercorn"
    context = None
    if server.tls_certfile:  # hypercorn also speaks HTTP/2, chosen through ALPN
        alpn = ("h2", "http/1.1") if hypercorn else ("http/1.1",)
        context = http_server.ssl_context(server.tls_certfile, server.tls_keyfile, alpn)
    config = http_server.ServerConfig.from_settings(server, context, tuple(sockets))
    serve_http = hypercorn_server.serve if hypercorn else http_server.serve
    started = _Started(task_status)
    try:
        await serve_http(app, config, shutdown=shutdown, task_status=started)
    except (OSError, BaseExceptionGroup) as exc:
        bind_error = None if started.done else find_bind_error(exc)
        if bind_error is None:
            raise
        raise cannot_listen(server.listen, bind_error) from bind_error
    root.cancel()


class _Started(trio.TaskStatus[list[str]]):
    """A `task_status` that remembers whether the server reported its URLs (bound and serving)."""

    def __init__(self, task_status: trio.TaskStatus[list[str]]) -> None:
        self.task_status = task_status
        self.done = False

    def started(self, value: list[str] | None = None) -> None:
        assert value is not None  # both servers report their URLs
        self.done = True
        self.task_status.started(value)
