"""Plugins that misbehave: one that crashes mid-job, one that hangs, one that heartbeats forever.

Leases are timed against the scenario's own clock: a re-offer must not come before the lease (or
`max_job_seconds`) has run out, counted from before the request that took the job, which is the
earliest the lease can have started. How long after it came is measured, for the report.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.scenarios.good import check_served_meanwhile, good_client, served
from tests.scenarios.harness import harness
from tests.scenarios.outcome import Outcome, fault
from tests.scenarios.profile import (
    CLIENT_TIMEOUT_SECONDS,
    LEASE_SECONDS,
    MAX_JOB_SECONDS,
    PATIENCE_SECONDS,
    Profile,
)
from tests.scenarios.wire import (
    attempt_of,
    binary_event,
    fetch,
    final_statuses,
    must_post,
    plugin_keys,
    post_events,
    read_all,
    sha256,
    status_event,
    wait_for_final,
)

CRASHY_PLUGIN = '''
from pathlib import Path

import trio

from azuld.plugin import Filters, Job, Plugin


class Crashy(Plugin):
    """Takes one job, says it has it, then never answers (the test SIGKILLs it)."""

    name = "Crashy"
    version = "1.0"
    filters = Filters(actions=("sourced",), data_types={"content": ("fault/",)})

    async def execute(self, job: Job) -> None:
        Path(self.config["marker"]).write_text(job.event.dequeued)
        await trio.sleep_forever()
'''


def check_error_timeout(
    outcome: Outcome, found: list[dict[str, Any]], name: str, last_job: dict[str, Any] | None
) -> None:
    """One `error-timeout` among `found`, authored by plugin `name`, naming the last attempt."""
    timeouts = [s for s in found if s["entity"]["status"] == "error-timeout"]
    outcome.check(
        "after the last attempt one error-timeout status is stored",
        len(timeouts) == 1,
        [(s["author"], s["entity"]["status"]) for s in found],
    )
    if not timeouts:
        return
    status = timeouts[0]
    outcome.check(
        "the error-timeout is authored by the plugin",
        status["author"].get("name") == name and status["author"].get("category") == "plugin",
        status["author"],
    )
    if last_job is not None:
        outcome.check(
            "the error-timeout names the last attempt's job id",
            status["entity"]["input"].get("dequeued") == last_job["dequeued"],
            status["entity"]["input"].get("dequeued"),
        )
    outcome.note(f"error-timeout message: {status['entity'].get('message', '')!r}")


@fault(
    key="plugin-crash",
    title="Plugin crashes mid-job",
    tried="an SDK plugin process takes a job and is SIGKILLed; it fetches again and abandons the "
    "second attempt too (lease {lease_seconds:g} s, {max_attempts} attempts)",
    test="test_plugin_crash_mid_job",
)
async def crash(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """A real plugin process (the SDK runner) takes a job and is SIGKILLed mid-job. The job is
    offered again after the lease; after the last attempt azuld stores `error-timeout`."""
    async with (
        harness(workdir) as h,
        httpx.AsyncClient(
            base_url=(d := await h.start()).url, timeout=CLIENT_TIMEOUT_SECONDS
        ) as client,
        good_client(d.url) as good,
    ):
        data = b"a job whose plugin dies"
        await must_post(client, "binary", [binary_event("s1", data, file_format="fault/crash")])
        plugin_file = workdir / "crashy.py"
        plugin_file.write_text(CRASHY_PLUGIN)
        marker = workdir / "crashy.marker"
        log = (workdir / "crashy.log").open("wb")
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "azuld",
                "plugin",
                "run",
                f"{plugin_file}:Crashy",
                "--server",
                d.url,
                "--max-jobs",
                "1",
                "-c",
                f"marker={marker}",
            ],
            stdout=log,
            stderr=log,
            cwd=workdir,
        )
        h.processes.append(process)
        log.close()
        with trio.move_on_after(PATIENCE_SECONDS):
            # Written by the plugin: wait for the whole id, not just the file.
            while not (marker.exists() and marker.read_text().count("|") == 7):
                if process.returncode is not None:
                    break
                await trio.sleep(0.02)
        if not outcome.check(
            "the plugin process took the job", marker.exists(), (workdir / "crashy.log").read_text()
        ):
            return
        leased_at = time.monotonic()
        first_id = marker.read_text()
        process.kill()
        await process.wait()
        outcome.check("first offer is attempt 0", first_id.split("|")[6] == "0", first_id)

        # The plugin "restarts" and long-polls the same key.
        query: dict[str, Any] = {
            "actions": ("sourced",),
            "lanes": ("expedite", "live", "historic"),
            "extra": [("r-streams", "content,fault/")],
        }
        _, jobs = await fetch(client, "Crashy", deadline=PATIENCE_SECONDS, **query)
        reoffered_after = time.monotonic() - leased_at
        outcome.check("the job is offered again after the crash", len(jobs) == 1, jobs)
        if jobs:
            outcome.check(
                "the second offer is the same event, attempt 1",
                jobs[0]["entity"]["sha256"] == sha256(data) and attempt_of(jobs[0]) == 1,
                jobs[0]["dequeued"],
            )
        # Crash again (take it and say nothing): that was the last attempt.
        timeout_status = await wait_for_final(client, sha256(data), "Crashy", PATIENCE_SECONDS)
        check_error_timeout(outcome, timeout_status, "Crashy", jobs[0] if jobs else None)
        _, again = await fetch(client, "Crashy", deadline=0.5, **query)
        outcome.check("no third offer after max_attempts", again == [], again)
        keys = await plugin_keys(client)
        crashy = [k for k in keys.values() if k["name"] == "Crashy"]
        outcome.check("one plugin key for the plugin", len(crashy) == 1, list(keys))
        if crashy:
            outcome.check(
                "the key counts one critical failure and has nothing in flight",
                crashy[0]["finished"] == {"critical-failure": 1} and crashy[0]["in_flight"] == 0,
                crashy[0],
            )
        await good.halt()
        statuses = await read_all(client, "status")
        outcome.lose(
            0 if final_statuses(statuses, sha256(data), "Crashy") else 1, "jobs without an ending"
        )
        await good.audit(client, outcome, statuses=statuses)
        served(outcome, good, reoffered_after_s=round(reoffered_after, 2))


@fault(
    key="plugin-hang",
    title="Plugin hangs without heartbeats",
    tried="a plugin takes a job and goes silent on an open connection; a second worker takes the "
    "re-offer and hangs too; then the first posts `completed` late",
    test="test_plugin_hang_without_heartbeats",
)
async def hang(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """A plugin takes a job over a keep-alive connection and then hangs (the connection stays
    open, nothing more is sent). Same recovery as a crash; other plugin keys are served meanwhile,
    and the hung plugin's late `completed` (after the error-timeout) does not finish it twice."""
    async with (
        harness(workdir) as h,
        httpx.AsyncClient(
            base_url=(d := await h.start()).url, timeout=CLIENT_TIMEOUT_SECONDS
        ) as client,
        good_client(d.url) as good,
    ):
        data = b"a job whose plugin hangs"
        digest = sha256(data)
        await must_post(client, "binary", [binary_event("s2", data)])
        sources = ("s2",)
        # The hung plugin: its own connection, which it keeps open and silent.
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as hung:
            asked_at = time.monotonic()
            _, jobs = await fetch(hung, "Hang", sources=sources)
            leased_at = time.monotonic()
            outcome.check("the hanging plugin took the job", len(jobs) == 1, jobs)
            if not jobs:
                return
            first = jobs[0]
            good.mark()
            # Another key gets the same event meanwhile and finishes it.
            _, peer = await fetch(client, "Peer", sources=sources)
            outcome.check("another plugin key is served the same event", len(peer) == 1, peer)
            if peer:
                await must_post(client, "status", [status_event(peer[0], "Peer", "completed")])
            # A second worker of the hung plugin long-polls: it gets the job after the lease.
            _, second = await fetch(client, "Hang", sources=sources, deadline=PATIENCE_SECONDS)
            reoffered_at = time.monotonic()
            outcome.check("the job is offered again", len(second) == 1, second)
            if second:
                outcome.check(
                    f"offered again as attempt 1, not before lease_seconds={LEASE_SECONDS:g} ran "
                    "out",
                    attempt_of(second[0]) == 1 and reoffered_at - asked_at >= LEASE_SECONDS,
                    f"{second[0]['dequeued']} {reoffered_at - asked_at:.2f} s after it was asked "
                    "for",
                )
            # That worker hangs too: the last attempt expires.
            found = await wait_for_final(client, digest, "Hang", PATIENCE_SECONDS)
            check_error_timeout(outcome, found, "Hang", second[0] if second else None)
            during = good.window()
            # The first worker wakes up and posts its result, late.
            late = await post_events(client, "status", [status_event(first, "Hang", "completed")])
            outcome.check(
                "a late completed status is accepted (200)", late.status_code == 200, late.text
            )
        keys = {k["name"]: k for k in (await plugin_keys(client)).values()}
        outcome.check(
            "the hung key ends once: one critical failure, nothing completed twice",
            keys.get("Hang", {}).get("finished") == {"critical-failure": 1},
            keys.get("Hang"),
        )
        outcome.check(
            "the other key's job ended normally",
            keys.get("Peer", {}).get("finished") == {"completed": 1},
            keys.get("Peer"),
        )
        check_served_meanwhile(outcome, during, "while the plugin hung")
        _, again = await fetch(client, "Hang", sources=sources, deadline=0.5)
        outcome.check("the job is not offered a third time", again == [], again)
        await good.halt()
        statuses = await read_all(client, "status")
        # The job's final status is the error-timeout, stored first: the late one is answered
        # (a plugin must not retry it for ever) but not stored, so nothing ends twice.
        outcome.check(
            "the late status is answered, not stored",
            not any(
                s["entity"]["status"] == "completed"
                and s["author"]["name"] == "Hang"
                and s["entity"]["input"]["dequeued"] == first["dequeued"]
                for s in statuses
            ),
            "stored",
        )
        outcome.lose(0 if final_statuses(statuses, digest, "Hang") else 1, "jobs without an ending")
        await good.audit(client, outcome, statuses=statuses)
        served(
            outcome,
            good,
            while_hung=during,
            reoffered_after_s=round(reoffered_at - leased_at, 2),
        )


HEARTBEAT_EVERY_SECONDS = 0.5


@fault(
    key="heartbeat-forever",
    title="Plugin heartbeats forever",
    tried="heartbeat every 0.5 s, never finish (lease_seconds {lease_seconds:g} s, max_job_seconds "
    "{max_job_seconds:g} s); the re-offer is abandoned",
    test="test_plugin_heartbeating_forever",
)
async def heartbeat_forever(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """A plugin heartbeats every 0.5 s and never finishes: heartbeats keep it past
    `lease_seconds`, but it loses the job at `max_job_seconds` while they go on; the next attempt,
    abandoned, ends in `error-timeout`."""
    async with (
        harness(workdir) as h,
        httpx.AsyncClient(
            base_url=(d := await h.start()).url, timeout=CLIENT_TIMEOUT_SECONDS
        ) as client,
        good_client(d.url) as good,
    ):
        data = b"a job whose plugin never ends"
        digest = sha256(data)
        await must_post(client, "binary", [binary_event("s3", data)])
        sources = ("s3",)
        asked_at = time.monotonic()
        _, jobs = await fetch(client, "Beater", sources=sources)
        leased_at = time.monotonic()
        if not outcome.check("the plugin took the job", len(jobs) == 1, jobs):
            return
        first = jobs[0]
        heartbeat_codes: list[int] = []
        answered_at: list[float] = [leased_at]
        beating = True

        async def beat() -> None:
            body = [status_event(first, "Beater", "heartbeat")]
            while beating:
                await trio.sleep(HEARTBEAT_EVERY_SECONDS)
                heartbeat_codes.append((await post_events(client, "status", body)).status_code)
                answered_at.append(time.monotonic())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat)
            _, second = await fetch(client, "Beater", sources=sources, deadline=PATIENCE_SECONDS)
            reoffered_at = time.monotonic()
            await trio.sleep(1.0)  # heartbeats for the lost attempt go on a little
            beating = False
        outcome.check("the job is taken away and offered again", len(second) == 1, second)
        # Heartbeats went on all along: that it was offered again at all shows the cap.
        outcome.check(
            f"heartbeats kept it past lease_seconds={LEASE_SECONDS:g}, up to "
            f"max_job_seconds={MAX_JOB_SECONDS:g}",
            reoffered_at - asked_at >= MAX_JOB_SECONDS,
            f"offered again {reoffered_at - asked_at:.2f} s after it was asked for",
        )
        outcome.check(
            "every heartbeat was answered 200",
            heartbeat_codes and set(heartbeat_codes) == {200},
            heartbeat_codes,
        )
        if second:
            outcome.check("the new offer is attempt 1", attempt_of(second[0]) == 1, second[0])
        # The second attempt is abandoned: it was the last one.
        found = await wait_for_final(client, digest, "Beater", PATIENCE_SECONDS)
        check_error_timeout(outcome, found, "Beater", second[0] if second else None)
        timeouts = [s for s in found if s["entity"]["status"] == "error-timeout"]
        keys = {k["name"]: k for k in (await plugin_keys(client)).values()}
        outcome.check(
            "the key counts exactly one ending",
            keys.get("Beater", {}).get("finished") == {"critical-failure": 1},
            keys.get("Beater"),
        )
        await good.halt()
        outcome.lose(0 if timeouts else 1, "jobs without an ending")
        await good.audit(client, outcome)
        gaps = [b - a for a, b in itertools.pairwise(answered_at)]
        served(
            outcome,
            good,
            heartbeats=len(heartbeat_codes),
            lost_after_s=round(reoffered_at - leased_at, 2),
            longest_heartbeat_gap_s=round(max(gaps, default=0.0), 2),
        )
