"""TransactionCoordinator: drives the pure state machine of ``transaction_metadata``.

Every transactional id lives in ``__transaction_state`` partition
``abs(javaHashCode(transactional_id)) % transaction.state.log.num.partitions``; each state
change is appended there (TransactionLogKey/Value v0) before the client is answered, and the
whole topic is replayed at start. A transaction left in PrepareCommit/PrepareAbort by a crash
has its markers written again at load (markers are idempotent for readers).

This broker coordinates the ids whose ``__transaction_state`` partition it leads (by the
metadata image); InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn for another
id answer NOT_COORDINATOR, as Kafka.

EndTxn (and a fencing InitProducerId, and the timeout abort) persists PrepareCommit /
PrepareAbort, then the COMMIT/ABORT markers go to every partition of the transaction through
the ``TransactionMarkerChannelManager`` (``marker_channel``, Kafka's): written in-process on
the partitions this broker leads, sent with WriteTxnMarkers v1 to the current leader of every
other partition, retried until acknowledged; CompleteCommit/CompleteAbort is persisted only
once every marker is. The sending runs in the coordinator's nursery: EndTxn (and
InitProducerId) is answered when it is done or after ``completion_wait_ms`` (Kafka answers once
the prepare is written), the producer's next request meanwhile gets CONCURRENT_TRANSACTIONS.
A sending that times out (a leader down for long), or is abandoned because the coordinator
epoch changed, leaves the transaction prepared: every abort check interval the prepared
transactions without a sending in flight are resumed (with the partitions still pending), as
at load. The coordinator epoch in the markers is the leader epoch of the transactional id's
``__transaction_state`` partition, as in Kafka. Without a metadata image (tests) every
partition is this broker's. A ``__transaction_state`` partition this broker becomes the leader
of while running (another leader before, or a new leader epoch) is loaded again from its log
and its prepared transactions resumed (``on_metadata_update``, Kafka's ``onElection``).

Transactional offsets are Kafka's: AddOffsetsToTxn adds the group's ``__consumer_offsets``
partition to the transaction; TxnOffsetCommit is verified (``transactional_offset_commit``:
the producer's, Ongoing, that partition added; KIP-890 part 1's verification): here when this
broker coordinates the transactional id, otherwise at its coordinator's broker with
AddPartitionsToTxn v4 ``verify_only`` (``verify_remotely``, as Kafka's group coordinator
does through ``AddPartitionsToTxnManager``). The group coordinator writes them as a
transactional batch, pending there (the producer epoch checked by the partition's producer
state); the transaction's marker on that partition goes through the group coordinator of
the broker leading it (``GroupTransactionParticipant.complete_transaction``, locally or via
WriteTxnMarkers), which then makes the offsets visible (COMMIT) or drops them (ABORT).
Everything is in the logs, so a restart at any point keeps them: the group coordinator
reloads the pending offsets, and a transaction found in PrepareCommit/PrepareAbort here has
its markers (those included) written again; an Ongoing one is ended by its producer or its
timeout. A marker the local group coordinator could not take because it is stopping leaves
the transaction prepared, for that reason.

Every ``transaction.remove.expired.transaction.cleanup.interval.ms`` the ids in
Empty/CompleteCommit/CompleteAbort not updated for ``transactional.id.expiration.ms`` are
expired (Kafka's ``removeExpiredTransactionalIds``): Dead, then a tombstone in their
``__transaction_state`` partition, then forgotten (so a restart does not bring them back).

The admin views: ``describe_transaction`` (DescribeTransactions) and ``list_transactions``
(ListTransactions), as Kafka's ``handleDescribeTransactions`` / ``listTransactionStates``.

All state changes are serialised by one lock (never held while markers are sent); a local
TxnOffsetCommit's write holds it too, so it cannot interleave with its transaction's prepare.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.coordinator.group.records import partition_for
from pykbroker.metadata.image import MetadataImage

from . import transaction_metadata as tm
from .marker_channel import (
    DEFAULT_DELIVERY_TIMEOUT_MS,
    InterBrokerClient,
    MarkerOutcome,
    TransactionMarkerChannelManager,
)
from .markers import OFFSETS_TOPIC, GroupTransactionParticipant
from .transaction_metadata import TransactionMetadata, TransactionState, TxnResult

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
__all__ = ["OFFSETS_TOPIC", "TRANSACTION_STATE_TOPIC", "TransactionCoordinator", "TransactionLog"]
_PREPARED = (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT)
DEFAULT_TRANSACTIONAL_ID_EXPIRATION_MS = 604_800_000
DEFAULT_REMOVE_EXPIRED_TRANSACTIONS_INTERVAL_MS = 3_600_000
#: How long EndTxn (and a fencing InitProducerId) waits for the markers before answering; the
#: markers keep being sent after it (Kafka answers once the prepare is written).
DEFAULT_COMPLETION_WAIT_MS = 5_000
#: A coordinator epoch that changes while this broker keeps leading the id's partition
#: restarts the sending with the new epoch (Kafka's reload would), at most this many times.
_MAX_EPOCH_RESTARTS = 8
#: AddPartitionsToTxn version of KIP-890's verification (``verify_only``), as Kafka's
#: ``AddPartitionsToTxnManager``.
VERIFY_VERSION = 4
_VERIFICATION_PASSED_THROUGH = frozenset(
    {
        ErrorCode.NO_ERROR,
        ErrorCode.INVALID_TXN_STATE,
        ErrorCode.INVALID_PRODUCER_ID_MAPPING,
        ErrorCode.PRODUCER_FENCED,
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.CONCURRENT_TRANSACTIONS,
    }
)


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
        node_id: int = -1,
        metadata: Callable[[], MetadataImage] | None = None,
        inter_broker_client: InterBrokerClient | None = None,
        completion_wait_ms: int = DEFAULT_COMPLETION_WAIT_MS,
        marker_delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS,
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
        self.node_id = node_id
        self.completion_wait_ms = completion_wait_ms
        self.marker_channel = TransactionMarkerChannelManager(
            node_id=node_id,
            replica_manager=replica_manager,
            group_coordinator=group_coordinator,
            metadata=metadata,
            client=inter_broker_client,
            clock=clock,
            delivery_timeout_ms=marker_delivery_timeout_ms,
        )
        self._nursery: trio.Nursery | None = None
        #: transactional id -> the completion (markers, then Complete*) in flight
        self._completing: dict[str, trio.Event] = {}
        #: transactional id -> (the prepared transaction, its partitions still without marker)
        self._pending_markers: dict[str, tuple[TransactionMetadata, set[tuple[str, int]]]] = {}

    # -- lifetime ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load, complete the transactions found prepared (waiting a bounded time for their
        markers), then abort timed-out transactions, resume unfinished markers and expire idle
        ids on their intervals until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    async with self._lock:
                        self.load()
                    await self._complete_all(self._prepared_to_resume(), wait=True)
                    task_status.started()
                    await self._run_timers()
                finally:
                    self._nursery = None
        finally:
            client = self.marker_channel.client
            if client is not None:
                with trio.CancelScope(shield=True):
                    await client.aclose()

    async def _run_timers(self) -> None:
        now = trio.current_time()
        next_abort = now + self.abort_check_interval_ms / 1000
        next_expire = now + self.remove_expired_interval_ms / 1000
        while True:  # a service task: runs until the broker cancels it
            await trio.sleep_until(min(next_abort, next_expire))
            now = trio.current_time()
            if now >= next_abort:
                await self.abort_timed_out_transactions()
                await self._complete_all(self._prepared_to_resume(), wait=False)
                next_abort = trio.current_time() + self.abort_check_interval_ms / 1000
            if now >= next_expire:
                await self.remove_expired_transactional_ids()
                next_expire = trio.current_time() + self.remove_expired_interval_ms / 1000

    def _prepared_to_resume(self) -> list[TransactionMetadata]:
        """The prepared transactions of ids this broker coordinates whose markers are not
        being sent (found at load, or whose sending timed out or was abandoned)."""
        return [
            m
            for tid, m in self.transactions.items()
            if m.state in _PREPARED and tid not in self._completing and self.is_coordinator(tid)
        ]

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

    def on_metadata_update(self, old: MetadataImage, new: MetadataImage) -> None:
        """Kafka's ``onElection``: a ``__transaction_state`` partition this broker becomes the
        leader of (another leader before, or a new leader epoch) is loaded again from its log
        once the coordinator runs, and its prepared transactions are resumed."""
        nursery = self._nursery
        now = new.topics.get(TRANSACTION_STATE_TOPIC)
        before = old.topics.get(TRANSACTION_STATE_TOPIC)
        if nursery is None or not self.loaded or now is None or before is None:
            return  # not running yet (it loads everything), or a new topic (empty)
        for partition, registration in now.partitions.items():
            previous = before.partitions.get(partition)
            if registration.leader != self.node_id or previous is None:
                continue
            if (
                previous.leader != self.node_id
                or previous.leader_epoch != registration.leader_epoch
            ):
                nursery.start_soon(self._load_partition, partition)

    async def _load_partition(self, partition: int) -> None:
        """Replay one ``__transaction_state`` partition (an id whose state is unchanged keeps
        its object, so a sending in flight for it goes on), then resume its prepared ones."""
        async with self._lock:
            loaded: dict[str, TransactionMetadata | None] = {
                tid: None for tid in self.transactions if self.partition_for(tid) == partition
            }
            for key, value in self.storage.read(partition):
                try:
                    transactional_id, metadata = tm.read_transaction_log_record(key, value)
                except ValueError:
                    continue
                loaded[transactional_id] = metadata
            for transactional_id, metadata in loaded.items():
                if metadata is None:
                    self.transactions.pop(transactional_id, None)
                elif self.transactions.get(transactional_id) != metadata:
                    self.transactions[transactional_id] = metadata
        log.info("%s-%d loaded: this broker leads it", TRANSACTION_STATE_TOPIC, partition)
        await self._complete_all(
            [
                m
                for m in self._prepared_to_resume()
                if self.partition_for(m.transactional_id) == partition
            ],
            wait=False,
        )

    def is_coordinator(self, transactional_id: str) -> bool:
        """This broker leads the id's ``__transaction_state`` partition (by the metadata
        image; always without one, or before the topic exists)."""
        leader = self.marker_channel.leader_of(
            TRANSACTION_STATE_TOPIC, self.partition_for(transactional_id)
        )
        return leader is None or leader == self.marker_channel.node_id

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
        if not self.is_coordinator(transactional_id):
            return TxnResult(ErrorCode.NOT_COORDINATOR)
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
            await self._complete_all([result.metadata], wait=True)
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
        if not self.is_coordinator(transactional_id):
            return ErrorCode.NOT_COORDINATOR
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
        if not self.is_coordinator(transactional_id):
            # The transaction coordinator is another broker: KIP-890's verification there
            # (AddPartitionsToTxn verify_only), as Kafka's group coordinator does; the
            # producer's epoch is checked again by the offsets partition's producer state
            # when the transactional batch is appended.
            yield await self.verify_remotely(
                transactional_id, producer_id, producer_epoch, self.offsets_partition(group_id)
            )
            return
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
        if not self.is_coordinator(transactional_id):
            return ErrorCode.NOT_COORDINATOR
        async with self._lock:
            current = self.transactions.get(transactional_id)
            result = tm.end_transaction(current, producer_id, producer_epoch, commit, self._clock())
            if result.metadata is not None:
                await self._persist(result.metadata)
        if result.write_markers and result.metadata is not None:
            await self._complete_all([result.metadata], wait=True)
        return result.error

    async def abort_timed_out_transactions(self) -> int:
        """Abort (with an epoch bump, fencing the producer) every Ongoing transaction older
        than its ``transaction.timeout.ms``; the number aborted."""
        aborting: list[TransactionMetadata] = []
        async with self._lock:
            for transactional_id, current in list(self.transactions.items()):
                fenced = tm.abort_timed_out(current, self._clock())
                if fenced is None or not self.is_coordinator(transactional_id):
                    continue
                log.info("aborting timed-out transaction %r", transactional_id)
                try:
                    await self._persist(fenced)
                except KafkaError as exc:
                    log.warning("aborting %r failed: %s", transactional_id, exc)
                    continue
                aborting.append(fenced)
        await self._complete_all(aborting, wait=True)
        return len(aborting)

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
                if not self.is_coordinator(metadata.transactional_id):
                    continue
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

    async def _complete_all(self, prepared: Sequence[TransactionMetadata], *, wait: bool) -> None:
        """Send the markers of prepared transactions and complete them (never under the
        lock). With the coordinator running, in its nursery (so a cancelled request does not
        stop them), waiting up to ``completion_wait_ms`` when ``wait``; otherwise here."""
        nursery = self._nursery
        if nursery is None:
            for metadata in prepared:
                await self._complete_guarded(metadata)
            return
        events = [self._start_completion(nursery, m) for m in prepared]
        if not wait:
            return
        with trio.move_on_after(self.completion_wait_ms / 1000):
            for event in events:
                await event.wait()

    def _start_completion(self, nursery: trio.Nursery, metadata: TransactionMetadata) -> trio.Event:
        transactional_id = metadata.transactional_id
        running = self._completing.get(transactional_id)
        if running is not None:
            return running
        event = trio.Event()
        self._completing[transactional_id] = event

        async def complete() -> None:
            try:
                await self._complete_guarded(metadata)
            finally:
                if self._completing.get(transactional_id) is event:
                    del self._completing[transactional_id]
                event.set()

        nursery.start_soon(complete)
        return event

    async def _complete_guarded(self, metadata: TransactionMetadata) -> None:
        try:
            await self._complete(metadata)
        except KafkaError as exc:
            log.warning("completing %r failed: %s", metadata.transactional_id, exc)
        except Exception:
            log.exception("completing %r failed", metadata.transactional_id)

    async def _complete(self, metadata: TransactionMetadata) -> None:
        """Kafka's ``TransactionMarkerChannelManager`` path for one prepared transaction:
        markers to every partition until acknowledged, then CompleteCommit/CompleteAbort
        (unless the sending was abandoned or timed out: the transaction stays prepared and is
        resumed later)."""
        transactional_id = metadata.transactional_id
        commit = metadata.state is TransactionState.PREPARE_COMMIT
        entry = self._pending_markers.get(transactional_id)
        if entry is None or entry[0] is not metadata:
            entry = (metadata, set(metadata.partitions))
            self._pending_markers[transactional_id] = entry
        pending = entry[1]
        for _ in range(_MAX_EPOCH_RESTARTS):  # bounded: one round per coordinator epoch
            if self.transactions.get(transactional_id) is not metadata or not self.is_coordinator(
                transactional_id
            ):
                return
            epoch = self.coordinator_epoch(transactional_id)

            def still_valid(epoch: int = epoch) -> bool:
                return (
                    self.transactions.get(transactional_id) is metadata
                    and self.is_coordinator(transactional_id)
                    and self.coordinator_epoch(transactional_id) == epoch
                )

            outcome = await self.marker_channel.send_markers(
                transactional_id,
                metadata.producer_id,
                metadata.producer_epoch,
                epoch,
                commit,
                pending,
                still_valid,
            )
            if outcome is MarkerOutcome.COMPLETED:
                break
            if outcome is MarkerOutcome.TIMED_OUT or still_valid():
                return  # resumed by the next sweep, or when the coordinators load again
            # The coordinator epoch changed: go again with the new one if still leading.
        else:
            return
        async with self._lock:
            if self.transactions.get(transactional_id) is not metadata:
                return
            await self._persist(tm.complete(metadata, self._clock()))
            self._pending_markers.pop(transactional_id, None)

    async def verify_remotely(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partition: tuple[str, int],
    ) -> ErrorCode:
        """KIP-890 part 1 verification at the transaction coordinator on another broker
        (AddPartitionsToTxn v4 ``verify_only``, Kafka's ``AddPartitionsToTxnManager``): the
        producer id and epoch are the transaction's, Ongoing, with ``partition`` added.
        COORDINATOR_NOT_AVAILABLE when that broker is not known or does not answer."""
        channel = self.marker_channel
        leader = channel.leader_of(TRANSACTION_STATE_TOPIC, self.partition_for(transactional_id))
        endpoint = channel.endpoint_of(leader) if leader is not None and leader >= 0 else None
        if leader is None or endpoint is None or channel.client is None:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        body = {
            "transactions": [
                {
                    "transactional_id": transactional_id,
                    "producer_id": producer_id,
                    "producer_epoch": producer_epoch,
                    "verify_only": True,
                    "topics": [{"name": partition[0], "partitions": [partition[1]]}],
                }
            ]
        }
        try:
            response = await channel.client.send(
                leader, *endpoint, ApiKey.ADD_PARTITIONS_TO_TXN, VERIFY_VERSION, body
            )
        except KafkaError as exc:
            log.info("verifying %r at broker %d failed: %s", transactional_id, leader, exc)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = _known(response.get("error_code", 0))
        if error == ErrorCode.NO_ERROR:
            error = ErrorCode.COORDINATOR_NOT_AVAILABLE  # unless the partition is answered
            for result in response.get("results_by_transaction", []):
                for topic in result["topic_results"]:
                    for p in topic["results_by_partition"]:
                        if (topic["name"], p["partition_index"]) == partition:
                            error = _known(p["partition_error_code"])
        return (
            error if error in _VERIFICATION_PASSED_THROUGH else ErrorCode.COORDINATOR_NOT_AVAILABLE
        )


def _known(code: int) -> ErrorCode:
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR
