"""A benchmark run against one daemon (`Run`): the blobs and events it preloads, the
load-generator processes (benchmarks/loadgen.py) it drives the daemon with, each scenario's
figures, and the upload and submit scenarios (benchmarks/uploads.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psutil
import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import uploads  # noqa: E402
from measuring import MB, SystemCpu, cpu_seconds, peak_rss, percentiles  # noqa: E402
from plan import SOURCE, Plan  # noqa: E402
from tests.daemon import Daemon  # noqa: E402


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
