"""The benchmark targets (throughput, latency, CPU, uploads, the Kafka and security costs) read
from a run's figures, and the comparison with the previous run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import uploads  # noqa: E402


def find(scenarios: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    found = [s for s in scenarios if all(s.get(k) == v for k, v in match.items())]
    return found[-1] if found else None


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each against the scenario that measures it."""
    scenarios = [s for s in data["scenarios"] if s["kind"] in ("throughput", "latency")]
    plan = data["plan"]
    largest = max(plan["sizes"])
    base = plan["base_workers"]
    out = []
    c1_nodl = find(
        scenarios,
        kind="throughput",
        count=1,
        workers=base,
        keys=1,
        events_in_log=largest,
        download=False,
    )
    c1 = find(
        scenarios,
        kind="throughput",
        count=1,
        workers=base,
        keys=1,
        events_in_log=largest,
        download=True,
        client=plan["client"],
    )
    if c1:
        note = f"{c1['id']} (fetch, download, complete)"
        if c1_nodl:
            note += f"; without the download: {c1_nodl['throughput_eps']:,.0f}/s"
        out.append(
            {
                "target": f"count=1, {base} workers: events/s",
                "required": ">= 1000",
                "measured": c1["throughput_eps"],
                "met": c1["throughput_eps"] >= 1000,
                "scenario": note,
            }
        )
    batch = find(
        scenarios,
        kind="throughput",
        count=plan["batch_count"],
        workers=base,
        keys=1,
        events_in_log=largest,
    )
    if batch:
        out.append(
            {
                "target": f"count={plan['batch_count']}, {base} workers: events/s",
                "required": ">= 10000",
                "measured": batch["throughput_eps"],
                "met": batch["throughput_eps"] >= 10000,
                "scenario": f"{batch['id']} (fetch 100, one POST of 100 statuses, no download)",
            }
        )
    latency = find(scenarios, kind="latency", events_in_log=largest)
    if latency and latency["handout_ms"]:
        p99 = latency["handout_ms"]["p99"]
        out.append(
            {
                "target": "handout to a waiting long-poll, idle daemon: p99 ms",
                "required": "< 5",
                "measured": p99,
                "met": p99 < 5,
                "scenario": f"{latency['id']} (publish sent -> job received)",
            }
        )
    if data["backend"]["name"] == "kafka":
        out += kafka_targets(data, c1, batch, latency)
    out += upload_targets(data)
    most_keys = max(plan["keys"])
    keyed = find(scenarios, kind="throughput", keys=most_keys, events_in_log=largest)
    if keyed:
        peak = keyed["peak_rss_mb"]
        at_million = largest >= 1_000_000
        out.append(
            {
                "target": f"peak RSS, {most_keys} plugin keys, 1,000,000 events: MB",
                "required": "< 200",
                "measured": peak,
                "met": (peak < 200) if at_million else None,
                "scenario": f"{keyed['id']}"
                + ("" if at_million else f" (only {largest:,} events: run with --million)"),
            }
        )
    single = find(data["scenarios"], kind="sdk", client="sdk", workers=1)
    if single:
        out.append(
            {
                "target": "plugin SDK: plugin-process CPU per trivial job, count=1: ms",
                "required": "<= 2",
                "measured": single["cpu_ms_per_job"],
                "met": single["cpu_ms_per_job"] <= 2,
                "scenario": f"{single['id']} ({single['jobs']} jobs: fetch, download, status)",
            }
        )
    return out


def kafka_targets(
    data: dict[str, Any],
    c1: dict[str, Any] | None,
    batch: dict[str, Any] | None,
    latency: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Issue #13's Kafka targets: the daemon's CPU per job and per event (the figure least
    disturbed by a busy machine), no empty count=100 fetch while the log still had events for
    the key, and the idle handout p99. Meant for `--storage local`: with S3 (moto) a count=1
    job also pays for the S3 GET."""
    out: list[dict[str, Any]] = []
    storage = data["backend"].get("storage", "")
    if c1 and c1["daemon_cpu_s_per_1000"] is not None:
        ms = c1["daemon_cpu_s_per_1000"]
        out.append(
            {
                "target": "Kafka, count=1: daemon CPU ms per job",
                "required": "<= 1.0",
                "measured": ms,
                "met": ms <= 1.0,
                "scenario": f"{c1['id']} (fetch, download, complete; blobs: {storage})",
            }
        )
    if batch and batch["daemon_cpu_s_per_1000"] is not None:
        ms = batch["daemon_cpu_s_per_1000"]
        out.append(
            {
                "target": f"Kafka, count={batch['count']}: daemon CPU ms per event",
                "required": "<= 0.15",
                "measured": ms,
                "met": ms <= 0.15,
                "scenario": batch["id"],
            }
        )
        # Once every event was handed out (drained), empty answers are expected: counted are
        # those that came back before another fetch still found jobs.
        early = batch["empty_fetches_before_last_jobs"]
        out.append(
            {
                "target": f"Kafka, count={batch['count']}: empty fetches while events remain",
                "required": "0",
                "measured": early,
                "met": early == 0,
                "scenario": f"{batch['id']} ({batch['empty_fetches']} of {batch['fetches']} "
                f"fetches empty, {early} of them before the last fetch that found jobs)",
            }
        )
    if latency and latency["handout_ms"]:
        p99 = latency["handout_ms"]["p99"]
        out.append(
            {
                "target": "Kafka, handout to a waiting long-poll, idle daemon: p99 ms",
                "required": "< 10",
                "measured": p99,
                "met": p99 < 10,
                "scenario": f"{latency['id']} (publish sent -> job received)",
            }
        )
    return out


def security_cost(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each `security` scenario against the same scenario without `max-security`: the daemon CPU
    per event the check adds."""
    rows = []
    for checked in data["scenarios"]:
        if checked["kind"] != "security":
            continue
        plain = find(
            data["scenarios"],
            kind="throughput",
            count=checked["count"],
            workers=checked["workers"],
            keys=checked["keys"],
            events_in_log=checked["events_in_log"],
            download=checked["download"],
            client=checked["client"],
        )
        if plain is None:
            continue
        before, after = plain["daemon_cpu_s_per_1000"], checked["daemon_cpu_s_per_1000"]
        rows.append(
            {
                "count": checked["count"],
                "max_security": checked["max_security"],
                "without": plain["id"],
                "with": checked["id"],
                "events_per_second": [plain["throughput_eps"], checked["throughput_eps"]],
                "daemon_cpu_s_per_1000": [before, after],
                # CPU s per 1000 events = CPU ms per event.
                "added_cpu_ms_per_event": (
                    round(after - before, 4) if before is not None and after is not None else None
                ),
            }
        )
    return rows


def upload_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #16's upload targets: daemon CPU per upload (with the most uploaders measured) and
    `azuld submit` files/s (the latter on an idle machine: `machine` says how idle it was)."""
    scenarios = data["scenarios"]
    out = []
    for size, limit in ((1024, 2.0), (1024 * 1024, 5.0)):
        rows = [s for s in scenarios if s["kind"] == "upload" and s["size_bytes"] == size]
        if not rows:
            continue
        row = max(rows, key=lambda s: s["uploaders"])
        out.append(
            {
                "target": f"daemon CPU per {uploads.size_name(size)} upload: ms",
                "required": f"<= {limit:g}",
                "measured": row["daemon_cpu_ms_per_upload"],
                "met": row["daemon_cpu_ms_per_upload"] <= limit,
                "scenario": f"{row['id']} ({row['uploads_per_s']:,.0f} uploads/s)",
            }
        )
    submit = find(scenarios, kind="submit")
    if submit:
        out.append(
            {
                "target": f"azuld submit of {submit['files']:,} small files: files/s",
                "required": ">= 300 (idle machine)",
                "measured": submit["files_per_s"],
                "met": submit["files_per_s"] >= 300,
                "scenario": f"{submit['id']} (exit {submit['exit_code']})",
            }
        )
    return out


def compare(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """Ratios new/old of the headline figures of scenarios present in both runs."""
    old_by_id = {s["id"]: s for s in old.get("scenarios", [])}
    rows = []
    per_event = [("throughput_eps", "events/s"), ("daemon_cpu_s_per_1000", "CPU s/1000")]
    metrics = {
        "throughput": per_event,
        "security": per_event,
        "encoding": per_event,
        "latency": [("handout_ms.p99", "handout p99 ms"), ("end_to_end_ms.p99", "e2e p99 ms")],
        "upload": [("uploads_per_s", "uploads/s"), ("daemon_cpu_ms_per_upload", "CPU ms/upload")],
        "submit": [("files_per_s", "files/s"), ("daemon_cpu_ms_per_file", "CPU ms/file")],
        "sdk": [("jobs_per_s", "jobs/s"), ("cpu_ms_per_job", "plugin CPU ms/job")],
    }
    for scenario in new["scenarios"]:
        before = old_by_id.get(scenario["id"])
        if before is None or before.get("client", scenario.get("client")) != scenario.get("client"):
            continue  # not measured before, or by another client
        for path, label in [*metrics.get(scenario["kind"], []), ("peak_rss_mb", "peak RSS MB")]:
            a, b = dig(before, path), dig(scenario, path)
            if isinstance(a, int | float) and isinstance(b, int | float) and a:
                rows.append(
                    {
                        "scenario": scenario["id"],
                        "metric": label,
                        "before": a,
                        "after": b,
                        "ratio": round(b / a, 3),
                    }
                )
    return rows


def dig(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)  # type: ignore[assignment]
    return data
