"""A Go plugin's conversation with the real daemon (tests/fixtures/go-avro: the Go entropy plugin
recorded against the Go dispatcher), on both HTTP servers and both event-log backends.

`test_the_go_entropy_conversation` speaks it as the Go client does, with azuld's own job ids:
the registration as recorded, fetches with exchange 02's exact query, and statuses built from the
recorded ones for the jobs azuld handed out; the log must then hold what the JSON twins of those
posts store. `test_the_recorded_bytes_replayed` sends the recorded request bytes themselves on a
socket and checks each answer as the Go client reads it.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from azuld.core.posts import prepare_post
from azuld.models import avro
from azuld.models.events import BinaryEvent, StatusEvent
from azuld.models.responses import FetchInfo
from tests.daemon import Daemon, start_daemon
from tests.http.conftest import parse_multipart

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "go-avro"
SERVERS = ["azuld", "hypercorn"]
BACKENDS = ["embedded", "kafka"]
# The blobs of the recording's setup (tests/fixtures/go-avro/README.md).
BLOBS = {
    "971e3b62f040d3fe78ab4adc89ad1626878b64cce6af67fd9c8485e0c2882889": random.Random(
        20261207
    ).randbytes(5000),
    "dab9f8c1ad77ddee569047c88d2bbd3be370e4c6e7d3ae8959b86ca3e9bec2f4": b"hello entropy " * 300,
}
GO_OWNED = ("kafka_key", "dequeued", "track_source_references", "track_links", "track_authors")


def recorded(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request_line(n: str) -> tuple[str, str]:
    """(method, target) of recorded exchange `n`."""
    method, target, _ = recorded(f"{n}-request.head.txt").split(b"\r\n")[0].decode().split(" ")
    return method, target


def config(tmp_path: Path, request: pytest.FixtureRequest, backend: str, server: str) -> Path:
    text = f"""
[server]
http_server = "{server}"
[dispatch]
default_deadline_seconds = 1
max_deadline_seconds = 2
"""
    if backend == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        text += f"""
[events]
backend = "kafka"
topic_prefix = "go{secrets.token_hex(4)}"
kafka_bootstrap = "{broker.bootstrap}"
kafka_connect_timeout_seconds = 60
kafka_request_timeout_seconds = 10
"""
    path = tmp_path / "azuld.toml"
    path.write_text(text)
    return path


@asynccontextmanager
async def daemon_with_the_setup(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, server: str
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    """The daemon, ready, holding what the recording's setup posted: the two blobs and the
    two `sourced` events (as JSON, as the setup did)."""
    daemon = await start_daemon(
        tmp_path / "data", extra_args=["--config", str(config(tmp_path, request, backend, server))]
    )
    try:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            with trio.fail_after(60):
                while (await client.get("/readyz")).status_code != 200:
                    await trio.sleep(0.2)
            for sha256, blob in BLOBS.items():
                response = await client.post("/api/v3/stream/demo/content", content=blob)
                assert response.json()["data"]["sha256"] == sha256
            response = await client.post(
                "/api/v2/event?model=binary&sync=true", content=recorded("setup/03-request.bin")
            )
            assert response.json()["total_ok"] == 2
            yield daemon, client
    finally:
        with trio.CancelScope(shield=True):
            await daemon.kill()


def go_view(event: BinaryEvent) -> BinaryEvent:
    """The event without the fields each dispatcher owns (its keys, job ids and tracking)."""
    return msgspec.structs.replace(
        event,
        kafka_key="",
        dequeued="",
        track_source_references="",
        track_links=[],
        track_authors=[],
    )


async def avro_post(client: httpx.AsyncClient, n: str, body: bytes) -> None:
    """POST `body` with recorded exchange `n`'s query and headers."""
    _, target = request_line(n)
    response = await client.post(
        target,
        content=body,
        headers={"Content-Type": "application/avro", "User-Agent": "dpclient-go-Entropy"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"total_ok": 1, "total_failures": 0, "failures": []}


async def avro_fetch(client: httpx.AsyncClient) -> tuple[FetchInfo, list[BinaryEvent]]:
    """GET with exchange 02's exact query, read as the Go client reads the answer."""
    _, target = request_line("02")
    response = await client.get(target, headers={"User-Agent": "dpclient-go-Entropy"})
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.content, response.headers["content-type"])
    assert list(parts) == ["info", "events"]
    events = avro.decode_posted("binary", parts["events"])
    return msgspec.json.decode(parts["info"], type=FetchInfo), events


async def stored(client: httpx.AsyncClient, model: str, query: str = "") -> list[dict[str, Any]]:
    """Every record of `model` in the log, as a new passive JSON reader sees them."""
    response = await client.get(
        f"/api/v2/event/{model}/passive?name=Auditor{secrets.token_hex(3)}&r-historic=true"
        f"&count=100&deadline=1{query}"
    )
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.content, response.headers["content-type"])
    events: list[dict[str, Any]] = msgspec.json.decode(parts["events"])["events"]
    return events


def json_twin_records(model: str, events: list[Any]) -> list[dict[str, Any]]:
    """What a JSON post of `events` stores: `prepare_post` of their JSON (less the keys,
    which may be random)."""
    post = prepare_post(
        model,
        msgspec.json.encode(events),
        prefix="azul",
        max_events=100,
    )
    return [without_key(msgspec.json.decode(record.value)) for record in post.records]


def without_key(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name != "kafka_key"}


def status_for(n: str, job: BinaryEvent) -> StatusEvent:
    """Recorded status `n`, re-aimed at azuld's job: its input is the job as the Go runner
    sends it back (`datastreams: []`, as recorded), results as recorded."""
    (status,) = avro.decode_posted("status", recorded(f"{n}-request.bin"))
    assert isinstance(status, StatusEvent)
    recorded_input = status.entity.input
    assert recorded_input.entity.sha256 == job.entity.sha256
    assert recorded_input.entity.datastreams == []
    job_input = msgspec.structs.replace(
        job, entity=msgspec.structs.replace(job.entity, datastreams=[])
    )
    status.entity.input = job_input
    return status


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("server", SERVERS)
async def test_the_go_entropy_conversation(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, server: str
) -> None:
    async with daemon_with_the_setup(tmp_path, request, backend, server) as (_, client):
        setup = msgspec.json.decode(recorded("setup/03-request.bin"), type=list[BinaryEvent])
        (registration,) = avro.decode_posted("plugin", recorded("01-request.bin"))
        await avro_post(client, "01", recorded("01-request.bin"))

        statuses = []
        for status_n, index in (("04", 0), ("07", 1)):  # after the fetches 02 and 05
            info, jobs = await avro_fetch(client)
            assert info == FetchInfo(filtered=0, fetched=1, ready=True, paused=False)
            (job,) = jobs
            assert go_view(job) == go_view(setup[index])
            assert job.dequeued.startswith("azd2|Entropy-2025.05.16-binary-")
            status = status_for(status_n, job)
            await avro_post(client, status_n, avro.encode_events("status", [status]))
            statuses.append(status)

        # Every job finished: the next long-poll (exchange 08) comes back empty, in Avro.
        info, jobs = await avro_fetch(client)
        assert (info.fetched, jobs) == (0, [])

        # The log holds what the JSON twins of the Avro posts store.
        assert [without_key(r) for r in await stored(client, "plugin")] == json_twin_records(
            "plugin", [registration]
        )
        twin_statuses = json_twin_records("status", statuses)
        status_records = [r for r in twin_statuses if "input" in r.get("entity", {})]
        results = [r for r in twin_statuses if r not in status_records]
        assert [without_key(r) for r in await stored(client, "status")] == status_records
        assert [
            without_key(r) for r in await stored(client, "binary", "&r-action=enriched")
        ] == results
        assert len(results) == 2


# -- the recorded bytes, replayed --------------------------------------------------------------


async def exchange(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One raw request on its own connection: (status, headers, body) of the reply."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
        raw_head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            while len(rest) < int(headers["content-length"]):
                chunk = await stream.receive_some(65536)
                assert chunk
                rest += chunk
        else:
            assert headers.get("transfer-encoding") == "chunked", headers
            while not rest.endswith(b"0\r\n\r\n"):
                rest += await stream.receive_some(65536)
            rest = unchunk(rest)
        return int(status_line.split(" ")[1]), headers, rest


def unchunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if not size:
            return out
        out, data = out + data[:size], data[size + 2 :]


def range_head(sha256: str, size: int) -> bytes:
    """Exchanges 03 and 06 (not kept as bytes): the Go client's ranged download."""
    return (
        f"GET /api/v3/stream/demo/content/{sha256} HTTP/1.1\r\nHost: 127.0.0.1:48102\r\n"
        f"User-Agent: dpclient-go-Entropy\r\nRange: bytes=0-{size - 1}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("server", SERVERS)
async def test_the_recorded_bytes_replayed(
    tmp_path: Path, request: pytest.FixtureRequest, server: str
) -> None:
    async with daemon_with_the_setup(tmp_path, request, "embedded", server) as (daemon, _):
        downloads = iter(BLOBS.items())
        for n in ("01", "02", "03", "04", "05", "06", "07", "08", "09"):
            if n in ("03", "06"):
                sha256, blob = next(downloads)
                status, headers, body = await exchange(daemon.url, range_head(sha256, len(blob)))
                assert (status, body) == (206, blob)
                assert headers["content-range"] == f"bytes 0-{len(blob) - 1}/{len(blob)}"
                continue
            head = recorded(f"{n}-request.head.txt")
            body = recorded(f"{n}-request.bin") if head.startswith(b"POST") else b""
            status, headers, reply = await exchange(daemon.url, head, body)
            assert status == 200, reply
            if head.startswith(b"POST"):
                # The recorded statuses carry Go's job ids: stored, and nothing to finish here.
                assert headers["content-type"].startswith("application/json")
                assert msgspec.json.decode(reply) == {
                    "total_ok": 1,
                    "total_failures": 0,
                    "failures": [],
                }
                continue
            check_fetch_answer(n, headers["content-type"], reply)


def check_fetch_answer(n: str, content_type: str, reply: bytes) -> None:
    """Fetch answer `n` as the Go client reads it: multipart/form-data, parts `info` (JSON) and
    `events` (an Avro BulkBinaryEvent, read to its last byte), framed as Go framed its own."""
    media, _, boundary = content_type.partition("; boundary=")
    assert media == "multipart/form-data"
    assert len(boundary) == 32
    go_reply = recorded(f"{n}-response.bin")
    go_boundary = recorded(f"{n}-response.head.txt").split(b"boundary=")[1].split(b"\r\n")[0]
    go_parts = parse_multipart(go_reply, f"multipart/form-data; boundary={go_boundary.decode()}")
    parts = parse_multipart(reply, content_type)
    assert list(parts) == ["info", "events"]
    # Byte for byte Go's layout around the parts (apart from the boundary).
    framing = reply.replace(parts["info"], b"<info>").replace(parts["events"], b"<events>")
    go_framing = go_reply.replace(go_parts["info"], b"<info>").replace(
        go_parts["events"], b"<events>"
    )
    assert framing.replace(boundary.encode(), b"B") == go_framing.replace(go_boundary, b"B")
    info = msgspec.json.decode(parts["info"], type=FetchInfo)
    served = avro.decode_posted("binary", parts["events"])
    go_served = avro.decode_posted("binary", go_parts["events"])
    if n in ("08", "09"):
        # The two jobs are leased (the replayed statuses named Go's jobs, not azuld's).
        assert parts["events"] == go_parts["events"] == b"\x0c\x00"
        assert info == FetchInfo(filtered=0, fetched=0, ready=True, paused=False)
        return
    assert parts["info"] == go_parts["info"]  # {"filtered":0,"fetched":1,"ready":true,...}
    assert [go_view(event) for event in served] == [go_view(event) for event in go_served]
