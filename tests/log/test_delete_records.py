"""DeleteRecords (key 21) against an in-process broker, the handler registered for the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pykbroker.api import dispatch
from pykbroker.api.handlers import HANDLERS, delete_records
from pykbroker.api.protocol.api_keys import RELEASE_4_1, ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log import TopicPartition
from pykbroker.log.checkpoint import read_offset_checkpoint
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.testing import serve
from tests.wire import WireClient

TOPIC = "events"


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve DeleteRecords as the broker will once the lead registers the handler."""
    monkeypatch.setitem(HANDLERS, delete_records.API_KEY, delete_records.handle)
    monkeypatch.setitem(dispatch.SUPPORTED, ApiKey.DELETE_RECORDS, RELEASE_4_1[21])


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


async def produce(client: WireClient, name: str, count: int) -> None:
    for i in range(count):
        batch = build_batch([Record(b"k%d" % i, b"v%d" % i, timestamp=1_700_000_000_000)])
        body = {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 5000,
            "topic_data": [{"name": name, "partition_data": [{"index": 0, "records": batch}]}],
        }
        response = await client.request(ApiKey.PRODUCE, 9, body)
        assert response["responses"][0]["partition_responses"][0]["error_code"] == 0


async def delete(
    client: WireClient, version: int, offsets: dict[tuple[str, int], int]
) -> dict[tuple[str, int], tuple[int, int]]:
    topics: dict[str, list[dict[str, int]]] = {}
    for (name, index), offset in offsets.items():
        topics.setdefault(name, []).append({"partition_index": index, "offset": offset})
    response = await client.request(
        ApiKey.DELETE_RECORDS,
        version,
        {
            "topics": [{"name": n, "partitions": p} for n, p in topics.items()],
            "timeout_ms": 1000,
        },
    )
    return {
        (t["name"], p["partition_index"]): (p["error_code"], p["low_watermark"])
        for t in response["topics"]
        for p in t["partitions"]
    }


async def fetch_error(client: WireClient, name: str, offset: int) -> tuple[int, int]:
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
                        {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                    ],
                }
            ],
        },
    )
    part: dict[str, Any] = response["responses"][0]["partitions"][0]
    return part["error_code"], part["log_start_offset"]


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


@pytest.mark.parametrize("version", [0, 1, 2])
async def test_delete_records_moves_the_log_start_offset(version: int, tmp_path: Path) -> None:
    async with serve(tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, TOPIC, {})
        await produce(client, TOPIC, 10)
        assert await delete(client, version, {(TOPIC, 0): 4}) == {(TOPIC, 0): (0, 4)}
        assert await fetch_error(client, TOPIC, 3) == (ErrorCode.OFFSET_OUT_OF_RANGE, 4)
        assert await fetch_error(client, TOPIC, 4) == (ErrorCode.NO_ERROR, 4)
        assert await earliest(client, TOPIC) == 4
        assert await delete(client, version, {(TOPIC, 0): 2}) == {(TOPIC, 0): (0, 4)}
        assert await delete(client, version, {(TOPIC, 0): 11}) == {
            (TOPIC, 0): (ErrorCode.OFFSET_OUT_OF_RANGE, -1)
        }
        assert await delete(client, version, {(TOPIC, 0): -1}) == {(TOPIC, 0): (0, 10)}
        assert await delete(client, version, {(TOPIC, 0): -7, ("nope", 0): 1}) == {
            (TOPIC, 0): (ErrorCode.OFFSET_OUT_OF_RANGE, -1),
            ("nope", 0): (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1),
        }
        await client.aclose()


async def test_delete_records_survives_a_restart_and_respects_the_policy(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, TOPIC, {})
        await create_topic(client, "table", {"cleanup.policy": "compact"})
        await produce(client, TOPIC, 6)
        await produce(client, "table", 3)
        assert await delete(client, 2, {(TOPIC, 0): 5, ("table", 0): 1}) == {
            (TOPIC, 0): (0, 5),
            ("table", 0): (ErrorCode.POLICY_VIOLATION, -1),
        }
        checkpoint = read_offset_checkpoint(tmp_path / "log-start-offset-checkpoint")
        assert checkpoint[TopicPartition(TOPIC, 0)] == 5  # written before the answer
        await client.aclose()
    async with serve(tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        assert await earliest(client, TOPIC) == 5
        assert await fetch_error(client, TOPIC, 0) == (ErrorCode.OFFSET_OUT_OF_RANGE, 5)
        await client.aclose()


async def test_internal_topics_refuse_delete_records(tmp_path: Path) -> None:
    async with serve(tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        result = await delete(client, 2, {("__consumer_offsets", 0): 0})
        assert result == {("__consumer_offsets", 0): (ErrorCode.INVALID_TOPIC_EXCEPTION, -1)}
        await client.aclose()
