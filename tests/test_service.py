"""The daemon's lifetime: readiness, the watchdog on virtual time, what a reload applies and
names, and, against the real process, READY/WATCHDOG/STOPPING under a fake systemd, SIGTERM
drain, SIGHUP reload and a listen address already in use."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
import trio.testing

from azuld.http import Services
from azuld.service import _Daemon
from azuld.settings import Settings, load_settings
from tests.conftest import make_binary
from tests.daemon import running_daemon, start_daemon
from tests.http.conftest import parse_multipart


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's notify socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def test_watchdog_pings_only_while_the_loop_ticks(
    services: Services,
    settings: Settings,
    tmp_path: Path,
    notify_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")  # 10 s: ping every 5 s
    daemon = _Daemon(settings, None, {}, services)
    async with trio.open_nursery() as nursery:
        await nursery.start(services.dispatcher.run)
        nursery.start_soon(daemon.watchdog)
        await trio.sleep(21)
        pings = [m for m in drain(sock) if m.startswith("WATCHDOG=1")]
        assert len(pings) == 4
        assert "STATUS=0 plugin keys, 0 jobs in flight" in pings[0]
        # The dispatch loop stops ticking: no more pings.
        nursery.cancel_scope.cancel()
    services.dispatcher.last_tick = trio.current_time() - 60  # wedged a minute ago
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.watchdog)
        await trio.sleep(21)
        nursery.cancel_scope.cancel()
    assert [m for m in drain(sock) if m.startswith("WATCHDOG=1")] == []


async def test_reload_applies_what_it_can_and_names_the_rest(
    services: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "azuld.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:8111"\n')
    overrides = {"data_dir": tmp_path / "data"}
    running = load_settings(config, environ={}, overrides=overrides)
    daemon = _Daemon(running, config, overrides, services)
    config.write_text(
        '[server]\nlisten = "0.0.0.0:9000"\n[dispatch]\nlease_seconds = 30\nwindow = 10\n'
    )
    caplog.set_level("INFO", logger="azuld.service")
    daemon.reload()
    assert (
        f"reloaded {config}: applied dispatch.lease_seconds; needs a restart: "
        "server.listen, dispatch.window"
    ) in caplog.text
    caplog.clear()
    daemon.reload()  # named again until the daemon restarts
    assert "applied nothing; needs a restart: server.listen, dispatch.window" in caplog.text
    assert services.dispatcher.settings.lease_seconds == 30
    assert services.dispatcher.settings.window == running.dispatch.window
    assert daemon.settings.server.listen == "127.0.0.1:8111"


async def test_reload_keeps_the_command_line(
    services: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "azuld.toml"
    config.write_text("")
    overrides = {"data_dir": tmp_path / "data", "server.listen": "127.0.0.1:0"}
    daemon = _Daemon(
        load_settings(config, environ={}, overrides=overrides), config, overrides, services
    )
    config.write_text('[server]\nlisten = "0.0.0.0:9000"\n')  # --listen still wins
    caplog.set_level("INFO", logger="azuld.service")
    daemon.reload()
    assert "applied nothing; needs a restart: nothing" in caplog.text
    config.write_text("[dispatch]\nlease_seconds = -5\nmax_attempts = 0\n")
    daemon.reload()
    assert "reload failed, keeping the running settings: 2 problems:" in caplog.text
    assert "key 'dispatch.max_attempts': expected an integer >= 1, got 0" in caplog.text


@pytest.mark.parametrize("http_server", ["azuld", "hypercorn"])
async def test_a_listen_address_in_use_is_named(tmp_path: Path, http_server: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = await trio.run_process(
            [
                sys.executable,
                "-m",
                "azuld",
                "serve",
                "--listen",
                address,
                "--data-dir",
                str(tmp_path),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "AZULD_SERVER__HTTP_SERVER": http_server},
        )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == (
        f"azuld: cannot start: server.listen: cannot listen on {address}: the address is already "
        "in use (by another azuld, or another program); choose another address with --listen or "
        "server.listen"
    )


@pytest.mark.slow
async def test_systemd_notifications_and_drain(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    sock = notify_socket
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    async with running_daemon(tmp_path / "data", env=env) as daemon:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            response = await client.post(
                "/api/v2/event?model=binary", content=msgspec.json.encode([make_binary("x")])
            )
            assert response.status_code == 200
            query = "name=P&version=1&r-historic=true&r-live=true&count=1"
            leased = await client.get(f"/api/v2/event/binary/active?{query}&deadline=1")
            events = msgspec.json.decode(
                parse_multipart(leased.content, leased.headers["content-type"])["events"]
            )["events"]
            assert len(events) == 1
            await trio.sleep(1)
            messages = drain(sock)
            assert messages[0].startswith("READY=1")
            assert sum(m.startswith("WATCHDOG=1") for m in messages) >= 2

            # SIGTERM while a long-poll is waiting: it still gets its answer, and exit is 0.
            async def long_poll() -> None:
                reply = await client.get(
                    f"/api/v2/event/binary/active?name=Q&{query[7:]}&deadline=2"
                )
                assert reply.status_code == 200

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                await trio.sleep(0.3)
                daemon.process.send_signal(signal.SIGTERM)
            assert await daemon.terminate() == 0
        assert any(m.startswith("STOPPING=1") for m in drain(sock))

    # Nothing was lost: the job leased at shutdown is offered again.
    async with (
        running_daemon(tmp_path / "data") as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
    ):
        again = await client.get(f"/api/v2/event/binary/active?{query}&deadline=1")
        events = msgspec.json.decode(
            parse_multipart(again.content, again.headers["content-type"])["events"]
        )["events"]
        assert len(events) == 1


@pytest.mark.slow
async def test_sighup_reloads_what_it_can(tmp_path: Path) -> None:
    config = tmp_path / "azuld.toml"
    config.write_text('log_level = "info"\n[dispatch]\nlease_seconds = 120\n')
    data = tmp_path / "data"
    daemon = await start_daemon(data, extra_args=["--config", str(config)])
    try:
        config.write_text(
            'log_level = "debug"\n[dispatch]\nlease_seconds = 30\n[events]\ntopic_prefix = "x"\n'
        )
        daemon.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while "reloaded" not in daemon.log():
                await trio.sleep(0.05)
        line = next(line for line in daemon.log().splitlines() if "reloaded" in line)
        assert "applied log_level, dispatch.lease_seconds" in line
        assert "needs a restart: events.topic_prefix" in line
        # A broken file is reported and the running settings stay.
        config.write_text("[dispatch\n")
        daemon.process.send_signal(signal.SIGHUP)
        with trio.fail_after(10):
            while "reload failed" not in daemon.log():
                await trio.sleep(0.05)
        assert await daemon.terminate() == 0
    finally:
        if daemon.process.returncode is None:
            await daemon.kill()


async def test_one_daemon_per_data_folder(tmp_path: Path) -> None:
    async with running_daemon(tmp_path / "data") as first:
        second = await trio.run_process(
            [
                sys.executable,
                "-m",
                "azuld",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(tmp_path / "data"),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert second.returncode == 1
        assert f"another azuld (pid {first.process.pid}) is using this data folder" in (
            second.stderr.decode()
        )


async def test_tls_with_hypercorns_certificate_settings(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    done = await trio.run_process(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    config = tmp_path / "tls.toml"
    config.write_text(f'[server]\ntls_certfile = "{cert}"\ntls_keyfile = "{key}"\n')
    daemon = await start_daemon(tmp_path / "data", extra_args=["--config", str(config)])
    try:
        url = daemon.url.replace("http://", "https://")
        async with httpx.AsyncClient(verify=False, timeout=10) as client:  # self-signed
            reply = await client.get(f"{url}/healthz")
        assert reply.json() == {"status": "ok"}
    finally:
        await daemon.kill()
