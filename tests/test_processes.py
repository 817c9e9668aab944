"""`azuld serve --processes N` with real processes on the suite's Kafka broker: two workers share
the listen port and the work, systemd hears from the supervisor only, SIGHUP reaches both, a
SIGKILLed worker is restarted while the other keeps serving, SIGTERM drains both (exit 0); a
SIGKILLed supervisor's workers drain by themselves (hypercorn as the HTTP server there); and
several processes on the embedded backend are refused."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest
import trio

from azuld.process import lock_data_dir
from tests.daemon import Daemon, start_daemon
from tests.services import KafkaBroker
from tests.test_cluster import SOURCE, fetch, post_status, sourced

ALL_SERVING = re.compile(r"serving on (http://127\.0\.0\.1:\d+) with 2 processes")
_WORKER_INFO = re.compile(r'azuld_worker_info\{pid="(\d+)",worker="(w\d)"\}')
_HEALTHZ = re.compile(
    r'azuld_http_requests_total\{code="200",method="GET",route="/healthz"\} (\S+)'
)


def two_free_ports() -> int:
    """P such that P and P + 1 are free on 127.0.0.1 right now (the workers' own ports)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no two consecutive free ports")


def write_config(tmp_path: Path, broker: KafkaBroker) -> tuple[Path, int]:
    base = two_free_ports()
    path = tmp_path / "azuld.toml"
    path.write_text(
        f"""
[server]
worker_port_base = {base}
[events]
backend = "kafka"
topic_prefix = "p{secrets.token_hex(4)}"
kafka_bootstrap = "{broker.bootstrap}"
kafka_request_timeout_seconds = 10
default_partitions = 2
# At start-up, so that no topic created mid-test rebalances the workers' group.
[[events.sources]]
name = "{SOURCE}"
[dispatch]
default_deadline_seconds = 1
"""
    )
    return path, base


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's notify socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def start_supervisor(
    tmp_path: Path, broker: KafkaBroker, env: dict[str, str] | None = None
) -> tuple[Daemon, list[str]]:
    """`azuld serve --processes 2` on Kafka, once both workers are ready; its URL and the
    workers' own URLs."""
    config, base = write_config(tmp_path, broker)
    daemon = await start_daemon(
        tmp_path / "data",
        env=env,
        extra_args=["--config", str(config), "--processes", "2"],
        ready=ALL_SERVING,
        within_seconds=120,
    )
    return daemon, [f"http://127.0.0.1:{base + index}" for index in range(2)]


async def workers(client: httpx.AsyncClient, own_urls: list[str]) -> dict[str, int]:
    """Worker name -> pid, from each worker's own /metrics."""
    found = {}
    for url in own_urls:
        text = (await client.get(f"{url}/metrics")).text
        for pid, name in _WORKER_INFO.findall(text):
            found[name] = int(pid)
    return found


async def healthz_count(client: httpx.AsyncClient, url: str) -> float:
    match = _HEALTHZ.search((await client.get(f"{url}/metrics")).text)
    return float(match.group(1)) if match else 0.0


async def complete_all(
    client: httpx.AsyncClient, url: str, first: int, count: int
) -> dict[str, int]:
    """Publish `count` events and finish each through `url`; how often each was handed out.
    Each worker hands out jobs of its own partitions only: `client` opens a connection per
    request, so that its fetches reach both (a kept-alive connection stays with one worker)."""
    events = [sourced(index) for index in range(first, first + count)]
    reply = await client.post(
        f"{url}/api/v2/event?model=binary", content=msgspec.json.encode(events)
    )
    assert reply.json()["total_ok"] == count
    wanted = {event["entity"]["sha256"] for event in events}
    done: dict[str, int] = {}
    with trio.fail_after(120):
        while not wanted <= done.keys():
            for job in await fetch(client, url, "Worker"):
                sha = job["entity"]["sha256"]
                done[sha] = done.get(sha, 0) + 1
                await post_status(client, url, job, "Worker")
    return {sha: times for sha, times in done.items() if sha in wanted}


async def wait_ready(client: httpx.AsyncClient, urls: list[str]) -> None:
    """Until each worker holds its partitions (its /readyz on its own port says so)."""
    with trio.fail_after(120):
        for url in urls:
            while (await client.get(f"{url}/readyz")).status_code != 200:
                await trio.sleep(0.2)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_for_log(daemon: Daemon, text: str, count: int = 1, within: float = 120) -> None:
    with trio.fail_after(within):
        while daemon.log().count(text) < count:
            await trio.sleep(0.1)


async def test_several_processes_are_refused_on_the_embedded_backend(tmp_path: Path) -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "azuld", "serve", "--processes", "2", "--data-dir", str(tmp_path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip() == (
        "azuld: config error: command line: server.processes: 2 processes need events.backend = "
        '"kafka": the embedded event log (SQLite in the data folder) belongs to one process; '
        "run one process, or keep the events on Kafka"
    )


@pytest.mark.parametrize("which", ["server.listen", "server.worker_port_base"])
async def test_a_port_in_use_stops_the_start(tmp_path: Path, which: str) -> None:
    # No broker is needed: the ports are bound before any worker reaches Kafka (a worker that
    # started meanwhile is stopped).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Worker 1's own port is the taken one, or the shared port is.
        listen, base = ("127.0.0.1:0", port - 1)
        if which == "server.listen":
            listen, base = f"127.0.0.1:{port}", 0
        config = tmp_path / "azuld.toml"
        config.write_text(
            f'[server]\nworker_port_base = {base}\n[events]\nbackend = "kafka"\n'
            f'kafka_bootstrap = "127.0.0.1:1"\nkafka_connect_timeout_seconds = 5\n'
        )
        done = await trio.run_process(
            [
                *(sys.executable, "-m", "azuld", "serve", "--config", str(config)),
                *("--processes", "2", "--listen", listen, "--data-dir", str(tmp_path / "data")),
            ],
            capture_stderr=True,
            check=False,
        )
    advice = (
        "choose another address with --listen or server.listen"
        if which == "server.listen"
        else "choose another server.worker_port_base"
    )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == (
        f"azuld: cannot start: {which}: cannot listen on 127.0.0.1:{port}: the address is "
        f"already in use (by another azuld, or another program); {advice}"
    )


@pytest.mark.slow
async def test_two_workers_share_the_port_survive_a_sigkill_and_drain(
    tmp_path: Path, kafka_broker: KafkaBroker, notify_socket: socket.socket
) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    daemon, own = await start_supervisor(tmp_path, kafka_broker, env)
    try:
        # systemd hears READY=1 once, from the supervisor (sent before it logs that it serves),
        # when both workers are ready.
        messages = received(notify_socket)
        assert [m for m in messages if "READY=1" in m] == messages[:1]
        assert f"MAINPID={daemon.process.pid}" in messages[0]
        assert "with 2 processes" in messages[0]
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
        async with (
            httpx.AsyncClient(timeout=60) as client,
            httpx.AsyncClient(timeout=60, limits=fresh) as one_shot,
        ):
            await wait_ready(client, own)
            pids = await workers(client, own)
            assert sorted(pids) == ["w0", "w1"]
            assert len(set(pids.values())) == 2
            # The kernel spreads connections to the shared port over both workers.
            for _ in range(40):
                assert (await one_shot.get(f"{daemon.url}/healthz")).status_code == 200
            counts = [await healthz_count(client, url) for url in own]
            assert sum(counts) >= 40
            assert min(counts) > 0, counts
            # Each event exactly once, with statuses to whichever worker the connection reaches.
            assert set((await complete_all(one_shot, daemon.url, 0, 6)).values()) == {1}

            # A second azuld on the data folder is refused, naming the supervisor.
            second = await trio.run_process(
                [sys.executable, "-m", "azuld", "serve", "--data-dir", str(tmp_path / "data")],
                capture_stderr=True,
                check=False,
            )
            assert second.returncode == 1
            assert f"another azuld (pid {daemon.process.pid})" in second.stderr.decode()

            # The watchdog is pinged while both tick; SIGHUP reaches both workers.
            await trio.sleep(2.5)
            assert any(m.startswith("WATCHDOG=1") for m in received(notify_socket))
            daemon.process.send_signal(signal.SIGHUP)
            await wait_for_log(daemon, "reloaded: every worker answered", within=30)
            assert len(re.findall(r" w[01] azuld\.service \[-\] reloaded ", daemon.log())) == 2
            reload = [m.split("\n")[0] for m in received(notify_socket) if "WATCHDOG" not in m]
            assert reload == ["RELOADING=1", "READY=1"]

            # SIGKILL worker 1: the supervisor restarts it; the shared port keeps answering.
            os.kill(pids["w1"], signal.SIGKILL)
            await wait_for_log(daemon, "worker 1 was killed by SIGKILL; restarting it in 1 s")
            for _ in range(20):
                assert (await one_shot.get(f"{daemon.url}/healthz")).status_code == 200
            with trio.fail_after(120):
                while True:
                    try:
                        if (await client.get(f"{own[1]}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass  # not listening until it serves
                    await trio.sleep(0.2)
            again = await workers(client, own)
            assert again["w0"] == pids["w0"]
            assert again["w1"] != pids["w1"]
            # Work still flows. (Exactly once across the rebalances a killed worker causes is
            # tests/test_cluster.py's subject, not this one's.)
            await wait_ready(client, own)
            assert len(await complete_all(one_shot, daemon.url, 6, 4)) == 4

        # The watchdog was pinged all along (a worker being restarted is the supervisor's
        # business). SIGTERM: both drain, the supervisor exits 0, systemd heard STOPPING=1.
        assert any(m.startswith("WATCHDOG=1") for m in received(notify_socket))
        assert await daemon.terminate(timeout_seconds=60) == 0
        assert "stopped: every worker drained" in daemon.log()
        assert any(m.startswith("STOPPING=1") for m in received(notify_socket))
        assert all(gone(pid) for pid in again.values())
    finally:
        if daemon.process.returncode is None:
            await daemon.kill()


@pytest.mark.slow
async def test_workers_drain_when_their_supervisor_is_killed(
    tmp_path: Path, kafka_broker: KafkaBroker
) -> None:
    env = {"AZULD_SERVER__HTTP_SERVER": "hypercorn"}
    daemon, own = await start_supervisor(tmp_path, kafka_broker, env)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            pids = await workers(client, own)
            assert len(pids) == 2
            assert (await client.get(f"{daemon.url}/healthz")).status_code == 200
        await daemon.kill()
        with trio.fail_after(60):
            while not all(gone(pid) for pid in pids.values()):
                await trio.sleep(0.1)
        assert daemon.log().count("the supervisor is gone: draining") == 2
        with lock_data_dir(tmp_path / "data"):  # the last worker let go of the folder
            pass
    finally:
        if daemon.process.returncode is None:
            await daemon.kill()
        for pid in pids.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
