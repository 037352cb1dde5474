"""TransactionCoordinator (the driver of the transaction state machine) with fake storage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.transaction.coordinator import TransactionCoordinator
from pykbroker.coordinator.transaction.transaction_metadata import TransactionState


class MemoryTxnLog:
    def __init__(self) -> None:
        self.partitions: dict[int, list[tuple[bytes, bytes | None]]] = {}

    async def ensure_topic(self) -> None:
        return None

    async def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        self.partitions.setdefault(partition, []).extend(records)

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]:
        return list(self.partitions.get(partition, []))


class NoPartitions:
    def get_partition(self, topic: str, partition: int) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


def make(
    storage: MemoryTxnLog, clock: Clock, commits: list[dict[str, Any]]
) -> TransactionCoordinator:
    ids = iter(range(100, 200))

    async def generate() -> int:
        return next(ids)

    async def commit(request: dict[str, Any]) -> None:
        commits.append(request)

    coordinator = TransactionCoordinator(
        storage, NoPartitions(), generate, commit, num_partitions=5, clock=clock
    )
    coordinator.load()
    return coordinator


def offsets(group: str, offset: int) -> dict[str, Any]:
    return {
        "group_id": group,
        "generation_id_or_member_epoch": -1,
        "member_id": "",
        "group_instance_id": None,
        "topics": [
            {
                "name": "in",
                "partitions": [
                    {
                        "partition_index": 0,
                        "committed_offset": offset,
                        "committed_leader_epoch": -1,
                        "committed_metadata": "",
                    }
                ],
            }
        ],
    }


async def test_offsets_reach_the_group_only_on_commit() -> None:
    commits: list[dict[str, Any]] = []
    coordinator = make(MemoryTxnLog(), Clock(), commits)
    init = await coordinator.init_producer_id("tx", 60_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    assert await coordinator.add_offsets("tx", pid, epoch, "g") == ErrorCode.NO_ERROR
    assert coordinator.hold_offsets("tx", pid, epoch, offsets("g", 5)) == ErrorCode.NO_ERROR
    assert await coordinator.end_transaction("tx", pid, epoch, False) == ErrorCode.NO_ERROR
    assert commits == []
    await coordinator.add_offsets("tx", pid, epoch, "g")
    coordinator.hold_offsets("tx", pid, epoch, offsets("g", 7))
    coordinator.hold_offsets("tx", pid, epoch, offsets("g", 9))
    assert await coordinator.end_transaction("tx", pid, epoch, True) == ErrorCode.NO_ERROR
    assert [c["topics"][0]["partitions"][0]["committed_offset"] for c in commits] == [9]
    assert coordinator.transactions["tx"].state is TransactionState.COMPLETE_COMMIT


async def test_offsets_need_the_current_producer_and_an_ongoing_transaction() -> None:
    coordinator = make(MemoryTxnLog(), Clock(), [])
    init = await coordinator.init_producer_id("tx", 60_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    assert coordinator.hold_offsets("tx", pid, epoch, offsets("g", 1)) == (
        ErrorCode.INVALID_TXN_STATE
    )
    assert coordinator.hold_offsets("tx", pid, epoch + 1, offsets("g", 1)) == (
        ErrorCode.PRODUCER_FENCED
    )
    assert coordinator.hold_offsets("other", pid, epoch, offsets("g", 1)) == (
        ErrorCode.INVALID_PRODUCER_ID_MAPPING
    )


async def test_state_is_reloaded_and_timed_out_transactions_are_aborted() -> None:
    storage, clock = MemoryTxnLog(), Clock()
    coordinator = make(storage, clock, [])
    init = await coordinator.init_producer_id("tx", 1_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    await coordinator.add_partitions("tx", pid, epoch, frozenset({("t", 0)}))

    reloaded = make(storage, clock, [])
    assert reloaded.transactions["tx"].state is TransactionState.ONGOING
    assert reloaded.transactions["tx"].partitions == frozenset({("t", 0)})
    assert await reloaded.abort_timed_out_transactions() == 0
    clock.now += 1_001
    assert await reloaded.abort_timed_out_transactions() == 1
    after = reloaded.transactions["tx"]
    assert (after.state, after.producer_epoch) == (TransactionState.COMPLETE_ABORT, epoch + 1)
    assert await reloaded.end_transaction("tx", pid, epoch, True) == ErrorCode.PRODUCER_FENCED
    # the v0 TransactionLogValue has no previous epoch
    assert make(storage, clock, []).transactions["tx"] == replace(after, last_producer_epoch=-1)


async def test_timeouts_above_the_maximum_are_refused() -> None:
    coordinator = make(MemoryTxnLog(), Clock(), [])
    result = await coordinator.init_producer_id("tx", 900_001, None)
    assert result.error == ErrorCode.INVALID_TRANSACTION_TIMEOUT
