"""azuld's benchmark harness: throughput, latency, CPU and memory of the real daemon.

    .venv/bin/python benchmarks/run.py             # the default run (about 3 minutes)
    .venv/bin/python benchmarks/run.py --quick     # CI smoke run (about 30 s)
    .venv/bin/python benchmarks/run.py --million   # adds a 10^6-event point (about 5 more minutes)
    .venv/bin/python benchmarks/run.py --profile 20    # also py-spy the daemon for 20 s
    .venv/bin/python benchmarks/run.py --backend kafka # on Kafka + S3 (moto), into results/kafka/
    .venv/bin/python benchmarks/run.py --backend kafka --storage local  # Kafka, local blobs

Starts `azuld serve` (embedded backend, or `--backend kafka`) on a fresh data dir, uploads a few small blobs, preloads
`sourced` events that share them, and drives it with simulated plugin workers (benchmarks/loadgen.py,
in separate processes) speaking the real protocol; then measures uploads and `azuld submit`
(benchmarks/uploads.py). Writes `<output>/<timestamp>.json`,
`latest.json`, `latest.md` and PNG plots, and compares with the previous `latest.json`.
benchmarks/README.md explains every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import msgspec
import psutil
import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import sdk  # noqa: E402
import uploads  # noqa: E402
from tests.daemon import Daemon, start_daemon  # noqa: E402
from tests.services import KafkaBroker, S3Server, fetch_kafka, free_port  # noqa: E402

SCHEMA = 1
SOURCE = "bench"  # the throughput events; latency events each get a source of their own
MB = 1024 * 1024


# -- plan --------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What one run measures. `sizes` are the events in the log at each point; the worker and
    plugin-key dimensions run at the largest size."""

    sizes: list[int]
    workers: list[int]
    keys: list[int]
    duration: float  # seconds measured per throughput scenario
    warmup: float  # seconds run before measuring
    latency_samples: int
    latency_waiters: int = 4
    latency_pause: float = 0.02  # idle gap between latency samples
    base_workers: int = 16
    batch_count: int = 100
    deadline: float = 1.0  # long-poll deadline of the throughput workers
    processes: int = 2  # load-generator processes
    client: str = "raw"
    blobs: int = 256
    blob_size: int = 1024
    compare_clients: tuple[str, ...] = ("h11", "httpx")  # rerun the base scenario with these
    no_download_variant: bool = True  # rerun the base scenario without downloads
    upload_sizes: tuple[int, ...] = (1024, 1024 * 1024)
    uploaders: tuple[int, ...] = (1, 8)  # concurrent uploaders (one connection each)
    upload_count: int = 1000  # uploads per scenario of small blobs; an eighth of it for 1 MiB
    submit_files: int = 1000  # `azuld submit` of this many 1 KiB files (0: not measured)
    # JSON and Avro (Go plugins' avro-format) side by side at count=1 and count=batch_count,
    # interleaved `encoding_rounds` times (the machine is shared: the best round of each counts).
    encodings: tuple[str, ...] = ("json", "avro")
    encoding_rounds: int = 3
    # The plugin SDK (benchmarks/sdk.py): a backlog of `sdk_events` drained by one plugin
    # process with each number of workers; `sdk_clients` adds the raw-client reference rows.
    sdk_events: int = 2000
    sdk_workers: tuple[int, ...] = (1, 4, 16)
    sdk_clients: tuple[str, ...] = ("sdk", "raw")

    @classmethod
    def default(cls) -> Plan:
        return cls(
            sizes=[1_000, 10_000, 100_000],
            workers=[1, 16, 64],
            keys=[1, 10, 50],
            duration=6.0,
            warmup=1.0,
            latency_samples=200,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            sizes=[300, 1_000],
            workers=[1, 16],
            keys=[1, 3],
            duration=1.0,
            warmup=0.2,
            latency_samples=20,
            blobs=16,
            compare_clients=(),
            no_download_variant=False,
            upload_count=40,
            submit_files=40,
            encoding_rounds=1,
            sdk_events=60,
            sdk_clients=("sdk",),
        )


# -- backends ----------------------------------------------------------------------------------


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


# -- measuring helpers -------------------------------------------------------------------------


def percentiles(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p95/p99/max (nearest rank) of `values`, times `scale`, rounded for reading."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * scale

    return {
        "p50": round(rank(50), 3),
        "p95": round(rank(95), 3),
        "p99": round(rank(99), 3),
        "max": round(ordered[-1] * scale, 3),
        "n": len(ordered),
    }


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has had since it started (bytes)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@dataclass
class SystemCpu:
    """Machine-wide CPU over an interval: busy cores and stolen cores (a noisy neighbour)."""

    start: Any = field(default_factory=psutil.cpu_times)

    def stop(self, seconds: float) -> dict[str, float]:
        end = psutil.cpu_times()
        delta = {k: getattr(end, k) - getattr(self.start, k) for k in end._fields}
        idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
        total = sum(delta.values()) or 1.0
        cores = psutil.cpu_count() or 1
        return {
            "busy_cores": round((total - idle) / total * cores, 2),
            "steal_cores": round(delta.get("steal", 0.0) / max(seconds, 1e-9), 3),
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        version = importlib.metadata.version("azuld")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return {
        "cpu_model": model or platform.processor() or "?",
        "logical_cores": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "azuld": version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "shared, noisy virtual machine: expect run-to-run variation of 10-30%",
    }


# -- the load-generator processes --------------------------------------------------------------


class LoadProcess:
    """One benchmarks/loadgen.py process: spawned, told when to start, read back."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    @classmethod
    async def spawn(cls, spec: dict[str, Any]) -> LoadProcess:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(HERE / "loadgen.py"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return cls(process)

    async def line(self) -> bytes:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError(f"load generator {self.process.pid} exited early")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    async def go(self, start_at: float) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(f"go {start_at}\n".encode())


def split(items: Sequence[str], parts: int) -> list[list[str]]:
    """Round-robin `items` into at most `parts` non-empty lists."""
    chunks: list[list[str]] = [[] for _ in range(min(parts, len(items)))]
    for index, item in enumerate(items):
        chunks[index % len(chunks)].append(item)
    return chunks


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Run:
    plan: Plan
    daemon: Daemon
    work: Path
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (sha256, size)
    events: int = 0  # sourced events of SOURCE in the log
    scenarios: list[dict[str, Any]] = field(default_factory=list)
    preloads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.daemon.process.pid)

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def memory(self) -> dict[str, float]:
        return {
            "rss_mb": round(self.process.memory_info().rss / MB, 1),
            "peak_rss_mb": round(peak_rss(self.daemon.process.pid) / MB, 1),
        }

    # -- setup ---------------------------------------------------------------------------------

    async def upload(self, client: loadgen.Client, source: str, index: int) -> tuple[str, int]:
        """Upload blob `index` under `source` (blobs are stored per source); (sha256, size)."""
        data = loadgen.blob_bytes(index, self.plan.blob_size)
        status, _, body = await client.request("POST", f"/api/v3/stream/{source}/content", data)
        if status != 200:
            raise RuntimeError(f"upload failed: HTTP {status}: {body[:300]!r}")
        stream = msgspec.json.decode(body)["data"]
        return stream["sha256"], stream["size"]

    async def upload_blobs(self) -> None:
        client = loadgen.H11Client(self.daemon.url)
        seconds = []
        for index in range(self.plan.blobs):
            before = time.perf_counter()
            self.blobs.append(await self.upload(client, SOURCE, index))
            seconds.append(time.perf_counter() - before)
        await client.aclose()
        self.preloads.append(
            {"what": "blob uploads", "count": len(seconds), "ms": percentiles(seconds, 1000)}
        )

    def sourced(self, source: str, seq: int) -> dict[str, Any]:
        sha256, size = self.blobs[seq % len(self.blobs)]
        return loadgen.sourced_event(source, seq, sha256, size)

    async def preload(self, target: int, batch: int = 1000, connections: int = 2) -> None:
        """Publish `sourced` events until the log holds `target` of them (batches of `batch`)."""
        if target <= self.events:
            return
        self.say(f"preloading events {self.events:,} -> {target:,}")
        batches = [
            (start, min(start + batch, target)) for start in range(self.events, target, batch)
        ]
        process = self.process
        cpu_before, started = cpu_seconds(process), time.perf_counter()

        async def publisher(mine: list[tuple[int, int]]) -> None:
            client = loadgen.H11Client(self.daemon.url)
            for start, stop in mine:
                events = [self.sourced(SOURCE, seq) for seq in range(start, stop)]
                await loadgen.post_events(client, "binary", msgspec.json.encode(events))
            await client.aclose()

        async with trio.open_nursery() as nursery:
            for index in range(connections):
                nursery.start_soon(publisher, batches[index::connections])
        seconds = time.perf_counter() - started
        published = target - self.events
        self.events = target
        self.preloads.append(
            {
                "what": "publish sourced events",
                "batch": batch,
                "from": target - published,
                "to": target,
                "seconds": round(seconds, 2),
                "events_per_second": round(published / seconds, 1),
                "daemon_cpu_s_per_1000": round(
                    (cpu_seconds(process) - cpu_before) / published * 1000, 4
                ),
            }
        )

    # -- throughput ----------------------------------------------------------------------------

    async def throughput(
        self,
        *,
        dimensions: list[str],
        keys: int,
        workers: int,
        count: int,
        download: bool,
        client: str | None = None,
        duration: float | None = None,
        during: Callable[[], Any] | None = None,
        kind: str = "throughput",
        max_security: str = "",
        encoding: str | None = None,
        encoding_round: int = 0,
    ) -> dict[str, Any]:
        """One throughput scenario. `encoding` ("json" or "avro") names the scenario after it
        and its round (the encoding comparison's rows); without it the workers speak JSON."""
        plan = self.plan
        client = client or plan.client
        duration = duration if duration is not None else plan.duration
        sid = (
            f"c{count}-w{workers}-k{keys}-n{self.events}"
            + ("" if download else "-nodl")
            + ("" if client == plan.client else f"-{client}")
            + ("" if kind in ("throughput", "encoding") else f"-{kind}")
            + ("" if encoding is None else f"-{encoding}")
            + (f"-r{encoding_round + 1}" if encoding_round else "")
        )
        key_names = [f"{sid}-key{index}" for index in range(keys)]
        assignment = [key_names[index % keys] for index in range(max(workers, keys))]
        self.say(f"throughput {sid}: {len(assignment)} workers on {keys} key(s), count={count}")
        base = {
            "url": self.daemon.url,
            "source": SOURCE,
            "count": count,
            "download": download,
            "client": client,
            "warmup": plan.warmup,
            "duration": duration,
            "deadline": plan.deadline,
            "max_security": max_security,
            "encoding": encoding or "json",
        }
        chunks = split(assignment, plan.processes)
        procs = [await LoadProcess.spawn({**base, "workers": chunk}) for chunk in chunks]
        try:
            for proc in procs:
                if await proc.line() != b"ready":
                    raise RuntimeError("load generator did not start")
            start_at = time.time() + 0.2
            for proc in procs:
                await proc.go(start_at)
            window_start = start_at + plan.warmup
            window_end = window_start + duration
            process = self.process
            await trio.sleep(max(0.0, start_at - time.time()))
            cpu_at_start = cpu_seconds(process)
            await trio.sleep(max(0.0, window_start - time.time()))
            cpu_before, system = cpu_seconds(process), SystemCpu()
            rss_max = 0
            async with trio.open_nursery() as nursery:
                if during is not None:
                    nursery.start_soon(during)
                while time.time() < window_end:
                    rss_max = max(rss_max, process.memory_info().rss)
                    await trio.sleep(min(0.25, max(0.0, window_end - time.time())))
            cpu = cpu_seconds(process) - cpu_before
            machine_cpu = system.stop(duration)
            results = [msgspec.json.decode(await proc.line()) for proc in procs]
            machine_cpu["other_cores"] = round(
                machine_cpu["busy_cores"]
                - cpu / duration
                - sum(r["cpu_seconds"] for r in results) / duration,
                2,
            )
            for proc in procs:
                await proc.process.wait()
            cpu_since_start = cpu_seconds(process) - cpu_at_start
        finally:
            for proc in procs:
                if proc.process.returncode is None:
                    proc.process.kill()
                    await proc.process.wait()
        completed = sum(r["completed"] for r in results)
        completed_total = sum(r["completed_total"] for r in results)
        available = self.events * keys
        drained = completed_total >= available
        whole_run = (drained or not completed) and completed_total > 0
        if whole_run:
            # Every event was done, maybe before the window opened (or no round finished inside
            # a short window): rate over the whole run, from the start (warm-up included) to the
            # last completion.
            last = max(r["last_completion_any"] for r in results)
            effective = last - start_at
            counted, counted_cpu = completed_total, cpu_since_start
        else:
            effective = duration
            counted, counted_cpu = completed, cpu
        eps = counted / effective if effective > 0 else 0.0
        daemon_util = cpu / duration
        loadgen_utils = [r["cpu_seconds"] / duration for r in results]
        requests = {
            what: percentiles([s for r in results for s in r["request_seconds"][what]], 1000)
            for what in ("fetch", "download", "status", "cycle")
        }
        scenario = {
            "id": sid,
            "kind": kind,
            "dimensions": dimensions,
            "events_in_log": self.events,
            "keys": keys,
            "workers": len(assignment),
            "count": count,
            "download": download,
            "client": client,
            "encoding": encoding or "json",
            "encoding_round": encoding_round,
            "deadline_s": plan.deadline,
            "max_security": max_security,
            "load_processes": len(procs),
            "window_s": round(effective, 3),
            "completed": completed,
            "measured_over": "whole run" if whole_run else "window",
            "completed_total": completed_total,
            "drained": drained,
            "throughput_eps": round(eps, 1),
            "fetches": sum(r["fetches"] for r in results),
            "empty_fetches": sum(r["empty_fetches"] for r in results),
            # Empty answers that came back before some fetch still found jobs: the log (these
            # scenarios append no new sourced events) still held events for the key.
            "empty_fetches_before_last_jobs": sum(
                end < max(r["last_jobs_fetched"] for r in results)
                for r in results
                for end in r["empty_fetch_ends"]
            ),
            "errors": sum(r["errors"] for r in results),
            "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
            "daemon_cpu_s": round(cpu, 3),
            "daemon_cpu_util": round(daemon_util, 3),
            "daemon_cpu_s_per_1000": (round(counted_cpu / counted * 1000, 4) if counted else None),
            "loadgen_cpu_util": [round(u, 3) for u in loadgen_utils],
            "loadgen_cpu_ms_per_event": (
                round(sum(r["cpu_seconds"] for r in results) / completed * 1000, 3)
                if completed
                else None
            ),
            "machine_cpu": machine_cpu,
            "daemon_rss_max_in_window_mb": round(rss_max / MB, 1),
            **self.memory(),
            "request_ms": requests,
        }
        scenario["bottleneck"] = bottleneck(scenario)
        self.scenarios.append(scenario)
        self.say(
            f"  {eps:,.0f} events/s, daemon {daemon_util:.0%} CPU, "
            f"{scenario['daemon_cpu_s_per_1000']} CPU s/1000, loadgen "
            f"{'/'.join(f'{u:.0%}' for u in loadgen_utils)}, RSS {scenario['rss_mb']} MB, "
            f"errors {scenario['errors']}{' (drained)' if drained else ''}"
        )
        return scenario

    # -- latency -------------------------------------------------------------------------------

    async def latency(self) -> dict[str, Any]:
        """Handout and end-to-end latency on an otherwise idle daemon: `latency_waiters` workers
        wait in long-polls; one event at a time is published from this same process."""
        plan = self.plan
        sid = f"latency-n{self.events}"
        source = f"lat{self.events}"
        key = sid
        self.say(f"latency {sid}: {plan.latency_samples} samples, {plan.latency_waiters} waiters")
        sent: dict[int, float] = {}
        acked: dict[int, float] = {}
        handed: dict[int, float] = {}
        finished: dict[int, float] = {}
        done_events: dict[int, trio.Event] = {}
        errors: list[str] = []
        clock = time.perf_counter

        async def waiter() -> None:
            client = loadgen.make_client(plan.client, self.daemon.url)
            try:
                while True:
                    jobs = await loadgen.fetch_jobs(client, key, source, 1, 10.0)
                    now = clock()
                    for job in jobs:
                        handed[int(job["source"]["references"]["seq"])] = now
                    for job in jobs:
                        await loadgen.download(client, job)
                    if jobs:
                        await loadgen.post_events(client, "status", loadgen.status_body(jobs, key))
                        now = clock()
                        for job in jobs:
                            seq = int(job["source"]["references"]["seq"])
                            finished[seq] = now
                            done_events[seq].set()
            except (loadgen.HTTPError, OSError) as exc:
                errors.append(repr(exc))
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()

        publisher = loadgen.make_client(plan.client, self.daemon.url)
        sha256, size = await self.upload(publisher, source, 0)
        cpu_before, started = cpu_seconds(self.process), clock()
        warmups = 3
        async with trio.open_nursery() as nursery:
            for _ in range(plan.latency_waiters):
                nursery.start_soon(waiter)
            await trio.sleep(0.3)  # the key exists and every waiter is in its long-poll
            for seq in range(-warmups, plan.latency_samples):
                done_events[seq] = trio.Event()
                body = msgspec.json.encode([loadgen.sourced_event(source, seq, sha256, size)])
                await trio.sleep(plan.latency_pause)
                sent[seq] = clock()
                await loadgen.post_events(publisher, "binary", body)
                acked[seq] = clock()
                with trio.move_on_after(10):
                    await done_events[seq].wait()
                if errors:
                    break
            nursery.cancel_scope.cancel()
        await publisher.aclose()
        samples = [seq for seq in range(plan.latency_samples) if seq in finished]
        scenario = {
            "id": sid,
            "kind": "latency",
            "dimensions": ["events"],
            "events_in_log": self.events,
            "waiters": plan.latency_waiters,
            "client": plan.client,
            "samples": len(samples),
            "lost": plan.latency_samples - len(samples),
            "errors": errors[:3],
            "handout_ms": percentiles([handed[s] - sent[s] for s in samples], 1000),
            "handout_after_ack_ms": percentiles([handed[s] - acked[s] for s in samples], 1000),
            "publish_ack_ms": percentiles([acked[s] - sent[s] for s in samples], 1000),
            "end_to_end_ms": percentiles([finished[s] - sent[s] for s in samples], 1000),
            "daemon_cpu_s_per_1000": round(
                (cpu_seconds(self.process) - cpu_before) / max(1, len(samples) + warmups) * 1000,
                4,
            ),
            "seconds": round(clock() - started, 2),
            **self.memory(),
        }
        self.scenarios.append(scenario)
        h, e = scenario["handout_ms"], scenario["end_to_end_ms"]
        self.say(
            f"  handout p50 {h.get('p50')} p99 {h.get('p99')} ms; "
            f"end-to-end p50 {e.get('p50')} p99 {e.get('p99')} ms"
        )
        return scenario


async def measure_uploads(run: Run) -> None:
    """Upload rows: the daemon's CPU per upload and uploads/s for each size and number of
    concurrent uploaders (distinct random blobs), then `azuld submit` of 1 KiB files."""
    plan = run.plan
    pid = run.daemon.process.pid
    for size in plan.upload_sizes:
        for uploaders in plan.uploaders:
            count = plan.upload_count if size <= 64 * 1024 else max(8, plan.upload_count // 8)
            run.say(f"uploads: {count} of {size:,} bytes, {uploaders} uploader(s)")
            scenario = await uploads.upload_scenario(
                run.daemon.url, pid, size=size, uploaders=uploaders, count=count
            )
            scenario.update(run.memory())
            run.scenarios.append(scenario)
            run.say("  " + uploads.describe(scenario))
    if plan.submit_files:
        run.say(f"azuld submit of {plan.submit_files} files of 1 KiB")
        scenario = await uploads.submit_scenario(
            run.daemon.url, pid, run.work, files=plan.submit_files
        )
        scenario.update(run.memory())
        run.scenarios.append(scenario)
        run.say("  " + uploads.describe(scenario))


def bottleneck(s: dict[str, Any]) -> str:
    """A reading of who ran out of CPU during the window (a heuristic, see README)."""
    cores = psutil.cpu_count() or 1
    if s["drained"]:
        return "ran out of events"
    if s["daemon_cpu_util"] >= 0.85:
        return "daemon CPU"
    if s["loadgen_cpu_util"] and max(s["loadgen_cpu_util"]) >= 0.85:
        return "load generator CPU"
    if s["machine_cpu"]["busy_cores"] >= 0.85 * cores:
        return f"machine CPU (other processes: {s['machine_cpu']['other_cores']:.1f} cores)"
    return "waiting (no CPU saturated)"


# -- profiling ---------------------------------------------------------------------------------


# Frames every sample of a thread passes through: left out of the inclusive ranking.
_ROOT_FRAMES = (
    "_run_module_as_main ",
    "_run_code ",
    "<module> (azuld/__main__.py",
    "main (azuld/cli/main.py",
    "serve (azuld/cli/daemon.py",
    "run (trio/_core/_run.py",
    "unrolled_run (trio/_core/_run.py",
    "Thread._bootstrap",
    "Thread.run ",
)


def _package(frame: str) -> str:
    """`trio`, `hypercorn`, `azuld/dispatch`...: where a frame's code lives."""
    where = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    parts = where.split("/")
    if parts[0] == "azuld" and len(parts) > 1:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else f"stdlib {where}" if where else frame


def collapsed_summary(path: Path, top: int = 10) -> dict[str, Any]:
    """Top functions of a py-spy `raw` (collapsed stacks) file: own samples, inclusive samples
    (without the root frames every sample shares), own samples by package, and the share of
    samples taken in trio's worker threads.

    An idle trio worker thread waits in `WorkerThread._work` on a lock with a timeout, which
    py-spy counts as active: those samples are dropped (and counted in `idle_thread_samples`)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    packages: dict[str, int] = {}
    total = threads = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith("WorkerThread._work ("):
            idle += count
            continue
        total += count
        if frames[0].startswith("Thread._bootstrap") or "WorkerThread._work" in stack:
            threads += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        package = _package(frames[-1])
        packages[package] = packages.get(package, 0) + count
        for frame in set(frames):
            if not frame.startswith(_ROOT_FRAMES):
                inclusive[frame] = inclusive.get(frame, 0) + count

    def ranked(table: dict[str, int]) -> list[dict[str, Any]]:
        best = sorted(table.items(), key=lambda item: -item[1])[:top]
        return [
            {"function": name, "samples": n, "percent": round(100 * n / max(total, 1), 1)}
            for name, n in best
        ]

    return {
        "samples": total,
        "idle_thread_samples": idle,
        "worker_thread_percent": round(100 * threads / max(total, 1), 1),
        "top_own": ranked(own),
        "top_inclusive": ranked(inclusive),
        "by_package": [
            {"package": row["function"], "samples": row["samples"], "percent": row["percent"]}
            for row in ranked(packages)
        ],
    }


async def profiled(run: Run, seconds: float, out: Path, stamp: str) -> dict[str, Any]:
    """A base count=1 scenario with py-spy sampling the daemon for `seconds`, twice at once
    (non-blocking): a flame graph SVG and collapsed stacks for the top-10 summary."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    svg = out / f"profile-{stamp}.svg"
    raw = out / f"profile-{stamp}.txt"
    pid = str(run.daemon.process.pid)
    common = ["record", "--pid", pid, "--duration", str(int(seconds)), "--nonblocking"]

    async def spy_on(form: str, path: Path) -> None:
        command = [spy, *common, "--format", form, "--output", str(path)]
        await trio.run_process(command, capture_stdout=True, capture_stderr=True)

    async def record() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spy_on, "flamegraph", svg)
            nursery.start_soon(spy_on, "raw", raw)

    scenario = await run.throughput(
        dimensions=[],
        keys=1,
        workers=run.plan.base_workers,
        count=1,
        download=True,
        duration=seconds + 1,
        during=record,
        kind="profiled",
    )
    summary = collapsed_summary(raw)
    return {
        "seconds": seconds,
        "scenario": scenario["id"],
        "throughput_eps_while_profiled": scenario["throughput_eps"],
        "flamegraph": svg.name,
        "collapsed": raw.name,
        **summary,
    }


# -- reporting ---------------------------------------------------------------------------------


def find(scenarios: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    found = [s for s in scenarios if all(s.get(k) == v for k, v in match.items())]
    return found[-1] if found else None


def encoding_bests(encoded: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """The round with the least daemon CPU per event of each (count, encoding): the least
    disturbed measurement on a shared machine."""
    best: dict[tuple[int, str], dict[str, Any]] = {}
    for s in encoded:
        key = (s["count"], s["encoding"])
        cpu = s["daemon_cpu_s_per_1000"] or float("inf")
        if key not in best or cpu < (best[key]["daemon_cpu_s_per_1000"] or float("inf")):
            best[key] = s
    return best


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each against the scenario that measures it."""
    scenarios = [s for s in data["scenarios"] if s["kind"] in ("throughput", "latency")]
    plan = data["plan"]
    largest = max(plan["sizes"])
    base = plan["base_workers"]
    out = []
    c1_nodl = find(
        scenarios,
        kind="throughput",
        count=1,
        workers=base,
        keys=1,
        events_in_log=largest,
        download=False,
    )
    c1 = find(
        scenarios,
        kind="throughput",
        count=1,
        workers=base,
        keys=1,
        events_in_log=largest,
        download=True,
        client=plan["client"],
    )
    if c1:
        note = f"{c1['id']} (fetch, download, complete)"
        if c1_nodl:
            note += f"; without the download: {c1_nodl['throughput_eps']:,.0f}/s"
        out.append(
            {
                "target": f"count=1, {base} workers: events/s",
                "required": ">= 1000",
                "measured": c1["throughput_eps"],
                "met": c1["throughput_eps"] >= 1000,
                "scenario": note,
            }
        )
    batch = find(
        scenarios,
        kind="throughput",
        count=plan["batch_count"],
        workers=base,
        keys=1,
        events_in_log=largest,
    )
    if batch:
        out.append(
            {
                "target": f"count={plan['batch_count']}, {base} workers: events/s",
                "required": ">= 10000",
                "measured": batch["throughput_eps"],
                "met": batch["throughput_eps"] >= 10000,
                "scenario": f"{batch['id']} (fetch 100, one POST of 100 statuses, no download)",
            }
        )
    latency = find(scenarios, kind="latency", events_in_log=largest)
    if latency and latency["handout_ms"]:
        p99 = latency["handout_ms"]["p99"]
        out.append(
            {
                "target": "handout to a waiting long-poll, idle daemon: p99 ms",
                "required": "< 5",
                "measured": p99,
                "met": p99 < 5,
                "scenario": f"{latency['id']} (publish sent -> job received)",
            }
        )
    if data["backend"]["name"] == "kafka":
        out += kafka_targets(data, c1, batch, latency)
    out += upload_targets(data)
    most_keys = max(plan["keys"])
    keyed = find(scenarios, kind="throughput", keys=most_keys, events_in_log=largest)
    if keyed:
        peak = keyed["peak_rss_mb"]
        at_million = largest >= 1_000_000
        out.append(
            {
                "target": f"peak RSS, {most_keys} plugin keys, 1,000,000 events: MB",
                "required": "< 200",
                "measured": peak,
                "met": (peak < 200) if at_million else None,
                "scenario": f"{keyed['id']}"
                + ("" if at_million else f" (only {largest:,} events: run with --million)"),
            }
        )
    single = find(data["scenarios"], kind="sdk", client="sdk", workers=1)
    if single:
        out.append(
            {
                "target": "plugin SDK: plugin-process CPU per trivial job, count=1: ms",
                "required": "<= 2",
                "measured": single["cpu_ms_per_job"],
                "met": single["cpu_ms_per_job"] <= 2,
                "scenario": f"{single['id']} ({single['jobs']} jobs: fetch, download, status)",
            }
        )
    return out


def kafka_targets(
    data: dict[str, Any],
    c1: dict[str, Any] | None,
    batch: dict[str, Any] | None,
    latency: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Issue #13's Kafka targets: the daemon's CPU per job and per event (the figure least
    disturbed by a busy machine), no empty count=100 fetch while the log still had events for
    the key, and the idle handout p99. Meant for `--storage local`: with S3 (moto) a count=1
    job also pays for the S3 GET."""
    out: list[dict[str, Any]] = []
    storage = data["backend"].get("storage", "")
    if c1 and c1["daemon_cpu_s_per_1000"] is not None:
        ms = c1["daemon_cpu_s_per_1000"]
        out.append(
            {
                "target": "Kafka, count=1: daemon CPU ms per job",
                "required": "<= 1.0",
                "measured": ms,
                "met": ms <= 1.0,
                "scenario": f"{c1['id']} (fetch, download, complete; blobs: {storage})",
            }
        )
    if batch and batch["daemon_cpu_s_per_1000"] is not None:
        ms = batch["daemon_cpu_s_per_1000"]
        out.append(
            {
                "target": f"Kafka, count={batch['count']}: daemon CPU ms per event",
                "required": "<= 0.15",
                "measured": ms,
                "met": ms <= 0.15,
                "scenario": batch["id"],
            }
        )
        # Once every event was handed out (drained), empty answers are expected: counted are
        # those that came back before another fetch still found jobs.
        early = batch["empty_fetches_before_last_jobs"]
        out.append(
            {
                "target": f"Kafka, count={batch['count']}: empty fetches while events remain",
                "required": "0",
                "measured": early,
                "met": early == 0,
                "scenario": f"{batch['id']} ({batch['empty_fetches']} of {batch['fetches']} "
                f"fetches empty, {early} of them before the last fetch that found jobs)",
            }
        )
    if latency and latency["handout_ms"]:
        p99 = latency["handout_ms"]["p99"]
        out.append(
            {
                "target": "Kafka, handout to a waiting long-poll, idle daemon: p99 ms",
                "required": "< 10",
                "measured": p99,
                "met": p99 < 10,
                "scenario": f"{latency['id']} (publish sent -> job received)",
            }
        )
    return out


def security_cost(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each `security` scenario against the same scenario without `max-security`: the daemon CPU
    per event the check adds."""
    rows = []
    for checked in data["scenarios"]:
        if checked["kind"] != "security":
            continue
        plain = find(
            data["scenarios"],
            kind="throughput",
            count=checked["count"],
            workers=checked["workers"],
            keys=checked["keys"],
            events_in_log=checked["events_in_log"],
            download=checked["download"],
            client=checked["client"],
        )
        if plain is None:
            continue
        before, after = plain["daemon_cpu_s_per_1000"], checked["daemon_cpu_s_per_1000"]
        rows.append(
            {
                "count": checked["count"],
                "max_security": checked["max_security"],
                "without": plain["id"],
                "with": checked["id"],
                "events_per_second": [plain["throughput_eps"], checked["throughput_eps"]],
                "daemon_cpu_s_per_1000": [before, after],
                # CPU s per 1000 events = CPU ms per event.
                "added_cpu_ms_per_event": (
                    round(after - before, 4) if before is not None and after is not None else None
                ),
            }
        )
    return rows


def upload_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #16's upload targets: daemon CPU per upload (with the most uploaders measured) and
    `azuld submit` files/s (the latter on an idle machine: `machine` says how idle it was)."""
    scenarios = data["scenarios"]
    out = []
    for size, limit in ((1024, 2.0), (1024 * 1024, 5.0)):
        rows = [s for s in scenarios if s["kind"] == "upload" and s["size_bytes"] == size]
        if not rows:
            continue
        row = max(rows, key=lambda s: s["uploaders"])
        out.append(
            {
                "target": f"daemon CPU per {uploads.size_name(size)} upload: ms",
                "required": f"<= {limit:g}",
                "measured": row["daemon_cpu_ms_per_upload"],
                "met": row["daemon_cpu_ms_per_upload"] <= limit,
                "scenario": f"{row['id']} ({row['uploads_per_s']:,.0f} uploads/s)",
            }
        )
    submit = find(scenarios, kind="submit")
    if submit:
        out.append(
            {
                "target": f"azuld submit of {submit['files']:,} small files: files/s",
                "required": ">= 300 (idle machine)",
                "measured": submit["files_per_s"],
                "met": submit["files_per_s"] >= 300,
                "scenario": f"{submit['id']} (exit {submit['exit_code']})",
            }
        )
    return out


def compare(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """Ratios new/old of the headline figures of scenarios present in both runs."""
    old_by_id = {s["id"]: s for s in old.get("scenarios", [])}
    rows = []
    per_event = [("throughput_eps", "events/s"), ("daemon_cpu_s_per_1000", "CPU s/1000")]
    metrics = {
        "throughput": per_event,
        "security": per_event,
        "encoding": per_event,
        "latency": [("handout_ms.p99", "handout p99 ms"), ("end_to_end_ms.p99", "e2e p99 ms")],
        "upload": [("uploads_per_s", "uploads/s"), ("daemon_cpu_ms_per_upload", "CPU ms/upload")],
        "submit": [("files_per_s", "files/s"), ("daemon_cpu_ms_per_file", "CPU ms/file")],
        "sdk": [("jobs_per_s", "jobs/s"), ("cpu_ms_per_job", "plugin CPU ms/job")],
    }
    for scenario in new["scenarios"]:
        before = old_by_id.get(scenario["id"])
        if before is None or before.get("client", scenario.get("client")) != scenario.get("client"):
            continue  # not measured before, or by another client
        for path, label in [*metrics.get(scenario["kind"], []), ("peak_rss_mb", "peak RSS MB")]:
            a, b = dig(before, path), dig(scenario, path)
            if isinstance(a, int | float) and isinstance(b, int | float) and a:
                rows.append(
                    {
                        "scenario": scenario["id"],
                        "metric": label,
                        "before": a,
                        "after": b,
                        "ratio": round(b / a, 3),
                    }
                )
    return rows


def dig(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data


def digits(value: Any) -> int:
    """Decimals that show a measured figure against its target (CPU ms per event need three)."""
    return 3 if isinstance(value, float) and abs(value) < 2 else 1


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        f"# azuld benchmark: {data['started']}",
        "",
        f"Backend **{data['backend']['name']}** ({data['backend']['events']}), HTTP server "
        f"`{data['backend'].get('http_server', 'hypercorn')}`; "
        f"mode {data['mode']}; run took {data['seconds']:.0f} s. "
        f"Load generator: {data['plan']['processes']} processes, client "
        f"`{data['plan']['client']}`, long-poll deadline {data['plan']['deadline']:g} s.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores "
        f"({m['physical_cores']} physical), {m['ram_gb']} GB RAM, {m['implementation']} "
        f"{m['python']}, Linux {m['kernel']}, azuld {m['azuld']}. Load average at start "
        f"{m['load_average_at_start']}, at end {m.get('load_average_at_end')}. **{m['note']}**; "
        "the daemon and the load generator share these cores.",
        "",
        "## Targets",
        "",
        "| target | required | measured | met | measured by |",
        "|---|---|---|---|---|",
    ]
    for t in data["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(
            f"| {t['target']} | {t['required']} | {fmt(t['measured'], digits(t['measured']))} | "
            f"{met} | "
            f"{t['scenario']} |"
        )
    lines += [
        "",
        "## Throughput",
        "",
        "Per scenario: events completed per second in the measuring window; the daemon's CPU "
        "seconds per 1000 completed events and its CPU use (1.0 = one core busy); the load "
        "generator processes' CPU use; other processes' CPU use on this shared machine (cores); "
        "the daemon's RSS at the end and its peak since start; fetches that came back empty "
        "(after waiting their deadline) of all fetches, warm-up included.",
        "",
        "| scenario | events in log | keys | workers | count | download | client | events/s | "
        "daemon CPU s/1000 | daemon CPU | loadgen CPU | loadgen CPU ms/event | other CPU | "
        "RSS MB | peak RSS MB | fetch p50/p99 ms | empty fetches | bottleneck |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["scenarios"]:
        if s["kind"] in ("latency", "upload", "submit", "sdk"):
            continue
        fetch = s["request_ms"]["fetch"]
        lines.append(
            f"| {s['id']} | {s['events_in_log']:,} | {s['keys']} | {s['workers']} | {s['count']} "
            f"| {'yes' if s['download'] else 'no'} | {s['client']} | "
            f"{fmt(s['throughput_eps'])}{' (drained)' if s['drained'] else ''} | "
            f"{fmt(s['daemon_cpu_s_per_1000'], 3)} | {s['daemon_cpu_util']:.2f} | "
            f"{'/'.join(f'{u:.2f}' for u in s['loadgen_cpu_util'])} | "
            f"{fmt(s['loadgen_cpu_ms_per_event'], 2)} | {s['machine_cpu']['other_cores']:.2f} | "
            f"{s['rss_mb']} | {s['peak_rss_mb']} | "
            f"{fmt(fetch.get('p50'), 1)}/{fmt(fetch.get('p99'), 1)} | "
            f"{s['empty_fetches']}/{s['fetches']} | {s['bottleneck']} |"
        )
    if data.get("security"):
        lines += [
            "",
            "## The cost of max-security",
            "",
            f"The count=1 and count={data['plan']['batch_count']} scenarios at the largest log "
            "size, run again right after each other with every fetch carrying "
            f"`max-security={data['security'][0]['max_security']}` against events labelled so "
            "(the label model, decisions cached per pair). Noise on a shared machine can exceed "
            "the difference.",
            "",
            "| count | events/s without / with | daemon CPU s/1000 without / with | added CPU "
            "ms/event |",
            "|---|---|---|---|",
        ]
        for row in data["security"]:
            eps, cpu = row["events_per_second"], row["daemon_cpu_s_per_1000"]
            lines.append(
                f"| {row['count']} | {fmt(eps[0])} / {fmt(eps[1])} | {fmt(cpu[0], 3)} / "
                f"{fmt(cpu[1], 3)} | {fmt(row['added_cpu_ms_per_event'], 3)} |"
            )
    encoded = [s for s in data["scenarios"] if s["kind"] == "encoding"]
    if encoded:
        lines += [
            "",
            "## JSON and Avro (Go plugins)",
            "",
            "The same workers, events and statuses, speaking JSON or Avro (`avro-format=true` on "
            "the fetch and the status post, as azul-bedrock's Go client does); no downloads. "
            "Daemon CPU per completed event (fetch, handout, status post, log), best of the "
            "interleaved rounds (each round's figure after it).",
            "",
            "| count | encoding | events/s | daemon CPU µs/event | vs JSON | rounds µs/event |",
            "|---|---|---|---|---|---|",
        ]
        best = encoding_bests(encoded)
        for (count, encoding), s in best.items():
            twin = best.get((count, "json"))
            per_event = s["daemon_cpu_s_per_1000"]
            ratio = (
                f"{per_event / twin['daemon_cpu_s_per_1000']:.2f}x"
                if twin and per_event and twin["daemon_cpu_s_per_1000"]
                else "-"
            )
            rounds = " / ".join(
                fmt(r["daemon_cpu_s_per_1000"] * 1000 if r["daemon_cpu_s_per_1000"] else None, 1)
                for r in encoded
                if (r["count"], r["encoding"]) == (count, encoding)
            )
            lines.append(
                f"| {count} | {encoding} | {fmt(s['throughput_eps'])} | "
                f"{fmt(per_event * 1000 if per_event else None, 1)} | {ratio} | {rounds} |"
            )
    lines += [
        "",
        "## Latency on an idle daemon",
        "",
        "Handout: publish request sent -> job received by a worker already waiting in a "
        "long-poll (both timestamps in one process). End-to-end: publish sent -> the worker's "
        "`completed` status acknowledged (durable, README). Milliseconds.",
        "",
        "| events in log | samples | handout p50 | p95 | p99 | max | publish ack p50 | "
        "handout after ack p50 / p99 | end-to-end p50 | p95 | p99 | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["scenarios"]:
        if s["kind"] != "latency":
            continue
        h, e, a = s["handout_ms"], s["end_to_end_ms"], s["publish_ack_ms"]
        after = s["handout_after_ack_ms"]
        lines.append(
            f"| {s['events_in_log']:,} | {s['samples']} | {fmt(h.get('p50'), 2)} | "
            f"{fmt(h.get('p95'), 2)} | {fmt(h.get('p99'), 2)} | {fmt(h.get('max'), 2)} | "
            f"{fmt(a.get('p50'), 2)} | {fmt(after.get('p50'), 2)} / {fmt(after.get('p99'), 2)} | "
            f"{fmt(e.get('p50'), 2)} | {fmt(e.get('p95'), 2)} | "
            f"{fmt(e.get('p99'), 2)} | {s['rss_mb']} |"
        )
    upload_rows = [s for s in data["scenarios"] if s["kind"] == "upload"]
    if upload_rows:
        lines += [
            "",
            "## Uploads",
            "",
            "`POST /api/v3/stream/<source>/content` of distinct random blobs with a "
            "Content-Length, each uploader on its own keep-alive connection: the daemon's CPU "
            "per upload (user + system, all threads), uploads/s and the request's latency.",
            "",
            "| scenario | size | uploaders | uploads | uploads/s | MB/s | daemon CPU ms/upload | "
            "daemon CPU | request p50/p99 ms | errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in upload_rows:
            r = s["request_ms"]
            lines.append(
                f"| {s['id']} | {uploads.size_name(s['size_bytes'])} | {s['uploaders']} | "
                f"{s['uploads']} | {fmt(s['uploads_per_s'])} | {fmt(s['mb_per_s'], 1)} | "
                f"{fmt(s['daemon_cpu_ms_per_upload'], 2)} | {s['daemon_cpu_util']:.2f} | "
                f"{fmt(r.get('p50'), 1)}/{fmt(r.get('p99'), 1)} | {s['errors']} |"
            )
    for s in data["scenarios"]:
        if s["kind"] == "submit":
            lines += [
                "",
                f"`azuld submit` of {s['files']:,} files of {uploads.size_name(s['size_bytes'])}"
                f": {fmt(s['files_per_s'])} files/s ({s['seconds']:.1f} s, exit "
                f"{s['exit_code']}); daemon {fmt(s['daemon_cpu_ms_per_file'], 2)} ms CPU per "
                f"file, the command {fmt(s['submit_cpu_ms_per_file'], 2)} ms.",
            ]
    sdk_rows = [s for s in data["scenarios"] if s["kind"] == "sdk"]
    if sdk_rows:
        lines += [
            "",
            "## Plugin SDK",
            "",
            "One plugin process drains a backlog of trivial jobs (download the content, one "
            "feature, a `completed` status) with 1, 4, 16 workers: `sdk` is the SDK's "
            "`PluginRunner` as `azuld plugin run` builds it, `raw` a hand-written keep-alive "
            "client doing the same three requests per job (the floor). CPU: the plugin "
            "process's own (getrusage), registration included.",
            "",
            "| client | workers | jobs | jobs/s | plugin CPU ms/job | plugin CPU |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['client']} | {s['workers']} | {s['jobs']:,} | {fmt(s['jobs_per_s'])} | "
            f"{fmt(s['cpu_ms_per_job'], 3)} | {s['plugin_cpu_util']:.2f} |"
            for s in sdk_rows
        ]
    lines += ["", "## Preloading", ""]
    for p in data["preloads"]:
        if p["what"] == "blob uploads":
            lines.append(
                f"* {p['count']} blob uploads: p50 {p['ms'].get('p50')} ms, "
                f"p99 {p['ms'].get('p99')} ms each"
            )
        else:
            lines.append(
                f"* publish {p['from']:,} -> {p['to']:,} sourced events in POSTs of "
                f"{p['batch']}: {fmt(p['events_per_second'])} events/s, daemon "
                f"{p['daemon_cpu_s_per_1000']} CPU s/1000"
            )
    if data.get("profile"):
        p = data["profile"]
        lines += [
            "",
            f"## Where the daemon spends its time (py-spy, {p['seconds']:g} s, "
            f"{p['samples']} samples)",
            "",
            f"Under {p['scenario']} ({fmt(p['throughput_eps_while_profiled'])} events/s while "
            f"sampled). Flame graph: `{p['flamegraph']}`; collapsed stacks: `{p['collapsed']}`.",
            "",
            "| own time | % | function |",
            "|---|---|---|",
        ]
        lines += [
            f"| {row['samples']} | {row['percent']} | `{row['function']}` |" for row in p["top_own"]
        ]
        lines += ["", "| inclusive | % | function |", "|---|---|---|"]
        lines += [
            f"| {row['samples']} | {row['percent']} | `{row['function']}` |"
            for row in p["top_inclusive"]
        ]
        lines += ["", "| own time by package | % | package |", "|---|---|---|"]
        lines += [
            f"| {row['samples']} | {row['percent']} | `{row['package']}` |"
            for row in p.get("by_package", [])
        ]
        lines += [
            "",
            f"{p.get('worker_thread_percent', 0)} % of the samples were in trio's worker threads "
            "(`trio.to_thread`, e.g. file I/O through `trio.open_file`); "
            f"{p.get('idle_thread_samples', 0)} samples of idle worker threads waiting for work "
            "were left out.",
        ]
    if data.get("comparison"):
        lines += [
            "",
            f"## Compared with the previous run ({data.get('previous')})",
            "",
            "| scenario | metric | before | after | after/before |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['scenario']} | {r['metric']} | {r['before']} | {r['after']} | {r['ratio']} |"
            for r in data["comparison"]
        ]
    lines += ["", "Plots: " + ", ".join(f"`{name}`" for name in data.get("plots", [])), ""]
    return "\n".join(lines)


def plots(data: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib
    except ImportError:
        print("no plots: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = data["plan"]
    largest = max(plan["sizes"])
    tp = [s for s in data["scenarios"] if s["kind"] == "throughput"]
    written = []

    def series(dimension: str, x: str, **match: Any) -> tuple[list[Any], list[dict[str, Any]]]:
        rows = sorted(
            (s for s in tp if dimension in s["dimensions"] and find([s], **match)),
            key=lambda s: s[x],
        )
        return [s[x] for s in rows], rows

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)

    for dimension, x, label, logx in (
        ("events", "events_in_log", "sourced events in the log", True),
        ("workers", "workers", f"workers (count=1, {largest:,} events)", False),
        ("keys", "keys", f"plugin keys (count=1, {largest:,} events)", False),
    ):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        counts = [1, plan["batch_count"]] if dimension == "events" else [1]
        for count in counts:
            xs, rows = series(dimension, x, count=count)
            if not rows:
                continue
            name = f"count={count}"
            line = axes[0].plot(xs, [r["throughput_eps"] for r in rows], "o-", label=name)
            drained = [r for r in rows if r["drained"]]
            axes[0].plot(
                [r[x] for r in drained],
                [r["throughput_eps"] for r in drained],
                "x",
                markersize=12,
                color=line[0].get_color(),
            )
            axes[1].plot(xs, [r["daemon_cpu_s_per_1000"] or 0 for r in rows], "o-", label=name)
            axes[2].plot(xs, [r["rss_mb"] for r in rows], "o-", label=f"at end, {name}")
            axes[2].plot(xs, [r["peak_rss_mb"] for r in rows], "^:", label=f"peak so far, {name}")
        axes[0].set_ylabel("completed events/s (x: drained, short window)")
        axes[1].set_ylabel("daemon CPU s per 1000 events")
        axes[2].set_ylabel("daemon RSS MB")
        if dimension == "events":
            axes[0].set_yscale("log")
        for axis in axes:
            axis.set_xlabel(label)
            if logx:
                axis.set_xscale("log")
            if axis.get_yscale() == "linear":
                axis.set_ylim(bottom=0)
            axis.grid(True, alpha=0.3)
            axis.legend()
        fig.suptitle(f"azuld {data['backend']['name']}: vs {dimension}")
        save(fig, f"latest-{dimension}.png")

    lat = sorted(
        (s for s in data["scenarios"] if s["kind"] == "latency"), key=lambda s: s["events_in_log"]
    )
    if lat:
        fig, axis = plt.subplots(figsize=(7, 4))
        xs = [s["events_in_log"] for s in lat]
        for what, p, style in (
            ("handout_ms", "p50", "o-"),
            ("handout_ms", "p99", "o--"),
            ("end_to_end_ms", "p50", "s-"),
            ("end_to_end_ms", "p99", "s--"),
        ):
            axis.plot(xs, [s[what].get(p, 0) for s in lat], style, label=f"{what[:-3]} {p}")
        axis.axhline(5, color="red", alpha=0.4, label="target: handout p99 < 5 ms")
        axis.set_xscale("log")
        axis.set_ylim(bottom=0)
        axis.set_xlabel("sourced events in the log")
        axis.set_ylabel("ms")
        axis.grid(True, alpha=0.3)
        axis.legend()
        axis.set_title("idle-daemon latency")
        save(fig, "latest-latency.png")
    return written


# -- main --------------------------------------------------------------------------------------


async def measure(
    plan: Plan, backend: Backend, work: Path, out: Path, profile: float, stamp: str
) -> dict[str, Any]:
    daemon = await backend.start(work)
    run = Run(plan, daemon, work)
    run.say(f"azuld ({backend.name}) at {daemon.url}, pid {daemon.process.pid}")
    data: dict[str, Any] = {}
    try:
        if plan.sdk_workers:
            # First: the SDK's plugin keys replay every sourced event of the log.
            run.say(f"plugin SDK: draining {plan.sdk_events} jobs with {plan.sdk_workers} workers")
            run.scenarios += await sdk.sdk_scenarios(
                daemon.url,
                events=plan.sdk_events,
                workers=list(plan.sdk_workers),
                clients=plan.sdk_clients,
                daemon_pid=daemon.process.pid,
            )
        await run.upload_blobs()
        largest = max(plan.sizes)
        for size in sorted(plan.sizes):
            await run.preload(size)
            dims = ["events"]
            if size == largest:
                dims += ["workers", "keys"]
            await run.latency()
            for count, download in ((1, True), (plan.batch_count, False)):
                await run.throughput(
                    dimensions=dims if count == 1 else ["events"],
                    keys=1,
                    workers=plan.base_workers,
                    count=count,
                    download=download,
                )
                if size == largest:
                    # The same again, every fetch with `max-security` (the events are labelled):
                    # right after it, for conditions as alike as a shared machine allows.
                    await run.throughput(
                        dimensions=[],
                        keys=1,
                        workers=plan.base_workers,
                        count=count,
                        download=download,
                        kind="security",
                        max_security=loadgen.SECURITY,
                    )
        for workers in plan.workers:
            if workers != plan.base_workers:
                await run.throughput(
                    dimensions=["workers"], keys=1, workers=workers, count=1, download=True
                )
        if plan.no_download_variant:
            await run.throughput(
                dimensions=[], keys=1, workers=plan.base_workers, count=1, download=False
            )
        for other in plan.compare_clients:
            if other == plan.client:
                continue
            await run.throughput(
                dimensions=[],
                keys=1,
                workers=plan.base_workers,
                count=1,
                download=True,
                client=other,
            )
        for keys in plan.keys:
            if keys != 1:
                await run.throughput(
                    dimensions=["keys"],
                    keys=keys,
                    workers=max(plan.base_workers, keys),
                    count=1,
                    download=True,
                )
        await measure_uploads(run)
        # The same work in JSON and in Avro, one after the other: the codecs' cost per event.
        for encoding_round in range(plan.encoding_rounds):
            for count in (1, plan.batch_count):
                for encoding in plan.encodings:
                    await run.throughput(
                        dimensions=["encoding"],
                        keys=1,
                        workers=plan.base_workers,
                        count=count,
                        download=False,
                        kind="encoding",
                        encoding=encoding,
                        encoding_round=encoding_round,
                    )
        if profile:
            run.say(f"profiling the daemon with py-spy for {profile:g} s")
            data["profile"] = await profiled(run, profile, out, stamp)
    except BaseException:
        print(f"--- daemon log tail ({daemon.log_path}):\n{daemon.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        with trio.CancelScope(shield=True):
            await backend.stop()
    data.update(scenarios=run.scenarios, preloads=run.preloads)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (about 30 s)")
    parser.add_argument("--million", action="store_true", help="add a 1,000,000-event point")
    parser.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default="embedded",
        help="embedded (SQLite + local folder, default) or kafka (a Kafka broker and moto's S3, "
        "started for the run)",
    )
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        help="with --backend kafka: the blob store, s3 (moto, started for the run; the default) "
        "or local (a folder in the data dir, as the embedded backend); results then go to "
        "benchmarks/results/kafka-local/",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="results folder (default benchmarks/results/, benchmarks/results/<backend>/ for "
        "another backend than embedded, benchmarks/results/kafka-local/ for --storage local)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "h11", "httpx"],
        default="raw",
        help="the load generator's HTTP client (default raw: hand-written HTTP/1.1)",
    )
    parser.add_argument(
        "--http-server",
        choices=["azuld", "hypercorn"],
        default="azuld",
        help="the daemon's server.http_server (default azuld, its own; hypercorn to compare)",
    )
    parser.add_argument("--processes", type=int, help="load-generator processes (default 2)")
    parser.add_argument("--duration", type=float, help="seconds measured per scenario")
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="also py-spy the daemon under count=1 load for SECONDS",
    )
    parser.add_argument("--work", type=Path, help="work folder (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    # The daemon inherits the environment (tests/daemon.py): AZULD_* variables are settings.
    os.environ["AZULD_SERVER__HTTP_SERVER"] = args.http_server
    if args.storage and args.backend != "kafka":
        parser.error("--storage is for --backend kafka (the embedded backend uses the folder)")
    backend = (
        KafkaBackend(args.storage or "s3") if args.backend == "kafka" else BACKENDS[args.backend]()
    )
    plan = backend.plan(quick=args.quick)
    if args.million:
        plan.sizes.append(1_000_000)
    plan.client = args.client
    if args.processes:
        plan.processes = args.processes
    if args.duration:
        plan.duration = args.duration
    variant = backend.name + ("-local" if args.storage == "local" else "")
    out: Path = args.output or (
        HERE / "results" if backend.name == "embedded" else HERE / "results" / variant
    )
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="azuld-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    started = time.perf_counter()
    info = machine()
    try:
        measured = trio.run(measure, plan, backend, work, out, args.profile, stamp)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "started": stamp,
        "mode": "quick" if args.quick else ("million" if args.million else "default"),
        "seconds": round(time.perf_counter() - started, 1),
        "backend": {"name": backend.name, **backend.describe(), "http_server": args.http_server},
        "machine": info,
        "plan": asdict(plan),
        **measured,
    }
    data["targets"] = targets(data)
    data["security"] = security_cost(data)
    previous_path = out / "latest.json"
    if previous_path.exists():
        try:
            previous = json.loads(previous_path.read_text())
            # Only runs of the same backend and blob store compare (a run without a storage
            # entry had its backend's usual one).
            now_on = data["backend"]
            was = previous.get("backend", {})
            was_on = (was.get("name", now_on["name"]), was.get("storage", now_on["storage"]))
            if was_on == (now_on["name"], now_on["storage"]):
                data["previous"] = previous.get("started")
                data["comparison"] = compare(data, previous)
            else:
                other = f"backend {was_on[0]}, storage {was_on[1]}"
                print(f"not comparing with {previous_path}: {other}", file=sys.stderr)
        except (ValueError, KeyError) as exc:
            print(f"cannot compare with {previous_path}: {exc}", file=sys.stderr)
    data["plots"] = plots(data, out)
    text = json.dumps(data, indent=1)
    (out / f"{stamp}.json").write_text(text)
    (out / "latest.json").write_text(text)
    report = markdown(data)
    (out / "latest.md").write_text(report)
    print()
    print(report)
    if data.get("comparison"):
        print("vs previous run (after/before):")
        for row in data["comparison"]:
            print(f"  {row['scenario']:<40} {row['metric']:<16} {row['ratio']:>7.3f}")
    print(f"wrote {out / 'latest.json'}, {out / 'latest.md'} in {data['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
