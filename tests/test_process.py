"""What a process holds on its host: sockets several processes share, a worker's role and the
lifeline (the data folder's lock, with real processes, is in tests/test_processes.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import trio

from azuld.errors import ConfigError
from azuld.process import WorkerRole, bind_sockets, watch_lifeline


def test_shared_sockets_take_one_port_and_only_listeners_get_connections() -> None:
    reserved = bind_sockets("127.0.0.1:0", share=True)
    port = reserved[0].getsockname()[1]
    first = bind_sockets("127.0.0.1:0", share=True, port=port)
    second = bind_sockets("127.0.0.1:0", share=True, port=port)
    try:
        # Bound, not listening: nobody is connected to yet.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        for sock in (*first, *second):
            sock.listen(64)
            sock.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        accepted = []
        for sock in (first[0], second[0]):
            count = 0
            while True:
                try:
                    sock.accept()[0].close()
                except BlockingIOError:
                    break
                count += 1
            accepted.append(count)
        assert sum(accepted) == 40
        assert min(accepted) > 0  # spread by the kernel (2^-39 to fail by chance)
        for client in clients:
            client.close()
        # Another program cannot take the port while it is held.
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))
    finally:
        for sock in (*reserved, *first, *second):
            sock.close()


def test_a_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            bind_sockets(f"127.0.0.1:{port}", share=True)
    assert str(info.value) == (
        f"server.listen: cannot listen on 127.0.0.1:{port}: the address is already in use (by "
        "another azuld, or another program); choose another address with --listen or "
        "server.listen"
    )


def test_a_worker_role_round_trips_its_arguments() -> None:
    role = WorkerRole(1, 3, (5, 6), 9)
    arguments = role.arguments()
    assert arguments == ["--worker", "1/3", "--listen-fds", "5,6", "--lifeline-fd", "9"]
    assert WorkerRole.parse(arguments[1], arguments[3], int(arguments[5])) == role
    assert role.name == "w1"


@pytest.mark.parametrize(("worker", "fds"), [("3/3", "5"), ("x", "5"), ("0/1", ""), ("0/1", "-2")])
def test_a_wrong_worker_role_is_refused(worker: str, fds: str) -> None:
    with pytest.raises(ConfigError, match="are for azuld's supervisor"):
        WorkerRole.parse(worker, fds, 7)


async def test_the_lifeline_drains_a_worker_whose_supervisor_is_gone() -> None:
    read_end, write_end = os.pipe()
    shutdown = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_lifeline, read_end, shutdown)
            await trio.sleep(0.05)
            assert not shutdown.is_set()
            os.close(write_end)
            with trio.fail_after(5):
                await shutdown.wait()
    finally:
        os.close(read_end)


_CHURN = """
import resource, sys
from azuld.process import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory(64 << 20, 4 << 20)
blocks = [b"x" * (2 << 20) for _ in range(3)]
del blocks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # what concurrent 1 MiB uploads do: a few MiB allocated, then freed
    blocks = [b"x" * (2 << 20) for _ in range(3)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_reuse_rather_than_faulted_in_again() -> None:
    def page_faults(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _CHURN, mode], capture_output=True, check=True, text=True
        )
        return int(done.stdout)

    # By default glibc gives most of the 6 MiB back each round (1,500 pages faulted in again).
    assert page_faults("default") > 20 * 1000
    assert page_faults("keep") < 100
