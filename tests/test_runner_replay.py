"""The replay cache with a real azul-runner plugin that has multiplugins.

`tests/runner_plugins/multiplugins.py` (NAME `Multi`) does its work in two multiplugins: one
extracts a child, one adds features; the plugin's own status (`completed-empty`) comes last. One
sample is submitted to source A, where the plugin runs; then to source B, where azuld answers from
the replay cache: B must get every status the job produced on A (the multiplugins' and the
plugin's), with the same children and features, and the plugin never sees the job. Then to source
C with other `source.settings` (the `passwords` setting, as unbox reads it): the plugin runs again.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.daemon import running_daemon
from tests.test_azul_runner import (  # noqa: F401 - runner_python is a fixture
    PLUGIN_DIR,
    drain,
    fetch_all,
    runner_env,
    runner_python,
    stop_group,
)

pytestmark = pytest.mark.slow

SAMPLE = b"the replay cache must give back what every multiplugin found\n" * 3
SAMPLE_SHA = hashlib.sha256(SAMPLE).hexdigest()
HALF = SAMPLE[: len(SAMPLE) // 2]  # what Multi-extract extracts
HALF_SHA = hashlib.sha256(HALF).hexdigest()
PLUGINS = ("Multi", "Multi-extract", "Multi-feature")
REPLAYED = "replayed from the result cache"
STEP_SECONDS = 60  # each source's statuses; a run takes a few seconds
STATUS_QUERY = "name=replay-test-statuses&version=1&count=100&deadline=1&r-historic=true"


def finals(statuses: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """The plugin's and its multiplugins' final statuses for jobs of `source`."""
    return [
        s
        for s in statuses
        if s["author"]["name"] in PLUGINS
        and s["entity"]["input"]["source"]["name"] == source
        and s["entity"]["status"] not in ("heartbeat", "dequeued")
    ]


def outcome(statuses: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted(
        (s["author"]["name"], s["author"]["version"], s["entity"]["status"]) for s in statuses
    )


def results(binaries: list[dict[str, Any]], source: str) -> list[tuple[Any, ...]]:
    """What the plugin's results say, without what differs between sources (times, source)."""
    found = []
    for event in binaries:
        if event["author"]["name"] not in PLUGINS or event["source"]["name"] != source:
            continue
        last = event["source"]["path"][-1]
        found.append(
            (
                event["author"]["name"],
                event["action"],
                event["entity"]["sha256"],
                sorted((f["name"], f["value"]) for f in event["entity"].get("features", [])),
                sorted((d["label"], d["sha256"]) for d in event["entity"].get("datastreams", [])),
                last["sha256"],
                last.get("relationship", {}),
                len(event["source"]["path"]),
            )
        )
    return sorted(found, key=repr)


async def submit(daemon_url: str, sample: Path, source: str, *settings: str) -> None:
    command = [sys.executable, "-m", "azuld", "submit", str(sample), "--source", source]
    for setting in settings:
        command += ["--setting", setting]
    with trio.fail_after(30):
        done = await trio.run_process(
            [*command, "--server", daemon_url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


async def statuses_until(
    client: httpx.AsyncClient,
    statuses: list[dict[str, Any]],
    done: Callable[[list[dict[str, Any]]], bool],
    explain: Callable[[], str],
) -> None:
    """Read stored statuses into `statuses` until `done` says so (fails after STEP_SECONDS)."""
    with trio.move_on_after(STEP_SECONDS):
        while not done(statuses):
            statuses += await fetch_all(client, "status", STATUS_QUERY)
        return
    pytest.fail(f"statuses did not come in {STEP_SECONDS} s: {outcome(statuses)}" + explain())


def main_status_of(source: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda statuses: any(s["author"]["name"] == "Multi" for s in finals(statuses, source))


async def test_a_replayed_job_gives_back_every_multiplugin_status_and_result(
    runner_python: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(SAMPLE)
    (tmp_path / "tmp-runner").mkdir()
    runner_log = tmp_path / "runner.log"
    statuses: list[dict[str, Any]] = []
    # The runner reports whole seconds: its quick runs take "0 s", which the cache keeps only
    # without a minimum.
    env = {"AZULD_DISPATCH__REPLAY_MIN_RUNTIME_SECONDS": "0"}
    async with (
        running_daemon(tmp_path / "data", env=env) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
    ):

        def explain() -> str:
            tail = runner_log.read_text(errors="replace")[-4000:] if runner_log.exists() else ""
            return f"\n--- runner log:\n{tail}\n--- azuld log:\n{daemon.log()[-4000:]}"

        await submit(daemon.url, sample, "source-a")
        script = PLUGIN_DIR / "multiplugins.py"
        with open(runner_log, "wb") as log:  # noqa: ASYNC230 - a local file, instant
            runner = await trio.lowlevel.open_process(
                [str(runner_python), str(script), "--server", daemon.url, "-v"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=runner_env(tmp_path / "tmp-runner"),
                cwd=tmp_path,
                start_new_session=True,
            )
        try:
            started = time.monotonic()
            await statuses_until(client, statuses, main_status_of("source-a"), explain)
            # The same binary from another source, while the plugin keeps polling.
            await submit(daemon.url, sample, "source-b")
            await statuses_until(client, statuses, main_status_of("source-b"), explain)
            # Again, with a source setting that changes what the plugin does.
            await submit(daemon.url, sample, "source-c", "passwords=hunter2")
            await statuses_until(client, statuses, main_status_of("source-c"), explain)
            assert runner.poll() is None, "the runner exited" + explain()
        finally:
            with trio.CancelScope(shield=True):
                await stop_group(runner)
        print(f"runner: {time.monotonic() - started:.1f} s", file=sys.stderr)
        statuses += await fetch_all(client, "status", STATUS_QUERY)
        binaries = await drain(client, "binary", "replay-test-binaries")
        child_on_b = await client.get(f"/api/v3/stream/source-b/content/{HALF_SHA}")

    on_a, on_b, on_c = (finals(statuses, s) for s in ("source-a", "source-b", "source-c"))
    # On A the plugin ran: each multiplugin's status, then the plugin's own.
    assert outcome(on_a) == [
        ("Multi", "1.0", "completed-empty"),
        ("Multi-extract", "1.0", "completed"),
        ("Multi-feature", "1.0", "completed"),
    ], explain()
    assert not [s for s in on_a if s["entity"].get("message", "").startswith(REPLAYED)]
    # On B azuld answered from the cache: every status of the job, each once, and the plugin
    # never had the job (it would have posted statuses of its own).
    assert outcome(on_b) == outcome(on_a), explain()
    assert all(s["entity"]["message"].startswith(REPLAYED) for s in on_b), outcome(on_b)
    assert [s["author"]["name"] for s in on_b][-1] == "Multi"  # the plugin's own status last
    # ...with the same results: the child, its features and the features of the binary.
    assert results(binaries, "source-b") == results(binaries, "source-a")
    children = [r for r in results(binaries, "source-b") if r[1] == "extracted"]
    assert [(r[0], r[2]) for r in children] == [("Multi-extract", HALF_SHA)]
    assert ("part", "first half") in children[0][3]
    (enriched,) = [r for r in results(binaries, "source-b") if r[1] == "enriched"]
    assert enriched[0] == "Multi-feature"
    assert ("passwords", "(none)") in enriched[3]
    assert (child_on_b.status_code, child_on_b.content) == (200, HALF)  # copied to B
    # On C the setting is part of the key: the plugin ran again, and saw it.
    assert outcome(on_c) == outcome(on_a)
    assert not [s for s in on_c if s["entity"].get("message", "").startswith(REPLAYED)]
    (enriched_c,) = [r for r in results(binaries, "source-c") if r[1] == "enriched"]
    assert ("passwords", "hunter2") in enriched_c[3]
