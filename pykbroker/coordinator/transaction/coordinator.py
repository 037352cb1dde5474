"""TransactionCoordinator: drives the pure state machine of ``transaction_metadata``.

Every transactional id lives in ``__transaction_state`` partition
``abs(javaHashCode(transactional_id)) % transaction.state.log.num.partitions``; each state
change is appended there (TransactionLogKey/Value v0) before the client is answered, and the
whole topic is replayed at start. A transaction left in PrepareCommit/PrepareAbort by a crash
has its markers written again at load (markers are idempotent for readers).

EndTxn (and a fencing InitProducerId, and the timeout abort) persists PrepareCommit /
PrepareAbort, appends a COMMIT/ABORT control batch (``AppendOrigin.COORDINATOR``) to every
data partition of the transaction, then persists CompleteCommit/CompleteAbort. Markers are
written in-process (this broker leads every partition), not with WriteTxnMarkers.

Transactional offsets (TxnOffsetCommit) are held here, per transactional id, and committed to
the group coordinator only when the transaction commits (dropped on abort). Limitation: held
offsets are in memory only, so a crash during an open transaction loses them (the
transaction itself is then aborted by its timeout, or committed without its offsets if the
crash fell between PrepareCommit and the offsets commit).

All operations are serialised by one lock (simple, and enough for one broker).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.records import partition_for
from pykbroker.log import aborted_txns
from pykbroker.log.record_batch import AppendOrigin, Record, build_batch

from . import transaction_metadata as tm
from .transaction_metadata import TransactionMetadata, TransactionState, TxnResult

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
OFFSETS_TOPIC = "__consumer_offsets"
_PREPARED = (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT)
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")


class TransactionLog(Protocol):
    async def ensure_topic(self) -> None: ...

    async def append(
        self, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None: ...

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]: ...


def control_batch(producer_id: int, producer_epoch: int, commit: bool, now_ms: int) -> bytes:
    """A transaction marker: one control record, key (version 0, type), value (0, epoch 0)."""
    record = Record(
        key=_CONTROL_KEY.pack(0, 1 if commit else 0),
        value=_CONTROL_VALUE.pack(0, 0),
        timestamp=now_ms,
    )
    return build_batch(
        [record],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=True,
        is_control=True,
    )


class TransactionCoordinator:
    """The transaction coordinator of this broker (all ``__transaction_state`` partitions)."""

    def __init__(
        self,
        storage: TransactionLog,
        replica_manager: Any,
        generate_producer_id: Callable[[], Awaitable[int]],
        commit_group_offsets: Callable[[dict[str, Any]], Awaitable[Any]],
        *,
        num_partitions: int = 50,
        offsets_topic_num_partitions: int = 50,
        max_timeout_ms: int = 900_000,
        abort_check_interval_ms: int = 10_000,
        clock: Callable[[], int],
    ) -> None:
        self.storage = storage
        self.replica_manager = replica_manager
        self._generate_producer_id = generate_producer_id
        self._commit_group_offsets = commit_group_offsets
        self.num_partitions = num_partitions
        self.offsets_topic_num_partitions = offsets_topic_num_partitions
        self.max_timeout_ms = max_timeout_ms
        self.abort_check_interval_ms = abort_check_interval_ms
        self._clock = clock
        self.transactions: dict[str, TransactionMetadata] = {}
        #: transactional id -> group id -> OffsetCommit-shaped request held until commit
        self.pending_offsets: dict[str, dict[str, dict[str, Any]]] = {}
        self._lock = trio.Lock()
        self.loaded = False

    # -- lifetime ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._lock:
            self.load()
            for metadata in list(self.transactions.values()):
                if metadata.state in _PREPARED:
                    await self._write_markers_and_complete(metadata)
        task_status.started()
        while True:
            await trio.sleep(self.abort_check_interval_ms / 1000)
            await self.abort_timed_out_transactions()

    def load(self) -> None:
        """Replay every hosted ``__transaction_state`` partition."""
        for partition in range(self.num_partitions):
            for key, value in self.storage.read(partition):
                try:
                    transactional_id, metadata = tm.read_transaction_log_record(key, value)
                except ValueError:
                    continue
                if metadata is None:
                    self.transactions.pop(transactional_id, None)
                else:
                    self.transactions[transactional_id] = metadata
        self.loaded = True

    def partition_for(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.num_partitions)

    async def find_coordinator(self, transactional_id: str) -> ErrorCode:
        if not self.loaded:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        await self.storage.ensure_topic()
        return ErrorCode.NO_ERROR

    # -- operations --------------------------------------------------------------------------

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None
    ) -> TxnResult:
        if timeout_ms <= 0 or timeout_ms > self.max_timeout_ms:
            return TxnResult(ErrorCode.INVALID_TRANSACTION_TIMEOUT)
        if not self.loaded:
            return TxnResult(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        async with self._lock:
            await self.storage.ensure_topic()
            current = self.transactions.get(transactional_id)
            new_pid = -1
            if current is None or current.producer_epoch >= tm.MAX_PRODUCER_EPOCH - 1:
                new_pid = await self._generate_producer_id()
            result = tm.init_producer_id(
                current, transactional_id, timeout_ms, self._clock(), new_pid, expected
            )
            if result.metadata is not None and result.metadata != current:
                await self._persist(result.metadata)
            if result.write_markers and result.metadata is not None:
                self.pending_offsets.pop(transactional_id, None)
                await self._write_markers_and_complete(result.metadata)
            return result

    def check_producer(
        self, transactional_id: str, producer_id: int, producer_epoch: int
    ) -> ErrorCode:
        current = self.transactions.get(transactional_id)
        if current is None or current.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        if current.producer_epoch != producer_epoch:
            return ErrorCode.PRODUCER_FENCED
        return ErrorCode.NO_ERROR

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: frozenset[tuple[str, int]],
        *,
        verify_only: bool = False,
    ) -> ErrorCode:
        async with self._lock:
            current = self.transactions.get(transactional_id)
            if verify_only:
                error = self.check_producer(transactional_id, producer_id, producer_epoch)
                if error != ErrorCode.NO_ERROR:
                    return error
                assert current is not None
                ok = current.state is TransactionState.ONGOING and partitions <= current.partitions
                return ErrorCode.NO_ERROR if ok else ErrorCode.INVALID_TXN_STATE
            result = tm.add_partitions(
                current, producer_id, producer_epoch, partitions, self._clock()
            )
            if result.error == ErrorCode.NO_ERROR and result.metadata is not None:
                await self._persist(result.metadata)
            return result.error

    async def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> ErrorCode:
        offsets_partition = partition_for(group_id, self.offsets_topic_num_partitions)
        return await self.add_partitions(
            transactional_id,
            producer_id,
            producer_epoch,
            frozenset({(OFFSETS_TOPIC, offsets_partition)}),
        )

    def hold_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, request: dict[str, Any]
    ) -> ErrorCode:
        """TxnOffsetCommit: keep the offsets until the transaction ends."""
        error = self.check_producer(transactional_id, producer_id, producer_epoch)
        if error != ErrorCode.NO_ERROR:
            return error
        current = self.transactions[transactional_id]
        if current.state is not TransactionState.ONGOING:
            return ErrorCode.INVALID_TXN_STATE
        groups = self.pending_offsets.setdefault(transactional_id, {})
        held = groups.get(request["group_id"])
        if held is None:
            groups[request["group_id"]] = request
            return ErrorCode.NO_ERROR
        merged: dict[tuple[str, int], dict[str, Any]] = {}
        for req in (held, request):
            for topic in req["topics"]:
                for part in topic["partitions"]:
                    merged[(topic["name"], part["partition_index"])] = part
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (name, _index), part in merged.items():
            by_topic.setdefault(name, []).append(part)
        groups[request["group_id"]] = {
            **request,
            "topics": [{"name": n, "partitions": p} for n, p in by_topic.items()],
        }
        return ErrorCode.NO_ERROR

    async def end_transaction(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> ErrorCode:
        async with self._lock:
            current = self.transactions.get(transactional_id)
            result = tm.end_transaction(current, producer_id, producer_epoch, commit, self._clock())
            if result.metadata is not None:
                await self._persist(result.metadata)
                if result.write_markers:
                    await self._write_markers_and_complete(result.metadata)
            return result.error

    async def abort_timed_out_transactions(self) -> int:
        """Abort (with an epoch bump, fencing the producer) every Ongoing transaction older
        than its ``transaction.timeout.ms``; the number aborted."""
        aborted = 0
        async with self._lock:
            for transactional_id, current in list(self.transactions.items()):
                fenced = tm.abort_timed_out(current, self._clock())
                if fenced is None:
                    continue
                log.info("aborting timed-out transaction %r", transactional_id)
                await self._persist(fenced)
                await self._write_markers_and_complete(fenced)
                aborted += 1
        return aborted

    # -- internals ---------------------------------------------------------------------------

    async def _persist(self, metadata: TransactionMetadata) -> None:
        key, value = tm.transaction_log_record(metadata)
        await self.storage.append(self.partition_for(metadata.transactional_id), [(key, value)])
        self.transactions[metadata.transactional_id] = metadata

    async def _write_markers_and_complete(self, metadata: TransactionMetadata) -> None:
        commit = metadata.state is TransactionState.PREPARE_COMMIT
        transactional_id = metadata.transactional_id
        now = self._clock()
        held = self.pending_offsets.pop(transactional_id, {})
        for topic, partition in sorted(metadata.partitions):
            if topic == OFFSETS_TOPIC:
                continue
            self._write_marker(metadata, topic, partition, commit, now)
        if commit:
            for request in held.values():
                try:
                    await self._commit_group_offsets(request)
                except Exception:  # a lost offset commit must not wedge the coordinator
                    log.exception("committing the offsets of %r failed", transactional_id)
        await self._persist(tm.complete(metadata, self._clock()))

    def _write_marker(
        self, metadata: TransactionMetadata, topic: str, partition: int, commit: bool, now: int
    ) -> None:
        found = self.replica_manager.get_partition(topic, partition)
        if found is None:
            log.warning("no partition %s-%d for a transaction marker", topic, partition)
            return
        entry = found.log.producer_state.last_entry(metadata.producer_id)
        first_offset = entry.current_txn_first_offset if entry is not None else -1
        batch = control_batch(metadata.producer_id, metadata.producer_epoch, commit, now)
        results = self.replica_manager.append_records(
            {(topic, partition): batch}, -1, origin=AppendOrigin.COORDINATOR
        )
        outcome = results[(topic, partition)]
        if outcome.error != ErrorCode.NO_ERROR:
            log.warning(
                "transaction marker to %s-%d failed: %s", topic, partition, outcome.error.name
            )
            return
        if not commit:
            aborted_txns.record_abort(
                found.log, metadata.producer_id, first_offset, outcome.base_offset
            )
