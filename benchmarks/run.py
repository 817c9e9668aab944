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
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import sdk  # noqa: E402
from daemons import BACKENDS, STORAGES, Backend, KafkaBackend  # noqa: E402
from measuring import machine  # noqa: E402
from plan import Plan  # noqa: E402
from profiling import profiled  # noqa: E402
from report import encoding_markdown, markdown, plots  # noqa: E402
from targets import compare, security_cost, targets  # noqa: E402

from scenarios import Run, measure_uploads  # noqa: E402

SCHEMA = 1


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
        if plan.only_encodings:
            await run.preload(largest)
        for size in [] if plan.only_encodings else sorted(plan.sizes):
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
        if not plan.only_encodings:
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
    parser.add_argument(
        "--only-encodings",
        action="store_true",
        help="only the JSON and Avro rows, on the largest log (writes encodings-<time>.json "
        "and .md to the results folder, not latest.*)",
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
    if args.only_encodings:
        plan.only_encodings = True
        plan.workers, plan.keys, plan.compare_clients = [], [], ()
        plan.no_download_variant, plan.sdk_workers = False, ()
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
    if plan.only_encodings:
        report = "\n".join(encoding_markdown(data)).strip() + "\n"
        (out / f"encodings-{stamp}.json").write_text(json.dumps(data, indent=1))
        (out / f"encodings-{stamp}.md").write_text(report)
        print(report)
        return 0
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
