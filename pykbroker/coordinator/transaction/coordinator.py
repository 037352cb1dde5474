"""TransactionCoordinator: drives the pure state machine of ``transaction_metadata``.

Every transactional id lives in ``__transaction_state`` partition
``abs(javaHashCode(transactional_id)) % transaction.state.log.num.partitions``; each state
change is appended there (TransactionLogKey/Value v0) before the client is answered, and the
whole topic is replayed at start. A transaction left in PrepareCommit/PrepareAbort by a crash
has its markers written again at load (markers are idempotent for readers).

EndTxn (and a fencing InitProducerId, and the timeout abort) persists PrepareCommit /
PrepareAbort, appends a COMMIT/ABORT control batch to every partition of the transaction
(``markers.write_txn_markers``, the path the WriteTxnMarkers handler uses too: this broker
leads every partition, so markers are appended in-process, not sent with WriteTxnMarkers),
then persists CompleteCommit/CompleteAbort. The coordinator epoch in the markers is the
leader epoch of the transactional id's ``__transaction_state`` partition, as in Kafka.

Transactional offsets are Kafka's: AddOffsetsToTxn adds the group's ``__consumer_offsets``
partition to the transaction; TxnOffsetCommit is verified here
(``transactional_offset_commit``: the producer's, Ongoing, that partition added; KIP-890's
verification) and written by the group coordinator as a transactional batch, pending there;
the transaction's marker on that partition goes through the group coordinator
(``GroupTransactionParticipant.complete_transaction``), which then makes the offsets visible
(COMMIT) or drops them (ABORT). Everything is in the logs, so a restart at any point keeps
them: the group coordinator reloads the pending offsets, and a transaction found in
PrepareCommit/PrepareAbort here has its markers (those included) written again; an Ongoing
one is ended by its producer or its timeout. A marker the group coordinator could not take
because it is stopping (or not loaded) leaves the transaction prepared, not completed, for
that reason. Other marker errors are logged and the transaction completes (Kafka retries
them; this broker leads every partition it can write to).

Every ``transaction.remove.expired.transaction.cleanup.interval.ms`` the ids in
Empty/CompleteCommit/CompleteAbort not updated for ``transactional.id.expiration.ms`` are
expired (Kafka's ``removeExpiredTransactionalIds``): Dead, then a tombstone in their
``__transaction_state`` partition, then forgotten (so a restart does not bring them back).

The admin views: ``describe_transaction`` (DescribeTransactions) and ``list_transactions``
(ListTransactions), as Kafka's ``handleDescribeTransactions`` / ``listTransactionStates``.

All operations are serialised by one lock (simple, and enough for one broker); a
TxnOffsetCommit's write holds it too, so it cannot interleave with its transaction's markers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.coordinator.group.records import partition_for

from . import transaction_metadata as tm
from .markers import OFFSETS_TOPIC, GroupTransactionParticipant, write_txn_markers
from .transaction_metadata import TransactionMetadata, TransactionState, TxnResult

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
__all__ = ["OFFSETS_TOPIC", "TRANSACTION_STATE_TOPIC", "TransactionCoordinator", "TransactionLog"]
_PREPARED = (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT)
_GROUP_COORDINATOR_NOT_READY = (
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
)
DEFAULT_TRANSACTIONAL_ID_EXPIRATION_MS = 604_800_000
DEFAULT_REMOVE_EXPIRED_TRANSACTIONS_INTERVAL_MS = 3_600_000


class TransactionLog(Protocol):
    async def ensure_topic(self) -> None: ...

    async def append(
        self, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None: ...

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]: ...


class TransactionCoordinator:
    """The transaction coordinator of this broker (all ``__transaction_state`` partitions)."""

    def __init__(
        self,
        storage: TransactionLog,
        replica_manager: Any,
        generate_producer_id: Callable[[], Awaitable[int]],
        group_coordinator: GroupTransactionParticipant | None,
        *,
        num_partitions: int = 50,
        offsets_topic_num_partitions: int = 50,
        max_timeout_ms: int = 900_000,
        abort_check_interval_ms: int = 10_000,
        transactional_id_expiration_ms: int = DEFAULT_TRANSACTIONAL_ID_EXPIRATION_MS,
        remove_expired_interval_ms: int = DEFAULT_REMOVE_EXPIRED_TRANSACTIONS_INTERVAL_MS,
        clock: Callable[[], int],
    ) -> None:
        self.storage = storage
        self.replica_manager = replica_manager
        self._generate_producer_id = generate_producer_id
        self.group_coordinator = group_coordinator
        self.num_partitions = num_partitions
        self.offsets_topic_num_partitions = offsets_topic_num_partitions
        self.max_timeout_ms = max_timeout_ms
        self.abort_check_interval_ms = abort_check_interval_ms
        self.transactional_id_expiration_ms = transactional_id_expiration_ms
        self.remove_expired_interval_ms = remove_expired_interval_ms
        self._clock = clock
        self.transactions: dict[str, TransactionMetadata] = {}
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
        now = trio.current_time()
        next_abort = now + self.abort_check_interval_ms / 1000
        next_expire = now + self.remove_expired_interval_ms / 1000
        while True:  # a service task: runs until the broker cancels it
            await trio.sleep_until(min(next_abort, next_expire))
            now = trio.current_time()
            if now >= next_abort:
                await self.abort_timed_out_transactions()
                next_abort = trio.current_time() + self.abort_check_interval_ms / 1000
            if now >= next_expire:
                await self.remove_expired_transactional_ids()
                next_expire = trio.current_time() + self.remove_expired_interval_ms / 1000

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
        return await self.add_partitions(
            transactional_id,
            producer_id,
            producer_epoch,
            frozenset({self.offsets_partition(group_id)}),
        )

    def offsets_partition(self, group_id: str) -> tuple[str, int]:
        """The group's ``__consumer_offsets`` partition (what AddOffsetsToTxn adds)."""
        return OFFSETS_TOPIC, partition_for(group_id, self.offsets_topic_num_partitions)

    @asynccontextmanager
    async def transactional_offset_commit(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> AsyncIterator[ErrorCode]:
        """Verify a TxnOffsetCommit (KIP-890 part 1): the producer id and epoch are the
        transaction's (INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED), it is Ongoing and has
        the group's offsets partition (INVALID_TXN_STATE). The error is yielded; while the
        block runs (the group coordinator's transactional write) no transaction changes, so
        the offsets are written before their transaction's marker."""
        async with self._lock:
            if not self.loaded:
                yield ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
                return
            error = self.check_producer(transactional_id, producer_id, producer_epoch)
            if error == ErrorCode.NO_ERROR:
                current = self.transactions[transactional_id]
                if (
                    current.state is not TransactionState.ONGOING
                    or self.offsets_partition(group_id) not in current.partitions
                ):
                    error = ErrorCode.INVALID_TXN_STATE
            yield error

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

    async def remove_expired_transactional_ids(self) -> int:
        """Expire the idle transactional ids (Kafka's ``removeExpiredTransactionalIds``): one
        tombstone batch per ``__transaction_state`` partition, then the ids are forgotten.
        An id whose tombstone could not be written stays as it was. The number expired."""
        removed = 0
        async with self._lock:
            now = self._clock()
            by_partition: dict[int, list[TransactionMetadata]] = {}
            for metadata in tm.expired(
                self.transactions.values(), now, self.transactional_id_expiration_ms
            ):
                by_partition.setdefault(self.partition_for(metadata.transactional_id), []).append(
                    tm.prepare_dead(metadata, now)
                )
            for partition, dead in sorted(by_partition.items()):
                tombstones = [(tm.transaction_log_key(d.transactional_id), None) for d in dead]
                try:
                    await self.storage.append(partition, tombstones)
                except KafkaError as exc:
                    log.warning(
                        "expiring %d transactional ids of %s-%d failed: %s",
                        len(dead),
                        TRANSACTION_STATE_TOPIC,
                        partition,
                        exc,
                    )
                    continue
                for d in dead:
                    log.info("expired transactional id %r", d.transactional_id)
                    self.transactions.pop(d.transactional_id, None)
                removed += len(dead)
        return removed

    # -- admin views -------------------------------------------------------------------------

    def describe_transaction(self, transactional_id: str) -> dict[str, Any]:
        """One DescribeTransactions ``TransactionState`` entry (Kafka's
        ``handleDescribeTransactions``)."""
        entry: dict[str, Any] = {
            "error_code": ErrorCode.NO_ERROR,
            "transactional_id": transactional_id,
            "transaction_state": "",
            "transaction_timeout_ms": 0,
            "transaction_start_time_ms": 0,
            "producer_id": 0,
            "producer_epoch": 0,
            "topics": [],
        }
        metadata = self.transactions.get(transactional_id)
        if not self.loaded:
            entry["error_code"] = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        elif not transactional_id:
            entry["error_code"] = ErrorCode.INVALID_REQUEST
        elif metadata is None or metadata.state is TransactionState.DEAD:
            entry["error_code"] = ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
        else:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in sorted(metadata.partitions):
                by_topic.setdefault(topic, []).append(partition)
            entry.update(
                transaction_state=metadata.state.kafka_name,
                transaction_timeout_ms=metadata.transaction_timeout_ms,
                transaction_start_time_ms=metadata.txn_start_timestamp_ms,
                producer_id=metadata.producer_id,
                producer_epoch=metadata.producer_epoch,
                topics=[{"topic": t, "partitions": p} for t, p in by_topic.items()],
            )
        return entry

    def list_transactions(
        self,
        state_filters: Collection[str],
        producer_id_filters: Collection[int],
        duration_filter_ms: int = -1,
        transactional_id_pattern: str | None = None,
    ) -> dict[str, Any]:
        """A ListTransactions response body (Kafka's ``listTransactionStates``)."""
        response: dict[str, Any] = {
            "throttle_time_ms": 0,
            "error_code": ErrorCode.NO_ERROR,
            "unknown_state_filters": [],
            "transaction_states": [],
        }
        if not self.loaded:
            response["error_code"] = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            return response
        try:
            include, unknown = tm.list_filter(
                state_filters,
                producer_id_filters,
                duration_filter_ms,
                transactional_id_pattern,
                self._clock(),
            )
        except tm.InvalidPattern:
            response["error_code"] = ErrorCode.INVALID_REGULAR_EXPRESSION
            return response
        response["unknown_state_filters"] = unknown
        response["transaction_states"] = [
            {
                "transactional_id": m.transactional_id,
                "producer_id": m.producer_id,
                "transaction_state": m.state.kafka_name,
            }
            for _, m in sorted(self.transactions.items())
            if include(m)
        ]
        return response

    # -- internals ---------------------------------------------------------------------------

    async def _persist(self, metadata: TransactionMetadata) -> None:
        key, value = tm.transaction_log_record(metadata)
        await self.storage.append(self.partition_for(metadata.transactional_id), [(key, value)])
        self.transactions[metadata.transactional_id] = metadata

    def coordinator_epoch(self, transactional_id: str) -> int:
        """The leader epoch of the id's ``__transaction_state`` partition (Kafka's coordinator
        epoch, written in markers); 0 before the topic exists."""
        found = self.replica_manager.get_partition(
            TRANSACTION_STATE_TOPIC, self.partition_for(transactional_id)
        )
        epoch = getattr(found, "leader_epoch", 0) if found is not None else 0
        return max(int(epoch), 0)

    async def _write_markers_and_complete(self, metadata: TransactionMetadata) -> None:
        commit = metadata.state is TransactionState.PREPARE_COMMIT
        transactional_id = metadata.transactional_id
        errors = await write_txn_markers(
            self.replica_manager,
            metadata.producer_id,
            metadata.producer_epoch,
            self.coordinator_epoch(transactional_id),
            commit,
            sorted(metadata.partitions),
            self._clock(),
            group_coordinator=self.group_coordinator,
            translate_coordinator_errors=False,
        )
        for (topic, partition), error in errors.items():
            if error != ErrorCode.NO_ERROR:  # Kafka retries or drops; here the txn completes
                log.warning(
                    "no %s marker of %r on %s-%d: %s",
                    "COMMIT" if commit else "ABORT",
                    transactional_id,
                    topic,
                    partition,
                    error.name,
                )
        if any(error in _GROUP_COORDINATOR_NOT_READY for error in errors.values()):
            # The group coordinator is stopping (or not loaded yet): the transaction stays
            # prepared, so its markers (and with them the group's offsets) are written again
            # when the coordinators load next.
            return
        await self._persist(tm.complete(metadata, self._clock()))
