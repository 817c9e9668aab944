"""Slow and abusive clients on raw sockets: bodies at 1 byte/s, a long-poll flood on one key,
clients that never hang up, downloads nobody reads. Each runs beside the good client
(`good.abuse_window`), which must be served before, during and after the abuse.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import trio

from tests.scenarios.good import abuse_window
from tests.scenarios.harness import harness, open_fds, rss_mib
from tests.scenarios.outcome import Outcome, Unexpected, fault, percentile
from tests.scenarios.profile import (
    CLIENT_TIMEOUT_SECONDS,
    MAX_POLLS_PER_KEY,
    PATIENCE_SECONDS,
    Profile,
)
from tests.scenarios.raw import host_port, read_response, request_head
from tests.scenarios.wire import answer, job_query, sha256


@fault(
    key="slow-upload",
    title="Upload body at 1 byte/s",
    tried="{slow_uploaders} raw connections each sending a {abuse_seconds:.0f}-byte upload body "
    "one byte a second",
    test="test_slow_upload_body",
)
async def slow_uploads(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """Connections that send their upload body one byte a second: each is accepted in the end."""
    async with harness(workdir) as h:
        d = await h.start()
        length = max(1, int(profile.abuse_seconds))
        results: list[tuple[int, bytes, bytes]] = []

        async def one(index: int) -> None:
            payload = f"{index:0{length}d}".encode()[-length:]
            host, port = host_port(d.url)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    request_head(
                        "POST",
                        "/api/v3/stream/s7/content",
                        d.url,
                        {"Content-Length": str(length), "Connection": "close"},
                    )
                )
                for byte in payload:
                    await trio.sleep(1.0)
                    await stream.send_all(bytes([byte]))
                status, body = await read_response(stream)
            results.append((status, payload, body))

        async def abuser() -> None:
            async with trio.open_nursery() as nursery:
                for i in range(profile.slow_uploaders):
                    nursery.start_soon(one, i)

        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            good = await abuse_window(outcome, d, profile, abuser)
            ok = [r for r in results if r[0] == 200 and sha256(r[1]).encode() in r[2]]
            outcome.check(
                "every slow upload is accepted in the end",
                len(ok) == profile.slow_uploaders,
                f"{len(ok)} of {profile.slow_uploaders}: "
                f"{[(r[0], r[2][:200]) for r in results][:3]}",
            )
            missing = 0
            for _, payload, _ in ok:
                response = await client.get(f"/api/v3/stream/s7/content/{sha256(payload)}")
                missing += response.status_code != 200
            outcome.lose(missing, "acknowledged slow uploads missing")
            await good.audit(client, outcome)
        outcome.served["abuse"] = f"{profile.slow_uploaders} uploads at 1 byte/s for {length} s"


# The flood's long-polls ask for azuld's longest deadline (`server.max_deadline_seconds`): the
# ones admitted must still be waiting when the counting is done, however slow the machine.
FLOOD_DEADLINE_SECONDS = 60
FLOOD_BATCH = 100


@fault(
    key="long-poll-flood",
    title="Long-poll flood on one key",
    tried="{long_polls} concurrent raw-socket long-polls (deadline 60 s) for one plugin key, "
    "max_polls_per_key = {max_polls_per_key}",
    test="test_long_poll_flood",
)
async def long_poll_flood(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """Many concurrent long-polls for one plugin key (raw sockets, nothing to deliver). Once every
    refused one has its answer, exactly `max_polls_per_key` are still waiting and all the others
    got 429; when the waiting clients hang up, their slots are free again."""
    async with harness(workdir) as h:
        d = await h.start()
        codes: list[int] = []
        bodies: dict[int, bytes] = {}
        failures: list[str] = []
        connect: list[float] = []
        answered: list[float] = []
        counts: dict[str, int] = {}
        target = "/api/v2/event/binary/active?" + job_query(
            "Flood", sources=("s7",), lanes=("live",), deadline=FLOOD_DEADLINE_SECONDS
        )

        async def one(begun: float) -> None:
            host, port = host_port(d.url)
            try:
                stream = await trio.open_tcp_stream(host, port)
                connect.append(time.perf_counter() - begun)
                async with stream:
                    await stream.send_all(request_head("GET", target, d.url))
                    status, body = await read_response(stream)
                    codes.append(status)
                    bodies.setdefault(status, body)
                    answered.append(time.perf_counter() - begun)
                    await trio.sleep_forever()  # hold the connection until the abuse ends
            except (OSError, trio.BrokenResourceError, Unexpected) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        async def abuser() -> None:
            refused = profile.long_polls - MAX_POLLS_PER_KEY
            async with trio.open_nursery() as nursery:
                begun = time.perf_counter()
                # In batches, each once the last has connected: all are waiting at once all the
                # same, and the listen backlog never overflows (dropped SYNs retry after 1-15 s).
                with trio.move_on_after(max(PATIENCE_SECONDS, profile.long_polls / 50)):
                    for index in range(profile.long_polls):
                        if index and index % FLOOD_BATCH == 0:
                            while len(connect) + len(failures) < index:
                                await trio.sleep(0.01)
                        nursery.start_soon(one, begun)
                    while len(codes) + len(failures) < refused:
                        await trio.sleep(0.05)
                await trio.sleep(0.5)  # any more answers would be a broken limit
                counts["connected"] = len(connect)
                counts["waiting"] = len(connect) - len(codes) - len(failures)
                counts["answered"] = len(codes)
                # The waiting clients hang up: the daemon must notice and free their slots.
                nursery.cancel_scope.cancel()

        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            good = await abuse_window(outcome, d, profile, abuser)
            waited = counts["waiting"]
            refused = codes.count(429)
            outcome.check(
                f"exactly max_polls_per_key={MAX_POLLS_PER_KEY} long-polls were left waiting",
                waited == MAX_POLLS_PER_KEY,
                f"{waited} connected and waiting; {counts['connected']} of {profile.long_polls} "
                "connected",
            )
            outcome.check(
                "every other long-poll got 429 (none answered 200 early, none failed)",
                refused == profile.long_polls - MAX_POLLS_PER_KEY and not failures,
                f"codes {sorted(set(codes))}: {refused} x 429, {codes.count(200)} x 200, "
                f"{len(failures)} failed: {failures[:3]}",
            )
            if 429 in bodies:
                outcome.check(
                    "the 429 names the limit", b"max_polls_per_key" in bodies[429], bodies[429]
                )
                outcome.note(f"429 body: {bodies[429][:300].decode(errors='replace')}")
            hung_up = time.monotonic()
            query = job_query("Flood", sources=("s7",), lanes=("live",), deadline=0.2)
            while True:
                response = await client.get(f"/api/v2/event/binary/active?{query}")
                if response.status_code != 429 or time.monotonic() - hung_up > PATIENCE_SECONDS:
                    break
                await trio.sleep(0.1)
            freed_after = time.monotonic() - hung_up
            outcome.check(
                "once the waiting clients hung up, a new long-poll for the key is admitted",
                response.status_code == 200,
                f"{answer(response)} (still, {freed_after:.1f} s after they hung up)",
            )
            outcome.served["abuse"] = (
                f"{profile.long_polls} long-polls: {waited} waited, {refused} got 429 by "
                f"{max(answered, default=0):.1f} s; connect p50 "
                f"{percentile(connect, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(connect, 0.99) * 1000:.0f} ms; slots free again after "
                f"{freed_after:.1f} s"
            )
            await good.audit(client, outcome)


@fault(
    key="abandoned-connections",
    title="Clients that never hang up",
    tried="{abandoned_connections} raw connections send `Connection: close`, read the answer and "
    "keep the socket open for {abuse_seconds:g} s",
    test="test_abandoned_connections_are_closed",
)
async def abandoned_connections(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """Clients that send `Connection: close`, read their answer and never close the socket. The
    daemon must close its end (HTTP/1.1 8.6), so such sockets cannot pile up to the fd limit."""
    async with harness(workdir) as h:
        d = await h.start()
        n = profile.abandoned_connections
        closed: list[float] = []  # seconds from each answer to the daemon's EOF
        answered = 0
        settled = 0
        all_settled = trio.Event()
        release = trio.Event()
        fds: dict[str, int] = {}

        async def one() -> None:
            nonlocal answered, settled
            host, port = host_port(d.url)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    request_head("GET", "/healthz", d.url, {"Connection": "close"})
                )
                status, _ = await read_response(stream)
                answered += status == 200
                begun = time.perf_counter()
                with trio.move_on_after(PATIENCE_SECONDS):
                    while await stream.receive_some(65536):
                        pass
                    closed.append(time.perf_counter() - begun)
                settled += 1
                if settled == n:
                    all_settled.set()
                await release.wait()  # our end stays open until the abuse ends

        async def abuser() -> None:
            fds["before"] = open_fds(d.process.pid)
            ends = trio.current_time() + profile.abuse_seconds
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(one)
                with trio.move_on_after(2 * PATIENCE_SECONDS):
                    await all_settled.wait()
                # Every client still holds its socket: the daemon must not.
                fds["held"] = open_fds(d.process.pid)
                if not all_settled.is_set():  # some were never answered: counted below
                    nursery.cancel_scope.cancel()
                await trio.sleep_until(ends)
                release.set()

        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            good = await abuse_window(outcome, d, profile, abuser)
            fds["after"] = open_fds(d.process.pid)
            outcome.check(f"all {n} requests answered", answered == n, answered)
            outcome.check(
                "the daemon closed every `Connection: close` connection after answering",
                len(closed) == n,
                f"{len(closed)} of {n} saw EOF within {PATIENCE_SECONDS:g} s; daemon fds {fds}",
            )
            outcome.check(
                "abandoned sockets do not pile up in the daemon",
                fds.get("held", 0) - fds.get("before", 0) < n / 2,
                fds,
            )
            outcome.served["abuse"] = (
                f"{n} clients kept their socket open after a `Connection: close` answer; "
                f"{len(closed)} closed by azuld (p99 {percentile(closed, 0.99) * 1000:.0f} ms "
                f"after the answer); daemon fds {fds}"
            )
            await good.audit(client, outcome)


@fault(
    key="unread-download",
    title="Requests whose response is never read",
    tried="{stuck_readers} raw connections GET a {stuck_blob_mib} MiB blob and never read, for "
    "{abuse_seconds:g} s",
    test="test_unread_downloads",
)
async def unread_downloads(outcome: Outcome, workdir: Path, profile: Profile) -> None:
    """Connections that ask for a big download and never read the response: the daemon does not
    buffer the responses, and the blob still downloads whole."""
    async with harness(workdir) as h:
        d = await h.start()
        big = secrets.token_bytes(profile.stuck_blob_mib * 1024 * 1024)
        big_sha = sha256(big)
        async with httpx.AsyncClient(base_url=d.url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
            response = await client.post("/api/v3/stream/s7/content", content=big)
            outcome.check("the big blob is uploaded", response.status_code == 200, response.text)
            peak = [0.0]

            async def abuser() -> None:
                host, port = host_port(d.url)
                streams = []
                try:
                    for _ in range(profile.stuck_readers):
                        stream = await trio.open_tcp_stream(host, port)
                        streams.append(stream)
                        await stream.send_all(
                            request_head("GET", f"/api/v3/stream/s7/content/{big_sha}", d.url)
                        )
                    end = trio.current_time() + profile.abuse_seconds
                    while trio.current_time() < end:
                        peak[0] = max(peak[0], rss_mib(d.process.pid))
                        await trio.sleep(0.25)
                finally:
                    for stream in streams:
                        await stream.aclose()

            good = await abuse_window(outcome, d, profile, abuser)
            rss = outcome.served["daemon_rss_mib"]
            rss["peak"] = round(peak[0], 1)
            outcome.check(
                "the daemon does not buffer the unread responses in memory",
                peak[0] - rss["before"] < profile.stuck_blob_mib * profile.stuck_readers / 2,
                rss,
            )
            outcome.served["abuse"] = (
                f"{profile.stuck_readers} unread GETs of a {profile.stuck_blob_mib} MiB blob "
                f"for {profile.abuse_seconds:g} s"
            )
            whole = await client.get(f"/api/v3/stream/s7/content/{big_sha}")
            outcome.check("the blob still downloads whole", sha256(whole.content) == big_sha)
            await good.audit(client, outcome)
