"""The real services start and do what the adapters need: Kafka (through trio-asyncio) and S3
(aiobotocore's httpx backend, natively on trio)."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from typing import Any

import trio
import trio_asyncio
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from trio_asyncio import aio_as_trio

from tests.services import KafkaBroker, S3Server

# The session fixtures kafka_broker and s3_server (until tests/conftest.py loads this plugin).

log = logging.getLogger(__name__)


def _log_only(loop: object, context: dict[str, Any]) -> None:
    log.warning("asyncio: %s", context.get("message"))


async def _kafka_roundtrip(bootstrap: str) -> dict[str, Any]:
    """Create a 2-partition topic, produce one record per partition, consume them in a group,
    commit with metadata and read the commits back. Runs on the asyncio side."""
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    group = f"group-{topic}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        for _ in range(100):  # metadata lags topic creation a little
            if topic in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
        assert topic in await admin.list_topics()

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            sent = [
                await producer.send_and_wait(topic, f"v{p}".encode(), key=b"k", partition=p)
                for p in (0, 1)
            ]
        finally:
            await producer.stop()
        assert sorted(md.partition for md in sent) == [0, 1]

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got: dict[TopicPartition, Any] = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(got) < 2 and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    got[tp] = records[-1]
            assert {tp.partition: r.value for tp, r in got.items()} == {0: b"v0", 1: b"v1"}

            await consumer.commit(
                {
                    tp: OffsetAndMetadata(r.offset + 1, f"meta-{tp.partition}")
                    for tp, r in got.items()
                }
            )
            committed = {tp.partition: await consumer.committed(tp) for tp in got}
        finally:
            await consumer.stop()

        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {"committed": committed, "offsets": offsets, "topic": topic}


async def test_kafka_topic_produce_consume_commit_metadata(kafka_broker: KafkaBroker) -> None:
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_only)
        with trio.fail_after(60):
            result = await aio_as_trio(_kafka_roundtrip)(kafka_broker.bootstrap)

    # The consumer's committed() gives the offset only...
    assert result["committed"] == {0: 1, 1: 1}
    # ... the admin client's OffsetFetch gives the metadata too.
    topic = result["topic"]
    assert result["offsets"] == {
        TopicPartition(topic, 0): OffsetAndMetadata(1, "meta-0"),
        TopicPartition(topic, 1): OffsetAndMetadata(1, "meta-1"),
    }


class ChunkedBytesIO(io.BytesIO):
    """aiobotocore's httpx backend iterates a BytesIO body line by line (slow for binary data):
    iterate in 256 KiB chunks instead (stack.md, pitfall P4)."""

    def __iter__(self) -> Any:
        return iter(lambda: self.read(256 * 1024), b"")


async def test_s3_bucket_put_get_natively_on_trio(s3_server: S3Server) -> None:
    data = bytes(range(256)) * 4096 + b"\n" * 10  # 1 MiB of binary, newlines included
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    async with get_session().create_client(
        "s3",
        config=AioConfig(http_session_cls=HttpxSession),
        endpoint_url=s3_server.endpoint,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    ) as s3:
        with trio.fail_after(30):
            await s3.create_bucket(Bucket=bucket)
            await s3.put_object(Bucket=bucket, Key="a/b", Body=ChunkedBytesIO(data))
            head = await s3.head_object(Bucket=bucket, Key="a/b")
            response = await s3.get_object(Bucket=bucket, Key="a/b")
            async with response["Body"] as body:
                got = b"".join([chunk async for chunk in body.iter_chunks(64 * 1024)])
            listing = await s3.list_objects_v2(Bucket=bucket)
    assert head["ContentLength"] == len(data)
    assert got == data
    assert [o["Key"] for o in listing["Contents"]] == ["a/b"]
