"""Transactional offsets in the group coordinator (TxnOffsetCommit, markers, loading).

The pure shard is driven through a log of ``CoordinatorBatch``es (what ``__consumer_offsets``
holds: plain batches, transactional batches of a producer, COMMIT/ABORT markers); a restart
replays that log as ``GroupCoordinator`` does. The trio ``GroupCoordinator`` is then checked
over the in-memory ``MemoryLog`` across a restart.
"""

from __future__ import annotations

import itertools
from typing import Any

import trio

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.config import GroupCoordinatorConfig
from pykbroker.coordinator.group.coordinator import GroupCoordinator
from pykbroker.coordinator.group.coordinator_log import CoordinatorBatch
from pykbroker.coordinator.group.records import OffsetCommitRecord, decode_record
from pykbroker.coordinator.group.requests import JoinGroupRequest, SyncGroupRequest
from pykbroker.coordinator.group.result import PendingWrite, ResponseFuture
from pykbroker.coordinator.group.shard import GroupCoordinatorShard
from pykbroker.coordinator.transaction import transaction_metadata as tm
from pykbroker.coordinator.transaction.coordinator import TransactionCoordinator
from pykbroker.coordinator.transaction.transaction_metadata import TransactionState

from .support import MemoryLog
from .test_transaction_coordinator import Clock, MemoryTxnLog, NoPartitions

OK = ErrorCode.NO_ERROR
UNSTABLE = ErrorCode.UNSTABLE_OFFSET_COMMIT
PID, EPOCH = 4000, 0
Offsets = dict[tuple[str, int], int]


def topics_of(offsets: Offsets, metadata: str = "") -> list[dict[str, Any]]:
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, partition), offset in offsets.items():
        by_topic.setdefault(topic, []).append(
            {
                "partition_index": partition,
                "committed_offset": offset,
                "committed_leader_epoch": 1,
                "committed_metadata": metadata,
            }
        )
    return [{"name": name, "partitions": parts} for name, parts in by_topic.items()]


def errors_of(result: dict[str, Any]) -> dict[tuple[str, int], int]:
    return {
        (t["name"], p["partition_index"]): p["error_code"]
        for t in result["topics"]
        for p in t["partitions"]
    }


class TxnHarness:
    """A shard whose writes land in ``log`` (partition -> batches) and a restart that replays
    it, batch by batch, as ``GroupCoordinator._load`` does."""

    def __init__(self, **config: Any) -> None:
        settings: dict[str, Any] = {
            "group_initial_rebalance_delay_ms": 0,
            "offsets_topic_num_partitions": 3,
        }
        settings.update(config)
        self.config = GroupCoordinatorConfig(**settings)
        self.shard = self._new_shard()
        self.log: dict[int, list[CoordinatorBatch]] = {}
        self.now = 0

    def _new_shard(self) -> GroupCoordinatorShard:
        counter = itertools.count(1)
        return GroupCoordinatorShard(self.config, new_uuid=lambda: f"u{next(counter)}")

    def apply(self, writes: list[PendingWrite]) -> None:
        queue = list(writes)
        while queue:  # every continuation returns fewer writes than it got, in these tests
            write = queue.pop(0)
            if write.marker is not None:
                batch = CoordinatorBatch(
                    [], write.producer_id, write.producer_epoch, True, write.marker.commit
                )
                self.log.setdefault(write.partition, []).append(batch)
            elif write.records:
                batch = CoordinatorBatch(
                    list(write.records),
                    write.producer_id,
                    write.producer_epoch,
                    write.producer_id >= 0,
                )
                self.log.setdefault(write.partition, []).append(batch)
            queue.extend(write.complete(OK, self.now))

    def restarted(self) -> TxnHarness:
        again = TxnHarness.__new__(TxnHarness)
        again.config, again.now = self.config, self.now
        again.log = {p: list(batches) for p, batches in self.log.items()}
        again.shard = self._new_shard()
        for partition in sorted(again.log):
            for batch in again.log[partition]:
                if batch.commit is not None:
                    again.shard.replay_end_transaction_marker(batch.producer_id, batch.commit)
                    continue
                producer_id = batch.producer_id if batch.is_transactional else -1
                for key, value in batch.records:
                    record = decode_record(key, value)
                    assert record is not None
                    again.shard.replay(record, again.now, producer_id)
        again.apply(again.shard.on_loaded(again.now))
        return again

    # -- requests -----------------------------------------------------------------------

    def txn_commit(
        self,
        offsets: Offsets,
        *,
        group_id: str = "g",
        producer_id: int = PID,
        producer_epoch: int = EPOCH,
        generation_id: int = -1,
        member_id: str = "",
        metadata: str = "",
    ) -> dict[tuple[str, int], int]:
        future = ResponseFuture()
        self.apply(
            self.shard.offsets.commit_transactional_offsets(
                group_id,
                producer_id,
                producer_epoch,
                generation_id,
                member_id,
                None,
                topics_of(offsets, metadata),
                future,
                self.now,
            )
        )
        return errors_of(future.result())

    def commit(self, offsets: Offsets, *, group_id: str = "g") -> dict[tuple[str, int], int]:
        future = ResponseFuture()
        self.apply(
            self.shard.offsets.commit_offsets(
                group_id, -1, "", None, topics_of(offsets), future, self.now
            )
        )
        return errors_of(future.result())

    def marker(self, commit: bool, *, group_id: str = "g", producer_id: int = PID) -> int:
        future = ResponseFuture()
        partition = self.shard.partition_for(group_id)
        self.apply(
            self.shard.complete_transaction(partition, producer_id, EPOCH, 0, commit, future)
        )
        code: int = future.result()["error_code"]
        return code

    def fetch(
        self, *, group_id: str = "g", require_stable: bool = False
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """(offset, error) of t-0..2: the partitions these tests use."""
        error, topics = self.shard.fetch_offsets(
            group_id, [("t", [0, 1, 2])], require_stable=require_stable
        )
        assert error == OK
        return {
            (t["name"], p["partition_index"]): (p["committed_offset"], p["error_code"])
            for t in topics
            for p in t["partitions"]
        }


def test_pending_offsets_are_invisible_until_the_commit_marker() -> None:
    h = TxnHarness()
    assert h.commit({("t", 0): 3}) == {("t", 0): OK}
    assert h.txn_commit({("t", 0): 10, ("t", 1): 11}) == {("t", 0): OK, ("t", 1): OK}
    # written to the group's partition as one transactional batch of the producer
    [plain, txn] = h.log[h.shard.partition_for("g")]
    assert (plain.is_transactional, txn.is_transactional) == (False, True)
    assert (txn.producer_id, txn.producer_epoch, len(txn.records)) == (PID, EPOCH, 2)

    assert h.fetch() == {("t", 0): (3, OK), ("t", 1): (-1, OK), ("t", 2): (-1, OK)}
    assert h.fetch(require_stable=True) == {
        ("t", 0): (-1, UNSTABLE),
        ("t", 1): (-1, UNSTABLE),
        ("t", 2): (-1, OK),
    }
    assert h.marker(commit=True) == OK
    expected = {("t", 0): (10, OK), ("t", 1): (11, OK), ("t", 2): (-1, OK)}
    assert h.fetch() == expected
    assert h.fetch(require_stable=True) == expected
    assert h.shard.offsets.pending_transactional_offsets == {}
    assert h.shard.offsets.open_transactions_by_group == {}


def test_abort_marker_drops_the_pending_offsets() -> None:
    h = TxnHarness()
    h.commit({("t", 0): 3})
    h.txn_commit({("t", 0): 10})
    h.txn_commit({("t", 1): 11})  # a second TxnOffsetCommit of the same transaction
    assert h.marker(commit=False) == OK
    expected = {("t", 0): (3, OK), ("t", 1): (-1, OK), ("t", 2): (-1, OK)}
    assert h.fetch(require_stable=True) == expected
    # a marker of a producer without pending offsets changes nothing
    assert h.marker(commit=True) == OK
    assert h.fetch() == expected


def test_transactions_of_two_producers_end_independently() -> None:
    h = TxnHarness()
    h.txn_commit({("t", 0): 10}, producer_id=1)
    h.txn_commit({("t", 1): 20}, producer_id=2)
    h.marker(commit=False, producer_id=1)
    assert h.fetch(require_stable=True) == {
        ("t", 0): (-1, OK),
        ("t", 1): (-1, UNSTABLE),
        ("t", 2): (-1, OK),
    }
    h.marker(commit=True, producer_id=2)
    assert h.fetch(require_stable=True)[("t", 1)] == (20, OK)


def test_the_most_recent_record_wins_between_regular_and_transactional_commits() -> None:
    h = TxnHarness()
    h.commit({("t", 0): 1, ("t", 1): 1})
    h.txn_commit({("t", 0): 10, ("t", 1): 10})
    h.commit({("t", 1): 5})  # written after the transaction's offset: it stays
    h.marker(commit=True)
    assert h.fetch() == {("t", 0): (10, OK), ("t", 1): (5, OK), ("t", 2): (-1, OK)}
    # the same from the log
    assert h.restarted().fetch() == h.fetch()


def test_pending_offsets_survive_a_restart_until_their_marker() -> None:
    h = TxnHarness()
    h.commit({("t", 0): 3})
    h.txn_commit({("t", 0): 10, ("t", 2): 12}, metadata="txn")
    again = h.restarted()
    assert again.fetch() == {("t", 0): (3, OK), ("t", 1): (-1, OK), ("t", 2): (-1, OK)}
    assert again.fetch(require_stable=True) == {
        ("t", 0): (-1, UNSTABLE),
        ("t", 1): (-1, OK),
        ("t", 2): (-1, UNSTABLE),
    }
    # a simple group exists for a group known only by its pending offsets
    assert again.shard.classic.group("g") is not None

    committed = again.restarted()
    committed.marker(commit=True)
    assert committed.fetch(require_stable=True) == {
        ("t", 0): (10, OK),
        ("t", 1): (-1, OK),
        ("t", 2): (12, OK),
    }
    assert committed.restarted().fetch(require_stable=True) == committed.fetch()
    _, topics = committed.restarted().shard.fetch_offsets("g", [("t", [2])])
    assert topics[0]["partitions"][0]["metadata"] == "txn"

    aborted = again.restarted()
    aborted.marker(commit=False)
    expected = {("t", 0): (3, OK), ("t", 1): (-1, OK), ("t", 2): (-1, OK)}
    assert aborted.fetch(require_stable=True) == expected
    assert aborted.restarted().fetch(require_stable=True) == expected


def test_pending_only_group_is_found_by_replay() -> None:
    h = TxnHarness()
    h.txn_commit({("t", 1): 7}, group_id="only-pending")
    again = h.restarted()
    assert again.shard.offsets.has_pending_transactional_offsets("only-pending", "t", 1)
    assert not again.shard.offsets.has_pending_transactional_offsets("only-pending", "t", 0)
    again.marker(commit=True, group_id="only-pending")
    assert again.fetch(group_id="only-pending")[("t", 1)] == (7, OK)


def test_transactional_commit_validation() -> None:
    h = TxnHarness()
    # an unknown group with a generation: ILLEGAL_GENERATION (and nothing written)
    assert h.txn_commit({("t", 0): 1}, group_id="x", generation_id=3, member_id="m") == {
        ("t", 0): ErrorCode.ILLEGAL_GENERATION
    }
    assert h.log == {}
    assert h.txn_commit({("t", 0): 1}, metadata="m" * 5000) == {
        ("t", 0): ErrorCode.OFFSET_METADATA_TOO_LARGE
    }
    # a stable classic group: a member must name its generation, a producer without member
    # id and generation is accepted (Kafka's transactional rules)
    join = ResponseFuture()
    request = JoinGroupRequest(
        group_id="cg",
        member_id="",
        group_instance_id=None,
        session_timeout_ms=10_000,
        rebalance_timeout_ms=10_000,
        protocol_type="consumer",
        protocols=[("range", b"")],
        client_id="c",
        client_host="/127.0.0.1",
        require_known_member_id=False,
        supports_skip_assignment=True,
    )
    h.apply(h.shard.join_group(request, join, h.now))
    h.apply(h.shard.tick(h.now))
    member_id, generation = join.result()["member_id"], join.result()["generation_id"]
    assert member_id
    assert generation == 1
    sync = ResponseFuture()
    h.apply(
        h.shard.classic.sync_group(
            SyncGroupRequest("cg", generation, member_id, None, None, None, [(member_id, b"")]),
            sync,
            h.now,
        )
    )
    assert sync.result()["error_code"] == OK
    assert h.txn_commit({("t", 0): 5}, group_id="cg") == {("t", 0): OK}
    assert h.txn_commit(
        {("t", 0): 6}, group_id="cg", generation_id=generation, member_id=member_id
    ) == {("t", 0): OK}
    assert h.txn_commit(
        {("t", 0): 7}, group_id="cg", generation_id=generation + 1, member_id=member_id
    ) == {("t", 0): ErrorCode.ILLEGAL_GENERATION}
    assert h.txn_commit({("t", 0): 7}, group_id="cg", generation_id=generation, member_id="x") == {
        ("t", 0): ErrorCode.UNKNOWN_MEMBER_ID
    }
    h.marker(commit=True, group_id="cg")
    assert h.fetch(group_id="cg")[("t", 0)] == (6, OK)


def test_pending_offsets_hold_back_expiry_and_group_deletion() -> None:
    h = TxnHarness(offsets_retention_minutes=1)
    h.commit({("t", 0): 1, ("t", 1): 1})
    h.txn_commit({("t", 0): 2})
    h.now = 61_000
    h.apply(h.shard.cleanup_group_metadata(h.now))
    # t-1 expired; t-0 has a pending transactional offset, and the group stays
    assert h.fetch() == {("t", 0): (1, OK), ("t", 1): (-1, OK), ("t", 2): (-1, OK)}
    assert h.shard.classic.group("g") is not None
    h.marker(commit=False)
    h.apply(h.shard.cleanup_group_metadata(h.now))
    assert h.fetch()[("t", 0)] == (-1, OK)


def test_delete_groups_tombstones_pending_offsets_too() -> None:
    h = TxnHarness()
    h.commit({("t", 0): 1})
    h.txn_commit({("t", 0): 2, ("t", 1): 3})
    future = ResponseFuture()
    h.apply(h.shard.delete_groups(["g"], future))
    assert future.result() == {"g": OK}
    last = h.log[h.shard.partition_for("g")][-1]
    tombstones = [decode_record(k, v) for k, v in last.records]
    assert sorted(
        (r.topic, r.partition) for r in tombstones if isinstance(r, OffsetCommitRecord)
    ) == [
        ("t", 0),
        ("t", 1),
    ]
    assert h.shard.offsets.group_ids() == set()
    h.marker(commit=True)  # the transaction ends after the deletion: nothing comes back
    assert h.fetch() == {("t", 0): (-1, OK), ("t", 1): (-1, OK), ("t", 2): (-1, OK)}
    again = h.restarted()
    assert again.fetch() == h.fetch()


# -- the trio GroupCoordinator over a MemoryLog ------------------------------------------------


def make(log: MemoryLog) -> GroupCoordinator:
    return GroupCoordinator(log, node_id=1, offsets_topic_num_partitions=5)


def txn_request(offsets: Offsets) -> dict[str, Any]:
    return {
        "group_id": "g",
        "generation_id_or_member_epoch": -1,
        "member_id": "",
        "group_instance_id": None,
        "topics": topics_of(offsets),
    }


async def fetch(coordinator: GroupCoordinator, stable: bool) -> dict[int, tuple[int, int]]:
    response = await coordinator.fetch_offsets(
        {
            "group_id": "g",
            "topics": [{"name": "t", "partition_indexes": [0, 1]}],
            "require_stable": stable,
        },
        7,
    )
    assert response["error_code"] == OK
    return {
        p["partition_index"]: (p["committed_offset"], p["error_code"])
        for p in response["topics"][0]["partitions"]
    }


async def test_the_coordinator_writes_and_reloads_transactional_offsets() -> None:
    log = MemoryLog()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = make(log)
            await nursery.start(first.run)
            result = await first.commit_transactional_offsets(
                txn_request({("t", 0): 10, ("t", 1): 11}), PID, EPOCH
            )
            assert errors_of(result) == {("t", 0): OK, ("t", 1): OK}
            assert await fetch(first, stable=True) == {0: (-1, UNSTABLE), 1: (-1, UNSTABLE)}
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            second = make(log)
            await nursery.start(second.run)
            assert await fetch(second, stable=False) == {0: (-1, OK), 1: (-1, OK)}
            assert await fetch(second, stable=True) == {0: (-1, UNSTABLE), 1: (-1, UNSTABLE)}
            partition = second.partition_for("g")
            assert await second.complete_transaction(partition, PID, EPOCH, 0, True) == OK
            assert await fetch(second, stable=True) == {0: (10, OK), 1: (11, OK)}
            # a partition out of range is not this coordinator's
            assert await second.complete_transaction(99, PID, EPOCH, 0, True) == (
                ErrorCode.NOT_COORDINATOR
            )
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            third = make(log)
            await nursery.start(third.run)
            assert await fetch(third, stable=True) == {0: (10, OK), 1: (11, OK)}
            nursery.cancel_scope.cancel()


async def test_the_coordinator_reports_a_failed_marker() -> None:
    log = MemoryLog()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            coordinator = make(log)
            await nursery.start(coordinator.run)
            await coordinator.commit_transactional_offsets(txn_request({("t", 0): 1}), PID, EPOCH)
            log.fail_with = ErrorCode.INVALID_PRODUCER_EPOCH
            partition = coordinator.partition_for("g")
            assert await coordinator.complete_transaction(partition, PID, EPOCH, 0, True) == (
                ErrorCode.INVALID_PRODUCER_EPOCH
            )
            log.fail_with = None
            assert await fetch(coordinator, stable=True) == {0: (-1, UNSTABLE), 1: (-1, OK)}
            nursery.cancel_scope.cancel()
    stopped = make(log)
    assert await stopped.complete_transaction(0, PID, EPOCH, 0, True) == (
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    )


async def test_a_commit_prepared_before_a_crash_completes_the_offsets_at_load() -> None:
    """The transaction log says PrepareCommit, the markers were never written (the broker
    stopped in between): at load the transaction coordinator writes them, through the group
    coordinator, and the pending offsets become visible."""
    clock = Clock()
    log, txn_log = MemoryLog(), MemoryTxnLog()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            groups = make(log)
            await nursery.start(groups.run)
            before = make_txn(txn_log, clock, groups)
            init = await before.init_producer_id("tx", 60_000, None)
            pid, epoch = init.producer_id, init.producer_epoch
            assert await before.add_offsets("tx", pid, epoch, "g") == OK
            async with before.transactional_offset_commit("tx", pid, epoch, "g") as error:
                assert error == OK
                await groups.commit_transactional_offsets(txn_request({("t", 0): 42}), pid, epoch)
            prepared = tm.end_transaction(before.transactions["tx"], pid, epoch, True, clock.now)
            assert prepared.metadata is not None
            assert prepared.metadata.state is TransactionState.PREPARE_COMMIT
            key, value = tm.transaction_log_record(prepared.metadata)
            await txn_log.append(before.partition_for("tx"), [(key, value)])
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            groups = make(log)
            await nursery.start(groups.run)
            assert await fetch(groups, stable=True) == {0: (-1, UNSTABLE), 1: (-1, OK)}
            after = make_txn(txn_log, clock, groups)
            await nursery.start(after.run)
            assert after.transactions["tx"].state is TransactionState.COMPLETE_COMMIT
            assert await fetch(groups, stable=True) == {0: (42, OK), 1: (-1, OK)}
            nursery.cancel_scope.cancel()


def make_txn(
    storage: MemoryTxnLog, clock: Clock, groups: GroupCoordinator
) -> TransactionCoordinator:
    ids = iter(range(100, 200))

    async def generate() -> int:
        return next(ids)

    coordinator = TransactionCoordinator(
        storage, NoPartitions(), generate, groups, num_partitions=5, clock=clock
    )
    coordinator.load()
    return coordinator


def test_a_tombstone_drops_the_pending_offset_of_its_partition() -> None:
    h = TxnHarness()
    h.txn_commit({("t", 0): 2})
    future = ResponseFuture()
    h.apply(h.shard.delete_offsets("g", [("t", [0])], future))  # no committed offset: no-op
    h.apply([PendingWrite(h.shard.partition_for("g"), [h.shard.offsets.tombstone("g", "t", 0)])])
    h.shard.offsets.forget("g", "t", 0)
    assert not h.shard.offsets.has_pending_transactional_offsets("g", "t", 0)
    assert h.shard.offsets.open_transactions_by_group == {"g": {PID}}
    h.marker(commit=True)  # closes the producer's entry; the offset stays deleted
    assert h.shard.offsets.open_transactions_by_group == {}
    assert h.fetch()[("t", 0)] == (-1, OK)
    again = h.restarted()
    assert again.fetch()[("t", 0)] == (-1, OK)
    assert again.shard.offsets.open_transactions_by_group == {}
