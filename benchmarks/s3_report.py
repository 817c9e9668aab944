"""The report of `s3_backends.py`: the machine and versions, the conclusion drawn from the
results, and `s3-backends.md`.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from s3_variants import CONCURRENCY


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
    settings = data["settings"]
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
        f"## Small requests ({settings['small_count']} per batch, {CONCURRENCY} in flight, 5 batches)",
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
        settings["small_count"] / row[k]["min_s"]
        for row in res["small_requests"].values()
        for k in keys
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
        f"## Client creation (fresh botocore session each, {settings['create_reps']} times, before any timing)",
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
