"""The upload path: the daemon's CPU per upload and uploads/s, and `azuld submit`'s files/s.

    .venv/bin/python benchmarks/uploads.py                       # its own daemon, ~1 minute
    .venv/bin/python benchmarks/uploads.py --sizes 1024 --uploaders 1,8 --count 2000
    .venv/bin/python benchmarks/uploads.py --submit 1000         # also `azuld submit` of 1,000 files
    .venv/bin/python benchmarks/uploads.py --profile out.svg     # py-spy the daemon meanwhile
    .venv/bin/python benchmarks/uploads.py --perf perf.data      # perf (on-CPU, user code)

`run.py` runs `upload_scenario` as its upload row; this script runs the same scenarios alone (a
fresh embedded daemon from `tests/daemon.py`), so that code before and after a change can be
measured in interleaved rounds. Each scenario has `uploaders` concurrent keep-alive connections
(the `raw` client of `loadgen.py`, in this process) posting distinct blobs of `size` bytes to
`POST /api/v3/stream/<source>/content` with a Content-Length, `count` uploads in all (after a
few warm-up ones). The daemon's CPU (user + system, all threads, psutil) over the uploads, per
upload, is the figure to compare; uploads/s depends on what else the 2 cores are doing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
from tests.daemon import start_daemon  # noqa: E402

__all__ = ["describe", "size_name", "submit_scenario", "upload_scenario"]

_WARMUP_UPLOADS = 8


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000, 3)

    return {"p50": rank(50), "p99": rank(99), "max": round(ordered[-1] * 1000, 3)}


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _minor_faults(pid: int) -> int:
    """Page faults served without I/O (mostly fresh memory touched): /proc's `minflt`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[7])


def _thread_seconds(process: psutil.Process) -> tuple[float, float, float, float]:
    """(user, system) of the event loop's thread (the main one), then of all the others."""
    loop_user = loop_system = other_user = other_system = 0.0
    for thread in process.threads():
        if thread.id == process.pid:
            loop_user, loop_system = thread.user_time, thread.system_time
        else:
            other_user += thread.user_time
            other_system += thread.system_time
    return loop_user, loop_system, other_user, other_system


_TEXT_LINE = b"The quick brown fox jumps over the lazy dog; sphinx of black quartz, judge my vow.\n"


class _Blobs:
    """Distinct blobs of one size and kind (a counter in front: a new sha256 each): `binary`
    (random bytes) or `text` (lines of ASCII prose, which libmagic and the text rules read
    further into)."""

    def __init__(self, size: int, seed: bytes, content: str = "binary") -> None:
        self.size = size
        if content == "text":
            self._base = (_TEXT_LINE * (size // len(_TEXT_LINE) + 1))[:size]
        else:
            self._base = os.urandom(size)
        self._seed = seed
        self._next = 0

    def take(self) -> bytes:
        self._next += 1
        stamp = self._seed + b"%012d" % self._next
        if self.size <= len(stamp):
            return stamp[-self.size :]
        return stamp + self._base[len(stamp) :]


async def upload_scenario(
    url: str,
    pid: int,
    *,
    size: int,
    uploaders: int,
    count: int,
    content: str = "binary",
    source: str = "upbench",
) -> dict[str, Any]:
    """`count` uploads of `size` bytes over `uploaders` connections; what the daemon spent."""
    blobs = _Blobs(size, os.urandom(8).hex().encode(), content)
    process = psutil.Process(pid)
    target = f"/api/v3/stream/{source}/content"
    seconds: list[float] = []
    errors: list[str] = []
    remaining = count

    async def uploader(quota: int) -> None:
        client = loadgen.RawClient(url)
        try:
            for _ in range(quota):
                body = blobs.take()
                before = time.perf_counter()
                status, _, reply = await client.request("POST", target, body)
                seconds.append(time.perf_counter() - before)
                if status != 200:
                    errors.append(f"HTTP {status}: {reply[:200]!r}")
        finally:
            await client.aclose()

    async def run(total: int) -> None:
        async with trio.open_nursery() as nursery:
            for index in range(uploaders):
                quota = total // uploaders + (1 if index < total % uploaders else 0)
                if quota:
                    nursery.start_soon(uploader, quota)

    await run(_WARMUP_UPLOADS)
    seconds.clear()
    threads_before = _thread_seconds(process)
    faults_before = _minor_faults(pid)
    cpu_before, started = _cpu_seconds(process), time.perf_counter()
    await run(remaining)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(process) - cpu_before
    faults = _minor_faults(pid) - faults_before
    threads = [
        round((after - before) / count * 1000, 3)
        for before, after in zip(threads_before, _thread_seconds(process), strict=True)
    ]
    return {
        "id": f"upload-{size}b-u{uploaders}" + ("" if content == "binary" else f"-{content}"),
        "kind": "upload",
        "size_bytes": size,
        "content": content,
        "uploaders": uploaders,
        "uploads": count,
        "seconds": round(elapsed, 3),
        "uploads_per_s": round(count / elapsed, 1),
        "mb_per_s": round(count * size / elapsed / 1e6, 2),
        "daemon_cpu_ms_per_upload": round(cpu / count * 1000, 3),
        "daemon_cpu_util": round(cpu / elapsed, 3),
        # ms per upload: the event loop's thread (user, system), the worker threads (user, system)
        "loop_user_ms": threads[0],
        "loop_system_ms": threads[1],
        "workers_user_ms": threads[2],
        "workers_system_ms": threads[3],
        "minor_faults_per_upload": round(faults / count, 1),
        "load_average": os.getloadavg()[0],
        "request_ms": _percentiles(seconds),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def _write_files(folder: Path, files: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    blobs = _Blobs(size, os.urandom(8).hex().encode())
    for index in range(files):
        (folder / f"sample-{index:05d}.bin").write_bytes(blobs.take())


async def submit_scenario(
    url: str, pid: int, work: Path, *, files: int, size: int = 1024, source: str = "subbench"
) -> dict[str, Any]:
    """`azuld submit` of `files` distinct files of `size` bytes: files/s, and the daemon's and the
    command's CPU per file."""
    folder = work / f"submit-{files}-{time.monotonic_ns()}"
    _write_files(folder, files, size)
    process = psutil.Process(pid)
    command = [sys.executable, "-m", "azuld", "submit", str(folder), "--source", source]
    cpu_before, started = _cpu_seconds(process), time.perf_counter()
    before = os.times()
    done = await trio.run_process(
        [*command, "--server", url], capture_stdout=True, capture_stderr=True, check=False
    )
    after = os.times()
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(process) - cpu_before
    client_cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return {
        "id": f"submit-{files}x{size}b",
        "kind": "submit",
        "files": files,
        "size_bytes": size,
        "load_average": os.getloadavg()[0],
        "exit_code": done.returncode,
        "seconds": round(elapsed, 3),
        "files_per_s": round(files / elapsed, 1),
        "daemon_cpu_ms_per_file": round(cpu / files * 1000, 3),
        "submit_cpu_ms_per_file": round(client_cpu / files * 1000, 3),
        "stdout_tail": done.stdout.decode(errors="replace")[-300:],
        "stderr_tail": "" if done.returncode == 0 else done.stderr.decode(errors="replace")[-600:],
    }


def size_name(size: int) -> str:
    """1024 -> "1 KiB", 1048576 -> "1 MiB"."""
    for unit, name in ((1024 * 1024, "MiB"), (1024, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def describe(scenario: dict[str, Any]) -> str:
    if scenario["kind"] == "submit":
        return (
            f"{scenario['id']}: {scenario['files_per_s']:,.0f} files/s, daemon "
            f"{scenario['daemon_cpu_ms_per_file']} ms CPU/file, submit "
            f"{scenario['submit_cpu_ms_per_file']} ms CPU/file, exit {scenario['exit_code']}"
        )
    return (
        f"{scenario['id']}: {scenario['uploads_per_s']:,.0f} uploads/s, daemon "
        f"{scenario['daemon_cpu_ms_per_upload']} ms CPU/upload ({scenario['daemon_cpu_util']:.0%}"
        f" of a core; loop {scenario['loop_user_ms']}+{scenario['loop_system_ms']}, workers "
        f"{scenario['workers_user_ms']}+{scenario['workers_system_ms']} user+system),"
        f" {scenario['minor_faults_per_upload']} page faults, p50"
        f" {scenario['request_ms'].get('p50')} ms, errors {scenario['errors']},"
        f" load {scenario['load_average']:.1f}"
    )


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="azuld-upbench-"))
    daemon = await start_daemon(work / "data")
    pid = daemon.process.pid
    results: list[dict[str, Any]] = []
    profilers: list[trio.Process] = []
    try:
        if args.profile:
            profilers.append(
                await trio.lowlevel.open_process(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--nonblocking",
                        "--threads",
                        "--rate",
                        "200",
                        "--pid",
                        str(pid),
                        "--format",
                        "flamegraph" if args.profile.endswith(".svg") else "raw",
                        "--output",
                        args.profile,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        if args.perf:
            # On-CPU samples of user code only (what perf_event_paranoid=2 allows): which
            # library the CPU went to (`perf report --sort tid,dso`), unlike py-spy's wall time.
            profilers.append(
                await trio.lowlevel.open_process(
                    ["perf", "record", "-q", "-e", "cpu-clock:u", "-p", str(pid), "-o", args.perf],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        if profilers:
            await trio.sleep(1)
        for _ in range(args.rounds):
            for size in args.sizes:
                for uploaders in args.uploaders:
                    for content in args.content:
                        count = args.count if size <= 64 * 1024 else max(50, args.count // 8)
                        scenario = await upload_scenario(
                            daemon.url,
                            pid,
                            size=size,
                            uploaders=uploaders,
                            count=count,
                            content=content,
                        )
                        print(describe(scenario), flush=True)
                        results.append(scenario)
            if args.submit:
                scenario = await submit_scenario(daemon.url, pid, work, files=args.submit)
                print(describe(scenario), flush=True)
                results.append(scenario)
    finally:
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            with trio.move_on_after(60):
                await profiler.wait()
        await daemon.terminate()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1024,1048576", help="blob sizes in bytes (default 1024,1048576)"
    )
    parser.add_argument("--uploaders", default="1,8", help="concurrent uploaders (default 1,8)")
    parser.add_argument(
        "--content", default="binary", help="binary (random bytes), text, or both: binary,text"
    )
    parser.add_argument("--count", type=int, default=1000, help="uploads per small-blob scenario")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every scenario")
    parser.add_argument("--submit", type=int, default=0, help="also `azuld submit` N files")
    parser.add_argument("--profile", default="", help="py-spy the daemon into this file")
    parser.add_argument("--perf", default="", help="`perf record` the daemon into this file")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the daemon's folder")
    args = parser.parse_args(argv)
    args.sizes = [int(part) for part in args.sizes.split(",")]
    args.uploaders = [int(part) for part in args.uploaders.split(",")]
    args.content = args.content.split(",")
    results = trio.run(_main, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
