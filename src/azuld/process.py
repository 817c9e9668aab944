"""What one azuld process holds on its host: the data folder's lock, its listening sockets and,
as a worker of `azuld serve --processes N`, what its supervisor handed it.

Light on imports: the supervisor (`azuld.supervisor`) uses this module without loading the
dispatcher or the HTTP app, and `azuld.service` uses it for the same things in one process.

Sharing a port (several processes): the supervisor keeps one bound socket per address that never
listens (it holds the port, and resolves port 0 once for all the workers), and for each worker it
starts, binds a new socket to the same port with SO_REUSEPORT and passes it down. The worker's
HTTP server calls `listen()` once the worker serves, and from then on the kernel spreads new
connections over the listening sockets, one accept queue each: no connection waits in the queue
of a worker still starting. A worker that dies takes its queue with it (connections accepted or
queued there are reset, as with one process), and new connections go to the others until its
replacement listens.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trio

from azuld.errors import ConfigError

__all__ = [
    "WorkerRole",
    "bind_sockets",
    "cannot_listen",
    "find_bind_error",
    "keep_freed_memory",
    "lock_data_dir",
    "watch_lifeline",
]

log = logging.getLogger(__name__)


@contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[IO[str]]:
    """One azuld per data folder: a second one would share the embedded log and the spool.

    Yields the lock file: the lock lasts while any process holds its descriptor (a supervisor
    passes it to its workers, so workers it left behind still hold the folder).

    Raises:
        ConfigError: another azuld holds the folder (its pid is named).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "azuld.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise ConfigError(
                f"{data_dir}: another azuld (pid {holder}) is using this data folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- listening sockets ----------------------------------------------------------------------

# Errors binding a listening socket: the address is taken, not this machine's, or not allowed.
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def find_bind_error(error: BaseException) -> OSError | None:
    """The error binding the socket in `error` (hypercorn's comes inside exception groups)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := find_bind_error(inner)) is not None:
                return found
        return None
    if isinstance(error, socket.gaierror) or (
        isinstance(error, OSError) and error.errno in _BIND_ERRNOS
    ):
        return error
    return None


def cannot_listen(
    listen: str,
    error: OSError,
    setting: str = "server.listen",
    advice: str = "choose another address with --listen or server.listen",
) -> ConfigError:
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        reason = "the address is already in use (by another azuld, or another program)"
    return ConfigError(f"{setting}: cannot listen on {listen}: {reason}; {advice}")


def bind_sockets(
    listen: str, *, share: bool, port: int | None = None, setting: str = "server.listen"
) -> list[socket.socket]:
    """TCP sockets bound, not listening, to every address of `listen`'s host (an empty host:
    every interface, IPv4 and IPv6), on `port` (default: `listen`'s). Port 0 picks one free port
    for all of them. `share`: SO_REUSEPORT, so other sockets of this user may bind the port.

    Raises:
        ConfigError: an address cannot be bound (in use, not this machine's), naming it and
            `setting`, the one to change.
    """
    advice = {} if setting == "server.listen" else {"advice": f"choose another {setting}"}
    # `listen` passed the settings' check; azuld.http.server.parse_listen would import the app.
    host_text, _, port_text = listen.rpartition(":")
    host = host_text.removeprefix("[").removesuffix("]") or None
    port = int(port_text) if port is None else port
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise cannot_listen(listen, exc, setting, **advice) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in found:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]  # port 0: the others take the one it got
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise cannot_listen(
            f"{host_text}:{port}" if port else listen, exc, setting, **advice
        ) from None
    return sockets


# --- a worker's side ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a worker process is told on its command line by its supervisor: its place (`index`
    of `count`), the listening sockets bound for it (the shared port first, then its own port
    if any), and the lifeline: a pipe the supervisor never writes to, closed when it dies."""

    index: int
    count: int
    listen_fds: tuple[int, ...]
    lifeline_fd: int

    @property
    def name(self) -> str:
        """How logs and metrics name the worker: `w0`, `w1`…"""
        return f"w{self.index}"

    def arguments(self) -> list[str]:
        """The `azuld serve` options that make a process this worker."""
        return [
            "--worker",
            f"{self.index}/{self.count}",
            "--listen-fds",
            ",".join(map(str, self.listen_fds)),
            "--lifeline-fd",
            str(self.lifeline_fd),
        ]

    @classmethod
    def parse(cls, worker: str, listen_fds: str, lifeline_fd: int) -> WorkerRole:
        """The role from `--worker I/N --listen-fds A,B --lifeline-fd C`.

        Raises:
            ConfigError: not what a supervisor passes (these options are the supervisor's).
        """
        index, _, count = worker.partition("/")
        try:
            role = cls(
                int(index), int(count), tuple(int(fd) for fd in listen_fds.split(",")), lifeline_fd
            )
        except ValueError:
            role = None
        if role is None or not 0 <= role.index < role.count or min(role.listen_fds) < 0:
            raise ConfigError(
                "--worker, --listen-fds and --lifeline-fd are for azuld's supervisor "
                "(azuld serve --processes N), which starts its workers with them"
            )
        return role

    def sockets(self) -> list[socket.socket]:
        """The sockets the supervisor bound for this worker."""
        return [socket.socket(fileno=fd) for fd in self.listen_fds]


async def watch_lifeline(fd: int, shutdown: trio.Event) -> None:
    """Set `shutdown` (a drain) once the supervisor is gone: nothing is ever written to the
    pipe, so it becomes readable only when its last writer, the supervisor, closes (dies).
    Runs until then or until cancelled."""
    os.set_blocking(fd, False)
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            if os.read(fd, 64) == b"":
                break
        except BlockingIOError:
            continue
    log.warning("the supervisor is gone: draining")
    shutdown.set()


# glibc's mallopt() parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(keep_bytes: int, mmap_bytes: int) -> bool:
    """Have glibc's malloc keep up to `keep_bytes` of freed memory for reuse, and serve blocks
    under `mmap_bytes` from it, rather than return them to the kernel and fault them in again.

    A 1 MiB upload allocates and frees a few MiB of bodies and buffers; by default glibc unmaps
    or trims most of it, and touching fresh pages again cost the kernel about 0.3 ms per upload
    (130-150 page faults with 8 uploaders, measured on the reference VM). False (and nothing
    changed) where the C library has no mallopt() or ignores these (musl).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Both set: setting either one turns off glibc's own adjustment of both.
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, keep_bytes)
    )
