"""OffsetForLeaderEpoch (key 23) against an in-process broker over 127.0.0.1: answers from the
partitions' leader epoch caches, Kafka's errors, bad input, and the checkpoint across a restart.

Leader changes cannot happen on one broker, so two tests move a hosted ``Partition``'s leader
epoch (or leadership) by hand, as the metadata image would after an election."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import RELEASE_4_1, ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.leader_epoch_cache import LEADER_EPOCH_CHECKPOINT_FILE
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.replication.partition import Partition
from pykbroker.testing import serve
from tests.server.test_broker_requests import create_topic, partition_of, produce_body
from tests.wire import WireClient, encode_request

VERSIONS = range(RELEASE_4_1[ApiKey.OFFSET_FOR_LEADER_EPOCH][0], 5)
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)


def request_body(
    topic: str, *partitions: tuple[int, int, int], replica_id: int = -1
) -> dict[str, Any]:
    """``partitions``: ``(partition, current_leader_epoch, leader_epoch)``."""
    return {
        "replica_id": replica_id,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {"partition": p, "current_leader_epoch": current, "leader_epoch": epoch}
                    for p, current, epoch in partitions
                ],
            }
        ],
    }


async def ask(
    client: WireClient, version: int, topic: str, *partitions: tuple[int, int, int]
) -> list[tuple[int, int, int]]:
    """``(error_code, leader_epoch, end_offset)`` per partition asked."""
    response = await client.request(
        ApiKey.OFFSET_FOR_LEADER_EPOCH, version, request_body(topic, *partitions)
    )
    (found,) = response["topics"]
    assert found["topic"] == topic
    asked = [p for p, _, _ in partitions]
    assert [p["partition"] for p in found["partitions"]] == asked
    return [(p["error_code"], p["leader_epoch"], p["end_offset"]) for p in found["partitions"]]


async def produce(client: WireClient, topic: str, count: int, partition: int = 0) -> None:
    batch = build_batch([Record(b"k", b"v%d" % i) for i in range(count)])
    response = await client.request(
        ApiKey.PRODUCE, 9, produce_body(topic, batch, partition=partition)
    )
    assert partition_of(response)["error_code"] == ErrorCode.NO_ERROR


def hosted(broker: Any, topic: str, index: int = 0) -> Partition:
    partition: Partition = broker.service("replica_manager").get_partition(topic, index)
    assert partition is not None
    return partition


async def test_end_offsets_for_the_current_epoch_at_every_version() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        assert (await create_topic(client, "orders", partitions=2))["error_code"] == 0
        await produce(client, "orders", 3)
        await produce(client, "orders", 2)
        epoch = hosted(broker, "orders").leader_epoch
        assert epoch >= 0
        for version in VERSIONS:
            answers = await ask(client, version, "orders", (0, epoch, epoch), (1, -1, epoch))
            # partition 1 holds no batch yet: its leader cached the epoch when it became leader
            assert answers == [(ErrorCode.NO_ERROR, epoch, 5), (ErrorCode.NO_ERROR, epoch, 0)]
        await client.aclose()


async def test_older_epochs_end_where_the_next_leader_started() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "moves")
        partition = hosted(broker, "moves")
        first = partition.leader_epoch
        await produce(client, "moves", 4)  # offsets 0-3 in the first epoch
        partition.leader_epoch = first + 3  # a new leader epoch, as after an election
        await produce(client, "moves", 2)  # offsets 4-5
        latest = first + 3
        answers = await ask(
            client,
            4,
            "moves",
            (0, latest, first),
            (0, latest, first + 1),  # never led: the greatest epoch below, ended at 4
            (0, latest, latest),
            (0, -1, latest + 1),  # above every epoch
            (0, -1, -1),  # UNDEFINED_EPOCH
        )
        assert answers == [
            (ErrorCode.NO_ERROR, first, 4),
            (ErrorCode.NO_ERROR, first, 4),
            (ErrorCode.NO_ERROR, latest, 6),
            (ErrorCode.NO_ERROR, -1, -1),
            (ErrorCode.NO_ERROR, -1, -1),
        ]
        await client.aclose()


async def test_errors_follow_kafka() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "known")
        await produce(client, "known", 1)
        epoch = hosted(broker, "known").leader_epoch
        assert await ask(client, 4, "unknown", (0, -1, 0)) == [
            (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
        ]
        answers = await ask(
            client,
            3,
            "known",
            (7, -1, 0),  # no such partition
            (-1, -1, 0),
            (0, epoch + 1, epoch),  # the client knows a newer epoch than this broker
            (0, INT32_MAX, epoch),
            (0, epoch - 1 if epoch > 0 else -2, epoch),  # older (Kafka: only -1 means absent)
            (0, INT32_MIN, epoch),
        )
        assert answers == [
            (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
            (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
            (ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1),
            (ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1),
            (ErrorCode.FENCED_LEADER_EPOCH, -1, -1),
            (ErrorCode.FENCED_LEADER_EPOCH, -1, -1),
        ]
        await client.aclose()


async def test_a_follower_answers_not_leader_after_the_epoch_check() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "led-elsewhere")
        partition = hosted(broker, "led-elsewhere")
        epoch = partition.leader_epoch
        partition.is_leader = False  # as if another broker had been elected
        answers = await ask(
            client, 4, "led-elsewhere", (0, epoch, epoch), (0, -1, epoch), (0, epoch + 5, 0)
        )
        assert answers == [
            (ErrorCode.NOT_LEADER_OR_FOLLOWER, -1, -1),
            (ErrorCode.NOT_LEADER_OR_FOLLOWER, -1, -1),
            (ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1),  # Kafka checks the epoch first
        ]
        await client.aclose()


async def test_absurd_leader_epochs_get_kafkas_answers() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "absurd")
        await produce(client, "absurd", 2)
        answers = await ask(
            client, 4, "absurd", (0, -1, INT32_MAX), (0, -1, INT32_MIN), (0, -1, -7)
        )
        assert answers == [
            (ErrorCode.NO_ERROR, -1, -1),  # above every epoch
            (ErrorCode.NO_ERROR, INT32_MIN, 0),  # below the first: that epoch, the first start
            (ErrorCode.NO_ERROR, -7, 0),
        ]
        response = await client.request(
            ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, {"replica_id": 5, "topics": []}
        )
        assert response["topics"] == []
        await client.aclose()


async def test_a_malformed_request_closes_only_its_connection() -> None:
    async with serve() as broker:
        bystander = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(bystander, "safe")
        await produce(bystander, "safe", 1)
        client = await WireClient.connect(broker.bootstrap_servers)
        frame = encode_request(
            ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, request_body("safe", (0, -1, 0)), 9
        )
        # the header kept, the body cut off in the middle of the partitions array
        truncated = frame[4:-6]
        await client.send_raw(struct.pack(">i", len(truncated)) + truncated)
        assert await client.receive_frame() is None
        # an array length far past the frame (bounded before allocation)
        header_end = len(encode_request(ApiKey.OFFSET_FOR_LEADER_EPOCH, 4, {"topics": []}, 9)) - 2
        huge = frame[4:header_end] + b"\xff\xff\xff\xff\x0f"  # topics: 2**32 - 2
        other = await WireClient.connect(broker.bootstrap_servers)
        await other.send_raw(struct.pack(">i", len(huge)) + huge)
        assert await other.receive_frame() is None
        epoch = hosted(broker, "safe").leader_epoch
        assert await ask(bystander, 4, "safe", (0, -1, epoch)) == [(ErrorCode.NO_ERROR, epoch, 1)]
        for conn in (client, other, bystander):
            await conn.aclose()


async def test_the_epoch_checkpoint_survives_a_restart(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "durable")
        first = hosted(broker, "durable").leader_epoch
        await produce(client, "durable", 3)
        await client.aclose()
    checkpoint = trio.Path(tmp_path / "durable-0" / LEADER_EPOCH_CHECKPOINT_FILE)
    assert await checkpoint.read_text() == f"0\n1\n{first} 0\n"
    async with serve(log_dirs=tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        # the restarted broker was fenced meanwhile: it may lead a later epoch now
        latest = hosted(broker, "durable").leader_epoch
        assert latest >= first
        assert await ask(client, 4, "durable", (0, latest, first)) == [
            (ErrorCode.NO_ERROR, first, 3)
        ]
        await produce(client, "durable", 1)
        assert await ask(client, 4, "durable", (0, latest, latest)) == [
            (ErrorCode.NO_ERROR, latest, 4)
        ]
        if latest > first:
            assert await ask(client, 4, "durable", (0, latest + 1, first)) == [
                (ErrorCode.UNKNOWN_LEADER_EPOCH, -1, -1)
            ]
            assert await ask(client, 4, "durable", (0, first, first)) == [
                (ErrorCode.FENCED_LEADER_EPOCH, -1, -1)
            ]
        await client.aclose()
    entries = [(first, 0)] if latest == first else [(first, 0), (latest, 3)]
    lines = "".join(f"{epoch} {offset}\n" for epoch, offset in entries)
    assert await checkpoint.read_text() == f"0\n{len(entries)}\n{lines}"
