"""Profiling the daemon during a run: py-spy for a while, its collapsed stacks summed per
package and per azuld function.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


from scenarios import Run  # noqa: E402

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
