"""Operations against a running daemon: metrics, health and readiness, and the admin commands
(`azuld status`, `azuld plugins`, `azuld show`, `azuld config check`)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from tests.conftest import make_binary
from tests.daemon import running_daemon

pytestmark = pytest.mark.slow


async def azuld(*args: str) -> tuple[int, str, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "azuld", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_metrics_readiness_and_admin_commands(tmp_path: Path) -> None:
    async with running_daemon(tmp_path / "data") as daemon:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"ready": True, "reasons": []})

            events = [make_binary("a", size=10), make_binary("b", size=10_000)]
            await client.post("/api/v2/event?model=binary", content=msgspec.json.encode(events))
            query = "name=Sizer&version=2&r-historic=true&r-live=true&r-under-content-size=100"
            fetched = await client.get(f"/api/v2/event/binary/active?{query}&count=5&deadline=1")
            assert fetched.status_code == 200

            metrics = (await client.get("/metrics")).text
            key = "Sizer-2-binary-allsrc-alltype-LH"
            # `plugin` is the name, `plugin_key` the key, on every metric of a plugin key.
            plugin = f'plugin="Sizer",plugin_key="{key}"'
            assert f'azuld_events_fetched_total{{model="binary",{plugin}}} 1.0' in metrics
            assert (
                'azuld_events_filtered_total{filter="FilterConsumerRules-reject_content_too_large",'
                f'model="binary",{plugin}}} 1.0'
            ) in metrics
            assert 'azuld_events_published_total{author="bob",model="binary"} 2.0' in metrics
            assert f"azuld_leases_in_flight{{{plugin}}} 1.0" in metrics
            assert f'azuld_lag_events{{lane="historic",{plugin}}} 1.0' in metrics
            # The process, the cluster (the embedded log: one member owning every partition),
            # and no `_created` twins.
            for name in ("process_resident_memory_bytes", "process_cpu_seconds_total"):
                assert f"\n{name} " in metrics
            assert "\nprocess_open_fds " in metrics
            assert "\nazuld_cluster_members 1.0\n" in metrics
            assert "\nazuld_partitions_owned " in metrics
            assert "\nazuld_rebalances_total 0.0\n" in metrics
            assert "_created" not in metrics
            assert (
                'azuld_http_requests_total{code="200",method="GET",route="/api/v2/event/<model>/<mode>"}'
                in metrics
            )
            assert "azuld_http_request_duration_seconds_bucket" in metrics

        code, out, err = await azuld("status", "--server", daemon.url)
        assert code == 0, err
        assert "Sizer" in out
        assert "historic:1" in out
        code, out, _ = await azuld("plugins", "--server", daemon.url)
        assert key in out
        code, out, _ = await azuld("show", "--source", "samples", "--server", daemon.url)
        assert code == 0
        assert out.count("text/plain") == 2


async def test_readiness_names_an_unwritable_store(tmp_path: Path) -> None:
    async with running_daemon(tmp_path / "data") as daemon:
        spool = tmp_path / "data" / "blobs" / ".spool"
        spool.chmod(0o500)
        try:
            async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
                ready = await client.get("/readyz")
        finally:
            spool.chmod(0o700)
    if ready.status_code == 200:  # root ignores permissions; nothing to show there
        assert ready.json()["ready"] is True
    else:
        assert ready.status_code == 503
        assert "not writable" in ready.json()["reasons"][0]


async def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[dispatch]\nlease_seconds = 30\n")
    code, out, _ = await azuld("config", "check", str(good))
    assert code == 0
    assert "dispatch.lease_seconds = 30.0" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[dispatch]\nleese_seconds = 30\n")
    code, _, err = await azuld("config", "check", str(bad))
    assert code == 2
    assert "unknown setting (did you mean 'lease_seconds'?)" in err
