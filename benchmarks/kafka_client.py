"""aiokafka's own CPU per operation, on plain asyncio and under trio-asyncio as azuld runs it.

    .venv/bin/python benchmarks/kafka_client.py                       # all three modes
    .venv/bin/python benchmarks/kafka_client.py --mode trio --batch-bytes 1000000 --send-batch
    .venv/bin/python benchmarks/kafka_client.py --bootstrap 127.0.0.1:9092  # an existing broker

Starts a single-node Kafka (tests/services.py) unless `--bootstrap` is given, then runs each mode
in a fresh process (importing trio-asyncio replaces asyncio's event loop policy):

* `asyncio`: plain `asyncio.run`, the floor aiokafka sets;
* `trio`: Trio with `trio_asyncio.open_loop()`, one `aio_as_trio` call per operation (azuld's
  Kafka adapter does this);
* `trio-one-call`: the same loop, but the whole measurement inside one `aio_as_trio` call: the
  cost of the trio-asyncio loop itself, without the calls across.

Per operation, process CPU time (`time.process_time`, so a busy machine disturbs it less than
wall time) and wall time:

* `hop`: `aio_as_trio` of a coroutine that returns at once (trio modes);
* `produce2`: send 2 records (1.1 KB, as a status, and 0.7 KB, as its result) and wait for acks=all,
  one call after the other: a count=1 status post;
* `produce200`: 200 such records in one call (a count=100 post), per record;
* `consume`: read every record back from the start in `getmany` calls of up to 2000, per record;
* `read64`: seek and `getmany(max_records=64)`, azuld's read behind the live edge;
* `commit`: one OffsetCommit request through the admin client (azuld's commits).

Producer and consumer options follow azuld's (`--linger-ms`, `--batch-bytes`: aiokafka's
`max_batch_size`, `--send-batch`: one `create_batch()`/`send_batch()` per call instead of one
`send()` per record, `--fetch-bytes`: the consumer's `max_partition_fetch_bytes`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODES = ("asyncio", "trio", "trio-one-call")
STATUS = b"s" * 1100
RESULT = b"r" * 700

Bridge = Callable[..., Awaitable[Any]]


async def produce(producer: Any, topic: str, records: list[bytes], send_batch: bool) -> None:
    futures = []
    if send_batch:
        batch = producer.create_batch()
        for index, value in enumerate(records):
            key = b"k%d" % index
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it
                futures.append(await producer.send_batch(batch, topic, partition=0))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=0))
    else:
        for index, value in enumerate(records):
            futures.append(await producer.send(topic, value, key=b"k%d" % index))
    await asyncio.gather(*futures)


async def find_coordinator(admin: Any, group: str) -> int:
    """The group's coordinator; a fresh broker creates its offsets topic on the first ask."""
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    for _ in range(60):
        try:
            return int(await admin.find_coordinator(group))
        except GroupCoordinatorNotAvailableError:
            await asyncio.sleep(0.5)
    raise RuntimeError(f"no coordinator for {group} in 30 s")


async def measure(args: argparse.Namespace, call: Bridge) -> dict[str, float]:
    """Every operation through `call(fn, *args, **kwargs)` (a direct await, or a hop)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.protocol.commit import OffsetCommitRequest

    out: dict[str, float] = {}
    topic = f"client-{args.mode}-{os.getpid()}"
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await call(admin.start)
    await call(admin.create_topics, [NewTopic(topic, 1, 1)])
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        linger_ms=args.linger_ms,
        max_batch_size=args.batch_bytes,
    )
    await call(producer.start)

    def timed(name: str, per: int, started: tuple[float, float]) -> None:
        cpu, wall = time.process_time() - started[0], time.perf_counter() - started[1]
        out[f"{name}_cpu_us"] = round(cpu / per * 1e6, 1)
        out[f"{name}_wall_ms"] = round(wall / per * 1e3, 3)

    def now() -> tuple[float, float]:
        return time.process_time(), time.perf_counter()

    pair, hundred = [STATUS, RESULT], [STATUS, RESULT] * 100
    for _ in range(50):  # warm-up (metadata, connections)
        await call(produce, producer, topic, pair, args.send_batch)
    started = now()
    for _ in range(args.posts):
        await call(produce, producer, topic, pair, args.send_batch)
    timed("produce2", args.posts, started)
    started = now()
    for _ in range(args.batches):
        await call(produce, producer, topic, hundred, args.send_batch)
    timed("produce200_per_record", args.batches * 200, started)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=args.fetch_bytes,
    )
    await call(consumer.start)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    total, got = (50 + args.posts) * 2 + args.batches * 200, 0
    started = now()
    while got < total:
        batch = await call(consumer.getmany, tp, timeout_ms=1000, max_records=2000)
        got += sum(len(records) for records in batch.values())
    timed("consume_per_record", got, started)
    reads = 100
    started = now()
    for index in range(reads):
        consumer.seek(tp, index * 64)
        await call(consumer.getmany, tp, timeout_ms=1000, max_records=64)
        consumer.pause(tp)  # as azuld's reader: what the fetch brought beyond 64 is dropped
        consumer.resume(tp)
    timed("read64", reads, started)

    node = await call(find_coordinator, admin, "client-bench")
    request = OffsetCommitRequest("client-bench", -1, "", -1, [(topic, [(0, 5, "azd1")])])
    for _ in range(20):
        await call(admin._send_request, request, node)
    started = now()
    for _ in range(args.posts):
        await call(admin._send_request, request, node)
    timed("commit", args.posts, started)
    for client in (consumer, producer):
        await call(client.stop)
    await call(admin.close)
    return out


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    async def direct(fn: Any, *a: Any, **k: Any) -> Any:
        return await fn(*a, **k)

    if args.mode == "asyncio":
        result = asyncio.run(measure(args, direct))
    else:
        import trio
        import trio_asyncio

        async def hop(fn: Any, *a: Any, **k: Any) -> Any:
            return await trio_asyncio.aio_as_trio(fn)(*a, **k)

        async def nothing() -> None:
            return None

        async def main() -> dict[str, float]:
            async with trio_asyncio.open_loop():
                for _ in range(200):
                    await hop(nothing)
                started = time.process_time()
                for _ in range(5000):
                    await hop(nothing)
                hop_us = (time.process_time() - started) / 5000 * 1e6
                if args.mode == "trio":
                    measured = await measure(args, hop)
                else:
                    measured = await trio_asyncio.aio_as_trio(measure)(args, direct)
                return {"hop_cpu_us": round(hop_us, 1), **measured}

        result = trio.run(main)
    return {"mode": args.mode, "load1": round(os.getloadavg()[0], 2), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, action="append", help="default: all three")
    parser.add_argument("--bootstrap", help="an existing broker (default: start one)")
    parser.add_argument("--posts", type=int, default=1000, help="produce2 and commit calls")
    parser.add_argument("--batches", type=int, default=30, help="produce200 calls")
    parser.add_argument("--linger-ms", type=int, default=1)
    parser.add_argument("--batch-bytes", type=int, default=16384)
    parser.add_argument("--send-batch", action="store_true")
    parser.add_argument("--fetch-bytes", type=int, default=3 * 1024 * 1024)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.mode[0]
        print(json.dumps(run_mode(args)), flush=True)
        return 0
    broker = None
    if args.bootstrap is None:
        sys.path.insert(0, str(ROOT))
        from tests.services import KafkaBroker, fetch_kafka, free_port

        port = free_port()
        broker = KafkaBroker(
            Path(tempfile.mkdtemp(prefix="kafka-client-")),
            home=fetch_kafka(),
            port=port,
            controller_port=free_port(frozenset({port})),
        )
        broker.start()
        args.bootstrap = broker.bootstrap
    try:
        for mode in args.mode or MODES:
            child = [a for a in sys.argv[1:] if a not in ("--mode", *MODES)]
            command = [sys.executable, __file__, "--child", "--mode", mode, *child]
            command += [] if "--bootstrap" in child else ["--bootstrap", args.bootstrap]
            subprocess.run(command, check=True)
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
