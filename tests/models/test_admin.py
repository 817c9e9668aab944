"""The admin API's replies as JSON: the keys, their order and their value formats are what the CLI,
the dashboard and scripts read."""

from __future__ import annotations

import msgspec

from azuld.models.admin import (
    ClusterEvent,
    ClusterMember,
    ClusterView,
    FailedJob,
    JobInFlight,
    JobsInFlight,
    PluginFailure,
    PluginKeySummary,
    ReofferOutcome,
    ReofferRecord,
)


def test_a_reoffer_outcome_has_a_plugin_key_or_a_reason_never_both() -> None:
    done = ReofferOutcome(job_id="j", ok=True, plugin_key="")
    refused = ReofferOutcome(job_id="x", ok=False, reason="not an azuld job id")
    assert msgspec.json.encode([done, refused]) == (
        b'[{"job_id":"j","ok":true,"plugin_key":""},'
        b'{"job_id":"x","ok":false,"reason":"not an azuld job id"}]'
    )


def test_failed_jobs_and_the_audit_trail_keep_their_keys_in_order() -> None:
    failed = FailedJob(
        job_id="j",
        plugin="P",
        version="1",
        status="error-exception",
        error="boom",
        message="last line",
        sha256="ab",
        source="s",
        at="2026-11-29T10:00:00+00:00",
    )
    assert msgspec.json.encode(failed) == (
        b'{"job_id":"j","plugin":"P","version":"1","status":"error-exception","error":"boom",'
        b'"message":"last line","sha256":"ab","source":"s","at":"2026-11-29T10:00:00+00:00"}'
    )
    audit = ReofferRecord(
        at="2026-11-29T10:00:00+00:00", by="me", plugin_key="k", job_id="j", sha256="ab"
    )
    assert msgspec.json.encode(audit) == (
        b'{"at":"2026-11-29T10:00:00+00:00","by":"me","plugin_key":"k","job_id":"j","sha256":"ab"}'
    )


def test_a_key_summary_as_the_dashboard_reads_it() -> None:
    summary = PluginKeySummary(
        key="P-1",
        name="P",
        version="1",
        model="binary",
        active=True,
        lanes=["reoffer", "live"],
        lag={"reoffer": 0, "live": 3},
        queued=1,
        in_flight=2,
        fetched=7,
        finished={"completed": 4},
        errors_last_hour=1,
        replayed=0,
        replay_saved_seconds=1.5,
        last_seen=0.0,
        recent_failures=[
            PluginFailure(
                at=1.25, sha256="ab", status="error-input", error="e", message="m", job_id="j"
            )
        ],
        history=[{"minute": 60, "fetched": 7}],
    )
    assert msgspec.json.encode(summary) == (
        b'{"key":"P-1","name":"P","version":"1","model":"binary","active":true,"ephemeral":false,'
        b'"lanes":["reoffer","live"],"lag":{"reoffer":0,"live":3},"queued":1,"in_flight":2,'
        b'"fetched":7,"finished":{"completed":4},"multiplugins":{},"errors_last_hour":1,'
        b'"replayed":0,'
        b'"replay_saved_seconds":1.5,"last_seen":0.0,"recent_failures":[{"at":1.25,"sha256":"ab",'
        b'"status":"error-input","error":"e","message":"m","job_id":"j"}],'
        b'"history":[{"minute":60,"fetched":7}]}'
    )


def test_the_cluster_and_the_jobs_as_the_dashboard_reads_them() -> None:
    member = ClusterMember(instance="a", host="h", this=True, partitions=2, topics={"t": [0, 1]})
    move = ClusterEvent(at=1.5, kind="handed-over", partitions=2, leases=1)
    view = ClusterView(
        instance="a",
        shared=True,
        members=[member],
        problem="",
        rebalances=1,
        leases_handed_over={"given": 1, "taken": 0},
        recent=[move],
    )
    assert msgspec.json.encode(view) == (
        b'{"instance":"a","shared":true,"members":[{"instance":"a","host":"h","this":true,'
        b'"partitions":2,"topics":{"t":[0,1]}}],"problem":"","rebalances":1,'
        b'"leases_handed_over":{"given":1,"taken":0},"recent":[{"at":1.5,"kind":"handed-over",'
        b'"partitions":2,"leases":1,"plugin_key":"","partition":"","peer":""}]}'
    )
    job = JobInFlight(
        job_id="j",
        plugin="P",
        version="1",
        plugin_key="P-1",
        lane="live",
        attempt=0,
        sha256="ab",
        filename="a.exe",
        source="s",
        age_seconds=1.0,
        lease_left_seconds=2.0,
        instance="a",
    )
    assert msgspec.json.encode(JobsInFlight(instance="a", total=3, jobs=[job])) == (
        b'{"instance":"a","total":3,"jobs":[{"job_id":"j","plugin":"P","version":"1",'
        b'"plugin_key":"P-1","lane":"live","attempt":0,"sha256":"ab","filename":"a.exe",'
        b'"source":"s","age_seconds":1.0,"lease_left_seconds":2.0,"instance":"a"}]}'
    )
