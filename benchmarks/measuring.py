"""Measuring helpers of the benchmark harness: percentiles, a process's peak RSS and CPU
seconds, the machine's CPU over a scenario, and a description of the machine.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024


def percentiles(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p95/p99/max (nearest rank) of `values`, times `scale`, rounded for reading."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * scale

    return {
        "p50": round(rank(50), 3),
        "p95": round(rank(95), 3),
        "p99": round(rank(99), 3),
        "max": round(ordered[-1] * scale, 3),
        "n": len(ordered),
    }


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process has had since it started (bytes)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@dataclass
class SystemCpu:
    """Machine-wide CPU over an interval: busy cores and stolen cores (a noisy neighbour)."""

    start: Any = field(default_factory=psutil.cpu_times)

    def stop(self, seconds: float) -> dict[str, float]:
        end = psutil.cpu_times()
        delta = {k: getattr(end, k) - getattr(self.start, k) for k in end._fields}
        idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
        total = sum(delta.values()) or 1.0
        cores = psutil.cpu_count() or 1
        return {
            "busy_cores": round((total - idle) / total * cores, 2),
            "steal_cores": round(delta.get("steal", 0.0) / max(seconds, 1e-9), 3),
        }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        version = importlib.metadata.version("azuld")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return {
        "cpu_model": model or platform.processor() or "?",
        "logical_cores": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "azuld": version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "shared, noisy virtual machine: expect run-to-run variation of 10-30%",
    }
