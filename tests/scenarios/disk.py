"""A full data folder: under the clients' writes, and under the daemon's own (lease expiry,
commits). Needs a small filesystem (`harness.small_filesystem`); skipped where none can be made.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import trio

from tests.scenarios.harness import (
    bad_blob_files,
    fill,
    harness,
    integrity_check,
    small_filesystem,
    spool_files,
)
from tests.scenarios.outcome import Outcome, fault
from tests.scenarios.profile import (
    CLIENT_TIMEOUT_SECONDS,
    LEASE_SECONDS,
    PATIENCE_SECONDS,
    Profile,
)
from tests.scenarios.wire import (
    answer,
    binary_event,
    decode_fetch,
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


@fault(
    key="disk-full",
    title="Data folder full",
    tried="data dir on a 4 MiB tmpfs filled to the last byte: upload, status, event, download; "
    "then space freed",
    test="test_disk_full",
)
async def full(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """The data folder fills up. Uploads get 507 with a clear message; statuses and events get an
    error (507 or 503) and nothing half-stored; reads go on; after space is freed, everything works
    again and nothing is corrupted."""
    data_dir = workdir / "full"
    async with small_filesystem(data_dir, outcome) as mounted:
        if mounted is None:
            return
        async with harness(workdir) as h:
            d = await h.start(data_dir)
            async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
                kept = secrets.token_bytes(64 * 1024)
                response = await client.post("/api/v3/stream/s6/content", content=kept)
                outcome.check("an upload before the fill works", response.status_code == 200)
                datas = [f"full {i}".encode() for i in range(3)]
                await must_post(client, "binary", [binary_event("s6", x) for x in datas])
                _, jobs = await fetch(client, "Full", sources=("s6",), count=3)
                outcome.check("three jobs leased before the fill", len(jobs) == 3, len(jobs))
                ballast = data_dir / "ballast"
                filled = await trio.to_thread.run_sync(fill, ballast)
                outcome.note(f"filled with {filled} bytes of ballast")

                late = secrets.token_bytes(256 * 1024)
                up = await client.post("/api/v3/stream/s6/content", content=late)
                outcome.check(
                    "an upload on a full disk gets 507", up.status_code == 507, answer(up)
                )
                if up.status_code == 507:
                    body = up.json()
                    outcome.check(
                        "the 507 says the data folder is full",
                        "no space left" in body.get("detail", ""),
                        body,
                    )
                outcome.note(f"upload on a full disk: {answer(up)}")
                status = await post_events(
                    client, "status", [status_event(jobs[0], "Full", "completed", message="full-0")]
                )
                outcome.check(
                    "a status post on a full disk gets 507 or 503",
                    status.status_code in (507, 503),
                    answer(status),
                )
                outcome.note(f"status post on a full disk: {answer(status)}")
                event = await post_events(
                    client, "binary", [binary_event("s6", b"during the fill")]
                )
                outcome.note(f"event post on a full disk: {answer(event)}")
                outcome.check(
                    "an event post on a full disk gets 507 or 503",
                    event.status_code in (507, 503),
                    answer(event),
                )
                download = await client.get(f"/api/v3/stream/s6/content/{sha256(kept)}")
                outcome.check(
                    "downloads still work on a full disk",
                    download.status_code == 200 and download.content == kept,
                    download.status_code,
                )
                ready = await client.get("/readyz")
                outcome.note(f"/readyz on a full disk: {answer(ready)}")
                outcome.served["while_full"] = (
                    f"while full: download {download.status_code}, upload {up.status_code}, "
                    f"status post {status.status_code}, event post {event.status_code}, "
                    f"/readyz {ready.status_code}"
                )
                outcome.check(
                    "no spool file is left by the failed upload", not spool_files(data_dir)
                )

                await trio.Path(ballast).unlink()
                up = await client.post("/api/v3/stream/s6/content", content=late)
                outcome.check(
                    "after freeing space the upload works", up.status_code == 200, answer(up)
                )
                again = await client.get(f"/api/v3/stream/s6/content/{sha256(late)}")
                outcome.check(
                    "and the blob reads back whole", sha256(again.content) == sha256(late)
                )
                for index, job in enumerate(jobs):
                    response = await post_events(
                        client,
                        "status",
                        [status_event(job, "Full", "completed", message=f"full-{index}")],
                    )
                    outcome.check(
                        f"status {index} after freeing space: 200",
                        response.status_code == 200,
                        answer(response),
                    )
                _, offered = await fetch(client, "Full", sources=("s6",), count=3, deadline=0.5)
                outcome.check("no finished job is offered again", offered == [], offered)
                statuses = await read_all(client, "status")
                markers = [s["entity"].get("message") for s in statuses]
                outcome.check(
                    "each job's status is stored once (nothing half-stored from the failed post)",
                    sorted(m for m in markers if m and m.startswith("full-"))
                    == ["full-0", "full-1", "full-2"],
                    markers,
                )
                outcome.lose(
                    len({"full-0", "full-1", "full-2"} - set(markers)),
                    "acknowledged statuses missing",
                )
                binaries = await read_all(client, "binary", [("r-source", "s6")])
                outcome.lose(
                    len({sha256(x) for x in datas} - {b["entity"]["sha256"] for b in binaries}),
                    "acknowledged events missing",
                )
            code = await d.terminate()
            outcome.check("the daemon stops cleanly", code == 0, d.log()[-2000:])
            check = integrity_check(data_dir)
            outcome.check("integrity_check after the disk was full", check == "ok", check)
            count, bad = bad_blob_files(data_dir)
            outcome.check(f"all {count} blob files hash to their names", not bad, bad)
            outcome.check("no stray spool files", not spool_files(data_dir), spool_files(data_dir))


@fault(
    key="disk-full-background",
    title="Data folder full under the daemon's own writes",
    tried="a lease runs out of attempts and a passive read commits while the disk is full",
    test="test_disk_full_background_writes",
)
async def full_under_own_writes(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """While the data folder is full, the daemon's own writes fail too: the `error-timeout` of a
    lease that runs out of attempts, and the commit after a passive read. The daemon must keep
    serving, and once space is back the job must still end (its `error-timeout` stored)."""
    data_dir = workdir / "full"
    data = b"expires while full"
    async with small_filesystem(data_dir, outcome) as mounted:
        if mounted is None:
            return
        async with harness(workdir) as h:
            d = await h.start(data_dir)
            async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
                await must_post(client, "binary", [binary_event("s6b", data)])
                _, jobs = await fetch(client, "Late", sources=("s6b",))
                # The first lease runs out before the fill; the second (last) one while full.
                _, jobs = await fetch(client, "Late", sources=("s6b",), deadline=PATIENCE_SECONDS)
                outcome.check("the job is on its last attempt", len(jobs) == 1, jobs)
                await trio.to_thread.run_sync(fill, data_dir / "ballast")
                passive = await client.get(
                    "/api/v2/event/status/passive?name=Reader&version=1&r-historic=true&deadline=0.2"
                )
                info = decode_fetch(passive)[0] if passive.status_code == 200 else passive.text
                outcome.note(f"passive fetch on a full disk: {passive.status_code}, info {info}")
                await trio.sleep(LEASE_SECONDS + 1.5)
                alive = d.process.returncode is None
                outcome.check(
                    "the daemon is still running after its own writes failed on a full disk",
                    alive,
                    f"exited with {d.process.returncode}: {d.log()[-1500:]}",
                )
                if not alive:
                    outcome.lose(1, "jobs without an ending (the daemon died)")
                else:
                    health = await client.get("/healthz")
                    outcome.check("and answers", health.status_code == 200, answer(health))
                    await trio.Path(data_dir / "ballast").unlink()
                    found = await wait_for_final(client, sha256(data), "Late", PATIENCE_SECONDS)
                    keys = [v for k, v in (await plugin_keys(client)).items() if "Late" in k]
                    outcome.check(
                        "once space is back, the job still ends: its error-timeout is stored",
                        [s["entity"]["status"] for s in found] == ["error-timeout"],
                        found
                        or f"nothing stored {PATIENCE_SECONDS:g} s after space came back; "
                        f"the key: {keys}",
                    )
                    _, again = await fetch(client, "Late", sources=("s6b",), deadline=0.5)
                    if not found:
                        outcome.note(
                            "with space back and the daemon running, the job was neither ended "
                            f"nor offered again (fetch gave {len(again)} jobs)"
                        )
            if d.process.returncode is None:
                outcome.check("the daemon stops cleanly", await d.terminate() == 0)
            check = integrity_check(data_dir)
            outcome.check("integrity_check", check == "ok", check)
            # What a restart makes of it: the job is ended, or offered again (not lost).
            d = await h.start(data_dir)
            async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
                statuses = await read_all(client, "status")
                ended = final_statuses(statuses, sha256(data), "Late")
                _, again = await fetch(client, "Late", sources=("s6b",), deadline=0.5)
                if not any(s["entity"]["status"] == "error-timeout" for s in ended):
                    outcome.note(
                        f"after a restart: {len(again)} offer(s) of the job "
                        f"({[j['dequeued'] for j in again]})"
                    )
                outcome.lose(0 if ended or again else 1, "jobs neither ended nor offered again")
            await d.kill()
