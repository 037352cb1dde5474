"""ReplicatedLog: the log interface the KRaft state machine needs, and the checks built on it.

Mirrors Kafka's ``org.apache.kafka.raft.ReplicatedLog`` (implemented there by
``KafkaMetadataLog`` over ``UnifiedLog`` + ``LeaderEpochFileCache`` + snapshot files). The state
machine calls these methods inline; they change the log in memory / the page cache and need not
be durable until the driver flushes (``RaftOutput.flush_log``), which it must do before it sends
the messages of the same output.

Invariants an implementation keeps:

* offsets are contiguous from ``log_start_offset`` to ``log_end_offset``; a batch of N records
  takes N offsets, and batch boundaries are the only offsets the state machine truncates or
  snapshots at;
* every batch carries the epoch it was written in, epochs never decrease along the log, and
  ``end_offset_for_epoch`` answers as Kafka's ``LeaderEpochFileCache.endOffsetFor``;
* ``log_start_offset`` is 0 or the end offset of a snapshot the log holds (KIP-630).

The byte format of ``read``/``append_as_follower`` is the implementation's (v2 record batches
for the real log); the state machine passes it through untouched.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Protocol

from .messages import OffsetAndEpoch, SnapshotId

_CONTROL_KEY = struct.Struct(">hh")


class ControlRecordType(IntEnum):
    """Kafka's ``ControlRecordType`` (the key of a control record: version int16, type int16)."""

    ABORT = 0
    COMMIT = 1
    LEADER_CHANGE = 2
    SNAPSHOT_HEADER = 3
    SNAPSHOT_FOOTER = 4
    KRAFT_VERSION = 5
    KRAFT_VOTERS = 6


def control_record_key(control_type: ControlRecordType) -> bytes:
    """The 4-byte key of a control record (version 0)."""
    return _CONTROL_KEY.pack(0, int(control_type))


class LogAppendError(Exception):
    """Records that cannot be appended where the state machine asked (a gap, or an epoch newer
    than the current one): a bug in the sender, never applied."""


@dataclass(frozen=True, slots=True)
class LogAppendInfo:
    """Offsets of the first and last record of an append."""

    first_offset: int
    last_offset: int


class ReplicatedLog(Protocol):
    """What ``RaftReplica`` needs of the metadata log (Kafka's ``ReplicatedLog``)."""

    @property
    def log_start_offset(self) -> int:
        """First offset held in the log: 0, or the end offset of the earliest snapshot."""
        ...

    @property
    def log_end_offset(self) -> int:
        """Offset the next record will get."""
        ...

    @property
    def last_fetched_epoch(self) -> int:
        """Epoch of the last record; of the earliest snapshot if the log is empty; else 0."""
        ...

    def append_as_leader(
        self,
        records: Sequence[bytes],
        epoch: int,
        control_type: ControlRecordType | None = None,
    ) -> LogAppendInfo:
        """Write ``records`` (values) as one batch of ``epoch`` at the log end offset. With
        ``control_type`` the batch is a control batch whose records are of that type."""
        ...

    def append_as_follower(self, records: bytes, epoch: int) -> LogAppendInfo:
        """Append bytes returned by the leader's ``read``. They must start at the log end
        offset and hold no epoch above ``epoch``; else raise ``LogAppendError``."""
        ...

    def read(self, start_offset: int, max_bytes: int) -> bytes:
        """Whole batches from ``start_offset`` (a batch boundary) up to about ``max_bytes``, at
        least one batch if any; ``b""`` at the log end."""
        ...

    def truncate_to(self, offset: int) -> None:
        """Remove every record at ``offset`` and above (and their epoch cache entries)."""
        ...

    def end_offset_for_epoch(self, epoch: int) -> OffsetAndEpoch:
        """The largest epoch <= ``epoch`` in the log and the offset just past its last record.

        As ``KafkaMetadataLog.endOffsetForEpoch``: an epoch below the first one gives
        ``(epoch, first offset of the log)``, or the earliest snapshot id if that is where
        the log starts; an epoch above the last one gives ``(log end offset, last epoch)``."""
        ...

    @property
    def earliest_snapshot_id(self) -> SnapshotId | None:
        """The snapshot at ``log_start_offset`` (None when the log starts at 0 without one)."""
        ...

    @property
    def latest_snapshot_id(self) -> SnapshotId | None: ...

    def read_snapshot(self, snapshot_id: SnapshotId) -> bytes | None:
        """The whole snapshot, or None if this log does not hold it."""
        ...

    def create_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        """Store a snapshot of the state machine at ``snapshot_id`` (<= high watermark, at a
        batch boundary, epoch = epoch of its last record). Durable when this returns."""
        ...

    def delete_before_snapshot(self, snapshot_id: SnapshotId) -> None:
        """Advance ``log_start_offset`` to the snapshot's end offset (KIP-630 log cleaning),
        dropping older snapshots."""
        ...

    def install_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        """A follower downloaded ``snapshot_id``: store it, and truncate the whole log to start
        at its end offset (Kafka's ``truncateToLatestSnapshot``)."""
        ...


class ValidationKind(Enum):
    """Kafka's ``ValidOffsetAndEpoch.Kind``."""

    VALID = "valid"
    DIVERGING = "diverging"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True, slots=True)
class ValidOffsetAndEpoch:
    kind: ValidationKind
    offset_and_epoch: OffsetAndEpoch


def end_offset(log: ReplicatedLog) -> OffsetAndEpoch:
    """``(log_end_offset, last_fetched_epoch)``: what a candidate's log is compared by."""
    return OffsetAndEpoch(log.log_end_offset, log.last_fetched_epoch)


def end_offset_for_epoch(
    log: ReplicatedLog, epochs: Sequence[tuple[int, int]], epoch: int
) -> OffsetAndEpoch:
    """Kafka's ``LeaderEpochFileCache.endOffsetFor`` as ``KafkaMetadataLog`` answers it, over a
    log's ``(epoch, start_offset)`` entries (ascending): the log end for the latest epoch, the
    start of the next epoch for an older one, the earliest snapshot id when the entries begin
    there and ``epoch`` is older than all of them."""
    earliest = log.earliest_snapshot_id
    if not epochs:
        if earliest is not None:
            return earliest
        return OffsetAndEpoch(log.log_end_offset, log.last_fetched_epoch)
    if epoch >= epochs[-1][0]:
        return OffsetAndEpoch(log.log_end_offset, epochs[-1][0])
    index = len(epochs) - 1
    while index >= 0 and epochs[index][0] > epoch:  # bounded by len(epochs)
        index -= 1
    if index < 0:
        if earliest is not None and epochs[0][1] == earliest.offset:
            return earliest
        return OffsetAndEpoch(epochs[0][1], epoch)
    return OffsetAndEpoch(epochs[index + 1][1], epochs[index][0])


def validate_offset_and_epoch(log: ReplicatedLog, offset: int, epoch: int) -> ValidOffsetAndEpoch:
    """Is a follower at ``offset`` with last fetched ``epoch`` consistent with this log?

    As ``KafkaMetadataLog.validateOffsetAndEpoch``: send the latest snapshot if the follower is
    below the log start (or at it with another epoch); send the divergence point if its last
    epoch ends earlier here; otherwise the fetch is valid.
    """
    earliest = log.earliest_snapshot_id
    if log.log_start_offset == 0 and offset == 0:
        return ValidOffsetAndEpoch(ValidationKind.VALID, OffsetAndEpoch(0, 0))
    if earliest is not None and (
        offset < log.log_start_offset
        or (offset == log.log_start_offset and epoch != earliest.epoch)
        or epoch < earliest.epoch
    ):
        latest = log.latest_snapshot_id
        assert latest is not None
        return ValidOffsetAndEpoch(ValidationKind.SNAPSHOT, latest)
    end = log.end_offset_for_epoch(epoch)
    if end.epoch != epoch or end.offset < offset:
        return ValidOffsetAndEpoch(ValidationKind.DIVERGING, end)
    return ValidOffsetAndEpoch(ValidationKind.VALID, OffsetAndEpoch(offset, epoch))


def truncation_offset(log: ReplicatedLog, diverging: OffsetAndEpoch) -> int:
    """Where a follower truncates after the leader reported ``diverging`` (Kafka's
    ``ReplicatedLog.truncateToEndOffset``): the leader's end of that epoch if we have the epoch,
    else our own end of the largest epoch below it."""
    if diverging.epoch == 0:
        return min(diverging.offset, log.log_end_offset)
    local = log.end_offset_for_epoch(diverging.epoch)
    if local.epoch == diverging.epoch:
        return min(local.offset, diverging.offset)
    return local.offset
