"""Exactly once per plugin key on Kafka, proved with real processes and counted from the topics.

One Kafka broker, two azuld instances, a source of four partitions, a few hundred files (some of
them zips whose members are extracted), the bundled `entropy` and `unbox` plugins running against
both instances (restarted like a service manager would when they exit). The fault run SIGKILLs one
instance mid-way, starts it again, and then restarts the other. Afterwards every record of the
source's `sourced` and `extracted` topics is matched against every final status in `system.status`
by the topic/partition/offset inside its `dequeued`: each event has exactly one final status per
plugin, and each zip's members were extracted exactly once. The count is read with a Kafka client
of the test's own, not through azuld.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import sys
import zipfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.daemon import Daemon, start_daemon
from tests.services import KafkaBroker, S3Server, free_port

pytestmark = pytest.mark.slow

SOURCE = "eo"
PLAIN_FILES = 160
ZIPS = 20  # each with two members of its own
FINAL = frozenset(
    {
        "completed",
        "completed-empty",
        "completed-with-errors",
        "opt-out",
        "error-exception",
        "error-network",
        "error-runner",
        "error-input",
        "error-output",
        "error-timeout",
        "error-unknown",
    }
)


def write_config(path: Path, broker: KafkaBroker, s3: S3Server, prefix: str) -> Path:
    path.write_text(
        f"""
[events]
backend = "kafka"
topic_prefix = "{prefix}"
kafka_bootstrap = "{broker.bootstrap}"
kafka_connect_timeout_seconds = 60
kafka_request_timeout_seconds = 15
default_partitions = 4
[[events.sources]]
name = "{SOURCE}"
partitions = 4
[storage]
backend = "s3"
s3_endpoint = "{s3.endpoint}"
s3_bucket = "{prefix}"
s3_access_key = "{s3.access_key}"
s3_secret_key = "{s3.secret_key}"
s3_region = "{s3.region}"
[dispatch]
lease_seconds = 20
default_deadline_seconds = 1
# Every completed status writes a replay-cache entry (the first creates nothing: the topic is
# there from the start, and no rebalance follows).
replay_min_runtime_seconds = 0
"""
    )
    return path


def make_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    for index in range(PLAIN_FILES):
        (folder / f"plain-{index:03}.bin").write_bytes(secrets.token_bytes(200 + index))
    for index in range(ZIPS):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for member in ("a.txt", "b.txt"):
                archive.writestr(member, f"{index} {member} {secrets.token_hex(40)}\n" * 5)
        (folder / f"archive-{index:02}.zip").write_bytes(buffer.getvalue())


# -- reading the topics with a Kafka client of our own --------------------------------------


@dataclass
class Counts:
    sourced: list[tuple[str, int, int, dict[str, Any]]]  # (topic, partition, offset, event)
    extracted: list[tuple[str, int, int, dict[str, Any]]]
    finals: Counter[tuple[str, str, int, int]] = field(default_factory=Counter)  # plugin, tp, off
    # For a failure's message: each final status's (job id, time, status) by the same key.
    seen: dict[tuple[str, str, int, int], list[tuple[str, str, str]]] = field(default_factory=dict)

    def events(self) -> list[tuple[str, int, int, dict[str, Any]]]:
        return self.sourced + self.extracted

    def zips(self) -> list[tuple[str, int, int, dict[str, Any]]]:
        return [e for e in self.sourced if e[3]["entity"].get("file_format") == "archive/zip"]

    def finished(self, plugin: str, events: list[tuple[str, int, int, dict[str, Any]]]) -> int:
        return sum(1 for t, p, o, _ in events if self.finals[(plugin, t, p, o)] >= 1)


def read_topics(bootstrap: str, topics: list[str]) -> dict[str, list[tuple[int, int, bytes]]]:
    """Every record of `topics` up to their current ends: {topic: [(partition, offset, value)]}."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    async def main() -> dict[str, list[tuple[int, int, bytes]]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        tps = [
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            if topic["error_code"] == 0
            for partition in topic["partitions"]
        ]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            out: dict[str, list[tuple[int, int, bytes]]] = {topic: [] for topic in topics}
            if not tps:
                return out
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            positions = dict.fromkeys(tps, 0)
            while any(positions[tp] < ends[tp] for tp in tps):
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for tp, messages in batch.items():
                    for message in messages:
                        if message.offset < ends[tp]:
                            out[tp.topic].append((tp.partition, message.offset, message.value))
                        positions[tp] = message.offset + 1
            return out
        finally:
            await consumer.stop()

    return asyncio.run(main())


async def count(broker: KafkaBroker, prefix: str) -> Counts:
    sourced = f"azul.{prefix}.{SOURCE}.binary.sourced"
    extracted = f"azul.{prefix}.{SOURCE}.binary.extracted"
    status = f"azul.{prefix}.system.status"
    records = await trio.to_thread.run_sync(
        read_topics, broker.bootstrap, [sourced, extracted, status]
    )
    counts = Counts(
        sourced=[(sourced, p, o, msgspec.json.decode(v)) for p, o, v in records[sourced]],
        extracted=[(extracted, p, o, msgspec.json.decode(v)) for p, o, v in records[extracted]],
    )
    for _, _, value in records[status]:
        event = msgspec.json.decode(value)
        entity = event["entity"]
        parts = entity["input"].get("dequeued", "").split("|")
        if entity["status"] not in FINAL or len(parts) != 8 or parts[0] != "azd2":
            continue
        key = (event["author"]["name"], parts[3], int(parts[4]), int(parts[5]))
        counts.finals[key] += 1
        counts.seen.setdefault(key, []).append(
            (entity["input"]["dequeued"][:120], event["timestamp"], entity["status"])
        )
    return counts


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Node:
    """One azuld instance on a fixed port (so that its plugins find it again after a restart)."""

    name: str
    data: Path
    config: Path
    port: int
    daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = ["--config", str(self.config), "--listen", f"127.0.0.1:{self.port}"]
        self.daemon = await start_daemon(self.data, extra_args=args)


async def supervise_plugin(
    name: str, node: Node, workers: int, work: Path, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Run `azuld plugin run NAME` against `node`, starting it again whenever it exits (as
    systemd's Restart=always would), until cancelled."""
    tmp = work / f"tmp-{name}-{node.name}"
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = work / f"plugin-{name}-{node.name}.log"
    task_status.started()
    while True:
        with open(log_path, "ab") as log_file:  # noqa: ASYNC230 - a local file
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "azuld",
                    "plugin",
                    "run",
                    name,
                    "--server",
                    node.url,
                    "--workers",
                    str(workers),
                ],
                stdout=log_file,
                stderr=log_file,
                env={**os.environ, "TMPDIR": str(tmp)},
            )
        try:
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        await trio.sleep(1.0)


@asynccontextmanager
async def cluster(tmp_path: Path, broker: KafkaBroker, s3: S3Server) -> AsyncIterator[list[Node]]:
    prefix = f"eo{secrets.token_hex(4)}"
    config = write_config(tmp_path / "azuld.toml", broker, s3, prefix)
    nodes = [Node(n, tmp_path / n, config, free_port()) for n in ("first", "second")]
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                if node.daemon is not None and node.daemon.process.returncode is None:
                    await node.daemon.kill()


async def wait_ready(client: httpx.AsyncClient, node: Node, within: float = 90) -> None:
    with trio.fail_after(within):
        while True:
            try:
                if (await client.get(f"{node.url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.2)


async def submit(node: Node, folder: Path) -> None:
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "azuld",
            "submit",
            str(folder),
            "--source",
            SOURCE,
            "--server",
            node.url,
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]


async def wait_for(broker: KafkaBroker, prefix: str, done: Any, within: float, what: str) -> Counts:
    with trio.move_on_after(within):
        while True:
            counts = await count(broker, prefix)
            if done(counts):
                return counts
            await trio.sleep(2)
    counts = await count(broker, prefix)
    raise AssertionError(
        f"{what} not reached in {within:g} s: entropy "
        f"{counts.finished('Entropy', counts.events())}/{len(counts.events())}, unbox "
        f"{counts.finished('Unbox', counts.zips())}/{len(counts.zips())}, extracted "
        f"{len(counts.extracted)}/{2 * ZIPS}"
    )


def all_done(counts: Counts) -> bool:
    return (
        len(counts.sourced) == PLAIN_FILES + ZIPS
        and len(counts.extracted) >= 2 * ZIPS
        and counts.finished("Entropy", counts.events()) == len(counts.events())
        and counts.finished("Unbox", counts.zips()) == ZIPS
    )


def handovers(nodes: list[Node]) -> str:
    """What the instances logged about partitions moving, for a failure's message."""
    words = ("hand", "took over", "ownership", "stopped", "starting", "remembered", "WARNING")
    lines = []
    for node in nodes:
        for path in node.data.parent.glob(f"{node.name}-daemon.log"):
            for line in path.read_text(errors="replace").splitlines():
                if any(word in line for word in words):
                    lines.append(f"{node.name}: {line[:240]}")
    return "\n".join(lines[-80:])


def check_exactly_once(counts: Counts, nodes: list[Node]) -> None:
    assert len(counts.sourced) == PLAIN_FILES + ZIPS
    assert len(counts.zips()) == ZIPS
    twice = {key: counts.seen[key] for key, n in counts.finals.items() if n > 1}
    assert not twice, f"events with more than one final status: {twice}\n{handovers(nodes)}"
    for plugin, events in (("Entropy", counts.events()), ("Unbox", counts.zips())):
        missing = [(t, p, o) for t, p, o, _ in events if counts.finals[(plugin, t, p, o)] != 1]
        assert not missing, f"{plugin}: events without exactly one final status: {missing}"
    # Each zip's two members were extracted once: no child published twice.
    children = Counter(
        (event["source"]["path"][-2]["sha256"], event["entity"]["sha256"])
        for *_, event in counts.extracted
    )
    assert len(children) == 2 * ZIPS
    assert set(children.values()) == {1}, [c for c, n in children.items() if n > 1]


@asynccontextmanager
async def plugins_on(nodes: list[Node], work: Path) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(supervise_plugin, "entropy", node, 4, work)
            await nursery.start(supervise_plugin, "unbox", node, 2, work)
        yield
        nursery.cancel_scope.cancel()


def prefix_of(nodes: list[Node]) -> str:
    text = nodes[0].config.read_text()
    return text.split('topic_prefix = "')[1].split('"')[0]


async def test_no_fault_run_delivers_exactly_once(
    tmp_path: Path, kafka_broker: KafkaBroker, s3_server: S3Server
) -> None:
    files = tmp_path / "files"
    make_files(files)
    async with (
        cluster(tmp_path, kafka_broker, s3_server) as nodes,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for node in nodes:
            await wait_ready(client, node)
        async with plugins_on(nodes, tmp_path):
            await submit(nodes[0], files)
            counts = await wait_for(kafka_broker, prefix_of(nodes), all_done, 240, "all done")
            await trio.sleep(3)  # anything late would show now
    check_exactly_once(await count(kafka_broker, prefix_of(nodes)), nodes)
    assert counts.finished("Entropy", counts.events()) == PLAIN_FILES + ZIPS + 2 * ZIPS


async def test_sigkill_and_restarts_deliver_exactly_once(
    tmp_path: Path, kafka_broker: KafkaBroker, s3_server: S3Server
) -> None:
    files = tmp_path / "files"
    make_files(files)
    total = PLAIN_FILES + ZIPS + 2 * ZIPS
    async with (
        cluster(tmp_path, kafka_broker, s3_server) as nodes,
        httpx.AsyncClient(timeout=30) as client,
    ):
        first, second = nodes
        for node in nodes:
            await wait_ready(client, node)
        prefix = prefix_of(nodes)
        async with plugins_on(nodes, tmp_path):
            await submit(first, files)
            # Mid-way: the first instance dies with jobs in flight...
            await wait_for(
                kafka_broker,
                prefix,
                lambda c: c.finished("Entropy", c.events()) >= total // 3,
                180,
                "a third done",
            )
            assert first.daemon is not None
            await first.daemon.kill()
            # ... the second takes its partitions over (after Kafka's session timeout), then
            # the first comes back on its port (its plugins find it again) ...
            await wait_for(
                kafka_broker,
                prefix,
                lambda c: c.finished("Entropy", c.events()) >= total // 2,
                180,
                "half done",
            )
            await first.start()
            await wait_ready(client, first)
            # ... and the second is restarted (drained: SIGTERM).
            assert second.daemon is not None
            assert await second.daemon.terminate(timeout_seconds=60) == 0
            await second.start()
            await wait_ready(client, second)
            await wait_for(kafka_broker, prefix, all_done, 300, "all done")
            await trio.sleep(3)  # anything late would show now
    check_exactly_once(await count(kafka_broker, prefix), nodes)
