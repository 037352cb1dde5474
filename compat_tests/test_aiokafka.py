"""aiokafka (asyncio client) against a pykbroker process.

The suite runs in trio mode, so each test drives its own asyncio loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from compat_tests.conftest import BrokerProcess
from compat_tests.helpers import Rec, assert_same_records, make_records, unique_topic

pytestmark = pytest.mark.compat

COMMON: dict[str, Any] = {"request_timeout_ms": 10_000}
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro_fn(), timeout)

    asyncio.run(bounded())


def to_rec(m: Any) -> Rec:
    assert m.timestamp_type == 0
    return Rec(m.key, m.value, tuple(m.headers), m.timestamp, m.partition, m.offset)


async def produce(b: BrokerProcess, topic: str, sent: list[Rec], **kw: Any) -> list[Any]:
    p = AIOKafkaProducer(bootstrap_servers=b.bootstrap_servers, **COMMON, **kw)
    await p.start()
    try:
        futures = [
            await p.send(
                topic,
                r.value,
                key=r.key,
                partition=r.partition,
                timestamp_ms=r.timestamp,
                headers=list(r.headers),
            )
            for r in sent
        ]
        return list(await asyncio.gather(*futures))
    finally:
        await p.stop()


async def read(c: AIOKafkaConsumer, n: int) -> list[Rec]:
    out: list[Rec] = []
    while len(out) < n:
        batches = await c.getmany(timeout_ms=200)
        for batch in batches.values():
            out.extend(to_rec(m) for m in batch)
    return out


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "none")
def test_produce_then_consume_byte_identical(module_broker: BrokerProcess, codec: str) -> None:
    topic = unique_topic(f"aio-{codec or 'none'}")
    sent = make_records(100, seed=30, big_every=40)

    async def scenario() -> None:
        metas = await produce(module_broker, topic, sent, acks="all", compression_type=codec)
        assert [m.offset for m in metas] == list(range(len(sent)))
        c = AIOKafkaConsumer(
            bootstrap_servers=module_broker.bootstrap_servers,
            auto_offset_reset="earliest",
            **COMMON,
        )
        await c.start()
        try:
            c.assign([TopicPartition(topic, 0)])
            assert_same_records(await read(c, len(sent)), sent)
        finally:
            await c.stop()

    run(scenario)


def test_group_commit_and_resume(module_broker: BrokerProcess) -> None:
    topic, group = unique_topic("aio-grp"), unique_topic("aio-group")
    sent = make_records(12, seed=31)
    tp = TopicPartition(topic, 0)

    async def consumer() -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(
            topic,
            bootstrap_servers=module_broker.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=500,
            **COMMON,
        )
        await c.start()
        return c

    async def scenario() -> None:
        await produce(module_broker, topic, sent, acks=1)
        c = await consumer()
        try:
            got = await read(c, 5)
            assert_same_records(got[:5], sent[:5])
            await c.commit({tp: OffsetAndMetadata(5, "")})
            assert await c.committed(tp) == 5
        finally:
            await c.stop()
        c = await consumer()
        try:
            assert_same_records(await read(c, 7), sent[5:], first_offset=5)
        finally:
            await c.stop()

    run(scenario)
