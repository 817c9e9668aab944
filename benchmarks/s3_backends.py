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
and is stopped (by its PID) at the end.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import trio
import trio_asyncio
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import get_session
from trio_asyncio import aio_as_trio

try:
    import boto3
    from botocore.config import Config
except ImportError:  # boto3 comes with moto; (c) is skipped without it
    boto3 = None

import aiohttp  # noqa: F401  # likewise, so that no variant pays an import inside a timing
import anyio._backends._trio  # noqa: F401  # imported lazily by anyio on first use: do it now

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import start_moto

log = logging.getLogger("s3_backends")

RESULTS = Path(__file__).parent / "results"
MiB = 1024 * 1024
BUCKET = "bench"
CHUNK = 256 * 1024  # PUT body chunks and streamed GET chunks
BIG_SIZES = (5 * MiB, 50 * MiB)
BIG_REPS = 5
SMALL_SIZE = 4 * 1024
SMALL_COUNT = 200
SMALL_REPS = 5
CONCURRENCY = 16
CREATE_REPS = 3
LAG_TICK = 0.001
IDLE_SECONDS = 1.0

COMMON_CONFIG: dict[str, Any] = {
    "connect_timeout": 5.0,
    "read_timeout": 60.0,
    "max_pool_connections": CONCURRENCY,
    "retries": {"mode": "standard", "total_max_attempts": 1},
    "s3": {"addressing_style": "path", "payload_signing_enabled": False},
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}


class ChunkedBytesIO(io.BytesIO):
    """A body that aiobotocore's httpx backend sends in 256 KiB chunks, not line by line (P4)."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK), b"")


# --------------------------------------------------------------------------------------------
# The three variants: the same small interface, driven by the same trio code.

Sink = Callable[[bytes], None]


class Variant:
    key: str
    label: str

    def __init__(self, endpoint: str, credentials: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self.client: Any = None
        self._handle: Any = None

    async def open_client(self) -> tuple[Any, Any]:
        """(handle to close, client), from a fresh botocore session."""
        raise NotImplementedError

    async def close_client(self, handle: Any) -> None:
        raise NotImplementedError

    def use(self, handle: Any, client: Any) -> None:
        self._handle, self.client = handle, client

    async def aclose(self) -> None:
        if self._handle is not None:
            with trio.CancelScope(shield=True):
                await self.close_client(self._handle)
            self._handle = self.client = None

    async def create_bucket(self) -> None:
        raise NotImplementedError

    async def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    async def get(self, key: str, size: int, sink: Sink) -> None:
        """A ranged GET of bytes [0, size) streamed in CHUNK pieces to `sink` (on trio)."""
        raise NotImplementedError

    async def head(self, key: str) -> int:
        raise NotImplementedError


def _check_status(answer: dict[str, Any], key: str) -> None:
    status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status != 206:
        raise RuntimeError(f"ranged GET of {key} answered HTTP {status}, not 206")


class NativeHttpx(Variant):
    key = "a"
    label = "aiobotocore + httpx, native trio"

    async def open_client(self) -> tuple[Any, Any]:
        config = AioConfig(http_session_cls=HttpxSession, **COMMON_CONFIG)
        creator = get_session().create_client(
            "s3", endpoint_url=self.endpoint, config=config, **self.credentials
        )
        return creator, await creator.__aenter__()

    async def close_client(self, handle: Any) -> None:
        await handle.__aexit__(None, None, None)

    async def create_bucket(self) -> None:
        await self.client.create_bucket(Bucket=BUCKET)

    async def put(self, key: str, data: bytes) -> None:
        await self.client.put_object(Bucket=BUCKET, Key=key, Body=ChunkedBytesIO(data))

    async def get(self, key: str, size: int, sink: Sink) -> None:
        answer = await self.client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes=0-{size - 1}")
        _check_status(answer, key)
        async with answer["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK):
                sink(chunk)

    async def head(self, key: str) -> int:
        return int((await self.client.head_object(Bucket=BUCKET, Key=key))["ContentLength"])


# asyncio side of (b): these run inside trio-asyncio's loop, called through aio_as_trio.


async def _aio_open(endpoint: str, credentials: dict[str, str]) -> tuple[Any, Any]:
    stack = contextlib.AsyncExitStack()
    config = AioConfig(**COMMON_CONFIG)  # default http_session_cls: aiohttp
    client = await stack.enter_async_context(
        get_session().create_client("s3", endpoint_url=endpoint, config=config, **credentials)
    )
    return stack, client


async def _aio_chunks(client: Any, key: str, size: int) -> AsyncIterator[bytes]:
    answer = await client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes=0-{size - 1}")
    _check_status(answer, key)
    async with answer["Body"] as body:
        async for chunk in body.iter_chunks(CHUNK):
            yield chunk


class BridgedAiohttp(Variant):
    key = "b"
    label = "aiobotocore + aiohttp, via trio-asyncio"

    async def open_client(self) -> tuple[Any, Any]:
        return await aio_as_trio(_aio_open)(self.endpoint, self.credentials)

    async def close_client(self, handle: Any) -> None:
        await aio_as_trio(handle.aclose)()

    async def create_bucket(self) -> None:
        await aio_as_trio(self.client.create_bucket)(Bucket=BUCKET)

    async def put(self, key: str, data: bytes) -> None:
        await aio_as_trio(self.client.put_object)(Bucket=BUCKET, Key=key, Body=ChunkedBytesIO(data))

    async def get(self, key: str, size: int, sink: Sink) -> None:
        async for chunk in aio_as_trio(_aio_chunks(self.client, key, size)):
            sink(chunk)

    async def head(self, key: str) -> int:
        answer = await aio_as_trio(self.client.head_object)(Bucket=BUCKET, Key=key)
        return int(answer["ContentLength"])


class Boto3Threads(Variant):
    key = "c"
    label = "boto3 in trio.to_thread"

    async def open_client(self) -> tuple[Any, Any]:
        def create() -> Any:
            return boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint, config=Config(**COMMON_CONFIG), **self.credentials
            )

        client = await trio.to_thread.run_sync(create)
        return client, client

    async def close_client(self, handle: Any) -> None:
        await trio.to_thread.run_sync(handle.close)

    async def create_bucket(self) -> None:
        await trio.to_thread.run_sync(functools.partial(self.client.create_bucket, Bucket=BUCKET))

    async def put(self, key: str, data: bytes) -> None:
        await trio.to_thread.run_sync(
            functools.partial(
                self.client.put_object, Bucket=BUCKET, Key=key, Body=ChunkedBytesIO(data)
            )
        )

    async def get(self, key: str, size: int, sink: Sink) -> None:
        answer = await trio.to_thread.run_sync(
            functools.partial(
                self.client.get_object, Bucket=BUCKET, Key=key, Range=f"bytes=0-{size - 1}"
            )
        )
        _check_status(answer, key)
        body = answer["Body"]
        try:
            while chunk := await trio.to_thread.run_sync(body.read, CHUNK):
                sink(chunk)
        finally:
            body.close()

    async def head(self, key: str) -> int:
        answer = await trio.to_thread.run_sync(
            functools.partial(self.client.head_object, Bucket=BUCKET, Key=key)
        )
        return int(answer["ContentLength"])


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
# Reporting


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (
        "trio",
        "trio-asyncio",
        "aiobotocore",
        "botocore",
        "boto3",
        "httpx2",
        "aiohttp",
        "moto",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


NOISE = 0.2  # differences below this share are within this machine's run-to-run noise


def conclusion(results: dict[str, Any], keys: list[str], labels: dict[str, str]) -> str:
    """Two sentences from the numbers: median-time ratios against (a), and the loop lag."""
    rows = {**results["transfers"], **results["small_requests"]}
    others = [k for k in keys if k != "a"]
    ratios = {k: {w: rows[w][k]["median_s"] / rows[w]["a"]["median_s"] for w in rows} for k in keys}
    geo = {k: math.exp(statistics.fmean(math.log(r) for r in ratios[k].values())) for k in keys}
    lag = {k: results["loop_lag"][k]["all_transfers"]["p99_ms"] for k in keys}
    overall = ", ".join(f"({k}) {geo[k]:.2f}x" for k in others)
    if all(geo[k] >= 1 - NOISE for k in others):
        first = (
            "Use (a), aiobotocore's httpx backend natively on trio with the chunked body, as "
            f"azuld does: over all {len(rows)} workloads the others take {overall} of (a)'s time "
            "(geometric mean of the median ratios), close enough overall, and (a) needs no "
            "asyncio bridge or thread per request, and trio cancellation really stops its "
            "requests"
        )
    else:
        best = min(others, key=lambda k: geo[k])
        first = (
            f"({best}) {labels[best]} was clearly faster on this run ({overall} of (a)'s time, "
            "geometric mean of the median ratios); weigh that against (a)'s native trio "
            "cancellation and the lack of a bridge or thread per request before switching"
        )
    beyond = [
        f"{w.replace('_', ' ')} (" + ", ".join(f"({k}) {ratios[k][w]:.2f}x" for k in others) + ")"
        for w in rows
        if any(abs(math.log(ratios[k][w])) > math.log(1 + NOISE) for k in others)
    ]
    phases = {p: v for p, v in results["loop_lag"]["a"].items() if p != "all_transfers"}
    worst = max(phases, key=lambda p: phases[p]["p99_ms"])
    second = (
        "Beyond the noise: " + "; ".join(beyond) if beyond else "No workload differs beyond noise"
    ) + (
        "; event-loop lag p99 during the transfers was "
        + ", ".join(f"({k}) {lag[k]:.1f} ms" for k in keys)
        + f" ((a) worst during {worst.replace('_', ' ')}: {phases[worst]['p99_ms']:.1f} ms"
        + (
            f", likely because botocore's CPU work for all {CONCURRENCY} requests in flight runs "
            "straight on the trio loop)"
            if worst.endswith("small")
            else ")"
        )
        + "."
    )
    return f"{first}. {second}"


def markdown(data: dict[str, Any]) -> str:
    res = data["results"]
    keys = list(data["variants"])
    labels = data["variants"]
    m = data["machine"]
    out = [
        "# S3 client backends from trio, against moto_server",
        "",
        f"Machine: {m['cpu_count']} cores ({m['cpus_usable']} usable), {m['cpu_model'] or '?'}, "
        f"Python {m['python']}; load average {m['loadavg_start']} at the start, "
        f"{m['loadavg_end']} at the end. These 2-core machines are shared and noisy: take "
        "differences below ~20% as noise. moto_server runs on the same 2 cores, so it is part "
        "of every number.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".",
        "",
        "Variants (same botocore settings: path addressing, no payload signing, checksums when "
        f"required, no retries, pool of {CONCURRENCY}; all inside one `trio_asyncio.open_loop()`):",
        "",
    ]
    out += [f"- ({k}) {labels[k]}" for k in keys]
    out += [
        "",
        f"Run by `.venv/bin/python benchmarks/s3_backends.py` in {data['total_seconds']:.0f} s. "
        "Ratios are against (a) (>1x = slower than (a)).",
        "",
        "## Conclusion",
        "",
        data["conclusion"],
        "",
        "## Large objects (5 repetitions, interleaved; streamed GET in 256 KiB chunks)",
        "",
        "| workload | "
        + " | ".join(f"({k}) median / min" for k in keys)
        + " | "
        + " | ".join(f"({k})/(a)" for k in keys if k != "a")
        + " |",
        "|---|" + "---|" * (2 * len(keys) - 1),
    ]
    for name, row in res["transfers"].items():
        cells = [
            f"{row[k]['median_s'] * 1e3:.0f} / {row[k]['min_s'] * 1e3:.0f} ms "
            f"({row[k]['median_MiB_per_s']:.0f} MiB/s)"
            for k in keys
        ]
        ratios = [ratio(row[k]["median_s"], row["a"]["median_s"]) for k in keys if k != "a"]
        out.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells + ratios) + " |")
    out += [
        "",
        f"## Small requests ({SMALL_COUNT} per batch, {CONCURRENCY} in flight, 5 batches)",
        "",
        "| workload | "
        + " | ".join(f"({k}) batch median / min" for k in keys)
        + " | "
        + " | ".join(f"({k})/(a)" for k in keys if k != "a")
        + " |",
        "|---|" + "---|" * (2 * len(keys) - 1),
    ]
    for name, row in res["small_requests"].items():
        cells = [
            f"{row[k]['median_s'] * 1e3:.0f} / {row[k]['min_s'] * 1e3:.0f} ms "
            f"({row[k]['ops_per_s_median']}/s; op p50 {row[k]['op_p50_ms']:.1f}, "
            f"p99 {row[k]['op_p99_ms']:.1f} ms)"
            for k in keys
        ]
        ratios = [ratio(row[k]["median_s"], row["a"]["median_s"]) for k in keys if k != "a"]
        out.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells + ratios) + " |")
    fastest = max(
        SMALL_COUNT / row[k]["min_s"] for row in res["small_requests"].values() for k in keys
    )
    p50s = [row[k]["op_p50_ms"] for row in res["small_requests"].values() for k in keys]
    out += [
        "",
        f"With {CONCURRENCY} in flight each small request waits {min(p50s):.0f}-{max(p50s):.0f} ms "
        f"(p50) while moto, on the same 2 cores, serves at most ~{fastest:.0f} requests/s: these "
        "batches measure moto more than the clients; the client CPU per operation below "
        "separates the clients better.",
    ]
    out += [
        "",
        "## Client CPU per operation (the benchmark process, all threads; moto excluded)",
        "",
        "| workload | " + " | ".join(f"({k})" for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, row in res["transfers"].items():
        cells = [f"{row[k]['client_cpu_s_per_op'] * 1e3:.0f} ms" for k in keys]
        out.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
    for name, row in res["small_requests"].items():
        cells = [f"{row[k]['client_cpu_ms_per_op']:.2f} ms" for k in keys]
        out.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Event-loop lag (a trio task sleeping 1 ms; how late it woke)",
        "",
        f"Idle baseline: p99 {res['loop_lag']['idle']['p99_ms']:.2f} ms, "
        f"max {res['loop_lag']['idle']['max_ms']:.2f} ms.",
        "",
        "| during | " + " | ".join(f"({k}) p99 / max" for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    lag = res["loop_lag"]
    phases = list(lag["a"])
    for phase in phases:
        cells = [f"{lag[k][phase]['p99_ms']:.1f} / {lag[k][phase]['max_ms']:.1f} ms" for k in keys]
        out.append(f"| {phase.replace('_', ' ')} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"## Client creation (fresh botocore session each, {CREATE_REPS} times, before any timing)",
        "",
        "| | " + " | ".join(f"({k})" for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    cc = res["client_creation"]
    for field, title in (
        ("first_ms", "first (ms)"),
        ("median_ms", "median (ms)"),
        ("max_ms", "max (ms)"),
        ("loop_lag_max_ms", "max loop lag meanwhile (ms)"),
    ):
        out.append(f"| {title} | " + " | ".join(f"{cc[k][field]:.1f}" for k in keys) + " |")
    out += [
        "",
        "(a) and (b) build the client on the event loop; (c) builds it in a worker thread, which "
        "still holds the GIL while botocore parses its models (stack.md P10). azuld builds its "
        "client once at start-up, after loading the models in a worker thread.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------


async def run(endpoint: str, credentials: dict[str, str]) -> dict[str, Any]:
    classes: list[type[Variant]] = [NativeHttpx, BridgedAiohttp]
    if boto3 is not None:
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
