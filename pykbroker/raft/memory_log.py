"""MemoryLog: an in-memory ``ReplicatedLog`` with an explicit durable copy, for tests and the
simulation.

Mirrors Kafka's ``MockLog`` (raft tests): batches with an epoch, a leader epoch cache, snapshots.
Unlike the real log it models what a crash loses: changes (appends, truncations, log start
moves) are volatile until ``flush()``; ``recover()`` rebuilds the log from the last flushed
state, as a restarted process would find it on disk. Snapshots are durable once written
(Kafka writes a snapshot file and fsyncs it when frozen).

Invariant: ``_batches`` are contiguous from ``_log_start_offset`` to the log end offset, their
epochs never decrease, and ``_epochs`` holds one ``(epoch, start_offset)`` per epoch present,
exactly as Kafka's ``LeaderEpochFileCache``.

Byte format of ``read`` (not Kafka's; the real log uses v2 record batches): per batch
``base_offset int64 | epoch int32 | record_count int32 | control_type int16 | length int32``
then ``length`` bytes of ``(size uint32, value)`` records.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .log import ControlRecordType, LogAppendError, LogAppendInfo, end_offset_for_epoch
from .messages import OffsetAndEpoch, SnapshotId

_BATCH_HEADER = struct.Struct(">qiihi")
_RECORD_SIZE = struct.Struct(">I")
NOT_CONTROL = -1


@dataclass(frozen=True, slots=True)
class MemoryBatch:
    """One batch: ``records`` at ``base_offset ..`` written in ``epoch``."""

    base_offset: int
    epoch: int
    records: tuple[bytes, ...]
    control_type: int
    encoded: bytes

    @property
    def next_offset(self) -> int:
        return self.base_offset + len(self.records)

    @property
    def is_control(self) -> bool:
        return self.control_type != NOT_CONTROL

    @classmethod
    def build(
        cls, base_offset: int, epoch: int, records: Sequence[bytes], control_type: int
    ) -> MemoryBatch:
        payload = b"".join(_RECORD_SIZE.pack(len(r)) + r for r in records)
        header = _BATCH_HEADER.pack(base_offset, epoch, len(records), control_type, len(payload))
        return cls(base_offset, epoch, tuple(records), control_type, header + payload)


def decode_batches(data: bytes) -> Iterator[MemoryBatch]:
    """Parse the bytes of ``MemoryLog.read``; raise ``LogAppendError`` on a torn batch."""
    position = 0
    while position < len(data):
        if position + _BATCH_HEADER.size > len(data):
            raise LogAppendError("truncated batch header")
        base_offset, epoch, count, control_type, length = _BATCH_HEADER.unpack_from(data, position)
        end = position + _BATCH_HEADER.size + length
        if end > len(data):
            raise LogAppendError("truncated batch")
        records: list[bytes] = []
        cursor = position + _BATCH_HEADER.size
        for _ in range(count):
            (size,) = _RECORD_SIZE.unpack_from(data, cursor)
            cursor += _RECORD_SIZE.size
            records.append(data[cursor : cursor + size])
            cursor += size
        if cursor != end:
            raise LogAppendError("batch length does not match its records")
        yield MemoryBatch(base_offset, epoch, tuple(records), control_type, data[position:end])
        position = end


@dataclass(frozen=True, slots=True)
class _Durable:
    batches: tuple[MemoryBatch, ...]
    log_start_offset: int


class MemoryLog:
    """In-memory ``ReplicatedLog`` (see the module docstring)."""

    def __init__(self) -> None:
        self._batches: list[MemoryBatch] = []
        self._bases: list[int] = []
        self._epochs: list[tuple[int, int]] = []  # (epoch, start_offset), ascending
        self._log_start_offset = 0
        self._snapshots: dict[SnapshotId, bytes] = {}
        self._durable = _Durable((), 0)
        self._dirty = False

    # --- ReplicatedLog: offsets and epochs ------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._batches[-1].next_offset if self._batches else self._log_start_offset

    @property
    def last_fetched_epoch(self) -> int:
        if self._batches:
            return self._batches[-1].epoch
        earliest = self.earliest_snapshot_id
        return earliest.epoch if earliest is not None else 0

    def end_offset_for_epoch(self, epoch: int) -> OffsetAndEpoch:
        return end_offset_for_epoch(self, self._epochs, epoch)

    # --- ReplicatedLog: appends, reads, truncation -----------------------------------------

    def append_as_leader(
        self,
        records: Sequence[bytes],
        epoch: int,
        control_type: ControlRecordType | None = None,
    ) -> LogAppendInfo:
        if not records:
            raise LogAppendError("empty batch")
        if self._epochs and epoch < self._epochs[-1][0]:
            raise LogAppendError(f"epoch {epoch} below the last epoch {self._epochs[-1][0]}")
        batch = MemoryBatch.build(
            self.log_end_offset,
            epoch,
            records,
            NOT_CONTROL if control_type is None else int(control_type),
        )
        self._add(batch)
        return LogAppendInfo(batch.base_offset, batch.next_offset - 1)

    def append_as_follower(self, records: bytes, epoch: int) -> LogAppendInfo:
        batches = list(decode_batches(records))
        if not batches:
            raise LogAppendError("no batches")
        expected = self.log_end_offset
        last_epoch = self._epochs[-1][0] if self._epochs else -1
        for batch in batches:
            if batch.base_offset != expected:
                raise LogAppendError(f"batch at {batch.base_offset}, log end offset {expected}")
            if batch.epoch > epoch or batch.epoch < last_epoch:
                raise LogAppendError(f"batch epoch {batch.epoch} out of order (epoch {epoch})")
            expected = batch.next_offset
            last_epoch = batch.epoch
        for batch in batches:
            self._add(batch)
        return LogAppendInfo(batches[0].base_offset, batches[-1].next_offset - 1)

    def _add(self, batch: MemoryBatch) -> None:
        self._batches.append(batch)
        self._bases.append(batch.base_offset)
        if not self._epochs or self._epochs[-1][0] != batch.epoch:
            self._epochs.append((batch.epoch, batch.base_offset))
        self._dirty = True

    def read(self, start_offset: int, max_bytes: int) -> bytes:
        if not self._is_boundary(start_offset):
            raise ValueError(f"offset {start_offset} is not a batch boundary")
        index = bisect.bisect_left(self._bases, start_offset)
        parts: list[bytes] = []
        size = 0
        for batch in self._batches[index:]:
            if parts and size + len(batch.encoded) > max_bytes:
                break
            parts.append(batch.encoded)
            size += len(batch.encoded)
        return b"".join(parts)

    def truncate_to(self, offset: int) -> None:
        if offset >= self.log_end_offset:
            return
        if offset < self._log_start_offset:
            raise ValueError(f"truncation to {offset} below log start {self._log_start_offset}")
        if not self._is_boundary(offset):
            raise ValueError(f"truncation offset {offset} is not a batch boundary")
        index = bisect.bisect_left(self._bases, offset)
        del self._batches[index:]
        del self._bases[index:]
        while self._epochs and self._epochs[-1][1] >= offset:
            self._epochs.pop()
        self._dirty = True

    # --- ReplicatedLog: snapshots ----------------------------------------------------------

    @property
    def earliest_snapshot_id(self) -> SnapshotId | None:
        if self._log_start_offset == 0:
            return None
        for snapshot_id in self._snapshots:
            if snapshot_id.offset == self._log_start_offset:
                return snapshot_id
        return None

    @property
    def latest_snapshot_id(self) -> SnapshotId | None:
        if not self._snapshots:
            return None
        return max(self._snapshots, key=lambda s: (s.offset, s.epoch))

    def read_snapshot(self, snapshot_id: SnapshotId) -> bytes | None:
        return self._snapshots.get(snapshot_id)

    def create_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        if snapshot_id.offset > self.log_end_offset or snapshot_id.offset < self._log_start_offset:
            raise ValueError(f"snapshot {snapshot_id} outside the log")
        if snapshot_id.offset > self._log_start_offset:
            if not self._is_boundary(snapshot_id.offset):
                raise ValueError(f"snapshot {snapshot_id} not at a batch boundary")
            index = bisect.bisect_left(self._bases, snapshot_id.offset)
            if self._batches[index - 1].epoch != snapshot_id.epoch:
                raise ValueError(f"snapshot {snapshot_id} epoch does not match the log")
        self._snapshots[snapshot_id] = bytes(data)

    def delete_before_snapshot(self, snapshot_id: SnapshotId) -> None:
        if snapshot_id not in self._snapshots:
            raise ValueError(f"unknown snapshot {snapshot_id}")
        new_start = snapshot_id.offset
        if new_start <= self._log_start_offset:
            return
        index = bisect.bisect_left(self._bases, new_start)
        del self._batches[:index]
        del self._bases[:index]
        floor = [e for e in self._epochs if e[1] < new_start]
        rest = [e for e in self._epochs if e[1] >= new_start]
        if floor and self._batches and (not rest or rest[0][1] > new_start):
            rest.insert(0, (floor[-1][0], new_start))
        self._epochs = rest
        self._log_start_offset = new_start
        for old in [s for s in self._snapshots if s.offset < new_start]:
            del self._snapshots[old]
        self._dirty = True

    def install_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        self._snapshots[snapshot_id] = bytes(data)
        self._truncate_fully_and_start_at(snapshot_id.offset)
        for old in [s for s in self._snapshots if s.offset < snapshot_id.offset]:
            del self._snapshots[old]

    def _truncate_fully_and_start_at(self, offset: int) -> None:
        self._batches.clear()
        self._bases.clear()
        self._epochs.clear()
        self._log_start_offset = offset
        self._dirty = True

    # --- durability (the driver's side, not part of ReplicatedLog) -------------------------

    def flush(self) -> None:
        """Make every change so far durable (fsync)."""
        if self._dirty:
            self._durable = _Durable(tuple(self._batches), self._log_start_offset)
            self._dirty = False

    @property
    def unflushed(self) -> bool:
        return self._dirty

    def recover(self) -> None:
        """Forget unflushed changes, as a crash and restart would, then run Kafka's start-up
        checks: the log starts at a snapshot it holds, and is truncated fully to the latest
        snapshot if that snapshot is not a prefix of the log."""
        self._batches = []
        self._bases = []
        self._epochs = []
        self._log_start_offset = self._durable.log_start_offset
        for batch in self._durable.batches:
            self._add(batch)
        latest = self.latest_snapshot_id
        if latest is not None and latest.offset > self._log_start_offset:
            if not self._holds(latest):
                self._truncate_fully_and_start_at(latest.offset)
            elif self.earliest_snapshot_id is None and self._log_start_offset > 0:
                self.delete_before_snapshot(latest)
        self._durable = _Durable(tuple(self._batches), self._log_start_offset)
        self._dirty = False

    def _holds(self, snapshot_id: SnapshotId) -> bool:
        """The log contains every record the snapshot covers, ending in the snapshot's epoch."""
        if not self._is_boundary(snapshot_id.offset):
            return False
        index = bisect.bisect_left(self._bases, snapshot_id.offset)
        return index > 0 and self._batches[index - 1].epoch == snapshot_id.epoch

    def _is_boundary(self, offset: int) -> bool:
        """``offset`` is where a batch starts, or the log end offset."""
        if offset == self.log_end_offset:
            return True
        index = bisect.bisect_left(self._bases, offset)
        return index < len(self._bases) and self._bases[index] == offset

    # --- inspection (tests) ----------------------------------------------------------------

    def batches(self) -> Sequence[MemoryBatch]:
        return tuple(self._batches)

    def records(self, start_offset: int, end_offset: int) -> Iterator[tuple[int, int, bytes]]:
        """``(offset, epoch, value)`` of every record in ``[start_offset, end_offset)``."""
        index = max(bisect.bisect_right(self._bases, start_offset) - 1, 0)
        for batch in self._batches[index:]:
            if batch.base_offset >= end_offset:
                return
            for delta, value in enumerate(batch.records):
                offset = batch.base_offset + delta
                if start_offset <= offset < end_offset:
                    yield offset, batch.epoch, value

    def __repr__(self) -> str:
        return (
            f"MemoryLog(log_start_offset={self._log_start_offset}, "
            f"log_end_offset={self.log_end_offset}, epochs={self._epochs})"
        )
