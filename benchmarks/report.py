"""A run's report: `latest.md` (every figure as markdown tables) and the PNG plots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import uploads  # noqa: E402
from targets import find  # noqa: E402


def encoding_bests(encoded: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """The round with the least daemon CPU per event of each (count, encoding): the least
    disturbed measurement on a shared machine."""
    best: dict[tuple[int, str], dict[str, Any]] = {}
    for s in encoded:
        key = (s["count"], s["encoding"])
        cpu = s["daemon_cpu_s_per_1000"] or float("inf")
        if key not in best or cpu < (best[key]["daemon_cpu_s_per_1000"] or float("inf")):
            best[key] = s
    return best


def digits(value: Any) -> int:
    """Decimals that show a measured figure against its target (CPU ms per event need three)."""
    return 3 if isinstance(value, float) and abs(value) < 2 else 1


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def encoding_markdown(data: dict[str, Any]) -> list[str]:
    """The "JSON and Avro" section: the best of each (count, encoding), its rounds."""
    encoded = [s for s in data["scenarios"] if s["kind"] == "encoding"]
    lines: list[str] = []
    if encoded:
        lines += [
            "",
            "## JSON and Avro (Go plugins)",
            "",
            "The same workers, events and statuses, speaking JSON or Avro (`avro-format=true` on "
            "the fetch and the status post, as azul-bedrock's Go client does); no downloads. "
            "Daemon CPU per completed event (fetch, handout, status post, log), best of the "
            "interleaved rounds (each round's figure after it).",
            "",
            "| count | encoding | events/s | daemon CPU µs/event | vs JSON | rounds µs/event |",
            "|---|---|---|---|---|---|",
        ]
        best = encoding_bests(encoded)
        for (count, encoding), s in best.items():
            twin = best.get((count, "json"))
            per_event = s["daemon_cpu_s_per_1000"]
            ratio = (
                f"{per_event / twin['daemon_cpu_s_per_1000']:.2f}x"
                if twin and per_event and twin["daemon_cpu_s_per_1000"]
                else "-"
            )
            rounds = " / ".join(
                fmt(r["daemon_cpu_s_per_1000"] * 1000 if r["daemon_cpu_s_per_1000"] else None, 1)
                for r in encoded
                if (r["count"], r["encoding"]) == (count, encoding)
            )
            lines.append(
                f"| {count} | {encoding} | {fmt(s['throughput_eps'])} | "
                f"{fmt(per_event * 1000 if per_event else None, 1)} | {ratio} | {rounds} |"
            )
    return lines


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        f"# azuld benchmark: {data['started']}",
        "",
        f"Backend **{data['backend']['name']}** ({data['backend']['events']}), HTTP server "
        f"`{data['backend'].get('http_server', 'hypercorn')}`; "
        f"mode {data['mode']}; run took {data['seconds']:.0f} s. "
        f"Load generator: {data['plan']['processes']} processes, client "
        f"`{data['plan']['client']}`, long-poll deadline {data['plan']['deadline']:g} s.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores "
        f"({m['physical_cores']} physical), {m['ram_gb']} GB RAM, {m['implementation']} "
        f"{m['python']}, Linux {m['kernel']}, azuld {m['azuld']}. Load average at start "
        f"{m['load_average_at_start']}, at end {m.get('load_average_at_end')}. **{m['note']}**; "
        "the daemon and the load generator share these cores.",
        "",
        "## Targets",
        "",
        "| target | required | measured | met | measured by |",
        "|---|---|---|---|---|",
    ]
    for t in data["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(
            f"| {t['target']} | {t['required']} | {fmt(t['measured'], digits(t['measured']))} | "
            f"{met} | "
            f"{t['scenario']} |"
        )
    lines += [
        "",
        "## Throughput",
        "",
        "Per scenario: events completed per second in the measuring window; the daemon's CPU "
        "seconds per 1000 completed events and its CPU use (1.0 = one core busy); the load "
        "generator processes' CPU use; other processes' CPU use on this shared machine (cores); "
        "the daemon's RSS at the end and its peak since start; fetches that came back empty "
        "(after waiting their deadline) of all fetches, warm-up included.",
        "",
        "| scenario | events in log | keys | workers | count | download | client | events/s | "
        "daemon CPU s/1000 | daemon CPU | loadgen CPU | loadgen CPU ms/event | other CPU | "
        "RSS MB | peak RSS MB | fetch p50/p99 ms | empty fetches | bottleneck |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["scenarios"]:
        if s["kind"] in ("latency", "upload", "submit", "sdk"):
            continue
        fetch = s["request_ms"]["fetch"]
        lines.append(
            f"| {s['id']} | {s['events_in_log']:,} | {s['keys']} | {s['workers']} | {s['count']} "
            f"| {'yes' if s['download'] else 'no'} | {s['client']} | "
            f"{fmt(s['throughput_eps'])}{' (drained)' if s['drained'] else ''} | "
            f"{fmt(s['daemon_cpu_s_per_1000'], 3)} | {s['daemon_cpu_util']:.2f} | "
            f"{'/'.join(f'{u:.2f}' for u in s['loadgen_cpu_util'])} | "
            f"{fmt(s['loadgen_cpu_ms_per_event'], 2)} | {s['machine_cpu']['other_cores']:.2f} | "
            f"{s['rss_mb']} | {s['peak_rss_mb']} | "
            f"{fmt(fetch.get('p50'), 1)}/{fmt(fetch.get('p99'), 1)} | "
            f"{s['empty_fetches']}/{s['fetches']} | {s['bottleneck']} |"
        )
    if data.get("security"):
        lines += [
            "",
            "## The cost of max-security",
            "",
            f"The count=1 and count={data['plan']['batch_count']} scenarios at the largest log "
            "size, run again right after each other with every fetch carrying "
            f"`max-security={data['security'][0]['max_security']}` against events labelled so "
            "(the label model, decisions cached per pair). Noise on a shared machine can exceed "
            "the difference.",
            "",
            "| count | events/s without / with | daemon CPU s/1000 without / with | added CPU "
            "ms/event |",
            "|---|---|---|---|",
        ]
        for row in data["security"]:
            eps, cpu = row["events_per_second"], row["daemon_cpu_s_per_1000"]
            lines.append(
                f"| {row['count']} | {fmt(eps[0])} / {fmt(eps[1])} | {fmt(cpu[0], 3)} / "
                f"{fmt(cpu[1], 3)} | {fmt(row['added_cpu_ms_per_event'], 3)} |"
            )
    lines += encoding_markdown(data)
    lines += [
        "",
        "## Latency on an idle daemon",
        "",
        "Handout: publish request sent -> job received by a worker already waiting in a "
        "long-poll (both timestamps in one process). End-to-end: publish sent -> the worker's "
        "`completed` status acknowledged (durable, README). Milliseconds.",
        "",
        "| events in log | samples | handout p50 | p95 | p99 | max | publish ack p50 | "
        "handout after ack p50 / p99 | end-to-end p50 | p95 | p99 | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["scenarios"]:
        if s["kind"] != "latency":
            continue
        h, e, a = s["handout_ms"], s["end_to_end_ms"], s["publish_ack_ms"]
        after = s["handout_after_ack_ms"]
        lines.append(
            f"| {s['events_in_log']:,} | {s['samples']} | {fmt(h.get('p50'), 2)} | "
            f"{fmt(h.get('p95'), 2)} | {fmt(h.get('p99'), 2)} | {fmt(h.get('max'), 2)} | "
            f"{fmt(a.get('p50'), 2)} | {fmt(after.get('p50'), 2)} / {fmt(after.get('p99'), 2)} | "
            f"{fmt(e.get('p50'), 2)} | {fmt(e.get('p95'), 2)} | "
            f"{fmt(e.get('p99'), 2)} | {s['rss_mb']} |"
        )
    upload_rows = [s for s in data["scenarios"] if s["kind"] == "upload"]
    if upload_rows:
        lines += [
            "",
            "## Uploads",
            "",
            "`POST /api/v3/stream/<source>/content` of distinct random blobs with a "
            "Content-Length, each uploader on its own keep-alive connection: the daemon's CPU "
            "per upload (user + system, all threads), uploads/s and the request's latency.",
            "",
            "| scenario | size | uploaders | uploads | uploads/s | MB/s | daemon CPU ms/upload | "
            "daemon CPU | request p50/p99 ms | errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in upload_rows:
            r = s["request_ms"]
            lines.append(
                f"| {s['id']} | {uploads.size_name(s['size_bytes'])} | {s['uploaders']} | "
                f"{s['uploads']} | {fmt(s['uploads_per_s'])} | {fmt(s['mb_per_s'], 1)} | "
                f"{fmt(s['daemon_cpu_ms_per_upload'], 2)} | {s['daemon_cpu_util']:.2f} | "
                f"{fmt(r.get('p50'), 1)}/{fmt(r.get('p99'), 1)} | {s['errors']} |"
            )
    for s in data["scenarios"]:
        if s["kind"] == "submit":
            lines += [
                "",
                f"`azuld submit` of {s['files']:,} files of {uploads.size_name(s['size_bytes'])}"
                f": {fmt(s['files_per_s'])} files/s ({s['seconds']:.1f} s, exit "
                f"{s['exit_code']}); daemon {fmt(s['daemon_cpu_ms_per_file'], 2)} ms CPU per "
                f"file, the command {fmt(s['submit_cpu_ms_per_file'], 2)} ms.",
            ]
    sdk_rows = [s for s in data["scenarios"] if s["kind"] == "sdk"]
    if sdk_rows:
        lines += [
            "",
            "## Plugin SDK",
            "",
            "One plugin process drains a backlog of trivial jobs (download the content, one "
            "feature, a `completed` status) with 1, 4, 16 workers: `sdk` is the SDK's "
            "`PluginRunner` as `azuld plugin run` builds it, `raw` a hand-written keep-alive "
            "client doing the same three requests per job (the floor). CPU: the plugin "
            "process's own (getrusage), registration included.",
            "",
            "| client | workers | jobs | jobs/s | plugin CPU ms/job | plugin CPU |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['client']} | {s['workers']} | {s['jobs']:,} | {fmt(s['jobs_per_s'])} | "
            f"{fmt(s['cpu_ms_per_job'], 3)} | {s['plugin_cpu_util']:.2f} |"
            for s in sdk_rows
        ]
    lines += ["", "## Preloading", ""]
    for p in data["preloads"]:
        if p["what"] == "blob uploads":
            lines.append(
                f"* {p['count']} blob uploads: p50 {p['ms'].get('p50')} ms, "
                f"p99 {p['ms'].get('p99')} ms each"
            )
        else:
            lines.append(
                f"* publish {p['from']:,} -> {p['to']:,} sourced events in POSTs of "
                f"{p['batch']}: {fmt(p['events_per_second'])} events/s, daemon "
                f"{p['daemon_cpu_s_per_1000']} CPU s/1000"
            )
    if data.get("profile"):
        p = data["profile"]
        lines += [
            "",
            f"## Where the daemon spends its time (py-spy, {p['seconds']:g} s, "
            f"{p['samples']} samples)",
            "",
            f"Under {p['scenario']} ({fmt(p['throughput_eps_while_profiled'])} events/s while "
            f"sampled). Flame graph: `{p['flamegraph']}`; collapsed stacks: `{p['collapsed']}`.",
            "",
            "| own time | % | function |",
            "|---|---|---|",
        ]
        lines += [
            f"| {row['samples']} | {row['percent']} | `{row['function']}` |" for row in p["top_own"]
        ]
        lines += ["", "| inclusive | % | function |", "|---|---|---|"]
        lines += [
            f"| {row['samples']} | {row['percent']} | `{row['function']}` |"
            for row in p["top_inclusive"]
        ]
        lines += ["", "| own time by package | % | package |", "|---|---|---|"]
        lines += [
            f"| {row['samples']} | {row['percent']} | `{row['package']}` |"
            for row in p.get("by_package", [])
        ]
        lines += [
            "",
            f"{p.get('worker_thread_percent', 0)} % of the samples were in trio's worker threads "
            "(`trio.to_thread`, e.g. file I/O through `trio.open_file`); "
            f"{p.get('idle_thread_samples', 0)} samples of idle worker threads waiting for work "
            "were left out.",
        ]
    if data.get("comparison"):
        lines += [
            "",
            f"## Compared with the previous run ({data.get('previous')})",
            "",
            "| scenario | metric | before | after | after/before |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['scenario']} | {r['metric']} | {r['before']} | {r['after']} | {r['ratio']} |"
            for r in data["comparison"]
        ]
    lines += ["", "Plots: " + ", ".join(f"`{name}`" for name in data.get("plots", [])), ""]
    return "\n".join(lines)


def plots(data: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib
    except ImportError:
        print("no plots: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = data["plan"]
    largest = max(plan["sizes"])
    tp = [s for s in data["scenarios"] if s["kind"] == "throughput"]
    written = []

    def series(dimension: str, x: str, **match: Any) -> tuple[list[Any], list[dict[str, Any]]]:
        rows = sorted(
            (s for s in tp if dimension in s["dimensions"] and find([s], **match)),
            key=lambda s: s[x],
        )
        return [s[x] for s in rows], rows

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)

    for dimension, x, label, logx in (
        ("events", "events_in_log", "sourced events in the log", True),
        ("workers", "workers", f"workers (count=1, {largest:,} events)", False),
        ("keys", "keys", f"plugin keys (count=1, {largest:,} events)", False),
    ):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        counts = [1, plan["batch_count"]] if dimension == "events" else [1]
        for count in counts:
            xs, rows = series(dimension, x, count=count)
            if not rows:
                continue
            name = f"count={count}"
            line = axes[0].plot(xs, [r["throughput_eps"] for r in rows], "o-", label=name)
            drained = [r for r in rows if r["drained"]]
            axes[0].plot(
                [r[x] for r in drained],
                [r["throughput_eps"] for r in drained],
                "x",
                markersize=12,
                color=line[0].get_color(),
            )
            axes[1].plot(xs, [r["daemon_cpu_s_per_1000"] or 0 for r in rows], "o-", label=name)
            axes[2].plot(xs, [r["rss_mb"] for r in rows], "o-", label=f"at end, {name}")
            axes[2].plot(xs, [r["peak_rss_mb"] for r in rows], "^:", label=f"peak so far, {name}")
        axes[0].set_ylabel("completed events/s (x: drained, short window)")
        axes[1].set_ylabel("daemon CPU s per 1000 events")
        axes[2].set_ylabel("daemon RSS MB")
        if dimension == "events":
            axes[0].set_yscale("log")
        for axis in axes:
            axis.set_xlabel(label)
            if logx:
                axis.set_xscale("log")
            if axis.get_yscale() == "linear":
                axis.set_ylim(bottom=0)
            axis.grid(True, alpha=0.3)
            axis.legend()
        fig.suptitle(f"azuld {data['backend']['name']}: vs {dimension}")
        save(fig, f"latest-{dimension}.png")

    lat = sorted(
        (s for s in data["scenarios"] if s["kind"] == "latency"), key=lambda s: s["events_in_log"]
    )
    if lat:
        fig, axis = plt.subplots(figsize=(7, 4))
        xs = [s["events_in_log"] for s in lat]
        for what, p, style in (
            ("handout_ms", "p50", "o-"),
            ("handout_ms", "p99", "o--"),
            ("end_to_end_ms", "p50", "s-"),
            ("end_to_end_ms", "p99", "s--"),
        ):
            axis.plot(xs, [s[what].get(p, 0) for s in lat], style, label=f"{what[:-3]} {p}")
        axis.axhline(5, color="red", alpha=0.4, label="target: handout p99 < 5 ms")
        axis.set_xscale("log")
        axis.set_ylim(bottom=0)
        axis.set_xlabel("sourced events in the log")
        axis.set_ylabel("ms")
        axis.grid(True, alpha=0.3)
        axis.legend()
        axis.set_title("idle-daemon latency")
        save(fig, "latest-latency.png")
    return written
