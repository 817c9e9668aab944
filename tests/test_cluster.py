"""Several azuld processes on one Kafka (and S3): each event processed once per plugin key
across instances, a status posted to either instance, an instance killed with SIGKILL, a broker
restart and an S3 outage. All against real services started by the suite."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.daemon import Daemon, start_daemon
from tests.http.conftest import parse_multipart
from tests.services import KafkaBroker, S3Server

pytestmark = pytest.mark.slow

SOURCE = "cluster"


def write_config(path: Path, broker: KafkaBroker, s3: S3Server, prefix: str, lease: float) -> Path:
    path.write_text(
        f"""
[events]
backend = "kafka"
topic_prefix = "{prefix}"
kafka_bootstrap = "{broker.bootstrap}"
kafka_connect_timeout_seconds = 60
kafka_request_timeout_seconds = 10
default_partitions = 2
[[events.sources]]
name = "{SOURCE}"
partitions = 2
[storage]
backend = "s3"
s3_endpoint = "{s3.endpoint}"
s3_bucket = "{prefix}"
s3_access_key = "{s3.access_key}"
s3_secret_key = "{s3.secret_key}"
s3_region = "{s3.region}"
[dispatch]
lease_seconds = {lease}
default_deadline_seconds = 1
"""
    )
    return path


@asynccontextmanager
async def cluster(
    tmp_path: Path, broker: KafkaBroker, s3: S3Server, count: int, lease: float = 60.0
) -> AsyncIterator[list[Daemon]]:
    prefix = f"c{secrets.token_hex(4)}"
    config = write_config(tmp_path / "azuld.toml", broker, s3, prefix, lease)
    daemons: list[Daemon] = []
    try:
        for index in range(count):
            daemons.append(
                await start_daemon(tmp_path / f"node{index}", extra_args=["--config", str(config)])
            )
        yield daemons
    finally:
        with trio.CancelScope(shield=True):
            for daemon in daemons:
                if daemon.process.returncode is None:
                    await daemon.kill()


def sourced(index: int) -> dict[str, Any]:
    digest = hashlib.sha256(f"sample {index}".encode()).hexdigest()
    author = {"name": "analyst", "category": "user"}
    now = "2026-11-29T10:00:00Z"
    return {
        "model_version": 6,
        "kafka_key": "",
        "timestamp": now,
        "author": author,
        "action": "sourced",
        "source": {
            "name": SOURCE,
            "timestamp": now,
            "references": {"n": str(index)},
            "path": [{"author": author, "action": "sourced", "sha256": digest, "timestamp": now}],
        },
        "entity": {
            "sha256": digest,
            "size": 9,
            "datastreams": [{"label": "content", "sha256": digest, "size": 9}],
        },
    }


async def fetch(
    client: httpx.AsyncClient, url: str, name: str, deadline: int = 1
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{url}/api/v2/event/binary/active?name={name}&version=1&r-live=true&r-historic=true"
        f"&count=1&deadline={deadline}"
    )
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.content, response.headers["content-type"])
    return msgspec.json.decode(parts["events"])["events"]


async def post_status(
    client: httpx.AsyncClient,
    url: str,
    job: dict[str, Any],
    name: str,
    status: str = "completed-empty",
) -> None:
    body = [
        {
            "model_version": 6,
            "kafka_key": "x",
            "timestamp": "2026-11-29T10:00:01Z",
            "author": {"name": name, "version": "1", "category": "plugin"},
            "entity": {"input": job, "status": status},
        }
    ]
    response = await client.post(
        f"{url}/api/v2/event?model=status", content=msgspec.json.encode(body)
    )
    assert response.status_code == 200, response.text


async def wait_ready(client: httpx.AsyncClient, daemon: Daemon, within: float = 60) -> None:
    with trio.fail_after(within):
        while (await client.get(f"{daemon.url}/readyz")).status_code != 200:
            await trio.sleep(0.2)


async def test_two_instances_share_the_work_and_survive_a_sigkill(
    tmp_path: Path, kafka_broker: KafkaBroker, s3_server: S3Server
) -> None:
    total = 24
    async with (
        cluster(tmp_path, kafka_broker, s3_server, 2) as (first, second),
        httpx.AsyncClient(timeout=60) as client,
    ):
        for daemon in (first, second):
            await wait_ready(client, daemon)
        urls = [first.url, second.url]
        # Register both plugin keys before the events exist (live lanes), then submit.
        for name in ("Alpha", "Beta"):
            for url in urls:
                await fetch(client, url, name)
        response = await client.post(
            f"{first.url}/api/v2/event?model=binary",
            content=msgspec.json.encode([sourced(i) for i in range(total)]),
        )
        assert response.json()["total_ok"] == total

        # Alpha: workers on both instances; statuses posted to the *other* instance.
        seen: dict[str, list[str]] = {}
        by_instance = [0, 0]
        with trio.fail_after(120):
            while sum(len(v) for v in seen.values()) < total:
                for index, url in enumerate(urls):
                    for job in await fetch(client, url, "Alpha"):
                        by_instance[index] += 1
                        seen.setdefault(job["entity"]["sha256"], []).append(url)
                        await post_status(client, urls[1 - index], job, "Alpha")
        assert len(seen) == total
        assert all(len(v) == 1 for v in seen.values()), "an event was processed twice"
        assert min(by_instance) > 0, f"one instance did all the work: {by_instance}"
        for url in urls:  # nothing is offered again, statuses reached the holders
            assert await fetch(client, url, "Alpha", deadline=2) == []

        # Beta: take jobs from the second instance, finish some, then SIGKILL it.
        taken: list[dict[str, Any]] = []
        with trio.fail_after(60):
            while len(taken) < 4:
                taken += await fetch(client, second.url, "Beta")
        for job in taken[:2]:
            await post_status(client, second.url, job, "Beta")
        await second.kill()
        unfinished = {job["entity"]["sha256"] for job in taken[2:]}
        finished = {job["entity"]["sha256"] for job in taken[:2]}

        # The first instance takes over every partition, re-offers the unfinished, and the
        # rest of Beta's work completes exactly once.
        beta: dict[str, int] = {}
        with trio.fail_after(150):
            while len(beta) < total - len(finished):
                for job in await fetch(client, first.url, "Beta"):
                    sha = job["entity"]["sha256"]
                    beta[sha] = beta.get(sha, 0) + 1
                    await post_status(client, first.url, job, "Beta")
        assert unfinished <= beta.keys()
        assert not finished & beta.keys(), "a finished job was offered again after the kill"
        # Jobs the dead instance had only read ahead (not handed out) come once; those it had
        # leased come once more here: at least once, never lost.
        assert len(beta) == total - len(finished)
        assert all(count == 1 for count in beta.values())
        assert await fetch(client, first.url, "Beta", deadline=2) == []


async def test_broker_restart_and_s3_outage(
    tmp_path: Path, kafka_broker: KafkaBroker, s3_server: S3Server
) -> None:
    async with (
        cluster(tmp_path, kafka_broker, s3_server, 1) as (daemon,),
        httpx.AsyncClient(timeout=60) as client,
    ):
        await wait_ready(client, daemon)
        await client.post(
            f"{daemon.url}/api/v2/event?model=binary", content=msgspec.json.encode([sourced(0)])
        )
        with trio.fail_after(60):
            while not (jobs := await fetch(client, daemon.url, "Gamma")):
                pass
        # Kafka goes away: not ready (with the reason), fetches still answer 200.
        await kafka_broker.astop()
        try:
            with trio.fail_after(60):
                while (ready := await client.get(f"{daemon.url}/readyz")).status_code == 200:
                    await trio.sleep(0.5)
            assert "Kafka" in ready.json()["reasons"][0]
            reply = await client.get(
                f"{daemon.url}/api/v2/event/binary/active?name=Gamma&version=1&r-live=true"
                "&r-historic=true&deadline=1"
            )
            assert reply.status_code == 200
            info = msgspec.json.decode(
                parse_multipart(reply.content, reply.headers["content-type"])["info"]
            )
            assert info["ready"] is False
        finally:
            await kafka_broker.astart()
        await wait_ready(client, daemon, within=120)
        # Nothing lost: the job leased before the outage can still be finished, and new events flow.
        await post_status(client, daemon.url, jobs[0], "Gamma")
        await client.post(
            f"{daemon.url}/api/v2/event?model=binary", content=msgspec.json.encode([sourced(1)])
        )
        with trio.fail_after(60):
            while not (more := await fetch(client, daemon.url, "Gamma")):
                pass
        assert more[0]["source"]["references"] == {"n": "1"}

        # S3 goes away: uploads and downloads are 503 with a clear message, then recover.
        await s3_server.astop()
        try:
            upload = await client.post(
                f"{daemon.url}/api/v3/stream/{SOURCE}/content", content=b"blob"
            )
            assert upload.status_code == 503
            assert "S3" in upload.json()["detail"]
            ready = await client.get(f"{daemon.url}/readyz")
            assert ready.status_code == 503
        finally:
            await s3_server.astart()
        with trio.fail_after(30):
            while (
                upload := await client.post(
                    f"{daemon.url}/api/v3/stream/{SOURCE}/content", content=b"blob"
                )
            ).status_code != 200:
                await trio.sleep(0.5)
        download = await client.get(
            f"{daemon.url}/api/v3/stream/{SOURCE}/content/{upload.json()['data']['sha256']}"
        )
        assert download.content == b"blob"
