"""Transaction markers: the COMMIT/ABORT control batches a partition leader appends.

One path for both writers of markers on this broker: the transaction coordinator's marker
channel (``marker_channel``), for the partitions of a transaction this broker leads (it
appends in-process instead of sending WriteTxnMarkers to itself; the other leaders get
WriteTxnMarkers), and the WriteTxnMarkers handler (Kafka's
``KafkaApis.handleWriteTxnMarkersRequest``: other brokers' coordinators and the admin
client's ``abortTransaction``). ``write_txn_markers`` does for each partition what Kafka's
leader does with a marker appended with ``AppendOrigin.COORDINATOR``:

- a partition this broker does not host: UNKNOWN_TOPIC_OR_PARTITION; one it follows:
  NOT_LEADER_OR_FOLLOWER;
- a producer epoch below the partition's last epoch of the producer: INVALID_PRODUCER_EPOCH
  (from the producer state, before anything is written);
- a coordinator epoch below the one of the producer's last marker:
  TRANSACTION_COORDINATOR_FENCED (Kafka's ``checkCoordinatorEpoch``);
- otherwise the control batch (one control record: key version 0 and type 0 ABORT /
  1 COMMIT, value version 0 and the coordinator epoch) is appended: the producer's open
  transaction ends there (the last stable offset moves past it), the producer entry takes
  the marker's epoch and coordinator epoch, and an ABORT of a transaction that wrote data
  on the partition is added to the aborted transaction index read by read_committed fetches.

A marker for a ``__consumer_offsets`` partition goes to the group coordinator instead
(Kafka's ``GroupCoordinator.completeTransaction``): it appends the marker (through the same
per-partition checks, ``write_partition_marker``) behind the writes queued on that partition,
then completes (COMMIT) or drops (ABORT) the producer's pending transactional offsets. Its
COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS and NOT_COORDINATOR are answered as
NOT_LEADER_OR_FOLLOWER, as Kafka's ``handleWriteTxnMarkersRequest`` does.

Not implemented: KIP-890 (transactions version 2) epoch checks of markers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Protocol

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.record_batch import AppendOrigin, EndTxnMarker, Record, build_batch

__all__ = [
    "OFFSETS_TOPIC",
    "GroupTransactionParticipant",
    "control_batch",
    "write_partition_marker",
    "write_txn_markers",
]

OFFSETS_TOPIC = "__consumer_offsets"
_NOT_READY = (
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode.NOT_COORDINATOR,
)


class GroupTransactionParticipant(Protocol):
    """The group coordinator's side of markers (its ``complete_transaction``)."""

    async def complete_transaction(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
    ) -> ErrorCode: ...


_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")


def control_batch(
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    now_ms: int,
    coordinator_epoch: int = 0,
) -> bytes:
    """A transaction marker batch (Kafka's ``MemoryRecords.withEndTransactionMarker``)."""
    record = Record(
        key=_CONTROL_KEY.pack(0, EndTxnMarker.COMMIT if commit else EndTxnMarker.ABORT),
        value=_CONTROL_VALUE.pack(0, coordinator_epoch),
        timestamp=now_ms,
    )
    return build_batch(
        [record],
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=True,
        is_control=True,
    )


async def write_txn_markers(
    replica_manager: Any,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    commit: bool,
    partitions: Iterable[tuple[str, int]],
    now_ms: int,
    *,
    group_coordinator: GroupTransactionParticipant | None = None,
    translate_coordinator_errors: bool = True,
) -> dict[tuple[str, int], ErrorCode]:
    """Append one marker to each partition (duplicates once); the error of each. Markers of
    ``__consumer_offsets`` partitions go through ``group_coordinator`` when given; its
    "coordinator not ready" errors are answered as NOT_LEADER_OR_FOLLOWER unless
    ``translate_coordinator_errors`` is False (the transaction coordinator's own path)."""
    results: dict[tuple[str, int], ErrorCode] = {}
    for tp in partitions:
        if tp in results:
            continue
        if tp[0] == OFFSETS_TOPIC and group_coordinator is not None:
            error = await group_coordinator.complete_transaction(
                tp[1], producer_id, producer_epoch, coordinator_epoch, commit
            )
            if translate_coordinator_errors and error in _NOT_READY:
                error = ErrorCode.NOT_LEADER_OR_FOLLOWER
            results[tp] = error
        else:
            results[tp] = write_partition_marker(
                replica_manager, tp, producer_id, producer_epoch, coordinator_epoch, commit, now_ms
            )
    return results


def write_partition_marker(
    replica_manager: Any,
    tp: tuple[str, int],
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    commit: bool,
    now_ms: int,
) -> ErrorCode:
    """Append a marker to one partition this broker leads (the leader's checks above)."""
    partition = replica_manager.get_partition(*tp)
    if partition is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if not partition.is_leader:
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    producer_state = partition.log.producer_state
    entry = producer_state.last_entry(producer_id)
    if entry is not None:
        if producer_epoch < entry.producer_epoch:
            return ErrorCode.INVALID_PRODUCER_EPOCH
        if coordinator_epoch < entry.coordinator_epoch:
            return ErrorCode.TRANSACTION_COORDINATOR_FENCED
    batch = control_batch(producer_id, producer_epoch, commit, now_ms, coordinator_epoch)
    outcome = replica_manager.append_records({tp: batch}, -1, origin=AppendOrigin.COORDINATOR)[tp]
    if outcome.error != ErrorCode.NO_ERROR:
        return ErrorCode(outcome.error)
    producer_state.set_coordinator_epoch(producer_id, coordinator_epoch)
    return ErrorCode.NO_ERROR
