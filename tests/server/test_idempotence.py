"""Idempotent produce against an in-process broker: retries, sequence errors, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.clock import wall_clock_ms
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.testing import serve
from tests.wire import WireClient

from .test_broker_requests import create_topic, fetch_body, partition_of, produce_body, records_of


async def init_producer_id(client: WireClient) -> tuple[int, int]:
    response = await client.request(
        ApiKey.INIT_PRODUCER_ID,
        4,
        {"transactional_id": None, "transaction_timeout_ms": 60_000},
    )
    assert response["error_code"] == ErrorCode.NO_ERROR
    return response["producer_id"], response["producer_epoch"]


def idempotent_batch(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    # Producer state expires producer.id.expiration.ms after the batch's max timestamp,
    # so stamp the records as a client does.
    now = wall_clock_ms()
    return build_batch(
        [Record(None, v, timestamp=now) for v in values],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
    )


async def produce(client: WireClient, topic: str, batch: bytes) -> dict[str, Any]:
    response = await client.request(ApiKey.PRODUCE, 9, produce_body(topic, batch))
    return partition_of(response)


async def values_in(client: WireClient, topic: str) -> list[bytes | None]:
    fetched = await client.request(ApiKey.FETCH, 12, fetch_body(topic, 0))
    return [r.value for r in records_of(partition_of(fetched, "partitions")["records"])]


async def test_retried_batch_gets_the_original_offset_and_no_duplicate() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "idem")
        pid, epoch = await init_producer_id(client)
        first = idempotent_batch(pid, epoch, 0, b"a", b"b")
        second = idempotent_batch(pid, epoch, 2, b"c")
        assert (await produce(client, "idem", first))["base_offset"] == 0
        assert (await produce(client, "idem", second))["base_offset"] == 2
        for retry in (first, second, first):
            answer = await produce(client, "idem", retry)
            assert answer["error_code"] == ErrorCode.NO_ERROR
            assert answer["base_offset"] == (0 if retry is first else 2)
        assert await values_in(client, "idem") == [b"a", b"b", b"c"]
        await client.aclose()


async def test_sequence_gap_and_stale_epoch_get_kafka_errors() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "idem")
        pid, _ = await init_producer_id(client)
        await produce(client, "idem", idempotent_batch(pid, 1, 0, b"a"))
        gap = await produce(client, "idem", idempotent_batch(pid, 1, 5, b"x"))
        assert gap["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        stale = await produce(client, "idem", idempotent_batch(pid, 0, 1, b"x"))
        assert stale["error_code"] == ErrorCode.INVALID_PRODUCER_EPOCH
        assert await values_in(client, "idem") == [b"a"]
        await client.aclose()


async def test_dedup_survives_a_restart(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "idem")
        pid, epoch = await init_producer_id(client)
        await produce(client, "idem", idempotent_batch(pid, epoch, 0, b"a"))
        await produce(client, "idem", idempotent_batch(pid, epoch, 1, b"b"))
        await client.aclose()
    assert list((tmp_path / "idem-0").glob("*.snapshot"))
    async with serve(log_dirs=tmp_path) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        retry = await produce(client, "idem", idempotent_batch(pid, epoch, 1, b"b"))
        assert (retry["error_code"], retry["base_offset"]) == (ErrorCode.NO_ERROR, 1)
        gap = await produce(client, "idem", idempotent_batch(pid, epoch, 3, b"x"))
        assert gap["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        after = await produce(client, "idem", idempotent_batch(pid, epoch, 2, b"c"))
        assert after["base_offset"] == 2
        assert await values_in(client, "idem") == [b"a", b"b", b"c"]
        await client.aclose()


async def test_read_committed_fetch_stops_at_an_open_transaction() -> None:
    """Until the coordinator writes a marker, an open transaction holds the last stable
    offset: read_committed fetches stop before it, read_uncommitted ones do not."""
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "txn")
        pid, epoch = await init_producer_id(client)
        await produce(client, "txn", idempotent_batch(pid + 1, 0, 0, b"plain"))
        now = wall_clock_ms()
        txn = build_batch(
            [Record(None, b"open", timestamp=now)],
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=0,
            is_transactional=True,
        )
        assert (await produce(client, "txn", txn))["base_offset"] == 1
        committed = fetch_body("txn", 0)
        committed["isolation_level"] = 1
        part = partition_of(await client.request(ApiKey.FETCH, 12, committed), "partitions")
        assert (part["high_watermark"], part["last_stable_offset"]) == (2, 1)
        assert [r.value for r in records_of(part["records"])] == [b"plain"]
        assert await values_in(client, "txn") == [b"plain", b"open"]
        await client.aclose()
