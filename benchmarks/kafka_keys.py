"""How azuld on Kafka scales with the number of plugin keys: memory, connections and CPU.

For 1, 10 and 50 plugin keys, each with two workers long-polling (count=1, deadline=5) while
events trickle in, measure the daemon's RSS, its TCP connections to the broker, and its CPU
seconds over the measuring window. One Kafka broker and the daemon run on this machine.

    .venv/bin/python benchmarks/kafka_keys.py [--keys 1 10 50] [--seconds 20]

Writes benchmarks/results/kafka-keys.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.daemon import start_daemon
from tests.services import start_kafka

RESULTS = Path(__file__).parent / "results"


def sourced(index: int) -> dict[str, object]:
    import hashlib

    digest = hashlib.sha256(f"bench {index} {time.time()}".encode()).hexdigest()
    author = {"name": "bench", "category": "user"}
    now = "2026-11-29T10:00:00Z"
    return {
        "model_version": 6,
        "kafka_key": "",
        "timestamp": now,
        "author": author,
        "action": "sourced",
        "source": {
            "name": "bench",
            "timestamp": now,
            "path": [{"author": author, "action": "sourced", "sha256": digest, "timestamp": now}],
        },
        "entity": {
            "sha256": digest,
            "size": 9,
            "datastreams": [{"label": "content", "sha256": digest, "size": 9}],
        },
    }


async def measure(
    broker_bootstrap: str, broker_port: int, keys: int, seconds: float, work: Path
) -> dict[str, object]:
    prefix = f"b{secrets.token_hex(3)}"
    config = work / f"azuld-{keys}.toml"
    config.write_text(
        f'[events]\nbackend = "kafka"\ntopic_prefix = "{prefix}"\nkafka_bootstrap = "{broker_bootstrap}"\n'
        "[dispatch]\nlease_seconds = 60\n"
    )
    daemon = await start_daemon(work / f"node-{keys}", extra_args=["--config", str(config)])
    process = psutil.Process(daemon.process.pid)
    done = {"jobs": 0}
    try:
        async with httpx.AsyncClient(
            base_url=daemon.url, timeout=30, limits=httpx.Limits(max_connections=4 * keys + 8)
        ) as client:
            with trio.fail_after(60):
                while (await client.get("/readyz")).status_code != 200:
                    await trio.sleep(0.2)

            async def worker(name: str, stop: trio.Event) -> None:
                query = f"name={name}&version=1&r-live=true&r-historic=true&count=1&deadline=5"
                while not stop.is_set():
                    reply = await client.get(f"/api/v2/event/binary/active?{query}")
                    body = reply.content
                    if b'"fetched":1' in body:
                        start = body.index(b'{"events":[') + len(b'{"events":[')
                        event = msgspec.json.decode(body[start : body.rindex(b"]}")])
                        status = [
                            {
                                "model_version": 6,
                                "kafka_key": "x",
                                "timestamp": "2026-11-29T10:00:01Z",
                                "author": {"name": name, "version": "1"},
                                "entity": {"input": event, "status": "completed-empty"},
                            }
                        ]
                        await client.post(
                            "/api/v2/event?model=status", content=msgspec.json.encode(status)
                        )
                        done["jobs"] += 1

            async def trickle(stop: trio.Event) -> None:
                index = 0
                while not stop.is_set():
                    await client.post(
                        "/api/v2/event?model=binary", content=msgspec.json.encode([sourced(index)])
                    )
                    index += 1
                    await trio.sleep(0.5)

            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for key in range(keys):
                    for _ in range(2):
                        nursery.start_soon(worker, f"Plugin{key}", stop)
                nursery.start_soon(trickle, stop)
                await trio.sleep(8)  # warm up: keys registered, partitions assigned
                cpu_before = sum(process.cpu_times()[:2])
                jobs_before = done["jobs"]
                started = time.monotonic()
                await trio.sleep(seconds)
                elapsed = time.monotonic() - started
                cpu = sum(process.cpu_times()[:2]) - cpu_before
                rss = process.memory_info().rss
                connections = [
                    c
                    for c in process.net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == broker_port and c.status == "ESTABLISHED"
                ]
                threads = process.num_threads()
                stop.set()
                nursery.cancel_scope.cancel()
        return {
            "plugin_keys": keys,
            "rss_mib": round(rss / 2**20, 1),
            "kafka_connections": len(connections),
            "threads": threads,
            "cpu_seconds_per_minute": round(cpu / elapsed * 60, 2),
            "jobs_completed_per_second": round((done["jobs"] - jobs_before) / elapsed, 1),
        }
    finally:
        await daemon.kill()


async def main(keys_list: list[int], seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="azuld-bench-") as tmp:
        work = Path(tmp)
        broker = await trio.to_thread.run_sync(start_kafka, work / "kafka")
        try:
            rows = [
                await measure(broker.bootstrap, broker.port, keys, seconds, work)
                for keys in keys_list
            ]
        finally:
            await trio.to_thread.run_sync(broker.stop)
    machine = f"{platform.machine()}, {psutil.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, Python {platform.python_version()}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kafka-keys.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# azuld on Kafka: cost per plugin key",
        "",
        f"Machine: {machine}; one Kafka 4.1 broker and azuld on the same host. Each key has two workers",
        f"long-polling (count=1, deadline=5 s) while one event per 0.5 s arrives; measured over {seconds:g} s.",
        "",
        "| plugin keys | RSS (MiB) | Kafka connections | threads | CPU s per minute | jobs/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['plugin_keys']} | {row['rss_mib']} | {row['kafka_connections']} | {row['threads']} "
            f"| {row['cpu_seconds_per_minute']} | {row['jobs_completed_per_second']} |"
        )
    (RESULTS / "kafka-keys.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    trio.run(main, args.keys, args.seconds)
