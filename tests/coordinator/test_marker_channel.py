"""TransactionMarkerChannelManager with a fake metadata image and a fake inter-broker client.

Markers are grouped into one WriteTxnMarkers v1 request per leader, retriable errors (a
broker that cannot be reached, NOT_LEADER_OR_FOLLOWER, a partition without a live leader) are
retried with backoff until acknowledged, the partitions of a deleted topic are dropped, a
coordinator epoch that changes abandons the sending, and a deadline ends it as TIMED_OUT with
the unacknowledged partitions still pending. The ``__consumer_offsets`` partitions this broker
leads go to the local group coordinator. A coordinator elected leader of a
``__transaction_state`` partition loads it and resumes its prepared transactions. Time is
trio's MockClock (autojump).
"""

from __future__ import annotations

import uuid
from types import MappingProxyType
from typing import Any

import trio.testing

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.coordinator.transaction import transaction_metadata as tm
from pykbroker.coordinator.transaction.coordinator import TransactionCoordinator
from pykbroker.coordinator.transaction.marker_channel import (
    MarkerOutcome,
    TransactionMarkerChannelManager,
)
from pykbroker.coordinator.transaction.transaction_metadata import (
    TransactionMetadata,
    TransactionState,
)
from pykbroker.metadata.image import (
    BrokerRegistration,
    MetadataImage,
    PartitionRegistration,
    TopicImage,
)

from .test_transaction_coordinator import Clock, MemoryTxnLog, NoPartitions

ME = 1


def image(leaders: dict[tuple[str, int], int], fenced: frozenset[int] = frozenset()) -> Any:
    topics: dict[str, dict[int, PartitionRegistration]] = {}
    for (topic, partition), leader in leaders.items():
        topics.setdefault(topic, {})[partition] = PartitionRegistration(
            (leader,), (leader,), leader, 0, 0
        )
    return MetadataImage(
        topics=MappingProxyType(
            {
                name: TopicImage(name, uuid.uuid4(), MappingProxyType(parts))
                for name, parts in topics.items()
            }
        ),
        brokers=MappingProxyType(
            {n: BrokerRegistration(n, "127.0.0.1", 9000 + n, None, n in fenced) for n in (1, 2, 3)}
        ),
    )


class FakeClient:
    """Answers WriteTxnMarkers from a per-broker script of errors (then NO_ERROR)."""

    def __init__(self, script: dict[int, list[ErrorCode | None]] | None = None) -> None:
        #: node id -> errors of its successive requests; None: the broker is unreachable
        self.script = script or {}
        self.requests: list[tuple[int, dict[str, Any]]] = []
        self.closed = False

    async def send(
        self, node_id: int, host: str, port: int, api_key: int, version: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert (api_key, version) == (ApiKey.WRITE_TXN_MARKERS, 1)
        assert (host, port) == ("127.0.0.1", 9000 + node_id)
        self.requests.append((node_id, body))
        errors = self.script.get(node_id, [])
        error = errors.pop(0) if errors else ErrorCode.NO_ERROR
        if error is None:
            raise KafkaError(ErrorCode.NETWORK_EXCEPTION, "unreachable")
        marker = body["markers"][0]
        return {
            "markers": [
                {
                    "producer_id": marker["producer_id"],
                    "topics": [
                        {
                            "name": t["name"],
                            "partitions": [
                                {"partition_index": p, "error_code": error}
                                for p in t["partition_indexes"]
                            ],
                        }
                        for t in marker["topics"]
                    ],
                }
            ]
        }

    async def aclose(self) -> None:
        self.closed = True


class RecordingGroups:
    def __init__(self) -> None:
        self.markers: list[tuple[int, int, bool]] = []

    async def complete_transaction(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
    ) -> ErrorCode:
        self.markers.append((partition, producer_id, commit))
        return ErrorCode.NO_ERROR


class Holder:
    def __init__(self, value: Any) -> None:
        self.value = value


def channel(
    current: Holder, client: FakeClient, groups: RecordingGroups | None = None
) -> TransactionMarkerChannelManager:
    return TransactionMarkerChannelManager(
        node_id=ME,
        replica_manager=None,
        group_coordinator=groups,
        metadata=lambda: current.value,
        client=client,
        clock=lambda: 0,
        delivery_timeout_ms=10_000,
    )


async def send(manager: TransactionMarkerChannelManager, pending: set[tuple[str, int]]) -> Any:
    return await manager.send_markers("tx", 7, 0, 3, True, pending, lambda: True)


async def test_one_request_per_leader_and_the_local_offsets_partition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = Holder(image({("t", 0): 2, ("t", 1): 2, ("t", 2): 3, ("__consumer_offsets", 4): 1}))
    client, groups = FakeClient(), RecordingGroups()
    pending = {("t", 0), ("t", 1), ("t", 2), ("__consumer_offsets", 4)}
    assert await send(channel(current, client, groups), pending) is MarkerOutcome.COMPLETED
    assert pending == set()
    assert groups.markers == [(4, 7, True)]
    by_node = {node: body["markers"][0] for node, body in client.requests}
    assert sorted(by_node) == [2, 3]
    assert by_node[2]["topics"] == [{"name": "t", "partition_indexes": [0, 1]}]
    assert by_node[2]["coordinator_epoch"] == 3
    assert by_node[2]["transaction_result"] is True


async def test_retriable_errors_are_retried_until_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = Holder(image({("t", 0): 2, ("t", 1): 3}))
    client = FakeClient({2: [None, ErrorCode.NOT_LEADER_OR_FOLLOWER], 3: [ErrorCode.NO_ERROR]})
    pending = {("t", 0), ("t", 1)}
    start = trio.current_time()
    assert await send(channel(current, client), pending) is MarkerOutcome.COMPLETED
    assert [n for n, _ in client.requests].count(2) == 3
    assert [n for n, _ in client.requests].count(3) == 1  # acknowledged once, not resent
    assert trio.current_time() - start >= 0.3  # backoff 100 ms, then 200 ms


async def test_a_partition_without_live_leader_waits_for_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = Holder(image({("t", 0): 2}, fenced=frozenset({2})))
    client = FakeClient()
    manager = channel(current, client)
    pending = {("t", 0)}
    outcome: list[MarkerOutcome] = []

    async def run() -> None:
        outcome.append(await send(manager, pending))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.sleep(2)
        assert client.requests == []
        assert pending == {("t", 0)}
        current.value = image({("t", 0): 3})  # a new leader
    assert outcome == [MarkerOutcome.COMPLETED]
    assert [n for n, _ in client.requests] == [3]


async def test_deleted_partitions_are_dropped_and_a_deadline_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = Holder(image({("t", 0): 2}))
    client = FakeClient({2: [None] * 1000})
    pending = {("t", 0), ("gone", 0)}
    assert await send(channel(current, client), pending) is MarkerOutcome.TIMED_OUT
    assert pending == {("t", 0)}  # still to do when resumed


async def test_a_new_coordinator_epoch_abandons_the_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = Holder(image({("t", 0): 2}))
    client = FakeClient({2: [None] * 1000})
    rounds = [0]

    def still_valid() -> bool:
        rounds[0] += 1
        return rounds[0] <= 2

    manager = channel(current, client)
    outcome = await manager.send_markers("tx", 7, 0, 3, False, {("t", 0)}, still_valid)
    assert outcome is MarkerOutcome.ABANDONED
    assert len(client.requests) == 2


async def test_markers_of_a_newer_epoch_drop_the_partition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = Holder(image({("t", 0): 2, ("t", 1): 3}))
    client = FakeClient({2: [ErrorCode.TRANSACTION_COORDINATOR_FENCED]})
    pending = {("t", 0), ("t", 1)}
    assert await send(channel(current, client), pending) is MarkerOutcome.COMPLETED
    assert len(client.requests) == 2


async def test_a_coordinator_elected_leader_loads_the_partition_and_resumes_its_markers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Kafka's ``onElection``: the prepared transaction another leader left in the log is
    loaded when this broker becomes the leader of its ``__transaction_state`` partition, and
    its markers are sent (here the offsets partition, through the local group coordinator)."""
    storage, clock, groups = MemoryTxnLog(), Clock(), RecordingGroups()

    async def generate() -> int:
        return 100

    coordinator = TransactionCoordinator(
        storage, NoPartitions(), generate, groups, num_partitions=5, clock=clock, node_id=ME
    )
    offsets = coordinator.offsets_partition("g")
    state_partition = coordinator.partition_for("tx")
    before = image({offsets: ME, ("__transaction_state", state_partition): 2})
    current = Holder(before)
    coordinator.marker_channel._metadata = lambda: current.value
    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        assert coordinator.transactions == {}
        prepared = TransactionMetadata(
            "tx", 100, 3, 60_000, TransactionState.PREPARE_COMMIT, frozenset({offsets})
        )
        key, value = tm.transaction_log_record(prepared)
        await storage.append(state_partition, [(key, value)])  # written by the old leader
        current.value = image({offsets: ME, ("__transaction_state", state_partition): ME})
        coordinator.on_metadata_update(before, current.value)
        await trio.sleep(1)
        assert groups.markers == [(offsets[1], 100, True)]
        assert coordinator.transactions["tx"].state is TransactionState.COMPLETE_COMMIT
        nursery.cancel_scope.cancel()
