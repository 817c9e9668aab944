"""Which S3 client should a trio service use? Three backends against one local moto_server.

    .venv/bin/python benchmarks/s3_backends.py

Variants (same botocore settings for all: azuld's, i.e. path addressing, no payload signing,
checksums only when required, botocore retries off, a pool of 16 connections):

  (a) aiobotocore with its httpx backend (`HttpxSession`) natively on trio, as azuld does; the
      PUT body is a `ChunkedBytesIO` that iterates in 256 KiB chunks (stack.md P4);
  (b) aiobotocore with its default aiohttp backend, bridged through `trio_asyncio.open_loop()`
      and one `aio_as_trio` per call (and per streamed chunk), with a logging exception handler
      (P5);
  (c) sync boto3, one `trio.to_thread.run_sync` per call (and per streamed chunk).

Every variant gets the same data, the same body object type, the same key layout and the same
trio-side driver; the whole run sits inside one `trio_asyncio.open_loop()` (as azuld's `main`
does), so only the S3 client differs. Clients are created (and warmed up with a few requests)
before anything is timed, and timed repetitions are interleaved with a rotating variant order so
that drift on a shared machine spreads over all of them.

Workloads: PUT and a ranged, streamed GET (256 KiB chunks handed to a trio consumer) of a 5 MiB
and a 50 MiB object, 5 repetitions each; 200 PUTs of 4 KiB with 16 in flight; 200 HEADs with 16
in flight (5 batches each). Alongside, a trio task sleeps 1 ms in a loop and records how late
it wakes (event-loop lag). Client creation (fresh botocore session each time) is timed too.

Writes benchmarks/results/s3-backends.json and .md. moto_server runs on a free 127.0.0.1 port
and is stopped (by its PID) at the end. The variants are in s3_variants.py, the report in
s3_report.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s3_report import conclusion, machine_info, markdown, versions
from s3_variants import (
    CHUNK,
    COMMON_CONFIG,
    CONCURRENCY,
    HAVE_BOTO3,
    Boto3Threads,
    BridgedAiohttp,
    MiB,
    NativeHttpx,
    Variant,
)
from tests.services import start_moto

log = logging.getLogger("s3_backends")

RESULTS = Path(__file__).parent / "results"
BIG_SIZES = (5 * MiB, 50 * MiB)
BIG_REPS = 5
SMALL_SIZE = 4 * 1024
SMALL_COUNT = 200
SMALL_REPS = 5
CREATE_REPS = 3
LAG_TICK = 0.001
IDLE_SECONDS = 1.0


# --------------------------------------------------------------------------------------------
# Measuring


class LagMonitor:
    """Sleeps LAG_TICK in a loop; each overshoot is recorded under the current phase."""

    def __init__(self) -> None:
        self.phase: tuple[str, ...] | None = None
        self.samples: dict[tuple[str, ...], list[float]] = defaultdict(list)

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await trio.sleep(LAG_TICK)
            late = time.perf_counter() - start - LAG_TICK
            if self.phase is not None:
                self.samples[self.phase].append(max(0.0, late))

    @contextlib.asynccontextmanager
    async def measuring(self, *phase: str) -> AsyncIterator[None]:
        self.phase = phase
        try:
            yield
        finally:
            # Let the monitor wake once more, so a stall at the very end is still counted.
            await trio.sleep(2 * LAG_TICK)
            self.phase = None

    def select(self, match: Callable[[tuple[str, ...]], bool]) -> list[float]:
        return [s for phase, values in self.samples.items() if match(phase) for s in values]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def lag_summary(values: list[float]) -> dict[str, Any]:
    return {
        "samples": len(values),
        "p50_ms": round(percentile(values, 50) * 1e3, 3),
        "p99_ms": round(percentile(values, 99) * 1e3, 3),
        "max_ms": round(max(values, default=math.nan) * 1e3, 3),
    }


def rotated(variants: list[Variant], shift: int) -> list[Variant]:
    shift %= len(variants)
    return variants[shift:] + variants[:shift]


async def timed(call: Awaitable[Any]) -> float:
    start = time.perf_counter()
    await call
    return time.perf_counter() - start


async def run_batch(
    op: Callable[[str], Awaitable[Any]], keys: list[str], concurrency: int
) -> tuple[float, list[float]]:
    """Run `op` over `keys` with `concurrency` trio workers; (wall seconds, per-op seconds)."""
    pending = iter(keys)
    latencies: list[float] = []

    async def worker() -> None:
        for key in pending:
            start = time.perf_counter()
            await op(key)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - start, latencies


def size_name(size: int) -> str:
    return f"{size // MiB}MiB"


async def bench(variants: list[Variant], monitor: LagMonitor) -> dict[str, Any]:
    results: dict[str, Any] = {}

    async with monitor.measuring("idle"):
        await trio.sleep(IDLE_SECONDS)

    # Client creation: a fresh botocore session each time (loads the S3 model again), rotating
    # the order; the last client of each variant is the one used below, the others are closed.
    created: dict[str, list[float]] = defaultdict(list)
    creation_cpu: dict[str, list[float]] = defaultdict(list)
    extra: list[tuple[Variant, Any]] = []
    for rep in range(CREATE_REPS):
        for variant in rotated(variants, rep):
            async with monitor.measuring("create", variant.key):
                cpu = time.process_time()
                start = time.perf_counter()
                handle, client = await variant.open_client()
                created[variant.key].append(time.perf_counter() - start)
                creation_cpu[variant.key].append(time.process_time() - cpu)
            if variant.client is not None:
                extra.append((variant, variant._handle))
            variant.use(handle, client)
    for variant, handle in extra:
        await variant.close_client(handle)
    results["client_creation"] = {
        v.key: {
            "samples_ms": [round(s * 1e3, 1) for s in created[v.key]],
            "first_ms": round(created[v.key][0] * 1e3, 1),
            "median_ms": round(statistics.median(created[v.key]) * 1e3, 1),
            "max_ms": round(max(created[v.key]) * 1e3, 1),
            "cpu_median_ms": round(statistics.median(creation_cpu[v.key]) * 1e3, 1),
            "loop_lag_max_ms": lag_summary(monitor.select(lambda p, k=v.key: p == ("create", k)))[
                "max_ms"
            ],
        }
        for v in variants
    }

    # Data: the same bytes for every variant (random, so they contain b"\n": P4 applies).
    big = {size: os.urandom(size) for size in BIG_SIZES}
    small = [os.urandom(SMALL_SIZE) for _ in range(SMALL_COUNT)]
    small_keys = {v.key: [f"{v.key}/small/{i:03d}" for i in range(SMALL_COUNT)] for v in variants}
    small_data = {key: small[i] for v in variants for i, key in enumerate(small_keys[v.key])}

    await variants[0].create_bucket()

    # Warm-up (untimed, no lag recorded): open the pools to CONCURRENCY connections, one 5 MiB
    # round trip, and check that what each variant reads back is what it wrote.
    for variant in variants:
        warm = small_keys[variant.key][: 2 * CONCURRENCY]
        await run_batch(lambda k, v=variant: v.put(k, small_data[k]), warm, CONCURRENCY)
        await run_batch(variant.head, warm, CONCURRENCY)
        key = f"{variant.key}/warm"
        await variant.put(key, big[BIG_SIZES[0]])
        digest = hashlib.sha256()
        await variant.get(key, BIG_SIZES[0], digest.update)
        if digest.digest() != hashlib.sha256(big[BIG_SIZES[0]]).digest():
            raise RuntimeError(f"({variant.key}) read back different bytes")

    # Large objects: PUT then streamed GET, BIG_REPS times, variants interleaved.
    transfers: dict[str, dict[str, Any]] = {}
    for size in BIG_SIZES:
        name = size_name(size)
        samples: dict[tuple[str, str], list[float]] = defaultdict(list)
        cpu: dict[tuple[str, str], float] = defaultdict(float)
        for rep in range(BIG_REPS):
            for variant in rotated(variants, rep):
                key = f"{variant.key}/big/{name}"
                got = 0

                def count(chunk: bytes) -> None:
                    nonlocal got
                    got += len(chunk)

                for op, call in (
                    ("put", lambda v=variant, k=key, n=size: v.put(k, big[n])),
                    ("get", lambda v=variant, k=key, n=size: v.get(k, n, count)),
                ):
                    async with monitor.measuring(op, name, variant.key):
                        started = time.process_time()
                        samples[(op, variant.key)].append(await timed(call()))
                        cpu[(op, variant.key)] += time.process_time() - started
                if got != size:
                    raise RuntimeError(f"({variant.key}) GET {key} gave {got} of {size} bytes")
        for variant in variants:  # verify the last PUT's content (untimed)
            digest = hashlib.sha256()
            await variant.get(f"{variant.key}/big/{name}", size, digest.update)
            if digest.digest() != hashlib.sha256(big[size]).digest():
                raise RuntimeError(f"({variant.key}) {name} object read back differently")
        for op in ("put", "get"):
            transfers[f"{op}_{name}"] = {
                v.key: {
                    "samples_s": [round(s, 4) for s in samples[(op, v.key)]],
                    "median_s": round(statistics.median(samples[(op, v.key)]), 4),
                    "min_s": round(min(samples[(op, v.key)]), 4),
                    "median_MiB_per_s": round(
                        size / MiB / statistics.median(samples[(op, v.key)]), 1
                    ),
                    "client_cpu_s_per_op": round(cpu[(op, v.key)] / BIG_REPS, 4),
                }
                for v in variants
            }
    results["transfers"] = transfers

    # Many small requests: SMALL_REPS batches of SMALL_COUNT with CONCURRENCY in flight.
    batches: dict[str, dict[str, Any]] = {}
    for op in ("put", "head"):
        walls: dict[str, list[float]] = defaultdict(list)
        lats: dict[str, list[float]] = defaultdict(list)
        cpu_small: dict[str, float] = defaultdict(float)
        for rep in range(SMALL_REPS):
            for variant in rotated(variants, rep):
                if op == "put":

                    async def call(k: str, v: Variant = variant) -> None:
                        await v.put(k, small_data[k])

                else:

                    async def call(k: str, v: Variant = variant) -> None:
                        if await v.head(k) != SMALL_SIZE:
                            raise RuntimeError(f"({v.key}) HEAD {k}: wrong size")

                async with monitor.measuring(op, "small", variant.key):
                    started = time.process_time()
                    wall, latencies = await run_batch(call, small_keys[variant.key], CONCURRENCY)
                    cpu_small[variant.key] += time.process_time() - started
                walls[variant.key].append(wall)
                lats[variant.key].extend(latencies)
        name = (
            f"{op}_4KiB_x{SMALL_COUNT}_c{CONCURRENCY}"
            if op == "put"
            else (f"head_x{SMALL_COUNT}_c{CONCURRENCY}")
        )
        batches[name] = {
            v.key: {
                "batch_samples_s": [round(s, 4) for s in walls[v.key]],
                "median_s": round(statistics.median(walls[v.key]), 4),
                "min_s": round(min(walls[v.key]), 4),
                "ops_per_s_median": round(SMALL_COUNT / statistics.median(walls[v.key])),
                "op_p50_ms": round(percentile(lats[v.key], 50) * 1e3, 2),
                "op_p99_ms": round(percentile(lats[v.key], 99) * 1e3, 2),
                "client_cpu_ms_per_op": round(
                    cpu_small[v.key] / (SMALL_REPS * SMALL_COUNT) * 1e3, 3
                ),
            }
            for v in variants
        }
    results["small_requests"] = batches

    # Event-loop lag: idle, during every timed transfer, and per workload.
    lag: dict[str, Any] = {"idle": lag_summary(monitor.select(lambda p: p == ("idle",)))}
    for v in variants:
        per = {
            "all_transfers": lag_summary(
                monitor.select(lambda p, k=v.key: p[0] != "create" and p[-1] == k)
            )
        }
        for phase in sorted({p[:-1] for p in monitor.samples if len(p) == 3 and p[-1] == v.key}):
            per["_".join(phase)] = lag_summary(
                monitor.select(lambda p, f=phase, k=v.key: p == (*f, k))
            )
        lag[v.key] = per
    results["loop_lag"] = lag
    return results


# --------------------------------------------------------------------------------------------


async def run(endpoint: str, credentials: dict[str, str]) -> dict[str, Any]:
    classes: list[type[Variant]] = [NativeHttpx, BridgedAiohttp]
    if HAVE_BOTO3:
        classes.append(Boto3Threads)
    else:
        log.warning("boto3 is not importable: variant (c) is skipped")
    variants = [cls(endpoint, credentials) for cls in classes]
    failure: BaseException | None = None
    results: dict[str, Any] = {}
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(
            lambda _loop, context: log.warning("asyncio: %s", context.get("message"))
        )  # P5: trio-asyncio's default handler would raise and end the whole block
        monitor = LagMonitor()
        try:  # catch inside the block: what leaves open_loop is double-wrapped (P3)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(monitor.run)
                try:
                    results = await bench(variants, monitor)
                finally:
                    for variant in variants:
                        await variant.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            leaves = group.exceptions
            while len(leaves) == 1 and isinstance(leaves[0], BaseExceptionGroup):
                leaves = leaves[0].exceptions
            failure = leaves[0] if len(leaves) == 1 else group
        except Exception as exc:
            failure = exc
    if failure is not None:
        raise failure
    results["variants"] = {v.key: v.label for v in variants}
    return results


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    began = time.perf_counter()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="s3-backends-") as tmp:
        server = start_moto(Path(tmp))
        try:
            credentials = {
                "region_name": server.region,
                "aws_access_key_id": server.access_key,
                "aws_secret_access_key": server.secret_key,
            }
            print(f"moto_server pid {server.pid} at {server.endpoint}", flush=True)
            results = trio.run(run, server.endpoint, credentials)
            moto_rss = server.rss_bytes()
        finally:
            server.stop()  # SIGTERM (then SIGKILL) to its own PID only
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    labels = results.pop("variants")
    data = {
        "machine": machine,
        "versions": versions(),
        "settings": {
            "big_sizes": list(BIG_SIZES),
            "big_reps": BIG_REPS,
            "small_size": SMALL_SIZE,
            "small_count": SMALL_COUNT,
            "small_reps": SMALL_REPS,
            "concurrency": CONCURRENCY,
            "chunk": CHUNK,
            "create_reps": CREATE_REPS,
            "lag_tick_s": LAG_TICK,
            "botocore_config": COMMON_CONFIG,
        },
        "variants": labels,
        "moto_rss_end_bytes": moto_rss,
        "results": results,
    }
    data["conclusion"] = conclusion(results, list(labels), labels)
    data["total_seconds"] = round(time.perf_counter() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "s3-backends.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / "s3-backends.md").write_text(markdown(data))
    print((RESULTS / "s3-backends.md").read_text())


if __name__ == "__main__":
    main()
