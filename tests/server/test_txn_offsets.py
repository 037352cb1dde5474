"""Transactional offset commits against an in-process broker, across restarts.

TxnOffsetCommit writes the offsets to ``__consumer_offsets`` as a transactional batch; they are
pending (invisible, UNSTABLE_OFFSET_COMMIT with ``require_stable``) until the transaction's
marker reaches the group's partition. A broker restarted while the transaction is open loads
them as pending again; the transaction then ends (aborted by a re-initializing producer or
its timeout, or committed by its producer) and OffsetFetch shows exactly the right offsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.records import partition_for
from pykbroker.testing import serve
from tests.wire import WireClient

from .test_broker_requests import create_topic
from .test_transactions import add_partition, end_txn, fetch, init_txn, produce, txn_batch
from .test_txn_admin import marker, write_markers

GROUP = "txn-group"
TOPIC = "in"
OK = ErrorCode.NO_ERROR
UNSTABLE = ErrorCode.UNSTABLE_OFFSET_COMMIT


async def add_offsets(client: WireClient, tid: str, pid: int, epoch: int) -> int:
    response = await client.request(
        ApiKey.ADD_OFFSETS_TO_TXN,
        3,
        {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "group_id": GROUP},
    )
    code: int = response["error_code"]
    return code


async def txn_offset_commit(
    client: WireClient, tid: str, pid: int, epoch: int, offsets: dict[int, int]
) -> dict[int, int]:
    """TxnOffsetCommit v3 of partitions of TOPIC; the error of each partition."""
    response = await client.request(
        ApiKey.TXN_OFFSET_COMMIT,
        3,
        {
            "transactional_id": tid,
            "group_id": GROUP,
            "producer_id": pid,
            "producer_epoch": epoch,
            "generation_id": -1,
            "member_id": "",
            "group_instance_id": None,
            "topics": [
                {
                    "name": TOPIC,
                    "partitions": [
                        {
                            "partition_index": p,
                            "committed_offset": o,
                            "committed_leader_epoch": -1,
                            "committed_metadata": f"m{o}",
                        }
                        for p, o in offsets.items()
                    ],
                }
            ],
        },
    )
    return {p["partition_index"]: p["error_code"] for p in response["topics"][0]["partitions"]}


async def offset_fetch(client: WireClient, require_stable: bool) -> dict[int, tuple[int, int]]:
    """OffsetFetch v7 of TOPIC's partitions 0 and 1: (offset, error) of each."""
    response = await client.request(
        ApiKey.OFFSET_FETCH,
        7,
        {
            "group_id": GROUP,
            "topics": [{"name": TOPIC, "partition_indexes": [0, 1]}],
            "require_stable": require_stable,
        },
    )
    assert response["error_code"] == OK, response
    return {
        p["partition_index"]: (p["committed_offset"], p["error_code"])
        for p in response["topics"][0]["partitions"]
    }


async def committed_transaction(client: WireClient, tid: str, offsets: dict[int, int]) -> None:
    """A whole transaction sending ``offsets`` for GROUP, committed."""
    pid, epoch = await init_txn(client, tid)
    assert await add_offsets(client, tid, pid, epoch) == OK
    assert await txn_offset_commit(client, tid, pid, epoch, offsets) == dict.fromkeys(offsets, OK)
    assert await end_txn(client, tid, pid, epoch, True) == OK


async def open_transaction(
    client: WireClient, tid: str, offsets: dict[int, int], timeout_ms: int = 60_000
) -> tuple[int, int]:
    """A transaction that wrote a record to "out" and sent ``offsets``, left open."""
    pid, epoch = await init_txn(client, tid, timeout_ms)
    assert await add_partition(client, tid, pid, epoch, "out") == OK
    assert (await produce(client, "out", txn_batch(pid, epoch, 0, b"x")))["error_code"] == OK
    assert await add_offsets(client, tid, pid, epoch) == OK
    assert await txn_offset_commit(client, tid, pid, epoch, offsets) == dict.fromkeys(offsets, OK)
    return pid, epoch


async def reinit(client: WireClient, tid: str) -> tuple[int, int]:
    """InitProducerId as a new producer instance: the first answer is CONCURRENT_TRANSACTIONS
    while the open transaction is aborted, then the bumped epoch (clients retry)."""
    for _ in range(50):
        response = await client.request(
            ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": tid, "transaction_timeout_ms": 60_000}
        )
        if response["error_code"] != ErrorCode.CONCURRENT_TRANSACTIONS:
            assert response["error_code"] == OK, response
            return response["producer_id"], response["producer_epoch"]
        await trio.sleep(0.05)
    raise AssertionError("InitProducerId kept answering CONCURRENT_TRANSACTIONS")


async def setup(client: WireClient) -> None:
    await create_topic(client, TOPIC, partitions=2)
    await create_topic(client, "out")
    await committed_transaction(client, "tx-base", {0: 5})


BASE = {0: (5, OK), 1: (-1, OK)}
PENDING = {0: (-1, UNSTABLE), 1: (-1, UNSTABLE)}
SENT = {0: (9, OK), 1: (4, OK)}


async def test_offsets_need_the_transaction_and_become_visible_on_commit() -> None:
    with trio.fail_after(30):
        async with serve() as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            await setup(client)
            pid, epoch = await init_txn(client, "tx")
            # without AddOffsetsToTxn, with a stale epoch or an unknown partition: refused
            assert await txn_offset_commit(client, "tx", pid, epoch, {0: 9}) == {
                0: ErrorCode.INVALID_TXN_STATE
            }
            assert await add_offsets(client, "tx", pid, epoch) == OK
            assert await txn_offset_commit(client, "tx", pid, epoch - 1, {0: 9}) == {
                0: ErrorCode.PRODUCER_FENCED
            }
            assert await txn_offset_commit(client, "tx", pid, epoch, {0: 9, 7: 1}) == {
                0: OK,
                7: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            }
            assert await txn_offset_commit(client, "tx", pid, epoch, {1: 4}) == {1: OK}
            assert await offset_fetch(client, require_stable=False) == BASE
            assert await offset_fetch(client, require_stable=True) == PENDING
            assert await end_txn(client, "tx", pid, epoch, True) == OK
            assert await offset_fetch(client, require_stable=True) == SENT
            await client.aclose()


async def test_open_transaction_across_a_restart_is_aborted_by_a_new_producer(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            await setup(client)
            await open_transaction(client, "tx", {0: 9, 1: 4})
            assert await offset_fetch(client, require_stable=True) == PENDING
            await client.aclose()
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            assert await offset_fetch(client, require_stable=False) == BASE
            assert await offset_fetch(client, require_stable=True) == PENDING
            await reinit(client, "tx")  # fences the old producer, aborting its transaction
            assert await offset_fetch(client, require_stable=True) == BASE
            assert (await fetch(client, "out", 1))["aborted_transactions"] is not None
            await client.aclose()
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            assert await offset_fetch(client, require_stable=True) == BASE
            await client.aclose()


async def test_open_transaction_across_a_restart_is_aborted_by_its_timeout(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            await setup(client)
            await open_transaction(client, "tx", {0: 9, 1: 4}, timeout_ms=1_000)
            await client.aclose()
        async with serve(
            log_dirs=str(tmp_path), transaction_abort_timed_out_transaction_cleanup_interval_ms=100
        ) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            with trio.fail_after(10):
                while await offset_fetch(client, require_stable=True) == PENDING:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert await offset_fetch(client, require_stable=True) == BASE
            await client.aclose()


async def test_open_transaction_across_a_restart_is_committed_by_its_producer(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            await setup(client)
            pid, epoch = await open_transaction(client, "tx", {0: 9, 1: 4})
            await client.aclose()
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            assert await offset_fetch(client, require_stable=True) == PENDING
            assert await end_txn(client, "tx", pid, epoch, True) == OK
            assert await offset_fetch(client, require_stable=True) == SENT
            await client.aclose()
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            assert await offset_fetch(client, require_stable=True) == SENT
            await client.aclose()


async def test_committed_transaction_offsets_survive_a_restart(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            await setup(client)
            pid, epoch = await open_transaction(client, "tx", {0: 9, 1: 4})
            assert await end_txn(client, "tx", pid, epoch, True) == OK
            # an aborted transaction after it leaves them as they are
            pid, epoch = await open_transaction(client, "tx-2", {0: 100})
            assert await end_txn(client, "tx-2", pid, epoch, False) == OK
            assert await offset_fetch(client, require_stable=True) == SENT
            await client.aclose()
        async with serve(log_dirs=str(tmp_path)) as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            assert await offset_fetch(client, require_stable=True) == SENT
            response: dict[str, Any] = await client.request(
                ApiKey.OFFSET_FETCH, 7, {"group_id": GROUP, "topics": None, "require_stable": True}
            )
            metadata = {
                p["partition_index"]: p["metadata"] for p in response["topics"][0]["partitions"]
            }
            assert metadata == {0: "m9", 1: "m4"}
            await client.aclose()


async def test_write_txn_markers_on_the_offsets_partition_end_the_pending_offsets() -> None:
    """An admin abort (WriteTxnMarkers, as ``kafka-transactions.sh abort``) sent for the
    group's ``__consumer_offsets`` partition drops the transaction's pending offsets there."""
    with trio.fail_after(30):
        async with serve() as broker:
            client = await WireClient.connect(broker.bootstrap_servers)
            await setup(client)
            pid, epoch = await open_transaction(client, "tx", {0: 9, 1: 4})
            offsets_partition = ("__consumer_offsets", partition_for(GROUP, 50))
            assert await write_markers(client, marker(pid, epoch, False, [offsets_partition])) == {
                pid: {offsets_partition: OK}
            }
            assert await offset_fetch(client, require_stable=True) == BASE
            # a partition this broker does not have: the group coordinator's answer
            assert await write_markers(
                client, marker(pid, epoch, False, [("__consumer_offsets", 77)])
            ) == {pid: {("__consumer_offsets", 77): ErrorCode.NOT_LEADER_OR_FOLLOWER}}
            await client.aclose()
