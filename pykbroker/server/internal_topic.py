"""A coordinator's storage: the partitions of an internal, compacted topic on this broker.

Kafka's group and transaction coordinators keep their state as keyed records in
``__consumer_offsets`` and ``__transaction_state``. ``InternalTopicLog`` is that storage for
both: the topic is created (compacted, a fixed number of partitions) the first time a
coordinator is looked up, as Kafka does; appends go through the partition leader like a produce
with acks=all; loading reads every keyed record of a partition back, oldest first.

For the group coordinator's transactions (as Kafka's ``CoordinatorPartitionWriter`` and
``CoordinatorLoaderImpl``): an append may be a transactional batch of a producer (appended with
the coordinator origin: the producer's epoch is checked, not its sequence), a transaction
marker goes through ``markers.write_txn_markers``' per-partition path (producer epoch and
coordinator epoch fencing), and ``read_batches`` gives loading every batch with its producer
and, for a control batch, whether it is a COMMIT or an ABORT marker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.coordinator.group.coordinator_log import CoordinatorBatch
from pykbroker.coordinator.transaction.markers import write_partition_marker
from pykbroker.log.log import Log
from pykbroker.log.log_reader import READ_CHUNK_BYTES, iter_records
from pykbroker.log.record_batch import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    AppendOrigin,
    EndTxnMarker,
    Record,
    build_batch,
    decode_records,
    end_txn_marker_type,
    iter_batch_headers,
)
from pykbroker.metadata.controller import CreateTopicRequest, QuorumController
from pykbroker.replication.replica_manager import ReplicaManager

_LEADERSHIP_ERRORS = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_LEADER_OR_FOLLOWER)
#: Not replicated in time (Kafka's GroupMetadataManager maps these to COORDINATOR_NOT_AVAILABLE,
#: which clients retry).
_REPLICATION_ERRORS = (
    ErrorCode.NOT_ENOUGH_REPLICAS,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    ErrorCode.REQUEST_TIMED_OUT,
)
#: Kafka's ``offsets.commit.timeout.ms`` default: how long an append waits for the ISR.
COMMIT_TIMEOUT_MS = 5000


def read_keyed_records(log: Log) -> Iterator[tuple[bytes, bytes | None]]:
    """Every keyed record of a coordinator partition's log, oldest first."""
    for record in iter_records(log):
        if record.key is not None:
            yield record.key, record.value


def read_coordinator_batches(log: Log) -> Iterator[CoordinatorBatch]:
    """Every batch of a coordinator partition's log, oldest first: keyed records with their
    producer, and transaction markers (other control batches are skipped)."""
    offset = log.log_start_offset
    end = log.log_end_offset
    while offset < end:  # each round moves past at least one batch, or returns
        chunk = log.read(offset, READ_CHUNK_BYTES, min_one_message=True)
        if not chunk:
            return
        next_offset = offset
        for position, header in iter_batch_headers(chunk):
            next_offset = header.next_offset
            if header.next_offset <= offset:
                continue  # a batch already read (reads start at a batch boundary)
            batch = chunk[position : position + header.size_in_bytes]
            if header.is_control:
                marker = end_txn_marker_type(batch)
                if marker is not None:
                    yield CoordinatorBatch(
                        [],
                        header.producer_id,
                        header.producer_epoch,
                        header.is_transactional,
                        marker is EndTxnMarker.COMMIT,
                    )
                continue
            records = [
                (r.key, r.value)
                for r in decode_records(batch)
                if r.key is not None and r.offset >= offset
            ]
            yield CoordinatorBatch(
                records, header.producer_id, header.producer_epoch, header.is_transactional
            )
        if next_offset <= offset:
            return
        offset = next_offset


class InternalTopicLog:
    """Append and load coordinator records in one internal topic's partitions."""

    def __init__(
        self,
        controller: QuorumController,
        replica_manager: ReplicaManager,
        *,
        topic: str,
        num_partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
    ) -> None:
        self.controller = controller
        self.replica_manager = replica_manager
        self.topic = topic
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        self.configs = dict(configs)

    async def ensure_topic(self) -> None:
        """Create the topic if it does not exist yet (COORDINATOR_NOT_AVAILABLE if that fails)."""
        if self.topic in self.controller.image.topics:
            return
        results = await self.controller.create_topics(
            [
                CreateTopicRequest(
                    self.topic,
                    num_partitions=self.num_partitions,
                    replication_factor=self.replication_factor,
                    configs=dict(self.configs),
                )
            ]
        )
        error = results[0].error
        if error not in (ErrorCode.NO_ERROR, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, results[0].message)

    async def append(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        *,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = NO_PRODUCER_EPOCH,
    ) -> None:
        """Write ``records`` as one batch (a transactional batch of ``producer_id`` when
        given); NOT_COORDINATOR when this broker does not lead the partition."""
        now = wall_clock_ms()
        entries = [Record(key=k, value=v, timestamp=now) for k, v in records]
        tp = (self.topic, partition)
        if producer_id == NO_PRODUCER_ID:
            batch = build_batch(entries)
            outcome = self.replica_manager.append_records({tp: batch}, -1)[tp]
        else:
            batch = build_batch(
                entries,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                base_sequence=0,
                is_transactional=True,
            )
            outcome = self.replica_manager.append_records(
                {tp: batch}, -1, origin=AppendOrigin.COORDINATOR
            )[tp]
        if outcome.error == ErrorCode.NO_ERROR:
            # acks=all: acknowledged only once the ISR has it (at once with one replica).
            await self.replica_manager.wait_for_acks({tp: outcome}, COMMIT_TIMEOUT_MS)
        if outcome.error != ErrorCode.NO_ERROR:
            if outcome.error in _LEADERSHIP_ERRORS:
                code = ErrorCode.NOT_COORDINATOR
            elif outcome.error in _REPLICATION_ERRORS:
                code = ErrorCode.COORDINATOR_NOT_AVAILABLE
            else:
                code = ErrorCode.UNKNOWN_SERVER_ERROR
            raise KafkaError(code, outcome.error_message or outcome.error.name)

    async def append_marker(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
    ) -> None:
        """Write a transaction marker (KafkaError with the marker path's error on failure:
        NOT_LEADER_OR_FOLLOWER, INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED, ...)."""
        error = write_partition_marker(
            self.replica_manager,
            (self.topic, partition),
            producer_id,
            producer_epoch,
            coordinator_epoch,
            commit,
            wall_clock_ms(),
        )
        if error != ErrorCode.NO_ERROR:
            raise KafkaError(error, f"{'COMMIT' if commit else 'ABORT'} marker not written")

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]:
        found = self.replica_manager.get_partition(self.topic, partition)
        if found is None:
            return []
        return read_keyed_records(found.log)

    def read_batches(self, partition: int) -> Iterable[CoordinatorBatch]:
        found = self.replica_manager.get_partition(self.topic, partition)
        if found is None:
            return []
        return read_coordinator_batches(found.log)
