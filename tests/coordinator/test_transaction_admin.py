"""The transaction coordinator's admin views (DescribeTransactions, ListTransactions filters)
and transactional id expiration, on in-memory storage and a fake clock."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.config import BrokerConfig, ConfigError
from pykbroker.coordinator.transaction import transaction_metadata as tm
from pykbroker.coordinator.transaction.coordinator import TransactionCoordinator
from pykbroker.coordinator.transaction.transaction_metadata import (
    TransactionMetadata,
    TransactionState,
)

from .test_transaction_coordinator import Clock, MemoryTxnLog, make

DAY_MS = 86_400_000


class FailingTxnLog(MemoryTxnLog):
    """Appends of tombstones fail (as when the partition lost its leader)."""

    async def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        if any(value is None for _, value in records):
            raise KafkaError(ErrorCode.NOT_COORDINATOR)
        await super().append(partition, records)


def test_state_names_are_kafkas() -> None:
    names = [s.kafka_name for s in TransactionState]
    assert names == [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ]
    assert all(
        TransactionState.from_name(n) is s for n, s in zip(names, TransactionState, strict=True)
    )
    assert TransactionState.from_name("ongoing") is None
    assert TransactionState.from_name("") is None


def meta(tid: str, pid: int, state: TransactionState, start: int) -> TransactionMetadata:
    return TransactionMetadata(tid, pid, 0, 60_000, state, txn_start_timestamp_ms=start)


def test_list_filter_combines_filters_as_kafka() -> None:
    txns = [
        meta("a", 1, TransactionState.ONGOING, 1_000),
        meta("ab", 2, TransactionState.PREPARE_COMMIT, 9_000),
        meta("b", 3, TransactionState.EMPTY, -1),
        meta("dead", 4, TransactionState.DEAD, -1),
    ]

    def run(
        states: list[str], pids: list[int], duration: int, pattern: str | None
    ) -> tuple[list[str], list[str]]:
        include, unknown = tm.list_filter(states, pids, duration, pattern, 10_000)
        return [t.transactional_id for t in txns if include(t)], unknown

    assert run([], [], -1, None) == (["a", "ab", "b"], [])  # Dead never listed
    assert run(["Ongoing", "Nope"], [], -1, None) == (["a"], ["Nope"])
    assert run(["Nope", "Nope"], [], -1, None) == ([], ["Nope"])  # unknown names match nothing
    assert run([], [2, 3], -1, None) == (["ab", "b"], [])
    assert run([], [], 1_000, None) == (["a", "b"], [])  # started more than 1 s ago
    assert run([], [], 9_000, None) == (["b"], [])
    assert run([], [], -1, "a.*") == (["a", "ab"], [])
    assert run([], [], -1, "b") == (["b"], [])  # the whole id must match
    assert run([], [], -1, "") == (["a", "ab", "b"], [])
    assert run(["Ongoing", "Empty"], [3], 0, "[a-z]") == (["b"], [])
    with pytest.raises(tm.InvalidPattern):
        tm.list_filter([], [], -1, "(unclosed", 0)


async def test_describe_transaction_entries() -> None:
    clock = Clock()
    coordinator = make(MemoryTxnLog(), clock)
    init = await coordinator.init_producer_id("tx", 30_000, None)
    pid, epoch = init.producer_id, init.producer_epoch
    await coordinator.add_partitions("tx", pid, epoch, frozenset({("t", 1), ("t", 0), ("u", 0)}))
    entry = coordinator.describe_transaction("tx")
    assert entry == {
        "error_code": ErrorCode.NO_ERROR,
        "transactional_id": "tx",
        "transaction_state": "Ongoing",
        "transaction_timeout_ms": 30_000,
        "transaction_start_time_ms": clock.now,
        "producer_id": pid,
        "producer_epoch": epoch,
        "topics": [{"topic": "t", "partitions": [0, 1]}, {"topic": "u", "partitions": [0]}],
    }
    assert coordinator.describe_transaction("other")["error_code"] == (
        ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
    )
    assert coordinator.describe_transaction("")["error_code"] == ErrorCode.INVALID_REQUEST
    coordinator.loaded = False
    assert coordinator.describe_transaction("tx")["error_code"] == (
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    )
    assert coordinator.list_transactions([], [])["error_code"] == (
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    )


async def test_list_transactions_answers_an_invalid_pattern() -> None:
    coordinator = make(MemoryTxnLog(), Clock())
    await coordinator.init_producer_id("tx", 30_000, None)
    response = coordinator.list_transactions([], [], -1, "*")
    assert response["error_code"] == ErrorCode.INVALID_REGULAR_EXPRESSION
    assert coordinator.list_transactions([], [], -1, "t.")["transaction_states"] == [
        {"transactional_id": "tx", "producer_id": 100, "transaction_state": "Empty"}
    ]


async def test_idle_ids_expire_with_a_tombstone_and_stay_gone() -> None:
    storage, clock = MemoryTxnLog(), Clock()
    coordinator = make(storage, clock)
    for tid in ("empty", "committed", "aborted", "ongoing"):
        await coordinator.init_producer_id(tid, 60_000, None)
    for tid, commit in (("committed", True), ("aborted", False), ("ongoing", None)):
        current = coordinator.transactions[tid]
        pid, epoch = current.producer_id, current.producer_epoch
        await coordinator.add_partitions(tid, pid, epoch, frozenset({("t", 0)}))
        if commit is not None:
            await coordinator.end_transaction(tid, pid, epoch, commit)
    coordinator.transactional_id_expiration_ms = 7 * DAY_MS
    clock.now += 7 * DAY_MS - 1
    assert await coordinator.remove_expired_transactional_ids() == 0
    clock.now += 1
    assert await coordinator.remove_expired_transactional_ids() == 3
    assert set(coordinator.transactions) == {"ongoing"}  # a transaction in flight stays
    tombstones = [
        tm.read_transaction_log_record(k, v)[0]
        for records in storage.partitions.values()
        for k, v in records
        if v is None
    ]
    assert sorted(tombstones) == ["aborted", "committed", "empty"]
    assert set(make(storage, clock).transactions) == {"ongoing"}
    # an expired id starts again from scratch: a new producer id
    again = await coordinator.init_producer_id("empty", 60_000, None)
    assert (again.error, again.producer_epoch) == (ErrorCode.NO_ERROR, 0)


async def test_an_id_whose_tombstone_fails_is_kept() -> None:
    clock = Clock()
    coordinator = make(FailingTxnLog(), clock)
    await coordinator.init_producer_id("tx", 60_000, None)
    coordinator.transactional_id_expiration_ms = 10
    clock.now += 10
    assert await coordinator.remove_expired_transactional_ids() == 0
    assert coordinator.transactions["tx"].state is TransactionState.EMPTY


async def test_the_coordinator_expires_ids_periodically(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    clock = Clock()
    ids = iter(range(100, 200))

    async def generate() -> int:
        return next(ids)

    coordinator = TransactionCoordinator(
        MemoryTxnLog(),
        _NoPartitions(),
        generate,
        None,
        num_partitions=5,
        transactional_id_expiration_ms=60_000,
        remove_expired_interval_ms=3_600_000,
        clock=clock,
    )
    await nursery.start(coordinator.run)
    await coordinator.init_producer_id("tx", 60_000, None)
    clock.now += 60_000
    await trio.sleep(3_599)
    assert "tx" in coordinator.transactions
    await trio.sleep(2)
    assert "tx" not in coordinator.transactions


class _NoPartitions:
    def get_partition(self, topic: str, partition: int) -> None:
        return None


def test_expiration_settings_are_kafka_config_keys() -> None:
    default, _ = BrokerConfig.from_properties({})
    assert default.transactional_id_expiration_ms == 604_800_000
    assert default.transaction_remove_expired_transaction_cleanup_interval_ms == 3_600_000
    config, _ = BrokerConfig.from_properties(
        {
            "transactional.id.expiration.ms": "1000",
            "transaction.remove.expired.transaction.cleanup.interval.ms": "50",
        }
    )
    assert config.transactional_id_expiration_ms == 1000
    assert config.transaction_remove_expired_transaction_cleanup_interval_ms == 50
    for key in (
        "transactional.id.expiration.ms",
        "transaction.remove.expired.transaction.cleanup.interval.ms",
    ):
        for bad in ("0", "-5", "2147483648", "soon"):
            with pytest.raises(ConfigError):
                BrokerConfig.from_properties({key: bad})
