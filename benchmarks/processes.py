"""Several azuld processes on one host: throughput and daemon CPU of `azuld serve --processes N`
on Kafka, for N = 1 against N = 2 (or `--processes 1,2,4`), in interleaved rounds.

    .venv/bin/python benchmarks/processes.py                 # 2 rounds of 1 and 2 processes, ~4 min
    .venv/bin/python benchmarks/processes.py --quick         # smoke run: 1 round, small, ~1.5 min
    .venv/bin/python benchmarks/processes.py --processes 1,2,4 --rounds 3

Starts one Kafka broker (tests/services.py) for the whole run. Each round runs every process count,
in alternating order (1, 2 then 2, 1: the machine's drift falls on both), each on a fresh topic
prefix and data folder: `azuld serve --processes N` with `events.backend = "kafka"`,
`default_partitions` partitions per topic (4: two workers own two each) and the local blob folder
(every worker shares it; moto's ~275 requests/s would cap both counts alike), once every worker
answers /readyz on its own port (the benchmark's source topic is declared in the config, so it
exists from the start: created by the first publish, it would rebalance the workers' group in the
middle of a measurement). Then, with the harness's machinery (`scenarios.Run`): 256 blobs, the
events, the daemon's idle CPU over 3 s, count=1 with 16 workers (`--workers`; fetch, download,
completed status) and count=100 with 16 workers (no download). Daemon CPU is the supervisor's and
every worker's together.

Writes `benchmarks/results/processes/<stamp>.json`, `latest.json` and `latest.md` (the medians
per process count and the ratios against one process); benchmarks/README.md explains the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import measuring  # noqa: E402
from daemons import stop_daemon  # noqa: E402  (also puts the repository on sys.path)
from plan import SOURCE, Plan  # noqa: E402
from tests.daemon import Daemon, start_daemon  # noqa: E402
from tests.services import KafkaBroker, fetch_kafka, free_port  # noqa: E402

from scenarios import Run  # noqa: E402

SCENARIOS = (("count=1", 1, True), ("count=100", 100, False))
_ALL_SERVING = re.compile(r"serving on (https?://127\.0\.0\.1:\d+) with \d+ processes")


class ProcessTree:
    """The daemon as psutil sees it, but summed over the supervisor and its workers (what
    `Run` asks of a process: CPU times and resident memory)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def members(self) -> list[psutil.Process]:
        return [self.root, *self.root.children(recursive=True)]

    def cpu_times(self) -> SimpleNamespace:
        user = system = 0.0
        for process in self.members():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            user, system = user + times.user, system + times.system
        return SimpleNamespace(user=user, system=system)

    def memory_info(self) -> SimpleNamespace:
        rss = 0
        for process in self.members():
            try:
                rss += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return SimpleNamespace(rss=rss)


class TreeRun(Run):
    """`scenarios.Run` measuring the whole process tree."""

    @property
    def process(self) -> Any:
        return ProcessTree(self.daemon.process.pid)

    def memory(self) -> dict[str, float]:
        tree = ProcessTree(self.daemon.process.pid)
        peak = sum(measuring.peak_rss(p.pid) for p in tree.members())
        return {
            "rss_mb": round(tree.memory_info().rss / measuring.MB, 1),
            "peak_rss_mb": round(peak / measuring.MB, 1),
        }


async def wait_ready(urls: list[str], within_seconds: float = 120) -> None:
    """Until every URL answers /readyz with 200 (each worker holds its Kafka partitions).

    Raises:
        RuntimeError: not in `within_seconds`.
    """
    with trio.move_on_after(within_seconds):
        for url in urls:
            client = loadgen.H11Client(url)
            try:
                while True:
                    try:
                        if (await client.request("GET", "/readyz"))[0] == 200:
                            break
                    except OSError:
                        await client.aclose()
                        client = loadgen.H11Client(url)
                    await trio.sleep(0.2)
            finally:
                await client.aclose()
        return
    raise RuntimeError(f"not ready in {within_seconds:g} s: {urls}")


async def idle_cpu(tree: ProcessTree, seconds: float = 3.0) -> float:
    """The daemon's CPU (cores) with nothing to do: what its Kafka clients and timers cost."""
    await trio.sleep(1.0)  # the preload's last writes settle
    before = measuring.cpu_seconds(tree)
    await trio.sleep(seconds)
    return round((measuring.cpu_seconds(tree) - before) / seconds, 3)


def free_ports(count: int) -> int:
    """P such that P to P + count - 1 are free on 127.0.0.1 right now (the workers' own)."""
    for _ in range(50):
        base = free_port()
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


async def one_config(
    broker: KafkaBroker,
    work: Path,
    processes: int,
    plan: Plan,
    events: int,
    partitions: int,
) -> list[dict[str, Any]]:
    """Start `azuld serve --processes N`, measure both scenarios, stop it; the scenarios."""
    base = free_ports(processes)
    prefix = f"procs{secrets.token_hex(3)}"
    config = work / f"{prefix}.toml"
    config.write_text(
        "[server]\n"
        f"worker_port_base = {base if processes > 1 else 0}\n"
        "[events]\n"
        'backend = "kafka"\n'
        f'topic_prefix = "{prefix}"\n'
        f'kafka_bootstrap = "{broker.bootstrap}"\n'
        f"default_partitions = {partitions}\n"
        # Created at start-up: a topic created by the first publish would rebalance the
        # workers' group in the middle of the measurement.
        "[[events.sources]]\n"
        f'name = "{SOURCE}"\n'
    )
    extra = ["--config", str(config), "--processes", str(processes)]
    options: dict[str, Any] = {"ready": _ALL_SERVING} if processes > 1 else {}
    daemon: Daemon = await start_daemon(
        work / prefix, extra_args=extra, within_seconds=120, **options
    )
    try:
        own = [f"http://127.0.0.1:{base + k}" for k in range(processes)] if processes > 1 else []
        await wait_ready([daemon.url, *own])
        run = TreeRun(plan, daemon, work)
        run.say(f"{processes} process(es) at {daemon.url}, prefix {prefix}")
        await run.upload_blobs()
        await run.preload(events)
        idle = await idle_cpu(run.process)
        run.say(f"  idle: daemon {idle:.1%} of a core")
        for name, count, download in SCENARIOS:
            scenario = await run.throughput(
                dimensions=[], keys=1, workers=plan.base_workers, count=count, download=download
            )
            scenario.update(processes=processes, scenario=name, idle_cpu_util=idle)
        return run.scenarios
    except BaseException:
        print(f"--- daemon log tail:\n{daemon.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        with trio.CancelScope(shield=True):
            await stop_daemon(daemon)


def summarise(results: list[dict[str, Any]], counts: list[int]) -> list[dict[str, Any]]:
    """Per scenario and process count: the medians over the rounds, and the ratio to the
    smallest process count."""
    rows = []
    for name, _, _ in SCENARIOS:
        base: dict[str, float] = {}
        for processes in counts:
            mine = [r for r in results if r["scenario"] == name and r["processes"] == processes]
            if not mine:
                continue

            def median(key: str, rows_of: list[dict[str, Any]] = mine) -> float:
                values = [r[key] for r in rows_of if r.get(key) is not None]
                return round(statistics.median(values), 3) if values else float("nan")

            row = {
                "scenario": name,
                "processes": processes,
                "rounds": len(mine),
                "throughput_eps": median("throughput_eps"),
                "throughput_eps_each": [r["throughput_eps"] for r in mine],
                "daemon_cpu_util": median("daemon_cpu_util"),
                "daemon_cpu_s_per_1000": median("daemon_cpu_s_per_1000"),
                "idle_cpu_util": median("idle_cpu_util"),
                "busy_cores": round(
                    statistics.median(r["machine_cpu"]["busy_cores"] for r in mine), 2
                ),
                "other_cores": round(
                    statistics.median(r["machine_cpu"]["other_cores"] for r in mine), 2
                ),
                "loadgen_cpu_util": round(
                    statistics.median(sum(r["loadgen_cpu_util"]) for r in mine), 2
                ),
                "empty_fetches": sum(r["empty_fetches"] for r in mine),
                "fetches": sum(r["fetches"] for r in mine),
                "errors": sum(r["errors"] for r in mine),
                "drained": any(r["drained"] for r in mine),
            }
            if not base:
                base = {"eps": row["throughput_eps"], "cpu": row["daemon_cpu_s_per_1000"]}
            row["eps_ratio"] = (
                round(row["throughput_eps"] / base["eps"], 2) if base["eps"] else None
            )
            row["cpu_per_event_ratio"] = (
                round(row["daemon_cpu_s_per_1000"] / base["cpu"], 2) if base["cpu"] else None
            )
            rows.append(row)
    return rows


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        f"# azuld on Kafka, 1 process against several: {data['started']}",
        "",
        f"Kafka {data['kafka']}, one KRaft node on loopback; blobs in the local folder; "
        f"{data['partitions']} partitions per topic; {data['events']:,} events in the log; "
        f"{data['workers']} load-generator workers in {data['load_processes']} processes; {data['rounds']} "
        f"interleaved rounds of {data['duration']:g} s windows; run took {data['seconds']:.0f} s.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores, {m['ram_gb']} GB RAM, "
        f"{m['implementation']} {m['python']}, Linux {m['kernel']}. Load average at start "
        f"{m['load_average_at_start']}, at end {m.get('load_average_at_end')}. The broker, the "
        "daemon and the load generator share these cores.",
        "",
        "| scenario | processes | events/s (median; each round) | ratio | daemon CPU (cores) | "
        "daemon CPU s/1000 | daemon idle (cores) | machine busy cores | other cores | "
        "load gen cores | empty fetches |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["summary"]:
        each = ", ".join(f"{v:,.0f}" for v in r["throughput_eps_each"])
        lines.append(
            f"| {r['scenario']} | {r['processes']} | {r['throughput_eps']:,.0f} ({each}) | "
            f"{r['eps_ratio']} | {r['daemon_cpu_util']:.2f} | {r['daemon_cpu_s_per_1000']:.3f} | "
            f"{r['idle_cpu_util']:.3f} | {r['busy_cores']} | {r['other_cores']} | {r['loadgen_cpu_util']} | "
            f"{r['empty_fetches']}/{r['fetches']}{' (drained)' if r['drained'] else ''} |"
        )
    return "\n".join(lines) + "\n"


async def measure(args: argparse.Namespace, plan: Plan, work: Path) -> dict[str, Any]:
    home = await trio.to_thread.run_sync(fetch_kafka)
    port = free_port()
    broker = KafkaBroker(
        work / "kafka", home=home, port=port, controller_port=free_port(frozenset({port}))
    )
    await broker.astart()
    results: list[dict[str, Any]] = []
    try:
        for round_index in range(args.rounds):
            order = args.processes if round_index % 2 == 0 else args.processes[::-1]
            for processes in order:
                scenarios = await one_config(
                    broker, work, processes, plan, args.events, args.partitions
                )
                for scenario in scenarios:
                    scenario["round"] = round_index
                results += scenarios
    finally:
        with trio.CancelScope(shield=True):
            await broker.astop()
    return {"kafka": home.name.removeprefix("kafka-"), "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, small")
    parser.add_argument(
        "--processes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2],
        help="process counts to compare, comma-separated (default 1,2)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    parser.add_argument("--events", type=int, help="events in the log (default 10000)")
    parser.add_argument("--duration", type=float, help="seconds measured per scenario (6)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (4)")
    parser.add_argument("--workers", type=int, default=16, help="load-generator workers (16)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "processes")
    args = parser.parse_args(argv)
    base = Plan.quick() if args.quick else Plan.default()
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.events = args.events or (1_000 if args.quick else 10_000)
    plan = Plan(
        sizes=[args.events],
        workers=[16],
        keys=[1],
        duration=args.duration or base.duration,
        warmup=base.warmup,
        latency_samples=0,
        blobs=base.blobs,
        compare_clients=(),
        no_download_variant=False,
        base_workers=args.workers,
    )
    args.output.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    clock = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="azuld-procs-") as work:
        measured = trio.run(measure, args, plan, Path(work))
    machine = measuring.machine()
    machine["load_average_at_start"] = load_at_start
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    data = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - clock, 1),
        "machine": machine,
        "kafka": measured["kafka"],
        "partitions": args.partitions,
        "events": args.events,
        "rounds": args.rounds,
        "duration": plan.duration,
        "load_processes": plan.processes,
        "workers": plan.base_workers,
        "process_counts": args.processes,
        "summary": summarise(measured["results"], args.processes),
        "scenarios": measured["results"],
    }
    text = json.dumps(data, indent=1)
    (args.output / f"{stamp}.json").write_text(text)
    (args.output / "latest.json").write_text(text)
    report = markdown(data)
    (args.output / "latest.md").write_text(report)
    print()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
