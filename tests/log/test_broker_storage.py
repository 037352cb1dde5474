"""The storage background tasks wired next to an in-process broker, as broker.py will do:
retention and compaction seen through Fetch/ListOffsets, strict-mode produce that is
acknowledged only after a (group-committed) fsync."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from pykbroker.api.handlers import HANDLERS, produce
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.clock import wall_clock_ms
from pykbroker.log.cleaner import LogCleaner
from pykbroker.log.log_tasks import (
    FlushCoordinator,
    checkpoint_loop,
    cleaner_loop,
    flush_loop,
    retention_loop,
)
from pykbroker.log.record_batch import Record, build_batch, decode_records, iter_batch_headers
from pykbroker.server.broker import BrokerServer
from pykbroker.testing import serve
from tests.wire import WireClient


async def start_storage_tasks(
    nursery: trio.Nursery, broker: BrokerServer, flusher: FlushCoordinator
) -> None:
    """What the lead adds to BrokerServer._serve (with the intervals from the config)."""
    log_manager = broker.service("log_manager")
    cleaner = LogCleaner(log_manager.retained_logs)
    await nursery.start(retention_loop, log_manager, 50)
    await nursery.start(flush_loop, log_manager, flusher, 20)
    await nursery.start(checkpoint_loop, log_manager, 100, 100)
    await nursery.start(cleaner_loop, cleaner, 50)


async def create_topic(client: WireClient, name: str, configs: dict[str, str]) -> None:
    response = await client.request(
        ApiKey.CREATE_TOPICS,
        7,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": 1,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in configs.items()],
                }
            ],
            "timeout_ms": 5000,
        },
    )
    assert response["topics"][0]["error_code"] == ErrorCode.NO_ERROR


async def send(client: WireClient, name: str, records: list[Record]) -> dict[str, Any]:
    body = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 5000,
        "topic_data": [
            {"name": name, "partition_data": [{"index": 0, "records": build_batch(records)}]}
        ],
    }
    response = await client.request(ApiKey.PRODUCE, 9, body)
    part: dict[str, Any] = response["responses"][0]["partition_responses"][0]
    assert part["error_code"] == ErrorCode.NO_ERROR, part
    return part


async def fetch_all(client: WireClient, name: str, offset: int) -> list[Record]:
    found: list[Record] = []
    while True:
        response = await client.request(
            ApiKey.FETCH,
            12,
            {
                "replica_id": -1,
                "max_wait_ms": 0,
                "min_bytes": 1,
                "max_bytes": 1 << 20,
                "isolation_level": 0,
                "topics": [
                    {
                        "topic": name,
                        "partitions": [
                            {
                                "partition": 0,
                                "fetch_offset": offset,
                                "partition_max_bytes": 1 << 20,
                            }
                        ],
                    }
                ],
            },
        )
        part = response["responses"][0]["partitions"][0]
        assert part["error_code"] == ErrorCode.NO_ERROR
        data = part["records"] or b""
        if not data:
            return found
        for position, header in iter_batch_headers(data):
            batch = data[position : position + header.size_in_bytes]
            found.extend(r for r in decode_records(batch) if r.offset >= offset)
            offset = header.next_offset


async def earliest(client: WireClient, name: str) -> int:
    response = await client.request(
        ApiKey.LIST_OFFSETS,
        7,
        {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {
                    "name": name,
                    "partitions": [
                        {"partition_index": 0, "current_leader_epoch": -1, "timestamp": -2}
                    ],
                }
            ],
        },
    )
    offset: int = response["topics"][0]["partitions"][0]["offset"]
    return offset


async def eventually(check: Callable[[], Any], timeout_s: float = 10) -> None:
    with trio.fail_after(timeout_s):
        while not await check():  # noqa: ASYNC110 - the broker's tasks do the work
            await trio.sleep(0.02)


async def test_retention_and_compaction_run_beside_the_broker(tmp_path: Path) -> None:
    async with serve(tmp_path) as broker, trio.open_nursery() as nursery:
        await start_storage_tasks(nursery, broker, FlushCoordinator())
        client = await WireClient.connect(broker.bootstrap_servers)
        small = {"segment.bytes": "1024", "segment.ms": "3600000"}
        await create_topic(client, "expiring", {**small, "retention.ms": "60000"})
        await create_topic(
            client,
            "table",
            {**small, "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"},
        )
        old = wall_clock_ms() - 600_000
        for i in range(30):
            await send(client, "expiring", [Record(b"k", b"old-%d" % i, timestamp=old)])
        now = wall_clock_ms()
        for i in range(30):
            await send(client, "table", [Record(b"k%d" % (i % 3), b"v%d" % i, timestamp=now)])
        last = await send(client, "expiring", [Record(b"k", b"fresh", timestamp=now)])

        async def expired() -> bool:
            return await earliest(client, "expiring") > 0

        await eventually(expired)
        survivors = await fetch_all(client, "expiring", await earliest(client, "expiring"))
        assert survivors[-1].value == b"fresh"
        assert survivors[-1].offset == last["base_offset"]
        assert all(r.value is not None and r.value.startswith(b"old") for r in survivors[:-1])

        async def compacted() -> bool:
            return len(await fetch_all(client, "table", 0)) < 30

        await eventually(compacted)
        table = await fetch_all(client, "table", 0)
        latest = {r.key: r.value for r in table}
        assert latest == {b"k0": b"v27", b"k1": b"v28", b"k2": b"v29"}
        assert [r.offset for r in table] == sorted(r.offset for r in table)
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_strict_mode_produce_is_acknowledged_after_a_shared_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flusher = FlushCoordinator()

    async def produce_and_flush(ctx: Any, request: dict[str, Any]) -> dict[str, Any] | None:
        """The produce path the lead wires: append, then await the flush policy."""
        response = await produce.handle(ctx, request)  # appends; no await inside
        replica_manager = ctx.broker.service("replica_manager")
        appended = []
        for topic in request["topic_data"]:
            for part in topic["partition_data"]:
                partition = replica_manager.get_partition(topic["name"], part["index"])
                if partition is not None:
                    appended.append((partition.log, partition.log.log_end_offset))
        if request["acks"] != 0:
            await flusher.flush_appended(appended)
        return response

    monkeypatch.setitem(HANDLERS, ApiKey.PRODUCE, produce_and_flush)
    async with serve(tmp_path) as broker, trio.open_nursery() as nursery:
        await start_storage_tasks(nursery, broker, flusher)
        admin = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(admin, "durable", {"flush.messages": "1"})
        log = broker.service("log_manager").get_log("durable", 0)
        clients = [await WireClient.connect(broker.bootstrap_servers) for _ in range(8)]

        async def producer(client: WireClient, n: int) -> None:
            for i in range(10):
                part = await send(client, "durable", [Record(b"k", b"%d-%d" % (n, i))])
                assert log.recovery_point > part["base_offset"]  # fsynced before the ack

        async with trio.open_nursery() as producers:
            for n, client in enumerate(clients):
                producers.start_soon(producer, client, n)
        assert log.recovery_point == log.log_end_offset == 80
        assert flusher.fsync_rounds < 80
        for client in (admin, *clients):
            await client.aclose()
        nursery.cancel_scope.cancel()
