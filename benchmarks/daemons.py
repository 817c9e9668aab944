"""The daemons a benchmark run measures (`Backend`): azuld on the embedded log, or on Kafka (a
broker started for the run) with S3 (moto) or local blobs.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import psutil
import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
from measuring import MB, cpu_seconds, peak_rss  # noqa: E402
from plan import Plan  # noqa: E402
from tests.daemon import Daemon, start_daemon  # noqa: E402
from tests.services import KafkaBroker, S3Server, fetch_kafka, free_port  # noqa: E402


class Backend(Protocol):
    """How the daemon under test is started. `plan` is the backend's default plan (or its quick
    one); `start` returns a running daemon on a fresh state; `stop` ends it and whatever the
    backend started for it; `describe` goes into the results (after `stop`)."""

    name: str

    def plan(self, *, quick: bool) -> Plan: ...

    async def start(self, work: Path) -> Daemon: ...

    async def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


async def stop_daemon(daemon: Daemon | None) -> None:
    """SIGTERM (a drain), SIGKILL if it takes over 15 s; nothing if it is not running."""
    if daemon is None or daemon.process.returncode is not None:
        return
    try:
        await daemon.terminate(timeout_seconds=15)
    except trio.TooSlowError:
        await daemon.kill()


class EmbeddedBackend:
    """`azuld serve` on its defaults: the SQLite event log and the local blob folder."""

    name = "embedded"

    def __init__(self) -> None:
        self.daemon: Daemon | None = None

    def plan(self, *, quick: bool) -> Plan:
        return Plan.quick() if quick else Plan.default()

    async def start(self, work: Path) -> Daemon:
        self.daemon = await start_daemon(work / "data")
        return self.daemon

    async def stop(self) -> None:
        await stop_daemon(self.daemon)

    def describe(self) -> dict[str, Any]:
        return {"events": "embedded (SQLite, WAL)", "storage": "local folder", "config": "defaults"}


class KafkaBackend:
    """`azuld serve` with `events.backend = "kafka"` and `storage.backend = "s3"`: a real
    single-node Kafka (KRaft, from scripts/kafka-fetch's jars) and moto's S3 server, both started
    on loopback ports for the run by tests/services.py and stopped at its end. Every other
    setting is at its default (one partition per topic; azuld creates each source's topic when
    it is first published to).

    `storage="local"` keeps the blobs in the daemon's data dir instead (no moto): moto serves
    about 275 requests/s on these machines and its signing and connection costs dominate a
    count=1 job, which hides what the Kafka path itself costs.

    The default plan is smaller than the embedded one (10^3 and 10^4 events, no client
    comparison, which does not depend on the backend): it is about the latencies and the
    count=1/count=100 and 1/10/50-key throughput on Kafka, in under 5 minutes; the quick plan
    has one log size (10^3). The broker and moto share the machine's cores with the daemon
    and the load generator: their CPU seconds over the whole run are in `describe()`."""

    name = "kafka"

    def __init__(self, storage: str = "s3") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage {storage!r}: expected one of {', '.join(STORAGES)}")
        self.storage = storage
        self.broker: KafkaBroker | None = None
        self.s3: S3Server | None = None
        self.daemon: Daemon | None = None
        self.prefix = f"bench{secrets.token_hex(3)}"
        self.kafka_version = "?"
        self.services: dict[str, dict[str, float]] = {}

    def plan(self, *, quick: bool) -> Plan:
        # The SDK's figures are measured on the embedded backend only.
        if quick:  # one log size: the broker's start-up already takes 10-15 s
            return replace(Plan.quick(), sizes=[1_000], sdk_workers=())
        return replace(Plan.default(), sizes=[1_000, 10_000], compare_clients=(), sdk_workers=())

    async def start(self, work: Path) -> Daemon:
        try:
            return await self._start(work)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.stop()
            raise

    async def _start(self, work: Path) -> Daemon:
        home = await trio.to_thread.run_sync(fetch_kafka)
        self.kafka_version = home.name.removeprefix("kafka-")
        port = free_port()
        self.broker = KafkaBroker(
            work / "kafka", home=home, port=port, controller_port=free_port(frozenset({port}))
        )
        if self.storage == "s3":
            self.s3 = S3Server(work / "moto", port=free_port())
        # Spawned from this (the main) thread, so they die with the harness if it is killed.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.broker.astart)
            if self.s3 is not None:
                nursery.start_soon(self.s3.astart)
        config = work / "azuld.toml"
        text = (
            "[events]\n"
            'backend = "kafka"\n'
            f'topic_prefix = "{self.prefix}"\n'
            f'kafka_bootstrap = "{self.broker.bootstrap}"\n'
        )
        if self.s3 is not None:
            text += (
                "[storage]\n"
                'backend = "s3"\n'
                f's3_endpoint = "{self.s3.endpoint}"\n'
                f's3_bucket = "{self.prefix}"\n'
                f's3_access_key = "{self.s3.access_key}"\n'
                f's3_secret_key = "{self.s3.secret_key}"\n'
                f's3_region = "{self.s3.region}"\n'
            )
        config.write_text(text)  # without [storage]: the local folder in the data dir
        self.daemon = await start_daemon(work / "data", extra_args=["--config", str(config)])
        await self._ready(self.daemon)
        return self.daemon

    @staticmethod
    async def _ready(daemon: Daemon, within_seconds: float = 60) -> None:
        """Wait until /readyz answers 200 (the daemon holds its Kafka partitions and reaches
        S3). Raises RuntimeError, with the daemon's log tail, after `within_seconds`."""
        client = loadgen.H11Client(daemon.url)
        try:
            with trio.move_on_after(within_seconds):
                while (await client.request("GET", "/readyz"))[0] != 200:
                    await trio.sleep(0.2)
                return
        finally:
            await client.aclose()
        raise RuntimeError(f"azuld not ready in {within_seconds:g} s:\n{daemon.log()[-3000:]}")

    async def stop(self) -> None:
        await stop_daemon(self.daemon)
        for name, service in (("kafka", self.broker), ("moto", self.s3)):
            if service is None or service.pid is None or not service.process.running:
                continue
            try:
                process = psutil.Process(service.pid)
                self.services[name] = {
                    "cpu_s": round(cpu_seconds(process), 1),
                    "peak_rss_mb": round(peak_rss(service.pid) / MB, 1),
                }
            except psutil.Error:
                pass
            await service.astop()

    def describe(self) -> dict[str, Any]:
        blobs = "on S3 (moto_server on loopback)" if self.s3 else "in a local folder"
        return {
            "events": f"Kafka {self.kafka_version}, one KRaft node on loopback; blobs {blobs}",
            "storage": "s3 (moto)" if self.s3 else "local folder",
            "config": f"defaults, but events.backend = kafka, storage.backend = {self.storage}",
            "services_whole_run": self.services,
        }


BACKENDS: dict[str, Callable[..., Backend]] = {"embedded": EmbeddedBackend, "kafka": KafkaBackend}


# The blob stores `--backend kafka` can run with (the embedded backend always uses the folder).
STORAGES = ("s3", "local")
