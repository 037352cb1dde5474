"""Transactions across a 3-node in-process cluster (raw wire requests on 127.0.0.1).

A topic with one partition led by each broker; the transaction coordinator (the leader of the
transactional id's ``__transaction_state`` partition) and the group coordinator (the leader
of the group's ``__consumer_offsets`` partition) are different brokers. Checked:

* a transaction writing to all three partitions plus ``send_offsets_to_transaction``
  (AddOffsetsToTxn at the transaction coordinator, TxnOffsetCommit at the group coordinator:
  verified remotely, KIP-890's AddPartitionsToTxn ``verify_only``) commits: read_committed
  fetches on every leader see every record, the group's offsets are visible; an aborted one
  shows nothing and leaves the offsets as they were; a TxnOffsetCommit with a stale epoch or
  without AddOffsetsToTxn is refused by the remote verification; an open transaction fenced
  by a new producer instance (InitProducerId) is aborted on every broker;
* a broker stopped before EndTxn: the markers of the other partitions are written, the
  transaction stays PrepareCommit while the stopped broker's marker is retried, and once the
  broker is back its marker is delivered and the transaction completes.

Every wait is bounded; every broker started is stopped (``running_cluster``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.transaction.coordinator import TransactionCoordinator
from pykbroker.coordinator.transaction.transaction_metadata import TransactionState
from pykbroker.log.record_batch import EndTxnMarker, end_txn_marker_type, iter_batch_headers
from pykbroker.metadata.controller import CreateTopicRequest
from tests.wire import WireClient

from .test_broker_requests import fetch_body, produce_body
from .test_raft_driver import Cluster, running_cluster, wait_for
from .test_transactions import data_values, txn_batch

TOPIC = "spread"
GROUP = "cluster-txn-group"
OK = ErrorCode.NO_ERROR
READ_COMMITTED = 1
READ_UNCOMMITTED = 0


class Clients:
    """One wire connection per broker, opened on first use, closed at the end."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._clients: dict[int, WireClient] = {}

    async def request(
        self, node_id: int, api_key: int, version: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        client = self._clients.get(node_id)
        if client is None:
            client = await WireClient.connect(self.cluster.brokers[node_id].bootstrap_servers)
            self._clients[node_id] = client
        try:
            with trio.fail_after(20):
                return await client.request(api_key, version, body)
        except BaseException:
            self._clients.pop(node_id, None)
            await client.aclose()
            raise

    async def forget(self, node_id: int) -> None:
        """Close the connection to a broker about to be stopped."""
        client = self._clients.pop(node_id, None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


async def find_coordinator(clients: Clients, key_type: int, key: str) -> int:
    for _ in range(100):  # bounded: the internal topic is created by the first lookup
        response = await clients.request(
            1, ApiKey.FIND_COORDINATOR, 3, {"key": key, "key_type": key_type}
        )
        if response["error_code"] == OK:
            node_id: int = response["node_id"]
            return node_id
        await trio.sleep(0.1)
    raise AssertionError(f"no coordinator for {key!r}")


async def setup(cluster: Cluster, clients: Clients) -> dict[int, int]:
    """A topic with a partition on each broker: partition -> leader."""
    await wait_for(cluster.leader, 10, "one active controller")
    await wait_for(
        lambda: all(
            len([b for b in cluster.controller(n).image.brokers.values() if not b.fenced]) == 3
            for n in cluster.brokers
        ),
        10,
        "3 live brokers on every node",
    )
    results = await cluster.controller(1).create_topics(
        [CreateTopicRequest(TOPIC, num_partitions=3)]
    )
    assert results[0].error == OK
    await wait_for(
        lambda: all(TOPIC in cluster.controller(n).image.topics for n in cluster.brokers),
        10,
        "the topic on every node",
    )
    leaders = {p: r.leader for p, r in cluster.controller(1).image.topics[TOPIC].partitions.items()}
    assert set(leaders.values()) == {1, 2, 3}
    return leaders


async def pick_transactional_id(clients: Clients, group_coordinator: int, prefix: str) -> str:
    """A transactional id whose coordinator is not the group's coordinator."""
    for i in range(60):
        tid = f"{prefix}-{i}"
        if await find_coordinator(clients, 1, tid) != group_coordinator:
            return tid
    raise AssertionError("every transactional id landed on the group coordinator")


def txn_coordinator(cluster: Cluster, node_id: int) -> TransactionCoordinator:
    coordinator: TransactionCoordinator = cluster.brokers[node_id].service(
        "transaction_coordinator"
    )
    return coordinator


async def init_producer(clients: Clients, node: int, tid: str) -> tuple[int, int]:
    for _ in range(100):  # bounded: CONCURRENT_TRANSACTIONS while a previous one completes
        response = await clients.request(
            node,
            ApiKey.INIT_PRODUCER_ID,
            4,
            {"transactional_id": tid, "transaction_timeout_ms": 60_000},
        )
        if response["error_code"] != ErrorCode.CONCURRENT_TRANSACTIONS:
            assert response["error_code"] == OK, response
            return response["producer_id"], response["producer_epoch"]
        await trio.sleep(0.1)
    raise AssertionError("InitProducerId kept answering CONCURRENT_TRANSACTIONS")


async def add_partitions(
    clients: Clients, node: int, tid: str, pid: int, epoch: int, partitions: list[int]
) -> None:
    response = await clients.request(
        node,
        ApiKey.ADD_PARTITIONS_TO_TXN,
        3,
        {
            "v3_and_below_transactional_id": tid,
            "v3_and_below_producer_id": pid,
            "v3_and_below_producer_epoch": epoch,
            "v3_and_below_topics": [{"name": TOPIC, "partitions": partitions}],
        },
    )
    for topic in response["results_by_topic_v3_and_below"]:
        for p in topic["results_by_partition"]:
            assert p["partition_error_code"] == OK, response


async def add_offsets(clients: Clients, node: int, tid: str, pid: int, epoch: int) -> None:
    response = await clients.request(
        node,
        ApiKey.ADD_OFFSETS_TO_TXN,
        3,
        {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "group_id": GROUP},
    )
    assert response["error_code"] == OK, response


async def txn_offset_commit(
    clients: Clients, node: int, tid: str, pid: int, epoch: int, offsets: dict[int, int]
) -> dict[int, int]:
    response = await clients.request(
        node,
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
                            "committed_metadata": "",
                        }
                        for p, o in offsets.items()
                    ],
                }
            ],
        },
    )
    return {p["partition_index"]: p["error_code"] for p in response["topics"][0]["partitions"]}


async def end_txn(clients: Clients, node: int, tid: str, pid: int, epoch: int, commit: bool) -> int:
    response = await clients.request(
        node,
        ApiKey.END_TXN,
        3,
        {"transactional_id": tid, "producer_id": pid, "producer_epoch": epoch, "committed": commit},
    )
    code: int = response["error_code"]
    return code


async def produce(
    clients: Clients, node: int, partition: int, pid: int, epoch: int, seq: int, value: bytes
) -> None:
    body = produce_body(TOPIC, txn_batch(pid, epoch, seq, value), partition=partition)
    response = await clients.request(node, ApiKey.PRODUCE, 9, body)
    result = response["responses"][0]["partition_responses"][0]
    assert result["error_code"] == OK, response


def consumed_values(result: dict[str, Any]) -> list[bytes]:
    """The values a consumer keeps from one partition of a Fetch response: as Kafka's
    consumer, batches of a producer from an ``aborted_transactions`` entry's first offset up
    to that producer's ABORT marker are skipped."""
    records: bytes = result["records"] or b""
    aborted = sorted(
        (a["first_offset"], a["producer_id"]) for a in result["aborted_transactions"] or []
    )
    aborting: set[int] = set()
    values: list[bytes] = []
    for position, header in iter_batch_headers(records):
        while aborted and aborted[0][0] <= header.base_offset:
            aborting.add(aborted.pop(0)[1])
        batch = records[position : position + header.size_in_bytes]
        if header.is_control:
            if end_txn_marker_type(batch) is EndTxnMarker.ABORT:
                aborting.discard(header.producer_id)
            continue
        if header.producer_id in aborting:
            continue
        values.extend(v for v in data_values(batch) if v is not None)
    return values


async def fetch_values(clients: Clients, node: int, partition: int, isolation: int) -> list[bytes]:
    body = {**fetch_body(TOPIC, 0, partition=partition), "isolation_level": isolation}
    response = await clients.request(node, ApiKey.FETCH, 12, body)
    result = response["responses"][0]["partitions"][0]
    assert result["error_code"] == OK, response
    return consumed_values(result)


async def committed_offsets(clients: Clients, node: int) -> dict[int, int]:
    response = await clients.request(
        node,
        ApiKey.OFFSET_FETCH,
        7,
        {
            "group_id": GROUP,
            "topics": [{"name": TOPIC, "partition_indexes": [0, 1, 2]}],
            "require_stable": True,
        },
    )
    assert response["error_code"] == OK, response
    return {
        p["partition_index"]: p["committed_offset"]
        for p in response["topics"][0]["partitions"]
        if p["error_code"] == OK
    }


async def eventually(check: Any, timeout_s: float, what: str) -> None:
    """Await ``check()`` until it returns True, or fail after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while True:  # bounded by the cancel scope
            if await check():
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def test_a_transaction_over_three_brokers_commits_and_aborts(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        clients = Clients(cluster)
        try:
            leaders = await setup(cluster, clients)
            group_node = await find_coordinator(clients, 0, GROUP)
            tid = await pick_transactional_id(clients, group_node, "cross")
            coordinator_node = await find_coordinator(clients, 1, tid)
            assert coordinator_node != group_node

            # Committed: a record on each broker's partition, offsets for the group.
            pid, epoch = await init_producer(clients, coordinator_node, tid)
            await add_partitions(clients, coordinator_node, tid, pid, epoch, [0, 1, 2])
            for partition, leader in leaders.items():
                await produce(clients, leader, partition, pid, epoch, 0, f"c{partition}".encode())
            await add_offsets(clients, coordinator_node, tid, pid, epoch)
            offsets = {0: 1, 1: 1, 2: 1}
            assert await txn_offset_commit(
                clients, group_node, tid, pid, epoch, offsets
            ) == dict.fromkeys(offsets, OK)
            # The remote verification refuses a stale epoch.
            assert await txn_offset_commit(clients, group_node, tid, pid, epoch - 1, {0: 7}) == {
                0: ErrorCode.PRODUCER_FENCED
            }
            assert await end_txn(clients, coordinator_node, tid, pid, epoch, True) == OK
            coordinator = txn_coordinator(cluster, coordinator_node)
            await wait_for(
                lambda: coordinator.transactions[tid].state is TransactionState.COMPLETE_COMMIT,
                10,
                "CompleteCommit",
            )
            for partition, leader in leaders.items():
                values = await fetch_values(clients, leader, partition, READ_COMMITTED)
                assert values == [f"c{partition}".encode()], (partition, leader)
            assert await committed_offsets(clients, group_node) == offsets

            # Aborted: nothing of it is visible, the offsets stay.
            await add_partitions(clients, coordinator_node, tid, pid, epoch, [0, 1, 2])
            for partition, leader in leaders.items():
                await produce(clients, leader, partition, pid, epoch, 1, f"a{partition}".encode())
            await add_offsets(clients, coordinator_node, tid, pid, epoch)
            assert await txn_offset_commit(
                clients, group_node, tid, pid, epoch, {0: 2, 1: 2, 2: 2}
            ) == dict.fromkeys(offsets, OK)
            assert await end_txn(clients, coordinator_node, tid, pid, epoch, False) == OK
            await wait_for(
                lambda: coordinator.transactions[tid].state is TransactionState.COMPLETE_ABORT,
                10,
                "CompleteAbort",
            )
            for partition, leader in leaders.items():
                committed = await fetch_values(clients, leader, partition, READ_COMMITTED)
                assert committed == [f"c{partition}".encode()]
                everything = await fetch_values(clients, leader, partition, READ_UNCOMMITTED)
                assert everything == [f"c{partition}".encode(), f"a{partition}".encode()]
            assert await committed_offsets(clients, group_node) == offsets

            # Without AddOffsetsToTxn the remote verification answers INVALID_TXN_STATE.
            await add_partitions(clients, coordinator_node, tid, pid, epoch, [0, 1, 2])
            assert await txn_offset_commit(clients, group_node, tid, pid, epoch, {0: 9}) == {
                0: ErrorCode.INVALID_TXN_STATE
            }
            # A new producer instance fences the open transaction: aborted on every broker.
            for partition, leader in leaders.items():
                await produce(clients, leader, partition, pid, epoch, 2, f"f{partition}".encode())
            new_pid, new_epoch = await init_producer(clients, coordinator_node, tid)
            assert (new_pid, new_epoch) == (pid, epoch + 2)  # fenced, then bumped again
            for partition, leader in leaders.items():
                committed = await fetch_values(clients, leader, partition, READ_COMMITTED)
                assert committed == [f"c{partition}".encode()]
                everything = await fetch_values(clients, leader, partition, READ_UNCOMMITTED)
                assert everything[-1] == f"f{partition}".encode()
        finally:
            await clients.aclose()


async def test_markers_reach_a_broker_that_was_down_when_the_transaction_ended(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster:
        clients = Clients(cluster)
        try:
            leaders = await setup(cluster, clients)
            group_node = await find_coordinator(clients, 0, GROUP)
            tid = await pick_transactional_id(clients, group_node, "restart")
            coordinator_node = await find_coordinator(clients, 1, tid)
            down = next(n for n in (1, 2, 3) if n not in (coordinator_node, group_node))
            down_partition = next(p for p, leader in leaders.items() if leader == down)

            pid, epoch = await init_producer(clients, coordinator_node, tid)
            await add_partitions(clients, coordinator_node, tid, pid, epoch, [0, 1, 2])
            for partition, leader in leaders.items():
                await produce(clients, leader, partition, pid, epoch, 0, f"v{partition}".encode())
            await add_offsets(clients, coordinator_node, tid, pid, epoch)
            offsets = {0: 1, 1: 1, 2: 1}
            assert await txn_offset_commit(
                clients, group_node, tid, pid, epoch, offsets
            ) == dict.fromkeys(offsets, OK)

            await clients.forget(down)
            await cluster.stop(down)
            # EndTxn is answered once the prepare is written (and a bounded wait for the
            # markers); the stopped broker's marker is retried in the background.
            assert await end_txn(clients, coordinator_node, tid, pid, epoch, True) == OK
            coordinator = txn_coordinator(cluster, coordinator_node)
            assert coordinator.transactions[tid].state is TransactionState.PREPARE_COMMIT
            for partition, leader in leaders.items():
                if leader != down:
                    values = await fetch_values(clients, leader, partition, READ_COMMITTED)
                    assert values == [f"v{partition}".encode()]
            assert await committed_offsets(clients, group_node) == offsets

            await cluster.start(down)
            await wait_for(
                lambda: coordinator.transactions[tid].state is TransactionState.COMPLETE_COMMIT,
                30,
                "the marker of the restarted broker and CompleteCommit",
            )

            async def visible() -> bool:
                values = await fetch_values(clients, down, down_partition, READ_COMMITTED)
                return values == [f"v{down_partition}".encode()]

            await eventually(visible, 10, "the committed record on the restarted broker")
        finally:
            await clients.aclose()
