"""Repeated rounds of run.py's base scenarios on one daemon: for A/B comparisons and profiles.

    .venv/bin/python benchmarks/rounds.py --backend kafka --storage local --rounds 3
    .venv/bin/python benchmarks/rounds.py --backend kafka --profile --gil --scenarios c1,c100
    .venv/bin/python benchmarks/rounds.py --backend kafka --counters --scenarios c100
    .venv/bin/python benchmarks/rounds.py --src ../other-worktree/src --env AZULD_DISPATCH__WINDOW=4000

Starts one daemon (run.py's backends, daemons.py: on Kafka, one broker for the whole run), uploads
the blobs, preloads `--events` sourced events, then runs `--rounds` rounds of `--scenarios`: `c1`
(16 workers, count=1, with downloads), `c100` (16 workers, count=100, no downloads) and `latency`
(idle handout). Every throughput scenario uses a new plugin key, so each replays the log from its
start (reads behind the live edge, as the default run's). One JSON line per scenario: the daemon's
process CPU per completed event (user + system; the share spent in the kernel), throughput, empty
fetches, request latencies, the machine's load average. With:

* `--profile`: py-spy samples the daemon during each throughput scenario (raw collapsed stacks,
  `<out>/<tag>-<scenario>-r<round>.txt`); `--gil` keeps only samples holding the GIL (closer to
  CPU time on a busy machine, where a plain sample also counts time waiting to be scheduled),
  `--native` adds C frames;
* `--counters`: the daemon runs with `benchmarks/counters/` on PYTHONPATH and reports, per
  scenario, Kafka requests by client and type, trio-asyncio bridge calls and asyncio callbacks,
  records read by each consumer, reads served from the tail cache or the reader (see
  `counters/sitecustomize.py`);
* `--src DIR`: the daemon imports azuld from DIR (another worktree's `src`) with this venv;
* `--env KEY=VALUE` (repeatable): extra environment for the daemon (`AZULD_*` are settings).

Results: printed, and all rows in `<out>/<tag>.json`. Interleave runs of two variants (A B A B)
and compare ranges: these machines are shared, and a single round moves by a third.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from daemons import BACKENDS, STORAGES, Backend, EmbeddedBackend, KafkaBackend  # noqa: E402

from scenarios import Run  # noqa: E402


async def read_counters(pid: int, path: Path) -> dict[str, Any]:
    """Ask the daemon (SIGUSR2) to write its counters to `path`; {} if it does not in 1 s."""
    written = trio.Path(path)
    await written.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    for _ in range(100):
        await trio.sleep(0.01)
        if await written.exists():
            data: dict[str, Any] = json.loads(await written.read_text())
            return data
    return {}


def difference(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in ("counts", "wall_seconds"):
        old, new = before.get(part, {}), after.get(part, {})
        out[part] = {k: round(v - old.get(k, 0), 4) for k, v in new.items() if v != old.get(k, 0)}
    return out


async def spy(pid: int, seconds: float, path: Path, args: argparse.Namespace) -> None:
    command = [str(args.py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--nonblocking", "--format", "raw", "--output", str(path)]
    command += ["--gil"] * args.gil + ["--native"] * args.native
    await trio.run_process(command, capture_stdout=True, capture_stderr=True)


async def scenario(
    run: Run, name: str, index: int, args: argparse.Namespace, counters: Path
) -> dict[str, Any]:
    pid = run.daemon.process.pid
    row: dict[str, Any] = {"scenario": name, "round": index, "load1": os.getloadavg()[0]}
    before = await read_counters(pid, counters) if args.counters else {}
    times = psutil.Process(pid).cpu_times()
    if name == "latency":
        s = await run.latency()
        row |= {k: s[k] for k in ("handout_ms", "publish_ack_ms", "handout_after_ack_ms")} | {
            "end_to_end_ms": s["end_to_end_ms"],
            "daemon_cpu_ms_per_sample": s["daemon_cpu_s_per_1000"],
        }
    else:
        count = int(name.removeprefix("c"))
        profile = Path(args.out) / f"{args.tag}-{name}-r{index}.txt"

        async def record() -> None:
            await spy(pid, args.duration, profile, args)

        s = await run.throughput(
            dimensions=[],
            keys=1,
            workers=16,
            count=count,
            download=count == 1,
            during=record if args.profile else None,
            kind=f"r{index}",
        )
        row |= {
            "events_per_s": s["throughput_eps"],
            "daemon_cpu_ms_per_event": s["daemon_cpu_s_per_1000"],
            "daemon_cpu_util": s["daemon_cpu_util"],
            "other_cores": s["machine_cpu"]["other_cores"],
            "completed": s["completed_total"],
            "fetches": s["fetches"],
            "empty_fetches": s["empty_fetches"],
            "empty_fetches_before_last_jobs": s["empty_fetches_before_last_jobs"],
            "drained": s["drained"],
            "errors": s["errors"],
            "first_error": s["first_error"],
            "request_ms": {k: s["request_ms"][k] for k in ("fetch", "status")},
            "profile": str(profile) if args.profile else None,
        }
    after_times = psutil.Process(pid).cpu_times()
    user, system = after_times.user - times.user, after_times.system - times.system
    row["kernel_share_of_cpu"] = round(system / max(user + system, 1e-9), 3)
    if args.counters:
        row["counters"] = difference(before, await read_counters(pid, counters))
    return row


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="azuld-rounds-"))
    counters = work / "counters.json"
    daemon_env = dict(item.split("=", 1) for item in args.env)
    paths = [args.src] if args.src else []
    if args.counters:
        paths.append(str(HERE / "counters"))
        daemon_env["BENCH_COUNTERS_FILE"] = str(counters)
    if paths:
        daemon_env["PYTHONPATH"] = os.pathsep.join(paths)
    backend: Backend = KafkaBackend(args.storage) if args.backend == "kafka" else EmbeddedBackend()
    plan = backend.plan(quick=False)
    plan.duration, plan.warmup, plan.latency_samples = args.duration, 1.0, args.latency_samples
    saved = {k: os.environ.get(k) for k in daemon_env}
    os.environ.update(daemon_env)  # the daemon inherits the environment (tests/daemon.py)
    try:
        daemon = await backend.start(work)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    run = Run(plan, daemon, work)
    rows: list[dict[str, Any]] = []
    try:
        await run.upload_blobs()
        await run.preload(args.events)
        for index in range(args.rounds):
            for name in args.scenarios.split(","):
                row = await scenario(run, name, index, args, counters)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        with trio.CancelScope(shield=True):
            await backend.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="kafka")
    parser.add_argument("--storage", choices=STORAGES, default="local")
    parser.add_argument("--events", type=int, default=30_000, help="sourced events preloaded")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scenarios", default="c1,c100,latency")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds measured each")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="py-spy each throughput scenario")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil")
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--counters", action="store_true", help="in-daemon counters")
    parser.add_argument("--src", default="", help="import azuld from this src folder")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "azuld-rounds")
    parser.add_argument("--tag", default=time.strftime("rounds-%Y%m%dT%H%M%S"))
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    args.py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if args.profile and args.py_spy is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    return args


if __name__ == "__main__":
    arguments = parse()
    arguments.out.mkdir(parents=True, exist_ok=True)
    results = trio.run(main, arguments)
    (arguments.out / f"{arguments.tag}.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {arguments.out / (arguments.tag + '.json')}")
