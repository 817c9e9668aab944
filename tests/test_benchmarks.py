"""The benchmark harness works: `benchmarks/run.py --quick` runs the real daemon and writes its
results, on the embedded backend and (with a Kafka broker and moto started by the harness) on
`--backend kafka`. Checks the shape of what it writes and that work was done, never how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def run_quick(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--output",
            str(out),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_only_encodings_writes_the_json_and_avro_rows_alone(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = run_quick(out, "--only-encodings")
    assert not (out / "latest.json").exists()  # a partial run leaves the full run's files alone
    (stamped,) = out.glob("encodings-*.json")
    data = json.loads(stamped.read_text())
    kinds = {scenario["kind"] for scenario in data["scenarios"]}
    assert kinds == {"encoding"}
    done_rows = {(s["count"], s["encoding"]) for s in data["scenarios"] if s["completed_total"] > 0}
    assert done_rows == {(1, "json"), (1, "avro"), (100, "json"), (100, "avro")}
    assert "| 100 | avro |" in (out / stamped.name.replace(".json", ".md")).read_text()
    assert "## JSON and Avro (Go plugins)" in done.stdout


def test_quick_run_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    # A previous run's latest.json, which the new run compares itself with.
    previous = {
        "started": "previous-run",
        "scenarios": [
            {"id": "c1-w16-k1-n1000", "kind": "throughput", "throughput_eps": 1.0},
            {"id": "latency-n1000", "kind": "latency", "handout_ms": {"p99": 1000.0}},
        ],
    }
    (out / "latest.json").write_text(json.dumps(previous))

    done = run_quick(out)

    data = json.loads((out / "latest.json").read_text())
    stamped = [p for p in out.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1
    assert json.loads(stamped[0].read_text()) == data
    assert {
        "schema",
        "started",
        "mode",
        "seconds",
        "backend",
        "machine",
        "plan",
        "scenarios",
        "preloads",
        "targets",
        "plots",
    } <= data.keys()
    assert data["mode"] == "quick"
    assert data["backend"]["name"] == "embedded"
    assert {"cpu_model", "logical_cores", "ram_gb", "python"} <= data["machine"].keys()

    throughput = [s for s in data["scenarios"] if s["kind"] == "throughput"]
    latency = [s for s in data["scenarios"] if s["kind"] == "latency"]
    assert {s["events_in_log"] for s in latency} == set(data["plan"]["sizes"])
    for scenario in throughput:
        assert {
            "id",
            "events_in_log",
            "keys",
            "workers",
            "count",
            "throughput_eps",
            "daemon_cpu_s_per_1000",
            "rss_mb",
            "peak_rss_mb",
            "bottleneck",
        } <= scenario.keys()
        assert scenario["errors"] == 0, scenario["first_error"]
        assert scenario["throughput_eps"] > 0, scenario["id"]
        assert scenario["peak_rss_mb"] > 0
    assert {s["count"] for s in throughput} == {1, data["plan"]["batch_count"]}
    assert {s["workers"] for s in throughput if "workers" in s["dimensions"]} == set(
        data["plan"]["workers"]
    )
    assert {s["keys"] for s in throughput if "keys" in s["dimensions"]} == set(data["plan"]["keys"])
    for scenario in latency:
        assert scenario["samples"] > 0, scenario["errors"]
        assert scenario["handout_ms"]["p99"] > 0
        assert scenario["end_to_end_ms"]["p50"] >= scenario["handout_ms"]["p50"]
    assert len(data["targets"]) == 8  # with the plugin SDK's

    plan = data["plan"]
    uploaded = [s for s in data["scenarios"] if s["kind"] == "upload"]
    assert {(s["size_bytes"], s["uploaders"]) for s in uploaded} == {
        (size, uploaders) for size in plan["upload_sizes"] for uploaders in plan["uploaders"]
    }
    for scenario in uploaded:
        assert scenario["errors"] == 0, scenario["first_error"]
        assert scenario["uploads_per_s"] > 0
        assert scenario["daemon_cpu_ms_per_upload"] >= 0
    (submitted,) = (s for s in data["scenarios"] if s["kind"] == "submit")
    assert submitted["exit_code"] == 0, submitted["stderr_tail"]
    assert submitted["files"] == plan["submit_files"]
    assert f"submitted {plan['submit_files']} file(s)" in submitted["stdout_tail"]
    # max-security: count=1 and count=100 at the largest size, with the check on, beside the
    # same scenarios without it; labelled events were handed out (none filtered away).
    checked = [s for s in data["scenarios"] if s["kind"] == "security"]
    assert {s["count"] for s in checked} == {1, data["plan"]["batch_count"]}
    for scenario in checked:
        assert scenario["max_security"] == "OFFICIAL"
        assert scenario["events_in_log"] == max(data["plan"]["sizes"])
        assert scenario["errors"] == 0, scenario["first_error"]
        assert scenario["completed_total"] > 0
    assert [row["count"] for row in data["security"]] == [1, data["plan"]["batch_count"]]
    assert all(row["added_cpu_ms_per_event"] is not None for row in data["security"])
    # JSON and Avro side by side (Go plugins): the same work, both encodings, both counts.
    encoded = [s for s in data["scenarios"] if s["kind"] == "encoding"]
    assert sorted((s["count"], s["encoding"]) for s in encoded) == [
        (1, "avro"),
        (1, "json"),
        (data["plan"]["batch_count"], "avro"),
        (data["plan"]["batch_count"], "json"),
    ]
    for scenario in encoded:
        assert scenario["errors"] == 0, scenario["first_error"]
        assert scenario["completed_total"] > 0, scenario["id"]
        assert scenario["daemon_cpu_s_per_1000"] > 0

    sdk = [s for s in data["scenarios"] if s["kind"] == "sdk"]
    assert {s["workers"] for s in sdk} == set(data["plan"]["sdk_workers"])
    for scenario in sdk:
        assert scenario["jobs"] == data["plan"]["sdk_events"], scenario
        assert scenario["jobs_per_s"] > 0
        assert scenario["cpu_ms_per_job"] > 0
    assert "## Plugin SDK" in (out / "latest.md").read_text()

    assert data["previous"] == "previous-run"
    compared = {(row["scenario"], row["metric"]) for row in data["comparison"]}
    assert ("c1-w16-k1-n1000", "events/s") in compared
    assert ("latency-n1000", "handout p99 ms") in compared
    assert "vs previous run" in done.stdout

    report = (out / "latest.md").read_text()
    assert "## Targets" in report
    assert "## The cost of max-security" in report
    assert "## Uploads" in report
    assert "## JSON and Avro (Go plugins)" in report
    assert "## Compared with the previous run" in report
    assert data["machine"]["cpu_model"] in report
    assert data["plots"]
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("storage", ["s3", "local"])
def test_quick_kafka_run_writes_results(tmp_path: Path, storage: str) -> None:
    """`--backend kafka`: the harness starts its own broker (and moto, for S3), runs the same
    scenarios on azuld with `events.backend = "kafka"` and the asked blob store (S3 by default,
    a local folder with `--storage local`), and stops them."""
    out = tmp_path / "results"
    out.mkdir()
    # An embedded run's latest.json in the same folder: not a previous run of this backend.
    embedded = {"started": "embedded-run", "backend": {"name": "embedded"}, "scenarios": []}
    (out / "latest.json").write_text(json.dumps(embedded))

    done = run_quick(
        out, "--backend", "kafka", *(["--storage", "local"] if storage == "local" else [])
    )

    data = json.loads((out / "latest.json").read_text())
    assert data["mode"] == "quick"
    backend = data["backend"]
    assert backend["name"] == "kafka"
    assert "Kafka" in backend["events"]
    if storage == "s3":
        assert backend["storage"].startswith("s3")
        assert {"kafka", "moto"} <= backend["services_whole_run"].keys()
    else:
        assert backend["storage"] == "local folder"
        assert backend["services_whole_run"].keys() == {"kafka"}  # no moto started
    assert "previous" not in data
    assert "comparison" not in data
    assert "not comparing" in done.stderr

    throughput = [s for s in data["scenarios"] if s["kind"] == "throughput"]
    latency = [s for s in data["scenarios"] if s["kind"] == "latency"]
    assert {s["count"] for s in throughput} == {1, data["plan"]["batch_count"]}
    assert {s["keys"] for s in throughput if "keys" in s["dimensions"]} == set(data["plan"]["keys"])
    for scenario in throughput:
        assert scenario["errors"] == 0, scenario["first_error"]
        assert scenario["throughput_eps"] > 0, scenario["id"]
    assert {s["events_in_log"] for s in latency} == set(data["plan"]["sizes"])
    for scenario in latency:
        assert scenario["samples"] > 0, scenario["errors"]
        assert scenario["end_to_end_ms"]["p50"] >= scenario["handout_ms"]["p50"] > 0
    # Issue #13's Kafka targets (CPU per job and per event, empty batch fetches, idle handout).
    kafka_targets = [t for t in data["targets"] if t["target"].startswith("Kafka, ")]
    assert len(kafka_targets) == 4, data["targets"]
    assert all(isinstance(t["measured"], int | float) for t in kafka_targets)
    assert not [s for s in data["scenarios"] if s["kind"] == "sdk"]  # embedded only
    assert "Backend **kafka**" in (out / "latest.md").read_text()
    for name in data["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_processes_run_writes_results(tmp_path: Path) -> None:
    """`benchmarks/processes.py`: `azuld serve --processes 1` and `--processes 2` on a broker of
    its own, both scenarios each, the medians and the ratio to one process."""
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "processes.py"),
            "--quick",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((out / "latest.json").read_text())
    assert data["process_counts"] == [1, 2]
    assert {(s["scenario"], s["processes"]) for s in data["scenarios"]} == {
        (name, processes) for name in ("count=1", "count=100") for processes in (1, 2)
    }
    for scenario in data["scenarios"]:
        assert scenario["errors"] == 0, scenario["first_error"]
        assert scenario["throughput_eps"] > 0, scenario["id"]
        assert scenario["daemon_cpu_s_per_1000"] > 0
    rows = {(row["scenario"], row["processes"]): row for row in data["summary"]}
    assert rows["count=1", 1]["eps_ratio"] == 1.0
    assert rows["count=1", 2]["eps_ratio"] > 0
    assert "| count=100 | 2 |" in (out / "latest.md").read_text()
