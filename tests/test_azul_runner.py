"""Unmodified plugins on the real `azul-runner` (PyPI) against the real azuld daemon.

`scripts/runner-venv` builds a separate Python >= 3.12 venv holding the pinned azul-runner (a
session fixture runs it, so a fresh machine builds it on first use and then reuses the cache). One
azuld subprocess gets one submitted sample; then the five plugins of `tests/runner_plugins/` run at
once, each as `<runner python> <plugin>.py --server <url>` in its own process group and private
TMPDIR (the runner deletes its temp dir's contents). Their statuses are read back through a
passive fetch of `status`; each runner is SIGKILLed (with its whole process group: it never exits
by itself) once azuld has stored what it was expected to produce. The tests then check what azuld
stored: statuses, the result events published as `binary` events, and the uploaded blobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.daemon import running_daemon
from tests.http.conftest import parse_multipart

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = Path(__file__).parent / "runner_plugins"

SOURCE = "runner-test"
SAMPLE = b"hello from the azul-runner end-to-end test\n"
SAMPLE_SHA = hashlib.sha256(SAMPLE).hexdigest()
CHILD = SAMPLE[::-1]  # what child_and_text.py extracts
CHILD_SHA = hashlib.sha256(CHILD).hexdigest()
REPORT = f"reversed {len(SAMPLE)} bytes".encode()  # child_and_text.py's text stream
REPORT_SHA = hashlib.sha256(REPORT).hexdigest()

IN_PROGRESS = {"heartbeat", "dequeued"}
RUNNERS_SECONDS = 120  # all five runners together; a normal run takes about 15 s
STATUS_WATCHER = "runner-test-statuses"


def final_shas(statuses: list[dict[str, Any]], plugin: str) -> set[str]:
    """The binaries for which `plugin` has a stored final (not in-progress) status."""
    return {
        s["entity"]["input"]["entity"]["sha256"]
        for s in statuses
        if s["author"]["name"] == plugin and s["entity"]["status"] not in IN_PROGRESS
    }


@dataclass(frozen=True)
class RunnerPlugin:
    name: str  # the runner's NAME: the class name without "AzulPlugin"
    script: str
    # True once azuld holds everything this plugin is expected to post; then it is stopped.
    done: Callable[[list[dict[str, Any]]], bool]
    args: tuple[str, ...] = ()


RUNNER_PLUGINS = [
    # Done once it has also processed the child that ChildAndText extracts.
    RunnerPlugin(
        "FeatureOnly",
        "feature_only.py",
        lambda st: {SAMPLE_SHA, CHILD_SHA} <= final_shas(st, "FeatureOnly"),
    ),
    # Kept running until FeatureOnly had the child too, so that it had every chance to be
    # (wrongly) offered its own child despite `r-action=sourced`.
    RunnerPlugin(
        "ChildAndText",
        "child_and_text.py",
        lambda st: (
            SAMPLE_SHA in final_shas(st, "ChildAndText")
            and CHILD_SHA in final_shas(st, "FeatureOnly")
        ),
    ),
    RunnerPlugin("OptOut", "opt_out.py", lambda st: SAMPLE_SHA in final_shas(st, "OptOut")),
    RunnerPlugin("Raises", "raises.py", lambda st: SAMPLE_SHA in final_shas(st, "Raises")),
    RunnerPlugin(
        "Sleeps",
        "sleeps.py",
        lambda st: SAMPLE_SHA in final_shas(st, "Sleeps"),
        ("-c", "run_timeout", "2", "-c", "heartbeat_interval", "1"),
    ),
]


@dataclass
class Observed:
    """What azuld stored while the runners ran, and how to explain a failure."""

    statuses: list[dict[str, Any]] = field(default_factory=list)
    binaries: list[dict[str, Any]] = field(default_factory=list)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[tuple[str, str], httpx.Response] = field(default_factory=dict)
    runner_logs: dict[str, Path] = field(default_factory=dict)
    unfinished: set[str] = field(default_factory=set)  # runners stopped before they were done
    daemon_log: str = ""
    seconds: float = 0.0

    def __repr__(self) -> str:  # short, for pytest's assertion messages
        return (
            f"Observed({len(self.statuses)} statuses, {len(self.binaries)} binaries, "
            f"unfinished={sorted(self.unfinished)})"
        )

    def explain(self, plugin: str) -> str:
        """The runner's log, the statuses azuld holds for it, and the daemon's log tail."""
        log = self.runner_logs[plugin]
        runner = log.read_text(errors="replace")[-6000:] if log.exists() else "(no log)"
        summary = [
            (s["entity"]["input"]["entity"]["sha256"][:12], s["entity"]["status"])
            for s in self.statuses
            if s["author"]["name"] == plugin
        ]
        return (
            f"\n--- statuses stored for {plugin}: {summary}"
            f"\n--- runner log ({log}), tail:\n{runner}"
            f"\n--- azuld log, tail:\n{self.daemon_log[-4000:]}"
        )

    def status(self, plugin: str, sha256: str = SAMPLE_SHA) -> dict[str, Any]:
        """`plugin`'s one final status for `sha256`."""
        found = [
            s
            for s in self.statuses
            if s["author"]["name"] == plugin
            and s["entity"]["input"]["entity"]["sha256"] == sha256
            and s["entity"]["status"] not in IN_PROGRESS
        ]
        assert len(found) == 1, f"{len(found)} final statuses for {sha256[:12]}" + self.explain(
            plugin
        )
        return found[0]

    def results(self, plugin: str, action: str, sha256: str) -> list[dict[str, Any]]:
        return [
            b
            for b in self.binaries
            if b["author"]["name"] == plugin
            and b["action"] == action
            and b["entity"]["sha256"] == sha256
        ]


# ---------------------------------------------------------------------------------------------
# Fixtures: the runner venv (session), one daemon with all five runners (module).


@pytest.fixture(scope="session")
def runner_python() -> Path:
    """The runner venv's python: `scripts/runner-venv` builds it on first use, then it is cached."""
    started = time.monotonic()
    try:
        made = subprocess.run(
            [str(REPO / "scripts" / "runner-venv")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/runner-venv did not finish in 900 s:\n{exc.stderr}")
    if made.returncode != 0:
        pytest.fail(
            f"scripts/runner-venv failed (exit {made.returncode}); it builds the azul-runner venv "
            f"these tests need:\n{made.stderr}"
        )
    python = Path(made.stdout.strip().splitlines()[-1])
    assert python.is_file(), f"scripts/runner-venv printed {made.stdout!r}, not a python path"
    print(f"runner venv ready in {time.monotonic() - started:.1f} s: {python}", file=sys.stderr)
    return python


@pytest.fixture(scope="module")
def observed(runner_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Observed:
    # A sync fixture driving its own trio.run: pytest-trio's async fixtures are per test only.
    return trio.run(run_plugins, runner_python, tmp_path_factory.mktemp("azul-runner"))


def runner_env(tmpdir: Path) -> dict[str, str]:
    """The test's environment minus anything that would configure the runner or its Python."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("PLUGIN_", "RUNNER_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["TMPDIR"] = str(tmpdir)
    return env


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


async def stop_group(process: trio.Process) -> None:
    """SIGKILL the runner's whole process group (parent, forkserver, plugin children)."""
    pgid = process.pid  # start_new_session=True: the runner leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with trio.fail_after(10):
        await process.wait()
        # Its forkserver and plugin children are reparented on the parent's death: poll for them.
        while group_members(pgid):
            await trio.sleep(0.1)


async def fetch_all(client: httpx.AsyncClient, model: str, query: str) -> list[dict[str, Any]]:
    """One passive fetch; the events it returns (each is returned to this consumer once)."""
    response = await client.get(f"/api/v2/event/{model}/passive?{query}")
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.content, response.headers["content-type"])
    events: list[dict[str, Any]] = msgspec.json.decode(parts["events"])["events"]
    return events


async def drain(client: httpx.AsyncClient, model: str, watcher: str) -> list[dict[str, Any]]:
    """Every `model` event stored so far, via a fresh passive consumer."""
    query = f"name={watcher}&version=1&count=100&deadline=1&r-live=true&r-historic=true"
    events: list[dict[str, Any]] = []
    with trio.fail_after(30):
        while batch := await fetch_all(client, model, query):
            events.extend(batch)
    return events


async def run_plugins(runner_python: Path, root: Path) -> Observed:
    observed = Observed()
    sample = root / "sample.txt"
    sample.write_bytes(SAMPLE)
    async with running_daemon(root / "data") as daemon:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            submit = [sys.executable, "-m", "azuld", "submit", str(sample), "--source", SOURCE]
            with trio.fail_after(30):
                submitted = await trio.run_process(
                    [*submit, "--server", daemon.url],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert submitted.returncode == 0, submitted.stderr.decode(errors="replace")

            # Start the runners only now: a runner whose first poll is empty sleeps 10 s.
            started = time.monotonic()
            running: dict[str, trio.Process] = {}
            try:
                for plugin in RUNNER_PLUGINS:
                    tmpdir = root / f"tmp-{plugin.name}"
                    tmpdir.mkdir()
                    log_path = root / f"runner-{plugin.name}.log"
                    script = PLUGIN_DIR / plugin.script
                    command = [str(runner_python), str(script), "--server", daemon.url, "-v"]
                    observed.runner_logs[plugin.name] = log_path
                    with open(log_path, "wb") as log:  # noqa: ASYNC230 - a local file, instant
                        running[plugin.name] = await trio.lowlevel.open_process(
                            [*command, *plugin.args],
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=log,
                            env=runner_env(tmpdir),
                            cwd=root,
                            start_new_session=True,
                        )
                status_query = (
                    f"name={STATUS_WATCHER}&version=1&count=100&deadline=1&r-historic=true"
                )
                with trio.move_on_after(RUNNERS_SECONDS):
                    while running:
                        observed.statuses += await fetch_all(client, "status", status_query)
                        for plugin in RUNNER_PLUGINS:
                            if plugin.name in running and plugin.done(observed.statuses):
                                await stop_group(running.pop(plugin.name))
                        for name, process in list(running.items()):
                            if process.poll() is not None:  # the runner exited: it crashed
                                observed.unfinished.add(name)
                                await stop_group(running.pop(name))  # and its children
            finally:
                observed.unfinished |= set(running)
                with trio.CancelScope(shield=True):
                    for process in running.values():
                        await stop_group(process)
            observed.seconds = time.monotonic() - started

            # Statuses posted between the last poll and the kill.
            observed.statuses += await fetch_all(client, "status", status_query)
            observed.binaries = await drain(client, "binary", "runner-test-binaries")
            observed.registrations = await drain(client, "plugin", "runner-test-plugins")
            for label, sha256 in (("content", CHILD_SHA), ("text", REPORT_SHA)):
                observed.blobs[label, sha256] = await client.get(
                    f"/api/v3/stream/{SOURCE}/{label}/{sha256}"
                )
        observed.daemon_log = daemon.log()
    print(f"runners: {observed.seconds:.1f} s from start to the last one stopped", file=sys.stderr)
    return observed


# ---------------------------------------------------------------------------------------------
# The tests: what azuld stored for each plugin.


@pytest.mark.parametrize("plugin", [p.name for p in RUNNER_PLUGINS])
def test_runner_registers_and_reaches_its_final_status(observed: Observed, plugin: str) -> None:
    assert plugin not in observed.unfinished, "runner stopped before it was done" + (
        observed.explain(plugin)
    )
    registered = [r for r in observed.registrations if r["entity"]["name"] == plugin]
    assert registered, f"no plugin registration stored for {plugin}" + observed.explain(plugin)
    assert registered[0]["entity"]["version"] == "1.0"
    assert registered[0]["author"] == {"category": "plugin", "name": plugin, "version": "1.0"}
    # A runner logs a traceback when it crashes (e.g. on a response it cannot parse).
    log = observed.runner_logs[plugin].read_text(errors="replace")
    assert "Traceback" not in log, "the runner logged a traceback" + observed.explain(plugin)


def test_feature_only_is_completed_with_an_enriched_result(observed: Observed) -> None:
    status = observed.status("FeatureOnly")
    assert status["entity"]["status"] == "completed", observed.explain("FeatureOnly")
    assert "results" not in status["entity"]  # results are published as binary events instead
    (enriched,) = observed.results("FeatureOnly", "enriched", SAMPLE_SHA)
    assert {"name": "file_length", "type": "integer", "value": str(len(SAMPLE))} in enriched[
        "entity"
    ]["features"]
    assert enriched["source"]["name"] == SOURCE
    last = enriched["source"]["path"][-1]
    assert (last["action"], last["author"]["name"]) == ("enriched", "FeatureOnly")


def test_child_and_text_extracts_a_child_and_augments_with_text(observed: Observed) -> None:
    status = observed.status("ChildAndText")
    assert status["entity"]["status"] == "completed", observed.explain("ChildAndText")
    assert "results" not in status["entity"]

    (child,) = observed.results("ChildAndText", "extracted", CHILD_SHA)
    assert child["source"]["name"] == SOURCE
    assert [node["sha256"] for node in child["source"]["path"]] == [SAMPLE_SHA, CHILD_SHA]
    assert child["source"]["path"][-1]["relationship"] == {"action": "reversed"}
    assert child["entity"]["size"] == len(CHILD)
    assert {"name": "transform", "type": "string", "value": "reversed"} in child["entity"][
        "features"
    ]
    assert [s["label"] for s in child["entity"]["datastreams"]] == ["content"]
    download = observed.blobs["content", CHILD_SHA]
    assert download.status_code == 200
    assert download.content == CHILD

    (augmented,) = observed.results("ChildAndText", "augmented", SAMPLE_SHA)
    streams = {s["label"]: s["sha256"] for s in augmented["entity"]["datastreams"]}
    assert streams == {"content": SAMPLE_SHA, "text": REPORT_SHA}
    report = observed.blobs["text", REPORT_SHA]
    assert report.status_code == 200
    assert report.content == REPORT


def test_the_extracted_child_is_offered_to_another_plugin(observed: Observed) -> None:
    status = observed.status("FeatureOnly", CHILD_SHA)
    assert status["entity"]["status"] == "completed", observed.explain("FeatureOnly")
    job = status["entity"]["input"]
    assert job["action"] == "extracted"
    assert job["source"]["path"][-1]["author"]["name"] == "ChildAndText"
    (enriched,) = observed.results("FeatureOnly", "enriched", CHILD_SHA)
    assert {"name": "file_length", "type": "integer", "value": str(len(CHILD))} in enriched[
        "entity"
    ]["features"]
    # ...but not to ChildAndText itself, which filters on `sourced` (r-action=sourced).
    assert CHILD_SHA not in final_shas(observed.statuses, "ChildAndText")


def test_opt_out_is_stored_with_its_reason(observed: Observed) -> None:
    entity = observed.status("OptOut")["entity"]
    assert entity["status"] == "opt-out", observed.explain("OptOut")
    assert entity["error"] == "not-for-me"
    assert entity["message"] == "this plugin declines every binary"
    assert not [b for b in observed.binaries if b["author"]["name"] == "OptOut"]


def test_exception_is_stored_with_its_name_and_traceback(observed: Observed) -> None:
    entity = observed.status("Raises")["entity"]
    assert entity["status"] == "error-exception", observed.explain("Raises")
    assert entity["error"] == "SampleRejected"
    assert "Traceback" in entity["message"]
    assert f"cannot handle {SAMPLE_SHA}" in entity["message"]
    assert not [b for b in observed.binaries if b["author"]["name"] == "Raises"]


def test_timeout_is_posted_by_the_runner_after_heartbeats(observed: Observed) -> None:
    entity = observed.status("Sleeps")["entity"]
    assert entity["status"] == "error-timeout", observed.explain("Sleeps")
    assert entity["error"] == "PluginTimeout Error"  # the runner's words, not azuld's reaper
    assert entity["message"] == f"Sleeps timed out on job '{SAMPLE_SHA}'"
    heartbeats = [
        s
        for s in observed.statuses
        if s["author"]["name"] == "Sleeps"
        and s["entity"]["status"] == "heartbeat"
        and s["entity"]["input"]["entity"]["sha256"] == SAMPLE_SHA
    ]
    assert heartbeats, "no heartbeat stored before the timeout" + observed.explain("Sleeps")
    assert all("results" not in s["entity"] for s in heartbeats)
