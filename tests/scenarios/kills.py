"""SIGKILL of the daemon in the middle of uploads, fetches and status posts; then a restart.

What was acknowledged before the kill must be there after the restart, what was not finished must
be offered again, and the data folder must be whole (SQLite `integrity_check`, every blob file
hashing to its name, no stray spool files once the daemon has started again).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.daemon import Daemon
from tests.scenarios.good import good_client, served
from tests.scenarios.harness import (
    bad_blob_files,
    blob_paths,
    harness,
    integrity_check,
    open_fds,
    spool_files,
)
from tests.scenarios.outcome import Outcome, Unexpected, fault
from tests.scenarios.profile import CLIENT_TIMEOUT_SECONDS, PATIENCE_SECONDS, Profile
from tests.scenarios.raw import host_port, read_response, request_head
from tests.scenarios.wire import (
    binary_event,
    fetch,
    must_post,
    pooled,
    post_events,
    read_all,
    sha256,
    status_event,
    take_all,
)


async def after_kill(outcome: Outcome, data_dir: Path, *, expect_spool: bool = False) -> None:
    """Checks on the folder of a daemon that was just SIGKILLed, before anything restarts."""
    check = integrity_check(data_dir)
    outcome.check("integrity_check right after the SIGKILL", check == "ok", check)
    strays = spool_files(data_dir)
    if expect_spool:
        outcome.check(
            "the kill left the half upload's spool file behind (the fault was real)",
            strays,
            "no spool file: the upload was not in progress at the kill",
        )
        outcome.note(f"stray spool files left by the kill (removed at the restart): {len(strays)}")


def spooling(data_dir: Path, at_least_bytes: int) -> bool:
    """Whether a spool file of `at_least_bytes` or more is being written."""
    for path in spool_files(data_dir):
        try:
            if path.stat().st_size >= at_least_bytes:
                return True
        except FileNotFoundError:  # finished (renamed into place) meanwhile
            pass
    return False


async def after_restart(outcome: Outcome, data_dir: Path) -> None:
    strays = spool_files(data_dir)
    outcome.check("no stray spool files after the restart", not strays, strays)
    count, bad = bad_blob_files(data_dir)
    outcome.check(f"all {count} blob files hash to their names", not bad, bad)


async def final_checks(outcome: Outcome, daemon: Daemon, data_dir: Path) -> None:
    code = await daemon.terminate()
    outcome.check("the restarted daemon stops cleanly", code == 0, daemon.log()[-2000:])
    check = integrity_check(data_dir)
    outcome.check("integrity_check after the restarted daemon exited", check == "ok", check)


@fault(
    key="kill-during-uploads",
    title="SIGKILL during uploads",
    tried="SIGKILL half-way through an upload of {killed_upload_mib} MiB (raw socket, streamed "
    "over {killed_upload_seconds:g} s) while 3 clients upload 32 KiB blobs",
    test="test_sigkill_during_uploads",
)
async def during_uploads(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """SIGKILL while a large upload is half-way (streamed slowly on a raw socket) and small uploads
    keep arriving. Every acknowledged blob survives; the half upload is nowhere (404), every blob
    file hashes to its name, the stray spool file is cleaned at start-up."""
    data_dir = workdir / "data"
    total = profile.killed_upload_mib * 1024 * 1024
    big = secrets.token_bytes(total)
    big_sha = sha256(big)
    acked: dict[str, str] = {}  # sha256 → "source/label"
    half_sent = trio.Event()
    killed = trio.Event()
    sent = 0
    async with harness(workdir) as h:
        d = await h.start()

        async def slow_big_upload() -> None:
            nonlocal sent
            host, port = host_port(d.url)
            head = request_head(
                "POST",
                "/api/v3/stream/s5/content",
                d.url,
                {"Content-Length": str(total), "Connection": "close"},
            )
            chunk = 256 * 1024
            pause = profile.killed_upload_seconds / (total / chunk)
            async with await trio.open_tcp_stream(host, port) as stream:
                try:
                    await stream.send_all(head)
                    for offset in range(0, total, chunk):
                        await stream.send_all(big[offset : offset + chunk])
                        sent = offset + chunk
                        if sent >= total // 2 and not half_sent.is_set():
                            half_sent.set()
                            await killed.wait()  # the rest goes to a dead daemon
                        await trio.sleep(pause)
                    status, body = await read_response(stream)
                    outcome.note(
                        f"the big upload finished before the kill: {status} {body[:200]!r}"
                    )
                except (trio.BrokenResourceError, trio.ClosedResourceError, Unexpected):
                    pass  # the daemon died under it, as intended

        async def small_uploads(c: httpx.AsyncClient, index: int) -> None:
            while True:
                data = secrets.token_bytes(32 * 1024)
                try:
                    response = await c.post(f"/api/v3/stream/s5/content{index}", content=data)
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    acked[sha256(data)] = f"s5/content{index}"

        async with (
            pooled(d.url, 8) as client,
            trio.open_nursery() as nursery,
        ):
            # Accepted before anything goes wrong.
            for i in range(5):
                data = f"accepted before the kill {i}".encode() * 100
                response = await client.post("/api/v3/stream/s5/content", content=data)
                if response.status_code == 200:
                    acked[sha256(data)] = "s5/content"
            async with good_client(d.url) as good:
                nursery.start_soon(slow_big_upload)
                for i in range(3):
                    nursery.start_soon(small_uploads, client, i)
                await half_sent.wait()
                # The fault must be real: the daemon is spooling the big upload.
                with trio.move_on_after(PATIENCE_SECONDS):
                    while not spooling(data_dir, 1024 * 1024):
                        await trio.sleep(0.05)
                await good.halt()
                await d.kill()
                killed.set()
            # The uploaders end on their own: their next request fails.
        outcome.note(
            f"killed with {sent / total:.0%} of the {profile.killed_upload_mib} MiB upload sent"
        )
        await after_kill(outcome, data_dir, expect_spool=True)

        d = await h.start(data_dir)
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            await after_restart(outcome, data_dir)
            for method in ("GET", "HEAD"):
                response = await client.request(method, f"/api/v3/stream/s5/content/{big_sha}")
                outcome.check(
                    f"{method} of the killed upload's sha256 is 404",
                    response.status_code == 404,
                    response.status_code,
                )
            outcome.check(
                "the killed upload is nowhere under blobs/",
                not blob_paths(data_dir, big_sha),
                blob_paths(data_dir, big_sha),
            )
            missing = 0
            for digest, where in acked.items():
                response = await client.get(f"/api/v3/stream/{where}/{digest}")
                if response.status_code != 200 or sha256(response.content) != digest:
                    missing += 1
            outcome.lose(missing, "acknowledged uploads missing or corrupt")
            await good.audit(client, outcome)
            again = await client.post("/api/v3/stream/s5/content", content=big)
            outcome.check(
                "the same upload succeeds after the restart",
                again.status_code == 200 and again.json()["data"]["sha256"] == big_sha,
                again.text[:300],
            )
        await final_checks(outcome, d, data_dir)
        served(outcome, good, acknowledged_uploads=len(acked))


@fault(
    key="kill-during-fetches",
    title="SIGKILL during fetches",
    tried="SIGKILL with {waiting_polls} long-polls waiting, 5 jobs leased and 5 finished of 20",
    test="test_sigkill_during_fetches",
)
async def during_fetches(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """SIGKILL while long-polls wait and jobs are leased. After the restart exactly the unfinished
    jobs are offered again (none that were finished) and every acknowledged event is there."""
    data_dir = workdir / "data"
    count = 20
    datas = [f"fetched before the kill {i}".encode() for i in range(count)]
    shas = [sha256(x) for x in datas]
    aborted = 0
    answered = 0
    async with harness(workdir, {"dispatch": {"max_polls_per_key": 1000}}) as h:
        d = await h.start()
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            await must_post(client, "binary", [binary_event("s5b", x) for x in datas])
            _, jobs = await fetch(client, "Worker", sources=("s5b",), count=10)
            outcome.check("ten jobs leased before the kill", len(jobs) == 10, len(jobs))
            finished = {j["entity"]["sha256"] for j in jobs[:5]}
            for job in jobs[:5]:
                await must_post(client, "status", [status_event(job, "Worker", "completed-empty")])

            async def waiter(c: httpx.AsyncClient, index: int) -> None:
                nonlocal aborted, answered
                try:
                    if index % 3 == 2:
                        await fetch(
                            c,
                            "Watcher",
                            model="status",
                            mode="passive",
                            version="1",
                            sources=("empty",),
                            lanes=("live",),
                            deadline=30,
                        )
                    else:
                        await fetch(c, f"Waiter{index % 5}", sources=("empty",), deadline=30)
                    answered += 1
                except (httpx.HTTPError, Unexpected):
                    aborted += 1

            fds_before = open_fds(d.process.pid)
            async with (
                pooled(d.url, profile.waiting_polls) as waiters,
                trio.open_nursery() as nursery,
                good_client(d.url) as good,
            ):
                for i in range(profile.waiting_polls):
                    nursery.start_soon(waiter, waiters, i)
                # The fault must be real: the long-polls are connected (a socket each).
                with trio.move_on_after(PATIENCE_SECONDS):
                    while open_fds(d.process.pid) < fds_before + profile.waiting_polls:
                        await trio.sleep(0.05)
                await trio.sleep(0.5)  # and waiting
                await good.halt()
                await d.kill()
        outcome.check(
            "the waiting long-polls were cut off by the kill, not answered",
            aborted == profile.waiting_polls and answered == 0,
            f"{aborted} aborted, {answered} answered",
        )
        await after_kill(outcome, data_dir)

        d = await h.start(data_dir)
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            await after_restart(outcome, data_dir)
            again = await take_all(client, "Worker", sources=("s5b",), count=64, deadline=0.5)
            offered = [j["entity"]["sha256"] for j in again]
            outcome.check(
                "no finished job is offered again",
                not finished & set(offered),
                sorted(finished & set(offered)),
            )
            outcome.check(
                "every unfinished job is offered again, once",
                sorted(offered) == sorted(set(shas) - finished),
                f"{len(offered)} offered, {len(set(shas) - finished)} expected",
            )
            outcome.lose(
                len(set(shas) - finished - set(offered)), "unfinished jobs never offered again"
            )
            binaries = await read_all(client, "binary", [("r-source", "s5b")])
            outcome.lose(
                len(set(shas) - {b["entity"]["sha256"] for b in binaries}), "events missing"
            )
            await good.audit(client, outcome)
        await final_checks(outcome, d, data_dir)
        served(outcome, good, waiting_polls_cut=aborted)


@fault(
    key="kill-during-status-posts",
    title="SIGKILL during status posts",
    tried="SIGKILL half-way through {burst_statuses} `completed` posts (each with a child) from "
    "16 clients",
    test="test_sigkill_during_status_posts",
)
async def during_status_posts(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """SIGKILL in the middle of a burst of `completed` statuses (each with an extracted child).
    Every acknowledged status and its child are stored, no acknowledged job is offered again, and
    every job either has a stored status or is offered again."""
    data_dir = workdir / "data"
    n = profile.burst_statuses
    datas = [f"status burst {i}".encode() for i in range(n)]
    shas = {sha256(x) for x in datas}
    acked: set[str] = set()  # job sha256s whose status got a 200
    half = trio.Event()
    async with harness(workdir) as h:
        d = await h.start()
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            await must_post(client, "binary", [binary_event("s5c", x) for x in datas])
            jobs: list[dict[str, Any]] = []
            while len(jobs) < n:
                _, got = await fetch(
                    client, "Worker", sources=("s5c",), actions=("sourced",), count=64, deadline=1
                )
                if not got:
                    break
                jobs += got
            outcome.check(f"all {n} jobs leased", len(jobs) == n, len(jobs))
            queue = list(jobs)

            async def poster(c: httpx.AsyncClient) -> None:
                while queue:
                    job = queue.pop()
                    child_data = b"child of " + job["entity"]["sha256"].encode()
                    child = binary_event(
                        "s5c", child_data, action="extracted", parent=job, author="Worker"
                    )
                    event = status_event(job, "Worker", "completed", results=[child])
                    try:
                        response = await post_events(c, "status", [event])
                    except httpx.HTTPError:
                        return
                    if response.status_code == 200:
                        acked.add(job["entity"]["sha256"])
                        if len(acked) >= n // 2:
                            half.set()

            async with (
                pooled(d.url, 16) as posters,
                trio.open_nursery() as nursery,
                good_client(d.url) as good,
            ):
                await trio.sleep(profile.baseline_seconds)  # the good client, alone, first
                for _ in range(16):
                    nursery.start_soon(poster, posters)
                await half.wait()
                await d.kill()
                # The posters end on their own: their next request fails.
        outcome.note(f"killed with {len(acked)} of {n} statuses acknowledged")
        await after_kill(outcome, data_dir)

        d = await h.start(data_dir)
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            await after_restart(outcome, data_dir)
            statuses = await read_all(client, "status")
            stored = {
                s["entity"]["input"]["entity"]["sha256"]
                for s in statuses
                if s["author"]["name"] == "Worker" and s["entity"]["status"] == "completed"
            }
            outcome.lose(len(acked - stored), "acknowledged statuses missing")
            binaries = await read_all(client, "binary", [("r-source", "s5c")])
            children = {b["entity"]["sha256"] for b in binaries if b["action"] == "extracted"}
            wanted = {sha256(b"child of " + s.encode()) for s in acked}
            outcome.lose(len(wanted - children), "results of acknowledged statuses missing")
            again = await take_all(
                client, "Worker", sources=("s5c",), actions=("sourced",), count=64, deadline=0.5
            )
            offered = {j["entity"]["sha256"] for j in again}
            outcome.check(
                "no acknowledged job is offered again",
                not acked & offered,
                f"{len(acked & offered)} acknowledged jobs offered again",
            )
            outcome.lose(len(shas - stored - offered), "jobs neither stored nor offered again")
            both = len((stored - acked) & offered)
            outcome.note(
                f"{len(acked)} acknowledged, {len(stored - acked)} stored without an answer, "
                f"{len(offered)} offered again ({both} of them stored without an answer: "
                "at-least-once)"
            )
            await good.audit(client, outcome, statuses=statuses)
        await final_checks(outcome, d, data_dir)
        served(outcome, good, statuses_acknowledged=len(acked))
