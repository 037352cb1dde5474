"""TransactionCoordinator (the driver of the transaction state machine) with fake storage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import trio

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.transaction.coordinator import OFFSETS_TOPIC, TransactionCoordinator
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


class RecordingGroups:
    """The group coordinator's side of markers: records every ``complete_transaction``."""

    def __init__(self, error: ErrorCode = ErrorCode.NO_ERROR) -> None:
        self.markers: list[tuple[int, int, int, bool]] = []
        self.error = error

    async def complete_transaction(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
    ) -> ErrorCode:
        if self.error == ErrorCode.NO_ERROR:
            self.markers.append((partition, producer_id, producer_epoch, commit))
        return self.error


def make(
    storage: MemoryTxnLog, clock: Clock, groups: RecordingGroups | None = None
) -> TransactionCoordinator:
    ids = iter(range(100, 200))

    async def generate() -> int:
        return next(ids)

    coordinator = TransactionCoordinator(
        storage, NoPartitions(), generate, groups, num_partitions=5, clock=clock
    )
    coordinator.load()
    return coordinator


async def verify(coordinator: TransactionCoordinator, tid: str, pid: int, epoch: int) -> ErrorCode:
    async with coordinator.transactional_offset_commit(tid, pid, epoch, "g") as error:
        return error


async def test_offsets_partition_gets_the_markers_through_the_group_coordinator() -> None:
    groups = RecordingGroups()
    coordinator = make(MemoryTxnLog(), Clock(), groups)
    init = await coordinator.init_producer_id("tx", 60_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    assert await coordinator.add_offsets("tx", pid, epoch, "g") == ErrorCode.NO_ERROR
    _, partition = coordinator.offsets_partition("g")
    assert coordinator.transactions["tx"].partitions == frozenset({(OFFSETS_TOPIC, partition)})
    assert await verify(coordinator, "tx", pid, epoch) == ErrorCode.NO_ERROR
    assert await coordinator.end_transaction("tx", pid, epoch, False) == ErrorCode.NO_ERROR
    assert groups.markers == [(partition, pid, epoch, False)]
    await coordinator.add_offsets("tx", pid, epoch, "g")
    assert await coordinator.end_transaction("tx", pid, epoch, True) == ErrorCode.NO_ERROR
    assert groups.markers[1:] == [(partition, pid, epoch, True)]
    assert coordinator.transactions["tx"].state is TransactionState.COMPLETE_COMMIT


async def test_a_stopping_group_coordinator_leaves_the_transaction_prepared() -> None:
    """The offsets marker could not be written (the group coordinator stops): the transaction
    is not completed, so the next load writes its markers again."""
    storage, clock = MemoryTxnLog(), Clock()
    stopping = RecordingGroups(ErrorCode.COORDINATOR_NOT_AVAILABLE)
    coordinator = make(storage, clock, stopping)
    init = await coordinator.init_producer_id("tx", 60_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    await coordinator.add_offsets("tx", pid, epoch, "g")
    assert await coordinator.end_transaction("tx", pid, epoch, True) == ErrorCode.NO_ERROR
    assert coordinator.transactions["tx"].state is TransactionState.PREPARE_COMMIT

    groups = RecordingGroups()
    reloaded = make(storage, clock, groups)
    assert reloaded.transactions["tx"].state is TransactionState.PREPARE_COMMIT
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(reloaded.run)
            nursery.cancel_scope.cancel()
    _, partition = reloaded.offsets_partition("g")
    assert groups.markers == [(partition, pid, epoch, True)]
    assert reloaded.transactions["tx"].state is TransactionState.COMPLETE_COMMIT


async def test_offset_commits_need_the_current_producer_and_the_offsets_partition() -> None:
    coordinator = make(MemoryTxnLog(), Clock())
    init = await coordinator.init_producer_id("tx", 60_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    assert await verify(coordinator, "tx", pid, epoch) == ErrorCode.INVALID_TXN_STATE
    await coordinator.add_partitions("tx", pid, epoch, frozenset({("t", 0)}))
    # Ongoing, but AddOffsetsToTxn was not sent for the group
    assert await verify(coordinator, "tx", pid, epoch) == ErrorCode.INVALID_TXN_STATE
    assert await verify(coordinator, "tx", pid, epoch + 1) == ErrorCode.PRODUCER_FENCED
    assert await verify(coordinator, "other", pid, epoch) == (ErrorCode.INVALID_PRODUCER_ID_MAPPING)


async def test_state_is_reloaded_and_timed_out_transactions_are_aborted() -> None:
    storage, clock = MemoryTxnLog(), Clock()
    coordinator = make(storage, clock)
    init = await coordinator.init_producer_id("tx", 1_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    await coordinator.add_partitions("tx", pid, epoch, frozenset({("t", 0)}))

    reloaded = make(storage, clock)
    assert reloaded.transactions["tx"].state is TransactionState.ONGOING
    assert reloaded.transactions["tx"].partitions == frozenset({("t", 0)})
    assert await reloaded.abort_timed_out_transactions() == 0
    clock.now += 1_001
    assert await reloaded.abort_timed_out_transactions() == 1
    after = reloaded.transactions["tx"]
    assert (after.state, after.producer_epoch) == (TransactionState.COMPLETE_ABORT, epoch + 1)
    assert await reloaded.end_transaction("tx", pid, epoch, True) == ErrorCode.PRODUCER_FENCED
    # the v0 TransactionLogValue has no previous epoch
    assert make(storage, clock).transactions["tx"] == replace(after, last_producer_epoch=-1)


async def test_timeouts_above_the_maximum_are_refused() -> None:
    coordinator = make(MemoryTxnLog(), Clock())
    result = await coordinator.init_producer_id("tx", 900_001, None)
    assert result.error == ErrorCode.INVALID_TRANSACTION_TIMEOUT
