"""Transactions against an in-process broker: coordinator, markers, read_committed fetch."""

from __future__ import annotations

from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.clock import wall_clock_ms
from pykbroker.log.record_batch import Record, build_batch, iter_batch_headers
from pykbroker.testing import serve
from tests.wire import WireClient

from .test_broker_requests import create_topic, fetch_body, partition_of, produce_body, records_of


async def init_txn(client: WireClient, tid: str, timeout_ms: int = 60_000) -> tuple[int, int]:
    response = await client.request(
        ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": tid, "transaction_timeout_ms": timeout_ms}
    )
    assert response["error_code"] == ErrorCode.NO_ERROR, response
    return response["producer_id"], response["producer_epoch"]


async def add_partition(client: WireClient, tid: str, pid: int, epoch: int, topic: str) -> int:
    response = await client.request(
        ApiKey.ADD_PARTITIONS_TO_TXN,
        3,
        {
            "v3_and_below_transactional_id": tid,
            "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch,
            "v3_and_below_topics": [{"name": topic, "partitions": [0]}],
        },
    )
    code: int = response["results_by_topic_v3_and_below"][0]["results_by_partition"][0][
        "partition_error_code"
    ]
    return code


async def end_txn(client: WireClient, tid: str, pid: int, epoch: int, commit: bool) -> int:
    response = await client.request(
        ApiKey.END_TXN,
        3,
        {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "committed": commit},
    )
    code: int = response["error_code"]
    return code


def txn_batch(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    return build_batch(
        [Record(None, v, timestamp=wall_clock_ms()) for v in values],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        is_transactional=True,
    )


async def produce(client: WireClient, topic: str, batch: bytes) -> dict[str, Any]:
    body = produce_body(topic, batch)
    response = await client.request(ApiKey.PRODUCE, 9, body)
    return partition_of(response)


async def fetch(client: WireClient, topic: str, isolation: int) -> dict[str, Any]:
    body = {**fetch_body(topic, 0), "isolation_level": isolation}
    return partition_of(await client.request(ApiKey.FETCH, 12, body), "partitions")


def data_values(records: bytes) -> list[bytes | None]:
    values: list[bytes | None] = []
    for position, header in iter_batch_headers(records):
        if not header.is_control:
            values.extend(
                r.value for r in records_of(records[position : position + header.size_in_bytes])
            )
    return values


async def test_commit_and_abort_write_markers_and_aborted_index() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        pid, epoch = await init_txn(client, "tx-1")
        assert await add_partition(client, "tx-1", pid, epoch, "t") == ErrorCode.NO_ERROR
        assert (await produce(client, "t", txn_batch(pid, epoch, 0, b"a1", b"a2")))[
            "error_code"
        ] == 0
        # an open transaction holds the last stable offset back
        assert (await fetch(client, "t", 1))["last_stable_offset"] == 0
        assert await end_txn(client, "tx-1", pid, epoch, False) == ErrorCode.NO_ERROR
        assert await add_partition(client, "tx-1", pid, epoch, "t") == ErrorCode.NO_ERROR
        await produce(client, "t", txn_batch(pid, epoch, 2, b"c1"))
        assert await end_txn(client, "tx-1", pid, epoch, True) == ErrorCode.NO_ERROR
        # a retried commit is answered NO_ERROR, an abort of it INVALID_TXN_STATE
        assert await end_txn(client, "tx-1", pid, epoch, True) == ErrorCode.NO_ERROR
        assert await end_txn(client, "tx-1", pid, epoch, False) == ErrorCode.INVALID_TXN_STATE

        uncommitted = await fetch(client, "t", 0)
        assert data_values(uncommitted["records"]) == [b"a1", b"a2", b"c1"]
        assert uncommitted["aborted_transactions"] is None
        committed = await fetch(client, "t", 1)
        assert committed["last_stable_offset"] == 5  # a1 a2 ABORT c1 COMMIT
        assert committed["aborted_transactions"] == [{"producer_id": pid, "first_offset": 0}]
        await client.aclose()


async def test_init_producer_id_fences_and_aborts_the_open_transaction() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "f")
        pid, epoch = await init_txn(client, "tx-f")
        await add_partition(client, "tx-f", pid, epoch, "f")
        await produce(client, "f", txn_batch(pid, epoch, 0, b"zombie"))
        response = await client.request(
            ApiKey.INIT_PRODUCER_ID,
            4,
            {"transactional_id": "tx-f", "transaction_timeout_ms": 60_000},
        )
        assert response["error_code"] == ErrorCode.CONCURRENT_TRANSACTIONS
        new_pid, new_epoch = await init_txn(client, "tx-f")
        assert (new_pid, new_epoch) == (pid, epoch + 2)
        assert await end_txn(client, "tx-f", pid, epoch, True) == ErrorCode.PRODUCER_FENCED
        committed = await fetch(client, "f", 1)
        assert committed["aborted_transactions"] == [{"producer_id": pid, "first_offset": 0}]
        assert committed["last_stable_offset"] == 2
        await client.aclose()


async def test_timed_out_transaction_is_aborted_by_the_coordinator() -> None:
    async with serve(transaction_abort_timed_out_transaction_cleanup_interval_ms=50) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "to")
        pid, epoch = await init_txn(client, "tx-to", timeout_ms=100)
        await add_partition(client, "tx-to", pid, epoch, "to")
        await produce(client, "to", txn_batch(pid, epoch, 0, b"late"))
        with trio.fail_after(5):
            while (await fetch(client, "to", 1))["last_stable_offset"] != 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert await end_txn(client, "tx-to", pid, epoch, True) == ErrorCode.PRODUCER_FENCED
        await client.aclose()


async def test_transaction_state_survives_a_restart(tmp_path: Any) -> None:
    async with serve(log_dirs=str(tmp_path)) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "r")
        pid, epoch = await init_txn(client, "tx-r")
        await add_partition(client, "tx-r", pid, epoch, "r")
        await produce(client, "r", txn_batch(pid, epoch, 0, b"x"))
        assert await end_txn(client, "tx-r", pid, epoch, False) == ErrorCode.NO_ERROR
        await client.aclose()
    async with serve(log_dirs=str(tmp_path)) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        assert await init_txn(client, "tx-r") == (pid, epoch + 1)
        committed = await fetch(client, "r", 1)
        assert committed["aborted_transactions"] == [{"producer_id": pid, "first_offset": 0}]
        await client.aclose()
