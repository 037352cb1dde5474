"""ListOffsets (key 2) over the wire against an in-process broker: the five special
timestamps (-1..-5) with Kafka 4.1's leader epochs, and the last fetchable offset (high
watermark, last stable offset for read_committed, log end offset for a broker) bounding
MAX_TIMESTAMP and timestamp lookups, as ``Partition.fetchOffsetForTimestamp`` /
``ReplicaManager.fetchOffset``."""

from __future__ import annotations

from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.replication.partition import Partition
from pykbroker.testing import serve
from tests.server.test_broker_requests import create_topic, partition_of, produce_body
from tests.server.test_transactions import add_partition, end_txn, init_txn
from tests.wire import WireClient

LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5
READ_UNCOMMITTED, READ_COMMITTED = 0, 1
UNKNOWN = (-1, -1, -1)


async def list_offsets(
    client: WireClient,
    topic: str,
    timestamp: int,
    *,
    isolation_level: int = READ_UNCOMMITTED,
    replica_id: int = -1,
    version: int = 10,
) -> tuple[int, int, int]:
    """``(timestamp, offset, leader_epoch)`` answered for partition 0 (NO_ERROR asserted)."""
    response = await client.request(
        ApiKey.LIST_OFFSETS,
        version,
        {
            "replica_id": replica_id,
            "isolation_level": isolation_level,
            "topics": [
                {"name": topic, "partitions": [{"partition_index": 0, "timestamp": timestamp}]}
            ],
        },
    )
    part: dict[str, Any] = response["topics"][0]["partitions"][0]
    assert part["error_code"] == ErrorCode.NO_ERROR, part
    return part["timestamp"], part["offset"], part["leader_epoch"]


async def produce(client: WireClient, topic: str, batch: bytes) -> None:
    response = await client.request(ApiKey.PRODUCE, 9, produce_body(topic, batch))
    assert partition_of(response)["error_code"] == ErrorCode.NO_ERROR


def stamped(*timestamps: int) -> bytes:
    return build_batch([Record(b"k", b"v%d" % t, timestamp=t) for t in timestamps])


def hosted(broker: Any, topic: str) -> Partition:
    partition: Partition = broker.service("replica_manager").get_partition(topic, 0)
    assert partition is not None
    return partition


async def test_all_five_special_timestamps_with_leader_epochs() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        assert (await create_topic(client, "t"))["error_code"] == 0
        partition = hosted(broker, "t")
        first = partition.leader_epoch
        await produce(client, "t", stamped(1000, 5000, 3000))  # offsets 0-2, epoch first
        partition.leader_epoch = first + 2  # a new leader epoch, as after an election
        await produce(client, "t", stamped(2000, 4000))  # offsets 3-4, epoch first + 2
        latest = first + 2
        answers = {ts: await list_offsets(client, "t", ts) for ts in range(-1, -6, -1)}
        assert answers == {
            LATEST: (-1, 5, latest),
            EARLIEST: (-1, 0, first),
            MAX_TIMESTAMP: (5000, 1, first),  # the batch's epoch, not the current one
            EARLIEST_LOCAL: (-1, 0, first),
            LATEST_TIERED: UNKNOWN,  # no tiered storage
        }
        assert await list_offsets(client, "t", 900) == (1000, 0, first)
        assert await list_offsets(client, "t", 4500) == (5000, 1, first)  # first stamped >=
        assert await list_offsets(client, "t", 6000) == UNKNOWN
        # the log start moves into the second epoch: EARLIEST answers that epoch
        partition.log.maybe_increment_log_start_offset(4)
        assert await list_offsets(client, "t", EARLIEST) == (-1, 4, latest)
        assert await list_offsets(client, "t", EARLIEST_LOCAL) == (-1, 4, latest)
        assert await list_offsets(client, "t", 3500) == (4000, 4, latest)
        # v1-v3 have no leader epoch in the answer; the offsets are the same
        response = await client.request(
            ApiKey.LIST_OFFSETS,
            1,
            {
                "replica_id": -1,
                "topics": [
                    {"name": "t", "partitions": [{"partition_index": 0, "timestamp": EARLIEST}]}
                ],
            },
        )
        assert response["topics"][0]["partitions"][0]["offset"] == 4
        await client.aclose()


async def test_answers_beyond_the_high_watermark_are_unknown() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "hw")
        partition = hosted(broker, "hw")
        epoch = partition.leader_epoch
        await produce(client, "hw", stamped(1000, 2000))  # offsets 0-1
        await produce(client, "hw", stamped(9000, 3000))  # offsets 2-3, max timestamp at 2
        partition.log.high_watermark = 2  # followers have not caught up with offsets 2-3
        assert await list_offsets(client, "hw", LATEST) == (-1, 2, epoch)
        assert await list_offsets(client, "hw", MAX_TIMESTAMP) == UNKNOWN  # offset 2 >= HW
        assert await list_offsets(client, "hw", 1500) == (2000, 1, epoch)
        assert await list_offsets(client, "hw", 2500) == UNKNOWN  # found offset 2 >= HW
        assert await list_offsets(client, "hw", EARLIEST) == (-1, 0, epoch)  # not bounded
        # a broker (replica_id >= 0) is bounded by the log end offset instead
        assert await list_offsets(client, "hw", LATEST, replica_id=1) == (-1, 4, epoch)
        assert await list_offsets(client, "hw", MAX_TIMESTAMP, replica_id=1) == (9000, 2, epoch)
        assert await list_offsets(client, "hw", 2500, replica_id=1) == (9000, 2, epoch)
        await client.aclose()


async def test_read_committed_is_bounded_by_the_last_stable_offset() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "txn")
        epoch = hosted(broker, "txn").leader_epoch
        await produce(client, "txn", stamped(1000, 2000))  # offsets 0-1, committed data
        pid, producer_epoch = await init_txn(client, "lo-tx")
        assert await add_partition(client, "lo-tx", pid, producer_epoch, "txn") == 0
        open_batch = build_batch(
            [Record(None, b"pending", timestamp=5000)],
            producer_id=pid,
            producer_epoch=producer_epoch,
            base_sequence=0,
            is_transactional=True,
        )
        await produce(client, "txn", open_batch)  # offset 2, transaction still open

        async def both(timestamp: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
            return (
                await list_offsets(client, "txn", timestamp, isolation_level=READ_UNCOMMITTED),
                await list_offsets(client, "txn", timestamp, isolation_level=READ_COMMITTED),
            )

        assert await both(LATEST) == ((-1, 3, epoch), (-1, 2, epoch))  # HW vs LSO
        assert await both(MAX_TIMESTAMP) == ((5000, 2, epoch), UNKNOWN)
        assert await both(3000) == ((5000, 2, epoch), UNKNOWN)
        assert await both(1500) == ((2000, 1, epoch), (2000, 1, epoch))
        assert await both(EARLIEST) == ((-1, 0, epoch), (-1, 0, epoch))
        assert await both(LATEST_TIERED) == (UNKNOWN, UNKNOWN)
        assert await end_txn(client, "lo-tx", pid, producer_epoch, True) == 0
        for _ in range(100):  # the COMMIT marker is written by the coordinator
            if hosted(broker, "txn").last_stable_offset == 4:
                break
            await trio.sleep(0.02)
        assert await both(LATEST) == ((-1, 4, epoch), (-1, 4, epoch))
        assert await both(3000) == ((5000, 2, epoch), (5000, 2, epoch))
        await client.aclose()
