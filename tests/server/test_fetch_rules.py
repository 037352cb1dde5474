"""Fetch rules as Kafka's: min_bytes / max_wait_ms, response max_bytes, sessions declined."""

from __future__ import annotations

from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.record_batch import Record, build_batch, iter_batch_headers
from pykbroker.testing import serve
from tests.wire import WireClient

FETCH_V = 12


def fetch_request(
    topic: str,
    offset: int = 0,
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 1 << 20,
    session_id: int = 0,
    session_epoch: int = -1,
) -> dict[str, Any]:
    """A consumer's FetchRequest v12 for partition 0 of ``topic``."""
    return {
        "replica_id": -1,
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "session_id": session_id,
        "session_epoch": session_epoch,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


async def create_topic(client: WireClient, name: str) -> None:
    body = {
        "topics": [
            {
                "name": name,
                "num_partitions": 1,
                "replication_factor": 1,
                "assignments": [],
                "configs": [],
            }
        ],
        "timeout_ms": 5000,
    }
    response = await client.request(ApiKey.CREATE_TOPICS, 7, body)
    assert response["topics"][0]["error_code"] == ErrorCode.NO_ERROR


async def produce(client: WireClient, topic: str, batch: bytes) -> int:
    """Produce one batch (acks=all); its base offset."""
    body = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
    }
    response = await client.request(ApiKey.PRODUCE, 9, body)
    part = response["responses"][0]["partition_responses"][0]
    assert part["error_code"] == ErrorCode.NO_ERROR
    base_offset: int = part["base_offset"]
    return base_offset


def batch_of(value_size: int, count: int = 1) -> bytes:
    return build_batch([Record(None, b"v" * value_size) for _ in range(count)])


def fetched_part(response: dict[str, Any]) -> dict[str, Any]:
    assert response["error_code"] == ErrorCode.NO_ERROR
    part: dict[str, Any] = response["responses"][0]["partitions"][0]
    assert part["error_code"] == ErrorCode.NO_ERROR
    return part


def batch_sizes(records: bytes | None) -> list[int]:
    return [header.size_in_bytes for _, header in iter_batch_headers(records or b"")]


async def test_min_bytes_not_reached_waits_max_wait_ms_then_answers() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        try:
            await create_topic(client, "slow")
            small = batch_of(10)
            await produce(client, "slow", small)
            began = trio.current_time()
            with trio.fail_after(10):
                response = await client.request(
                    ApiKey.FETCH, FETCH_V, fetch_request("slow", max_wait_ms=600, min_bytes=1 << 20)
                )
            waited = trio.current_time() - began
            assert 0.55 <= waited < 5, waited
            # what is there is returned when max_wait_ms is up
            assert batch_sizes(fetched_part(response)["records"]) == [len(small)]
        finally:
            await client.aclose()


async def test_min_bytes_reached_by_a_produce_answers_before_max_wait_ms() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        producer = await WireClient.connect(broker.bootstrap_servers)
        try:
            await create_topic(client, "fast")
            first, second = batch_of(10), batch_of(400)
            await produce(producer, "fast", first)
            assert len(first) < 300 < len(first) + len(second)
            correlation_id = await client.send(
                ApiKey.FETCH, FETCH_V, fetch_request("fast", max_wait_ms=30_000, min_bytes=300)
            )
            # the first batch alone does not satisfy min_bytes: the fetch stays parked
            with trio.move_on_after(0.5) as parked:
                await client.receive(ApiKey.FETCH, FETCH_V, correlation_id)
            assert parked.cancelled_caught, "answered although min_bytes was not reached"
            began = trio.current_time()
            await produce(producer, "fast", second)
            with trio.fail_after(5):  # far below max_wait_ms: the produce completed it
                response = await client.receive(ApiKey.FETCH, FETCH_V, correlation_id)
            assert trio.current_time() - began < 5
            assert batch_sizes(fetched_part(response)["records"]) == [len(first), len(second)]
        finally:
            await client.aclose()
            await producer.aclose()


async def test_response_max_bytes_limits_the_answer_but_returns_at_least_one_batch() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        try:
            await create_topic(client, "big")
            batches = [batch_of(1000) for _ in range(3)]
            for batch in batches:
                await produce(client, "big", batch)
            size = len(batches[0])

            everything = await client.request(ApiKey.FETCH, FETCH_V, fetch_request("big"))
            assert batch_sizes(fetched_part(everything)["records"]) == [size] * 3

            two = await client.request(
                ApiKey.FETCH, FETCH_V, fetch_request("big", max_bytes=2 * size + size // 2)
            )
            assert batch_sizes(fetched_part(two)["records"]) == [size] * 2

            # smaller than one batch: the first batch still comes whole, so the consumer
            # can make progress (KIP-74)
            tiny = await client.request(ApiKey.FETCH, FETCH_V, fetch_request("big", max_bytes=10))
            part = fetched_part(tiny)
            assert batch_sizes(part["records"]) == [size]
            assert part["high_watermark"] == 3
        finally:
            await client.aclose()


async def test_full_fetch_gets_session_id_0_and_incremental_gets_session_not_found() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        try:
            await create_topic(client, "sessions")
            await produce(client, "sessions", batch_of(5))
            # a full fetch that asks for a new session (id 0, epoch 0): sessions are declined
            full = await client.request(
                ApiKey.FETCH, FETCH_V, fetch_request("sessions", session_id=0, session_epoch=0)
            )
            assert full["session_id"] == 0
            assert len(batch_sizes(fetched_part(full)["records"])) == 1

            incremental = await client.request(
                ApiKey.FETCH, FETCH_V, fetch_request("sessions", session_id=1234, session_epoch=1)
            )
            assert incremental["error_code"] == ErrorCode.FETCH_SESSION_ID_NOT_FOUND
            assert incremental["session_id"] == 0
            assert incremental["responses"] == []
        finally:
            await client.aclose()
