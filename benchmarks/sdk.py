"""The plugin SDK's own cost: plugin-process CPU per job and jobs/s, with 1, 4 and 16 workers.

    .venv/bin/python benchmarks/sdk.py             # starts its own daemon (embedded backend)
    .venv/bin/python benchmarks/sdk.py --quick     # a smoke run
    .venv/bin/python benchmarks/sdk.py --profile 10 --workers 4   # py-spy one plugin process
    .venv/bin/python benchmarks/sdk.py --baseline /tmp/old/src --rounds 3   # before/after

`benchmarks/run.py` runs the same scenarios (`sdk_scenarios`) on its daemon before its own.

Each scenario drains a backlog: `events` `sourced` events (distinct binaries sharing 1 KiB
blobs) wait in a source of their own; a fresh plugin process (this file run with `--worker SPEC`)
runs the SDK's `PluginRunner` exactly as `azuld plugin run` builds it, with a trivial plugin
(download the content, add one feature), as a new plugin key that replays the backlog, until it
has finished every event. The process measures itself with getrusage from just before `serve`
(registration included) to its return: CPU seconds per job, and jobs per second over that time.
A `raw` row does the same three requests per job (fetch count=1, download, one `completed`
status with one feature) with the load generator's hand-written keep-alive client
(benchmarks/loadgen.py): the floor a Python client on trio reaches. `--baseline SRC` adds rows
for another version of azuld (SRC: the `src` folder of a checkout, put first on PYTHONPATH),
interleaved with this one's, for before/after figures on the same daemon and the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
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

SOURCE = "sdkbench"


# -- the plugin process ------------------------------------------------------------------------


def _trivial_plugin(name: str) -> Any:
    from azuld.plugin import Feature, Filters, Job, Plugin

    class Trivial(Plugin):
        """Downloads the content and reports its size: the least a plugin does."""

        version = "1.0"
        features = (Feature("bench_size", "content size", "integer"),)
        # `sourced` only: the key must not take the `enriched` results its statuses publish.
        filters = Filters(actions=("sourced",))

        async def execute(self, job: Job) -> None:
            job.add_feature("bench_size", len(await job.read()))

    Trivial.name = name
    return Trivial


async def _run_sdk(spec: dict[str, Any]) -> int:
    from azuld.plugin.runner import PluginRunner

    plugin = _trivial_plugin(spec["name"])()
    try:
        from azuld.plugin.client import open_dispatcher
    except ImportError:  # a baseline from before open_dispatcher: httpx, as its CLI did
        import httpx

        from azuld.plugin.client import HttpDispatcherClient

        timeout = httpx.Timeout(60.0, connect=10.0)
        async with httpx.AsyncClient(base_url=spec["url"], timeout=timeout) as http:
            runner = PluginRunner(
                plugin,
                HttpDispatcherClient(http, plugin.name),  # type: ignore[call-arg]
                workers=spec["workers"],
                max_jobs=spec["events"],
            )
            await runner.serve()
            return runner.jobs_done
    async with open_dispatcher(spec["url"], plugin.name) as client:
        runner = PluginRunner(plugin, client, workers=spec["workers"], max_jobs=spec["events"])
        await runner.serve()
        return runner.jobs_done


async def _run_raw(spec: dict[str, Any]) -> int:
    """`workers` loops of fetch (count=1), download, status, each on its own raw connection."""
    done = 0
    finished = trio.Event()
    query = (
        f"name={spec['name']}&version=1.0&count=1&deadline=10&r-live=true&r-historic=true"
        f"&r-expedite=true&r-action=sourced"
    )

    async def worker() -> None:
        nonlocal done
        client = loadgen.make_client(spec["client"], spec["url"])
        try:
            while done < spec["events"]:
                status, headers, body = await client.request(
                    "GET", f"/api/v2/event/binary/active?{query}"
                )
                if status != 200:
                    raise loadgen.HTTPError(f"fetch: HTTP {status}: {body[:300]!r}")
                parts = loadgen.parse_multipart(body, headers["content-type"])
                jobs = msgspec.json.decode(parts["events"])["events"]
                for job in jobs:
                    await loadgen.download(client, job)
                if jobs:
                    await loadgen.post_events(
                        client, "status", loadgen.status_body(jobs, spec["name"])
                    )
                    done += len(jobs)
            finished.set()
        finally:
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(spec["workers"]):
            nursery.start_soon(worker)
        await finished.wait()
        nursery.cancel_scope.cancel()
    return done


def worker_main(spec: dict[str, Any]) -> None:
    """One plugin process: run, then print one JSON line of what it measured."""
    run = _run_raw if spec["client"] in ("raw", "h11") else _run_sdk
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    jobs = trio.run(run, spec)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"jobs": jobs, "seconds": seconds, "cpu_seconds": cpu}), flush=True)


# -- the scenarios -----------------------------------------------------------------------------


async def preload(url: str, events: int, blobs: int = 16, blob_size: int = 1024) -> None:
    """Upload `blobs` blobs to SOURCE and publish `events` sourced events that use them."""
    client = loadgen.RawClient(url)
    try:
        shas = []
        for index in range(blobs):
            data = loadgen.blob_bytes(index, blob_size)
            status, _, body = await client.request("POST", f"/api/v3/stream/{SOURCE}/content", data)
            if status != 200:
                raise RuntimeError(f"upload failed: HTTP {status}: {body[:300]!r}")
            shas.append(msgspec.json.decode(body)["data"]["sha256"])
        for start in range(0, events, 500):
            batch = [
                loadgen.sourced_event(SOURCE, seq, shas[seq % blobs], blob_size)
                for seq in range(start, min(start + 500, events))
            ]
            await loadgen.post_events(client, "binary", msgspec.json.encode(batch))
    finally:
        await client.aclose()


async def scenario(
    url: str,
    *,
    client: str,
    workers: int,
    events: int,
    name: str,
    baseline: str | None = None,
    profile: tuple[float, Path] | None = None,
    daemon_pid: int | None = None,
) -> dict[str, Any]:
    """One plugin process draining the backlog with `workers` workers; what it measured.
    `client`: `sdk`, `baseline` (the SDK from `baseline`, a src folder) or `raw`; `profile`:
    (seconds, file) to py-spy the process into (collapsed stacks); with `daemon_pid`, the
    daemon's CPU over the scenario is measured too.

    Raises:
        RuntimeError: the plugin process failed or did not finish within 10 minutes.
    """
    spec = {"url": url, "client": client, "workers": workers, "events": events, "name": name}
    command = [sys.executable, str(HERE / "sdk.py"), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    if client == "baseline" and baseline:
        env["PYTHONPATH"] = os.pathsep.join([baseline, env.get("PYTHONPATH", "")]).rstrip(":")
    daemon = psutil.Process(daemon_pid) if daemon_pid else None
    daemon_cpu = _cpu(daemon)
    with trio.move_on_after(600):
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        async with trio.open_nursery() as nursery:
            if profile:
                nursery.start_soon(_spy, process.pid, *profile)
            out = b""
            assert process.stdout is not None
            while chunk := await process.stdout.receive_some(65536):
                out += chunk
            await process.wait()
        if process.returncode != 0:
            assert process.stderr is not None
            err = await process.stderr.receive_some(65536)
            raise RuntimeError(f"plugin process failed: {err.decode(errors='replace')[-3000:]}")
        measured = json.loads(out.decode().strip().splitlines()[-1])
        daemon_cpu = _cpu(daemon) - daemon_cpu
        return {
            "id": f"sdk-{client}-w{workers}",
            "kind": "sdk",
            "client": client,
            "workers": workers,
            "events": events,
            "jobs": measured["jobs"],
            "seconds": round(measured["seconds"], 3),
            "jobs_per_s": round(measured["jobs"] / measured["seconds"], 1),
            "cpu_ms_per_job": round(measured["cpu_seconds"] / max(1, measured["jobs"]) * 1000, 3),
            "plugin_cpu_util": round(measured["cpu_seconds"] / measured["seconds"], 3),
            # the whole process lifetime (start-up included): an upper bound
            "daemon_cpu_ms_per_job": (
                round(daemon_cpu / max(1, measured["jobs"]) * 1000, 3) if daemon else None
            ),
        }
    raise RuntimeError(f"the {client} plugin process did not finish {events} jobs in 10 minutes")


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


async def _spy(pid: int, seconds: float, out: Path) -> None:
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    await trio.sleep(0.5)  # past the imports
    await trio.run_process(
        [
            *(spy, "record", "--pid", str(pid), "--duration", str(int(seconds))),
            *("--nonblocking", "--format", "raw", "--output", str(out)),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def sdk_scenarios(
    url: str,
    *,
    events: int,
    workers: list[int],
    clients: tuple[str, ...] = ("sdk", "raw"),
    rounds: int = 1,
    baseline: str | None = None,
    daemon_pid: int | None = None,
) -> list[dict[str, Any]]:
    """Every (client, workers) scenario against the daemon at `url`, `rounds` times, clients
    interleaved, on one preloaded backlog (each scenario a new plugin key, replaying it)."""
    await preload(url, events)
    results = []
    for _ in range(rounds):
        for count in workers:
            for client in clients:
                tag = os.urandom(3).hex()  # a new plugin key: it replays the whole backlog
                row = await scenario(
                    url,
                    client=client,
                    workers=count,
                    events=events,
                    name=f"Sdk{client.title()}{count}x{tag}",
                    baseline=baseline,
                    daemon_pid=daemon_pid,
                )
                results.append(row)
                print(
                    f"  {row['id']}: {row['jobs_per_s']:,.0f} jobs/s, {row['cpu_ms_per_job']} "
                    f"ms CPU/job, plugin CPU {row['plugin_cpu_util']:.0%}, daemon "
                    f"{row['daemon_cpu_ms_per_job']} ms CPU/job",
                    flush=True,
                )
    return results


async def _standalone(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tests.daemon import start_daemon

    work = Path(tempfile.mkdtemp(prefix="azuld-sdkbench-"))
    daemon = await start_daemon(work / "data")
    clients = ("sdk", "baseline", "raw") if args.baseline else ("sdk", "raw")
    try:
        if not args.profile:
            return await sdk_scenarios(
                daemon.url,
                events=args.events,
                workers=args.workers,
                clients=clients,
                rounds=args.rounds,
                baseline=args.baseline,
                daemon_pid=daemon.process.pid,
            )
        await preload(daemon.url, args.events)
        rows = []
        for client in clients[:-1]:
            out = HERE / "results" / f"sdk-profile-{client}-w{args.workers[0]}.txt"
            rows.append(
                await scenario(
                    daemon.url,
                    client=client,
                    workers=args.workers[0],
                    events=args.events,
                    name=f"SdkProfile{client.title()}{os.urandom(3).hex()}",
                    baseline=args.baseline,
                    profile=(args.profile, out),
                )
            )
            print(f"{rows[-1]}: profile in {out}")
        return rows
    finally:
        with trio.CancelScope(shield=True):
            await daemon.terminate()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", metavar="SRC", help="compare with azuld's src at SRC")
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    args.events = args.events or (60 if args.quick else 2000)
    rows = trio.run(_standalone, args)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
