"""An in-process broker answering real requests over real sockets on 127.0.0.1."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import trio

from pykbroker.api.dispatch import SUPPORTED
from pykbroker.api.protocol.api_keys import RELEASE_4_1, ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.record_batch import Record, build_batch, decode_records, iter_batch_headers
from pykbroker.testing import serve
from tests.wire import WireClient, encode_request


def records_of(data: bytes) -> list[Record]:
    """Every record of a concatenation of batches (a fetch response's records)."""
    found: list[Record] = []
    for position, header in iter_batch_headers(data):
        found.extend(decode_records(data[position : position + header.size_in_bytes]))
    return found


def produce_body(topic: str, records: bytes, acks: int = -1, partition: int = 0) -> dict[str, Any]:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": 5000,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": records}]}
        ],
    }


def fetch_body(
    topic: str, offset: int, max_wait_ms: int = 0, min_bytes: int = 1, partition: int = 0
) -> dict[str, Any]:
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": 1 << 20,
        "isolation_level": 0,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {"partition": partition, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                ],
            }
        ],
    }


async def create_topic(client: WireClient, name: str, partitions: int = 1) -> dict[str, Any]:
    response = await client.request(
        ApiKey.CREATE_TOPICS,
        7,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [],
                }
            ],
            "timeout_ms": 5000,
        },
    )
    result: dict[str, Any] = response["topics"][0]
    return result


def partition_of(response: dict[str, Any], key: str = "partition_responses") -> dict[str, Any]:
    part: dict[str, Any] = response["responses"][0][key][0]
    return part


async def test_api_versions_lists_kafka_4_1_ranges_for_served_apis() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        for version in range(5):
            response = await client.request(
                ApiKey.API_VERSIONS,
                version,
                {
                    "client_software_name": "pykbroker-tests",
                    "client_software_version": "1.0",
                },
            )
            assert response["error_code"] == ErrorCode.NO_ERROR
            listed = {
                k["api_key"]: (k["min_version"], k["max_version"]) for k in response["api_keys"]
            }
            assert listed == {key: RELEASE_4_1[key] for key in SUPPORTED}
            assert listed[ApiKey.PRODUCE] == (0, 13)
        await client.aclose()


async def test_api_versions_too_new_is_answered_at_v0_with_unsupported_version() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        payload = struct.pack(">hhih", ApiKey.API_VERSIONS, 9, 42, -1) + b"\x00\x00"
        await client.send_raw(struct.pack(">i", len(payload)) + payload)
        frame = await client.receive_frame()
        assert frame is not None
        correlation_id, error_code = struct.unpack_from(">ih", frame)
        assert (correlation_id, error_code) == (42, ErrorCode.UNSUPPORTED_VERSION)
        await client.aclose()


async def test_produce_then_fetch_returns_the_same_batch_bytes_with_offsets() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        assert (await create_topic(client, "orders"))["error_code"] == ErrorCode.NO_ERROR
        records = [
            Record(b"k%d" % i, b"v%d" % i, (("h", b"x"),), 1_700_000_000_000 + i) for i in range(5)
        ]
        for version in (3, 9, 12):
            response = await client.request(
                ApiKey.PRODUCE, version, produce_body("orders", build_batch(records))
            )
            assert partition_of(response)["error_code"] == ErrorCode.NO_ERROR
        assert partition_of(response)["base_offset"] == 10
        fetched = await client.request(ApiKey.FETCH, 12, fetch_body("orders", 0))
        part = partition_of(fetched, "partitions")
        assert part["error_code"] == ErrorCode.NO_ERROR
        assert part["high_watermark"] == 15
        got = records_of(part["records"])
        assert [r.offset for r in got] == list(range(15))
        assert [(r.key, r.value, r.headers, r.timestamp) for r in got[:5]] == [
            (r.key, r.value, r.headers, r.timestamp) for r in records
        ]
        await client.aclose()


async def test_parked_fetch_answers_as_soon_as_a_record_arrives() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        producer = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "events")
        correlation_id = await client.send(
            ApiKey.FETCH, 12, fetch_body("events", 0, max_wait_ms=30_000)
        )
        await trio.sleep(0.05)
        await producer.request(
            ApiKey.PRODUCE, 9, produce_body("events", build_batch([Record(None, b"x")]))
        )
        with trio.fail_after(5):  # far below the 30 s max wait: the parked fetch was woken
            fetched = await client.receive(ApiKey.FETCH, 12, correlation_id)
        assert len(records_of(partition_of(fetched, "partitions")["records"])) == 1
        await client.aclose()
        await producer.aclose()


async def test_bad_crc_gets_corrupt_message_and_nothing_is_appended() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        batch = bytearray(build_batch([Record(b"k", b"value")]))
        batch[-1] ^= 0xFF
        response = await client.request(ApiKey.PRODUCE, 9, produce_body("t", bytes(batch)))
        assert partition_of(response)["error_code"] == ErrorCode.CORRUPT_MESSAGE
        fetched = await client.request(ApiKey.FETCH, 12, fetch_body("t", 0))
        assert partition_of(fetched, "partitions")["high_watermark"] == 0
        await client.aclose()


async def test_batch_over_message_max_bytes_gets_message_too_large() -> None:
    async with serve(message_max_bytes=1000) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        batch = build_batch([Record(None, b"x" * 2000)])
        response = await client.request(ApiKey.PRODUCE, 9, produce_body("t", batch))
        assert partition_of(response)["error_code"] == ErrorCode.MESSAGE_TOO_LARGE
        await client.aclose()


async def test_produce_to_missing_topic_gets_unknown_topic_or_partition() -> None:
    async with serve(auto_create_topics_enable="false") as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        response = await client.request(
            ApiKey.PRODUCE, 9, produce_body("nope", build_batch([Record(None, b"x")]))
        )
        assert partition_of(response)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        metadata = await client.request(ApiKey.METADATA, 12, {"topics": [{"name": "nope"}]})
        assert metadata["topics"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        await client.aclose()


async def test_metadata_auto_creates_topics_with_num_partitions() -> None:
    async with serve(num_partitions=3) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        metadata = await client.request(
            ApiKey.METADATA, 12, {"topics": [{"name": "auto"}], "allow_auto_topic_creation": True}
        )
        topic = metadata["topics"][0]
        assert topic["error_code"] == ErrorCode.NO_ERROR
        assert sorted(p["partition_index"] for p in topic["partitions"]) == [0, 1, 2]
        assert metadata["brokers"] == [
            {"node_id": 1, "host": "127.0.0.1", "port": broker.endpoint().port, "rack": None}
        ]
        assert metadata["cluster_id"] == broker.cluster_id
        await client.aclose()


async def test_acks_zero_gets_no_response_but_the_data_is_written() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        await client.send(
            ApiKey.PRODUCE, 9, produce_body("t", build_batch([Record(None, b"x")]), acks=0)
        )
        metadata = await client.request(ApiKey.METADATA, 12, {"topics": None})
        assert [t["name"] for t in metadata["topics"]] == ["t"]  # the next frame is this answer
        fetched = await client.request(ApiKey.FETCH, 12, fetch_body("t", 0))
        assert partition_of(fetched, "partitions")["high_watermark"] == 1
        await client.aclose()


async def test_fetch_beyond_log_end_gets_offset_out_of_range() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        fetched = await client.request(ApiKey.FETCH, 12, fetch_body("t", 100))
        assert partition_of(fetched, "partitions")["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE
        await client.aclose()


async def test_list_offsets_earliest_latest_and_by_timestamp() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        records = [Record(None, b"v", timestamp=1000 * (i + 1)) for i in range(3)]
        for rec in records:
            await client.request(ApiKey.PRODUCE, 9, produce_body("t", build_batch([rec])))
        answers = []
        for ts in (-2, -1, 2000, 2500, 9999, -3):
            response = await client.request(
                ApiKey.LIST_OFFSETS,
                9,
                {
                    "replica_id": -1,
                    "isolation_level": 0,
                    "topics": [
                        {"name": "t", "partitions": [{"partition_index": 0, "timestamp": ts}]}
                    ],
                },
            )
            part = response["topics"][0]["partitions"][0]
            answers.append((part["offset"], part["timestamp"]))
        assert answers == [(0, -1), (3, -1), (1, 2000), (2, 3000), (-1, -1), (2, 3000)]
        await client.aclose()


async def test_unknown_api_key_closes_only_that_connection() -> None:
    async with serve() as broker:
        bad = await WireClient.connect(broker.bootstrap_servers)
        good = await WireClient.connect(broker.bootstrap_servers)
        payload = struct.pack(">hhih", 999, 0, 1, -1)
        await bad.send_raw(struct.pack(">i", len(payload)) + payload)
        assert await bad.receive_frame() is None
        response = await good.request(ApiKey.METADATA, 12, {"topics": None})
        assert response["brokers"][0]["node_id"] == 1
        await bad.aclose()
        await good.aclose()


async def test_oversize_frame_is_refused_before_reading_it() -> None:
    async with serve(socket_request_max_bytes=2_000_000, message_max_bytes=1000) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await client.send_raw(struct.pack(">i", 1_500_000_000) + b"\x00" * 10)
        assert await client.receive_frame() is None
        await client.aclose()


async def test_garbage_body_closes_the_connection_and_the_broker_carries_on() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        frame = encode_request(ApiKey.METADATA, 12, {"topics": None}, 1)
        garbage = frame[: 4 + 12] + b"\xff" * (len(frame) - 16)
        await client.send_raw(struct.pack(">i", len(garbage) - 4) + garbage[4:])
        assert await client.receive_frame() is None
        again = await WireClient.connect(broker.bootstrap_servers)
        assert (await again.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        await client.aclose()
        await again.aclose()


async def test_records_and_topics_survive_a_restart(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "durable", partitions=2)
        await client.request(
            ApiKey.PRODUCE,
            9,
            produce_body(
                "durable", build_batch([Record(b"a", b"1"), Record(b"b", b"2")]), partition=1
            ),
        )
        cluster_id = broker.cluster_id
        await client.aclose()
    async with serve(log_dirs=tmp_path) as broker:
        assert broker.cluster_id == cluster_id
        client = await WireClient.connect(broker.bootstrap_servers)
        metadata = await client.request(ApiKey.METADATA, 12, {"topics": None})
        assert [(t["name"], len(t["partitions"])) for t in metadata["topics"]] == [("durable", 2)]
        fetched = await client.request(ApiKey.FETCH, 12, fetch_body("durable", 0, partition=1))
        got = records_of(partition_of(fetched, "partitions")["records"])
        assert [(r.offset, r.key, r.value) for r in got] == [(0, b"a", b"1"), (1, b"b", b"2")]
        await client.aclose()


async def test_delete_topic_removes_it_and_its_log(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "gone")
        assert (tmp_path / "gone-0").is_dir()
        response = await client.request(
            ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "gone"}], "timeout_ms": 1000}
        )
        assert response["responses"][0]["error_code"] == ErrorCode.NO_ERROR
        metadata = await client.request(ApiKey.METADATA, 12, {"topics": None})
        assert metadata["topics"] == []
        assert not (tmp_path / "gone-0").exists()
        again = await client.request(
            ApiKey.DELETE_TOPICS, 6, {"topics": [{"name": "gone"}], "timeout_ms": 1000}
        )
        assert again["responses"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        await client.aclose()


async def test_create_topics_errors_are_per_topic() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        assert (await create_topic(client, "dup"))["error_code"] == ErrorCode.NO_ERROR
        assert (await create_topic(client, "dup"))["error_code"] == ErrorCode.TOPIC_ALREADY_EXISTS
        assert (await create_topic(client, "bad/name"))[
            "error_code"
        ] == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert (await create_topic(client, "zero", partitions=0))[
            "error_code"
        ] == ErrorCode.INVALID_PARTITIONS
        await client.aclose()
