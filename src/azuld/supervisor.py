"""`azuld serve --processes N`: a supervisor and N azuld worker processes sharing one port.

azuld is one Python process, so it uses one core. On Kafka several azuld instances already share
the work (each owns a share of the partitions, and a status may be posted to any of them, since
they all follow the status topic), so the way to use a host's cores is several instances. This
module runs them as one service:

* It binds `server.listen` once and keeps it without listening (`azuld.process`: the port is
  held, and port 0 is chosen once). For each worker it starts, it binds a new socket to that port
  with SO_REUSEPORT (and, with `server.worker_port_base`, one on the worker's own port), passes
  them down (`--listen-fds`) and closes its copies: a worker's sockets live and die with it.
* Each worker is `python -m azuld serve ... --worker I/N`: a full azuld, its own instance in the
  Kafka group, in a process group of its own (a terminal's Ctrl-C reaches the supervisor, which
  passes it on once). Its `NOTIFY_SOCKET` is a datagram socket of the supervisor's, new for each
  process, so what a worker would tell systemd (READY, WATCHDOG, RELOADING) comes here.
* The data folder's lock is taken here and its descriptor handed to the workers too, and so is
  the read end of a lifeline pipe: if the supervisor is killed, its workers see the pipe close and
  drain, and until they have exited the folder stays locked against a second azuld.
* systemd hears from the supervisor only: READY=1 once every worker is ready, WATCHDOG=1 while
  no ready worker has stopped ticking, STOPPING=1, RELOADING=1 then READY=1 once every worker
  reloaded. SIGTERM/SIGINT are passed on as SIGTERM (a drain; a second one stops the workers at
  once), SIGHUP as SIGHUP. A worker that exits when not told to is restarted after a delay that
  doubles while it keeps dying young (`azuld.core.supervision`); one that exits before every
  worker was ever ready fails the start (its own message says why; a restart would fail alike).
* It returns 0 once every worker drained and exited cleanly after a stop signal, 1 otherwise.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from azuld.core.supervision import Fleet
from azuld.errors import ConfigError
from azuld.logs import set_level
from azuld.process import WorkerRole, bind_sockets, lock_data_dir
from azuld.settings import Settings, load_settings
from azuld.systemd import notify, watchdog_interval_seconds

__all__ = ["Supervisor", "worker_command"]

log = logging.getLogger(__name__)

# Environment variables of the supervisor's own systemd service that are not a worker's.
_NOT_INHERITED = frozenset(
    {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}
)
# Exit statuses of a worker that was told to stop: drained (0), or still starting (SIGTERM's
# default action: it had not set up its signal handling yet).
_CLEAN_EXITS = frozenset({0, -signal.SIGTERM})


def worker_command(config_path: Path | None, listen: str | None, data_dir: Path) -> list[str]:
    """The command line of a worker, before its role: the same settings as the supervisor's."""
    command = [sys.executable, "-m", "azuld", "serve", "--data-dir", str(data_dir)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    if listen:
        command += ["--listen", listen]
    return command


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Supervisor:
    """The workers of one `azuld serve --processes N` and what systemd hears about them."""

    def __init__(
        self,
        settings: Settings,
        command: list[str],
        *,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.command = command
        self.config_path = config_path
        self.overrides = overrides or {}
        self.count = settings.server.processes
        self.fleet = Fleet(self.count)
        self.processes: dict[int, trio.Process] = {}
        self.last_exit: dict[int, int] = {}
        self.failed = False
        # Set when every worker is ready for the first time, or the start is abandoned.
        self.settled = trio.Event()
        # Set on a stop signal (or a failed start): wakes workers waiting to be restarted.
        self.stopped = trio.Event()
        self.watchdog_seconds = watchdog_interval_seconds()
        self.port = 0
        self.lifeline = -1  # the read end of the lifeline pipe, while running
        self.inherited: tuple[int, ...] = ()  # descriptors every worker gets
        self.start_error: ConfigError | None = None  # a worker's port could not be bound

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> int:
        """Run the workers until a signal stops them; the exit status (0: all drained).

        Reports the shared URLs through `task_status` once every worker is ready.

        Raises:
            ConfigError: the data folder is taken, or an address cannot be bound (the shared
                port, or at start a worker's own).
        """
        server = self.settings.server
        with lock_data_dir(self.settings.data_dir) as lock:
            reserved = bind_sockets(server.listen, share=True)
            self.port = reserved[0].getsockname()[1]
            lifeline_read, lifeline_write = os.pipe()
            try:
                self.inherited = (lock.fileno(), lifeline_read)
                self.lifeline = lifeline_read
                urls = await self._supervise(task_status)
            finally:
                os.close(lifeline_read)
                os.close(lifeline_write)
                for sock in reserved:
                    sock.close()
        if self.start_error is not None:
            raise self.start_error
        codes = [self.last_exit.get(index, 1) for index in range(self.count)]
        if self.failed or any(code not in _CLEAN_EXITS for code in codes):
            log.error("stopped: workers %s", ", ".join(map(_describe, codes)))
            return 1
        log.info("stopped: every worker drained (%s)", ", ".join(urls) or "never served")
        return 0

    async def _supervise(self, task_status: trio.TaskStatus[list[str]]) -> list[str]:
        urls = self._urls()
        async with trio.open_nursery() as outer:
            await outer.start(self._watch_signals)
            async with trio.open_nursery() as workers:
                for index in range(self.count):
                    workers.start_soon(self._keep_running, index)
                await self.settled.wait()
                if self.fleet.ever_ready and not self.fleet.stopping:
                    # systemd first, then the log: what reads the log may expect both.
                    notify(
                        f"READY=1\nSTATUS=serving on {' '.join(urls)} with {self.count} "
                        f"processes\nMAINPID={os.getpid()}"
                    )
                    own = self._worker_urls()
                    log.info(
                        "azuld serving on %s with %d processes%s; data in %s",
                        ", ".join(urls),
                        self.count,
                        f", each also on its own port ({', '.join(own)})" if own else "",
                        self.settings.data_dir,
                    )
                    if self.watchdog_seconds is not None:
                        outer.start_soon(self._watchdog, self.watchdog_seconds)
                    task_status.started(urls)
            outer.cancel_scope.cancel()
        return urls

    def _urls(self) -> list[str]:
        scheme = "https" if self.settings.server.tls_certfile else "http"
        host = self.settings.server.listen.rpartition(":")[0] or "0.0.0.0"
        return [f"{scheme}://{host}:{self.port}"]

    def _worker_urls(self) -> list[str]:
        base = self.settings.server.worker_port_base
        if not base:
            return []
        scheme, _, rest = self._urls()[0].partition("://")
        host = rest.rpartition(":")[0]
        return [f"{scheme}://{host}:{base + index}" for index in range(self.count)]

    # --- one worker place ----------------------------------------------------------------

    async def _keep_running(self, index: int) -> None:
        """Run the worker of `index`, and again each time it exits when not told to."""
        while True:
            returncode = await self._run_worker(index)
            self.last_exit[index] = returncode
            after = self.fleet.exited(index, trio.current_time())
            if after.give_up:
                log.error(
                    "worker %d %s before every worker was ready: stopping (its own message "
                    "above says why)",
                    index,
                    _describe(returncode),
                )
                self.failed = True
                self._stop(signal.SIGTERM)
                return
            if after.restart_in is None:
                return
            log.warning(
                "worker %d %s; restarting it in %g s",
                index,
                _describe(returncode),
                after.restart_in,
            )
            with trio.move_on_after(after.restart_in):
                await self.stopped.wait()
            if self.fleet.stopping:
                self.last_exit[index] = 0  # stopped while down: nothing left to drain
                return

    async def _run_worker(self, index: int) -> int:
        """Start the worker of `index`, follow its notify messages until it exits; its status.
        A start that fails (its port cannot be bound) counts as an exit with status 1."""
        server = self.settings.server
        try:
            sockets = bind_sockets(server.listen, share=True, port=self.port)
            if server.worker_port_base:
                port = server.worker_port_base + index
                setting = "server.worker_port_base"
                sockets += bind_sockets(server.listen, share=False, port=port, setting=setting)
        except ConfigError as exc:
            log.error("worker %d: %s", index, exc)
            if not self.fleet.ever_ready:
                self.start_error = exc
            return 1
        role = WorkerRole(
            index, self.count, tuple(sock.fileno() for sock in sockets), self.lifeline
        )
        name = f"azuld-{os.getpid()}-{index}-{secrets.token_hex(6)}"
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as inbox:
            await inbox.bind("\0" + name)
            try:
                process = await trio.lowlevel.open_process(
                    [*self.command, *role.arguments()],
                    env=self._environment(f"@{name}"),
                    pass_fds=(*role.listen_fds, *self.inherited),
                    process_group=0,
                )
            finally:
                for sock in sockets:  # the worker has them now: they close when it exits
                    sock.close()
            self.processes[index] = process
            self.fleet.started(index, process.pid, trio.current_time())
            log.info("worker %d started (pid %d)", index, process.pid)
            if self.fleet.stopping:  # told to stop while it was being started
                process.send_signal(signal.SIGTERM)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, index, inbox)
                returncode = await process.wait()
                nursery.cancel_scope.cancel()
        del self.processes[index]
        return returncode

    def _environment(self, notify_socket: str) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name not in _NOT_INHERITED}
        env["NOTIFY_SOCKET"] = notify_socket
        if self.watchdog_seconds is not None:
            # The workers ping as often as systemd expects of the supervisor.
            env["WATCHDOG_USEC"] = str(round(self.watchdog_seconds * 2_000_000))
        return env

    async def _listen(self, index: int, inbox: trio.socket.SocketType) -> None:
        """Apply the worker's notify messages as they come, until cancelled."""
        while True:
            message = await inbox.recv(4096)
            self.fleet.said(index, message, trio.current_time())
            if self.fleet.ever_ready:
                self.settled.set()
            if self.fleet.reload_done():
                notify(f"READY=1\nSTATUS={self.fleet.summary()}")
                log.info("reloaded: every worker answered")

    # --- signals and systemd -------------------------------------------------------------

    async def _watch_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    self._reload()
                elif self.fleet.stopping:
                    log.warning("second %s: stopping the workers at once", name)
                    self._stop(signal.SIGTERM)
                else:
                    log.info("%s: draining the workers (a second signal stops them at once)", name)
                    notify("STOPPING=1")
                    self._stop(signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        """No more restarts; pass `signum` on to every running worker."""
        self.fleet.stop()
        self.stopped.set()
        self.settled.set()
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signum)

    def _reload(self) -> None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            set_level(load_settings(self.config_path, overrides=self.overrides).log_level)
        except ConfigError as exc:  # each worker logs it too, and keeps its settings
            log.error("reload: %s", exc)
        targets = self.fleet.reload()
        log.info("SIGHUP: reloading %d ready workers", len(targets))
        for slot in targets:
            self.processes[slot.index].send_signal(signal.SIGHUP)
        if self.fleet.reload_done():  # nobody to wait for
            notify(f"READY=1\nSTATUS={self.fleet.summary()}")

    async def _watchdog(self, interval_seconds: float) -> None:
        """Ping systemd every `interval_seconds` (half of `WATCHDOG_USEC`) while no ready worker
        has gone a whole `WATCHDOG_USEC` without a ping of its own."""
        while True:
            await trio.sleep(interval_seconds)
            stalled = self.fleet.stalled(trio.current_time(), 2 * interval_seconds)
            if stalled:
                log.error(
                    "worker %s stopped ticking: not pinging the watchdog",
                    ", ".join(str(slot.index) for slot in stalled),
                )
            else:
                notify(f"WATCHDOG=1\nSTATUS={self.fleet.summary()}")
