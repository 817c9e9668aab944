"""Statuses a plugin should not send: duplicates, foreign job ids, a forged id for the future."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.scenarios.good import good_client, served
from tests.scenarios.harness import harness, integrity_check, read_commits
from tests.scenarios.outcome import Outcome, fault
from tests.scenarios.profile import CLIENT_TIMEOUT_SECONDS, PATIENCE_SECONDS, Profile
from tests.scenarios.wire import (
    binary_event,
    fetch,
    must_post,
    plugin_keys,
    post_events,
    read_all,
    sha256,
    status_event,
    take_all,
)

# A well-formed azuld job id whose signature azuld did not make (job ids are signed).
MADE_UP_ID = (
    "azd2|Other-1-binary-allsrc-alltype-L|live|azul.local.x.binary.sourced|0|5|0|"
    "0123456789abcdef01234567"
)


@fault(
    key="bogus-statuses",
    title="Duplicate and foreign statuses",
    tried="`completed` posted twice; statuses with a made-up azuld id, a real job's id signed by "
    "another plugin, and a Go-style (UUID) id",
    test="test_duplicate_and_foreign_statuses",
)
async def bogus_statuses(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """A status posted twice (200, stored once); a made-up azuld id and a real job's id signed by
    another plugin (425 with the reason, not stored: job ids are signed and a job is reported by
    its plugin); a
    Go-style id (200, stored, finishes nothing). No job finishes twice; the real key's next
    fetches and its commits are as if nothing happened."""
    data_dir = workdir / "data"
    async with harness(workdir) as h:
        d = await h.start()
        async with (
            httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client,
            good_client(d.url) as good,
        ):
            blobs = [f"bogus {i}".encode() for i in range(3)]
            await must_post(client, "binary", [binary_event("s4", b) for b in blobs])
            sources = ("s4",)
            _, jobs = await fetch(client, "Dup", sources=sources)
            if not outcome.check("the plugin took a job", len(jobs) == 1, jobs):
                return
            job = jobs[0]
            posts = {
                "completed (first)": (
                    status_event(job, "Dup", "completed", message="dup-1"),
                    200,
                ),
                "completed (again)": (
                    status_event(job, "Dup", "completed", message="dup-2"),
                    200,
                ),
                # Refused as Go refuses a post with no valid event: 425, the reason in its detail.
                "made-up azuld id": (
                    status_event(job, "Dup", "completed", message="made-up", dequeued=MADE_UP_ID),
                    425,
                ),
                "another plugin's status": (
                    status_event(job, "Mallory", "completed", message="mallory"),
                    425,
                ),
                "Go-style id": (
                    status_event(
                        job, "Dup", "completed", message="go-style", dequeued=str(uuid.uuid4())
                    ),
                    200,
                ),
            }
            for what, (event, code) in posts.items():
                response = await post_events(client, "status", [event])
                outcome.check(
                    f"status {what}: {code}", response.status_code == code, response.text[:300]
                )
            rest = await take_all(client, "Dup", sources=sources, count=5, deadline=1)
            outcome.check(
                "the next fetches get exactly the two other jobs (each then completed-empty)",
                sorted(j["entity"]["sha256"] for j in rest) == sorted(sha256(b) for b in blobs[1:]),
                [j["dequeued"] for j in rest],
            )
            keys = await plugin_keys(client)
            dup = next((k for k in keys.values() if k["name"] == "Dup"), {})
            outcome.check(
                "three jobs ended, none twice (completed-empty counts as completed)",
                dup.get("finished") == {"completed": 3},
                dup,
            )
            outcome.check(
                "the real key has nothing left and nothing in flight",
                dup.get("in_flight") == 0 and sum(dup.get("lag", {}).values()) == 0,
                dup,
            )
            outcome.check(
                "no plugin key was made up from the foreign id",
                not any(k.startswith("Other-") for k in keys),
                list(keys),
            )
            await good.halt()  # before reading: every acknowledged status is then in the read
            statuses = await read_all(client, "status")
            markers = [s["entity"].get("message", "") for s in statuses]
            for marker in ("dup-1", "go-style"):
                outcome.check(f"status {marker!r} is stored", marker in markers, markers)
            # The job's final status is stored once: the second is answered, not stored; the
            # refused ones are not stored either.
            for marker in ("dup-2", "made-up", "mallory"):
                outcome.check(f"status {marker!r} is not stored", marker not in markers, markers)
            outcome.lose(
                sum(1 for m in ("dup-1", "go-style") if m not in markers),
                "acknowledged statuses missing",
            )
            await good.audit(client, outcome, statuses=statuses)
            served(outcome, good)
        outcome.check("the daemon stops cleanly", await d.terminate() == 0, d.log()[-2000:])
    commits = read_commits(data_dir)
    dup_commits = [c for c in commits if "-Dup-" in c[0]]
    outcome.check(
        "the real key's commits sit at the end of s4 with nothing finished above them",
        dup_commits
        and all(offset == 3 and "done=" not in meta for _, _, _, offset, meta in dup_commits),
        dup_commits,
    )
    outcome.check(
        "no commits for the made-up key",
        not any("Other-" in c[0] for c in commits),
        [c for c in commits if "Other-" in c[0]],
    )
    outcome.check("integrity_check", integrity_check(data_dir) == "ok", integrity_check(data_dir))


@fault(
    key="forged-future-status",
    title="Forged status for a future offset",
    tried="a well-formed azuld id (signed by no azuld) for a real key at an offset not yet "
    "written; then an event is published at that offset",
    test="test_forged_status_for_a_future_offset",
)
async def forged_future_status(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """A status with a well-formed azuld id for a real plugin key, at an offset that has not been
    written yet (no plugin can hold it): refused (425 with the reason), as its signature is not
    azuld's. The next
    event published at that offset must still reach the key."""
    async with harness(workdir) as h:
        d = await h.start()
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            first = b"forged 0"
            await must_post(client, "binary", [binary_event("s4f", first)])
            sources = ("s4f",)
            _, jobs = await fetch(client, "Victim", sources=sources, lanes=("live",))
            # The key was created by this fetch: live starts at the end, so offset 0 is not its.
            outcome.check("nothing for a new live-only key yet", jobs == [], jobs)
            key = next(k for k in await plugin_keys(client) if k.startswith("Victim-"))
            template = binary_event("s4f", first)
            forged = f"azd2|{key}|live|azul.local.s4f.binary.sourced|0|1|0|{'ab' * 12}"
            response = await post_events(
                client, "status", [status_event(template, "Victim", "completed", dequeued=forged)]
            )
            outcome.check(
                "the forged status is refused (425) and says why",
                response.status_code == 425 and "not one azuld handed out" in response.text,
                f"{response.status_code} {response.text[:300]}",
            )
            outcome.note(f"forged id {forged!r} answered {response.status_code}")
            later = b"forged 1 (published after the forged status)"
            await must_post(client, "binary", [binary_event("s4f", later)])
            _, jobs = await fetch(
                client, "Victim", sources=sources, lanes=("live",), deadline=PATIENCE_SECONDS
            )
            delivered = [j["entity"]["sha256"] for j in jobs]
            outcome.check(
                "the event published after the forged status is still delivered",
                delivered == [sha256(later)],
                f"fetch gave {delivered}; the event at offset 1 was skipped as already finished",
            )
            outcome.lose(
                0 if delivered == [sha256(later)] else 1, "events never offered to the key"
            )
