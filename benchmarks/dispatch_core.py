"""The dispatcher's own CPU per event, below HTTP: `Dispatcher.fetch` and `Dispatcher.publish`.

Opens the embedded log and a local blob store in a temporary folder (as `azuld.service` does),
runs the dispatcher, publishes `sourced` events, then runs `--workers` trio tasks in the same
process, each looping `fetch(count=C)` → `publish("status", body)` with the body the load
generator's workers send (`loadgen.status_body`: one `completed` status per job, one enriched
result with one feature). No HTTP, no download.

CPU is `time.process_time()` over the whole run (the dispatcher's background tasks and any
worker threads included), minus what the simulated workers spend building their status bodies
(measured around that code, which never yields). The Trio thread's own CPU (`time.thread_time()`,
same deduction) is shown beside it: the daemon's bottleneck is that one thread. Prints one row
per scenario:

    .venv/bin/python benchmarks/dispatch_core.py              # about 20 s
    .venv/bin/python benchmarks/dispatch_core.py --events 2000 --batch-events 20000
    .venv/bin/python benchmarks/dispatch_core.py --profile out.pstats   # cProfile the workers
    .venv/bin/python benchmarks/dispatch_core.py --max-security OFFICIAL  # each also with it
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

from azuld.backends.embedded import open_embedded_log  # noqa: E402
from azuld.core.params import ConsumeParams, parse_consume_params  # noqa: E402
from azuld.dispatch import Dispatcher  # noqa: E402
from azuld.models import avro as avro_codec  # noqa: E402
from azuld.settings import DispatchSettings  # noqa: E402
from azuld.storage.local import LocalBlobStore  # noqa: E402

SOURCE = "bench"
BLOB_SIZE = 1024
PRELOAD_BATCH = 1000


@dataclass
class Row:
    scenario: str
    events: int
    seconds: float
    cpu_seconds: float
    trio_thread_cpu_seconds: float
    client_cpu_seconds: float

    @property
    def dispatcher_us(self) -> float:
        return (self.cpu_seconds - self.client_cpu_seconds) / self.events * 1e6

    @property
    def trio_thread_us(self) -> float:
        return (self.trio_thread_cpu_seconds - self.client_cpu_seconds) / self.events * 1e6

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds


async def preload(dispatcher: Dispatcher, first: int, count: int) -> None:
    content = loadgen.binary_sha256("content", 0)
    for start in range(first, first + count, PRELOAD_BATCH):
        stop = min(start + PRELOAD_BATCH, first + count)
        events = [
            loadgen.sourced_event(SOURCE, seq, content, BLOB_SIZE) for seq in range(start, stop)
        ]
        await dispatcher.publish("binary", msgspec.json.encode(events))


def fetch_params(
    name: str, count: int, source: str, max_security: str = "", *, avro: bool = False
) -> ConsumeParams:
    """A fetch as the load generator's workers send it (as a Go plugin does, with `avro`)."""
    query = loadgen.FETCH_QUERY.format(name=name, count=count, deadline=1, source=source)
    pairs = [(k, v) for k, _, v in (pair.partition("=") for pair in query.split("&"))]
    if max_security:
        pairs.append(("max-security", max_security))
    if avro:
        pairs.append(("avro-format", "true"))
    return parse_consume_params(
        "binary",
        True,
        pairs,
        default_deadline_seconds=5,
        max_deadline_seconds=60,
        max_count=1000,
    )


async def measure(
    dispatcher: Dispatcher,
    name: str,
    *,
    events: int,
    workers: int,
    count: int,
    idle_polls: int,
    profile: cProfile.Profile | None,
    max_security: str = "",
    encoding: str = "json",
) -> Row:
    """`workers` tasks fetch and complete jobs of a fresh plugin key until `events` are done,
    while `idle_polls` long-polls of another key wait for events that never come. With
    `encoding` "avro" they fetch and post in Avro, as Go plugins do (the same statuses)."""
    avro = encoding == "avro"
    params = fetch_params(name, count, SOURCE, max_security, avro=avro)
    idle = fetch_params(f"idle-{name}", 1, "idle")
    done = 0
    client_cpu = 0.0
    finished = trio.Event()

    async def worker() -> None:
        nonlocal done, client_cpu
        while True:
            result = await dispatcher.fetch(params)
            taken = len(result.events)
            if not taken:
                continue
            started = time.thread_time()
            if avro:
                served = avro_codec.decode_posted("binary", avro_codec.bulk_record(result.events))
                body = loadgen.avro_status_body(served, name)
                del served
            else:
                body = loadgen.status_body([msgspec.json.decode(e) for e in result.events], name)
            client_cpu += time.thread_time() - started
            # Nothing decoded is kept across the awaits: a plugin's objects live in its own
            # process, not in the dispatcher's heap (they would slow its garbage collections).
            del result
            await dispatcher.publish("status", body, avro=avro)
            done += taken
            if done >= events:
                finished.set()

    async def idle_poll() -> None:
        while True:
            await dispatcher.fetch(idle)

    if profile is not None:
        profile.enable()
    cpu = time.process_time()
    thread_cpu = time.thread_time()
    wall = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(idle_polls):
            nursery.start_soon(idle_poll)
        for _ in range(workers):
            nursery.start_soon(worker)
        await finished.wait()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        thread_cpu = time.thread_time() - thread_cpu
        scenario = (
            f"count={count}, {workers} workers"
            + (f", max-security={max_security}" if max_security else "")
            + (f", {encoding}" if encoding != "json" else "")
        )
        row = Row(scenario, done, wall, cpu, thread_cpu, client_cpu)
        nursery.cancel_scope.cancel()
    if profile is not None:
        profile.disable()
    return row


async def main(args: argparse.Namespace) -> list[Row]:
    profile = cProfile.Profile() if args.profile else None
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="azuld-dispatch-core-") as tmp:
        data = Path(tmp)
        async with open_embedded_log(data / "events.sqlite3") as event_log:
            blobs = LocalBlobStore(data / "blobs")
            dispatcher = Dispatcher(event_log, DispatchSettings(), "local", blobs=blobs)
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                await preload(dispatcher, 0, max(args.events, args.batch_events))
                clearances = ["", args.max_security] if args.max_security else [""]
                for round_ in range(args.repeat):
                    for count, events in ((1, args.events), (100, args.batch_events)):
                        for index, clearance in enumerate(clearances if events else []):
                            for encoding in args.encodings:
                                rows.append(
                                    await measure(
                                        dispatcher,
                                        f"core-{count}-{round_}-{index}-{encoding}",
                                        events=events,
                                        workers=args.workers,
                                        count=count,
                                        idle_polls=args.idle_polls,
                                        profile=profile,
                                        max_security=clearance,
                                        encoding=encoding,
                                    )
                                )
                nursery.cancel_scope.cancel()
    if profile is not None:
        profile.dump_stats(args.profile)
    return rows


def report(rows: list[Row]) -> None:
    """Every round, then the best round of each scenario (the machine may be shared: the least
    CPU per event is the least disturbed measurement)."""
    best: dict[str, Row] = {}
    for row in rows:
        if row.scenario not in best or row.dispatcher_us < best[row.scenario].dispatcher_us:
            best[row.scenario] = row
    print(
        f"{'scenario':<49} {'events':>7} {'events/s':>10} {'dispatcher µs/event':>20} "
        f"{'trio thread µs/event':>21} {'worker µs/event':>16}"
    )
    for label, shown in (("", rows), ("best ", best.values())):
        for row in shown:
            print(
                f"{label + row.scenario:<49} {row.events:>7} {row.events_per_second:>10,.0f} "
                f"{row.dispatcher_us:>20.1f} {row.trio_thread_us:>21.1f} "
                f"{row.client_cpu_seconds / row.events * 1e6:>16.1f}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4000, help="events completed at count=1")
    parser.add_argument(
        "--batch-events", type=int, default=20000, help="events completed at count=100"
    )
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of both scenarios")
    parser.add_argument(
        "--idle-polls",
        type=int,
        default=0,
        help="long-polls of another plugin key waiting all along (nothing ever comes for it)",
    )
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the workers here")
    parser.add_argument(
        "--max-security",
        metavar="CLEARANCE",
        default="",
        help="run each scenario again with this max-security (the events are labelled "
        f"{loadgen.SECURITY})",
    )
    parser.add_argument(
        "--encodings",
        type=lambda text: text.split(","),
        default=["json"],
        help="json, avro or json,avro: how the workers fetch and post (avro: as Go plugins)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    report(trio.run(main, parse_args()))
