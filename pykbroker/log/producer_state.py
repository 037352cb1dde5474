"""Per-partition idempotent producer state, after Kafka's ``ProducerStateManager``.

Mirrors ``org.apache.kafka.storage.internals.log.ProducerStateManager``,
``ProducerStateEntry``, ``ProducerAppendInfo`` and ``BatchMetadata``: for every producer id
that wrote to the partition, its epoch and the metadata (first/last sequence, first/last
offset, timestamp) of its last five batches. The leader checks each client batch carrying a
producer id against it (Kafka's ``analyzeAndValidateProducerState``):

- a batch whose epoch and sequence range equal a cached batch is a duplicate: nothing is
  appended and the original offsets are answered with NO_ERROR;
- an epoch below the current one is INVALID_PRODUCER_EPOCH (Kafka 2.7+ answers produce
  with it rather than PRODUCER_FENCED, which is the transaction coordinator's answer);
- a new epoch must start at sequence 0, and within an epoch the first sequence must follow
  the last one (wrapping from 2**31-1 to 0), else OUT_OF_ORDER_SEQUENCE_NUMBER;
- a producer id without state (never seen, expired, or its records gone to retention) is
  accepted at any sequence: Kafka 4 no longer answers produce with UNKNOWN_PRODUCER_ID.

Replicated (and coordinator) appends update the state without sequence checks, so a
follower that becomes leader deduplicates too. A transaction marker (control batch) ends its
producer's open transaction: the append reports it as a ``CompletedTxn`` (first offset,
marker offset, and the last stable offset right after the marker), which the log turns into
a ``.txnindex`` entry when the marker is an ABORT (Kafka's ``appendEndTxnMarker`` and
``lastStableOffset(completedTxn)``). Entries expire ``producer.id.expiration.ms``
after their last batch's max timestamp unless a transaction is open.

Snapshots are Kafka's ``<offset:020d>.snapshot`` files (version 1: int16 version, uint32
CRC-32C of the rest, then int32 count and per producer: int64 id, int16 epoch, int32 last
sequence, int64 last offset, int32 offset delta, int64 timestamp, int32 coordinator epoch,
int64 current transaction first offset). A snapshot at offset N holds the state of every
batch below N; loading takes the newest valid snapshot at or below the log end offset and
the caller replays the batches from there (``update_from_replay``).

Invariant: ``map_end_offset`` is the offset after the last batch the state has seen. The
pure part (everything but ``*_snapshot*`` functions) does no I/O. Not thread-safe.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crc32c import crc32c

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.record_batch import AppendOrigin, BatchHeader

if TYPE_CHECKING:
    from pykbroker.log.segment import LogSegment

__all__ = [
    "DEFAULT_PRODUCER_ID_EXPIRATION_MS",
    "NUM_BATCHES_TO_RETAIN",
    "PRODUCER_SNAPSHOT_FILE_SUFFIX",
    "BatchMetadata",
    "CompletedTxn",
    "ProducerAppendInfo",
    "ProducerStateEntry",
    "ProducerStateManager",
    "increment_sequence",
    "read_snapshot",
    "replay_segments",
    "snapshot_file",
    "write_snapshot",
]

NUM_BATCHES_TO_RETAIN = 5
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 86_400_000
PRODUCER_SNAPSHOT_FILE_SUFFIX = ".snapshot"
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
INT32_MAX = 2**31 - 1

_SNAPSHOT_VERSION = 1
_SNAPSHOT_HEAD = struct.Struct(">hI")  # version, crc
_SNAPSHOT_COUNT = struct.Struct(">i")
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")


def increment_sequence(sequence: int, increment: int) -> int:
    """Kafka's ``DefaultRecordBatch.incrementSequence``: sequences wrap at int32 max to 0."""
    if sequence > INT32_MAX - increment:
        return increment - (INT32_MAX - sequence) - 1
    return sequence + increment


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """One cached batch of a producer (Kafka's ``BatchMetadata``)."""

    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction ended by a marker (Kafka's ``CompletedTxn``; whether it was aborted is
    in the marker's record, which the log reads). ``first_offset`` is the marker's offset
    when the producer had no open transaction here; ``last_stable_offset`` is the first
    offset of another producer's transaction still open right after the marker, else
    ``last_offset + 1``."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int


@dataclass(slots=True)
class ProducerStateEntry:
    """A producer's epoch and last batches (Kafka's ``ProducerStateEntry``)."""

    producer_id: int
    producer_epoch: int = NO_PRODUCER_EPOCH
    batches: deque[BatchMetadata] = field(
        default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN)
    )
    coordinator_epoch: int = -1
    current_txn_first_offset: int = -1
    last_timestamp: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def copy(self) -> ProducerStateEntry:
        return ProducerStateEntry(
            self.producer_id,
            self.producer_epoch,
            deque(self.batches, maxlen=NUM_BATCHES_TO_RETAIN),
            self.coordinator_epoch,
            self.current_txn_first_offset,
            self.last_timestamp,
        )

    def find_duplicate_batch(self, header: BatchHeader) -> BatchMetadata | None:
        """The cached batch with this batch's epoch and exact sequence range, if any."""
        if header.producer_epoch != self.producer_epoch:
            return None
        last_seq = increment_sequence(header.base_sequence, header.last_offset_delta)
        for batch in self.batches:
            if batch.first_seq == header.base_sequence and batch.last_seq == last_seq:
                return batch
        return None

    def add_batch(self, producer_epoch: int, batch: BatchMetadata) -> None:
        if producer_epoch != self.producer_epoch:
            self.batches.clear()
            self.producer_epoch = producer_epoch
        self.batches.append(batch)
        self.last_timestamp = batch.timestamp


class ProducerAppendInfo:
    """The state changes of one append for one producer id (Kafka's ``ProducerAppendInfo``).

    Built from the current entry; ``append`` checks (CLIENT origin) and records a batch
    on a copy, which ``ProducerStateManager.update`` installs once the append is written.
    """

    def __init__(
        self, producer_id: int, current: ProducerStateEntry | None, origin: AppendOrigin
    ) -> None:
        self.producer_id = producer_id
        self.origin = origin
        self._current = current or ProducerStateEntry(producer_id)
        self.entry = self._current.copy()
        # (first offset, marker offset) of each transaction a marker in this append ended
        self.ended_txns: list[tuple[int, int]] = []

    def append(self, header: BatchHeader, first_offset: int) -> None:
        """Validate (client appends) and record ``header`` written at ``first_offset``."""
        epoch = header.producer_epoch
        if self.origin is not AppendOrigin.REPLICATION and epoch < self.entry.producer_epoch:
            raise KafkaError(
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"epoch {epoch} of producer {self.producer_id} is smaller than the last "
                f"seen epoch {self.entry.producer_epoch}",
            )
        if header.is_control:
            # A transaction marker ends the producer's open transaction (Kafka's
            # appendEndTxnMarker); the epoch moves on, the sequences do not.
            if epoch != self.entry.producer_epoch:
                self.entry.batches.clear()
                self.entry.producer_epoch = epoch
            txn_first = self.entry.current_txn_first_offset
            self.ended_txns.append((txn_first if txn_first >= 0 else first_offset, first_offset))
            self.entry.current_txn_first_offset = -1
            self.entry.last_timestamp = header.max_timestamp
            return
        if self.origin is AppendOrigin.CLIENT:
            self._check_sequence(epoch, header.base_sequence)
        last_offset = first_offset + header.last_offset_delta
        self.entry.add_batch(
            epoch,
            BatchMetadata(
                header.base_sequence,
                increment_sequence(header.base_sequence, header.last_offset_delta),
                first_offset,
                last_offset,
                header.max_timestamp,
            ),
        )
        if header.is_transactional and self.entry.current_txn_first_offset < 0:
            self.entry.current_txn_first_offset = first_offset

    def _check_sequence(self, epoch: int, first_seq: int) -> None:
        entry = self.entry
        if epoch != entry.producer_epoch:
            if first_seq != 0 and entry.producer_epoch != NO_PRODUCER_EPOCH:
                raise KafkaError(
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"invalid sequence {first_seq} for new epoch {epoch} of producer "
                    f"{self.producer_id} (current epoch {entry.producer_epoch})",
                )
            return
        last_seq = entry.last_seq
        if self._current.producer_epoch == NO_PRODUCER_EPOCH or _in_sequence(last_seq, first_seq):
            return
        raise KafkaError(
            ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
            f"out of order sequence {first_seq} for producer {self.producer_id}, "
            f"expected {increment_sequence(last_seq, 1)}",
        )


class ProducerStateManager:
    """The producer entries of one partition and their snapshot files in ``log_dir``."""

    def __init__(
        self,
        log_dir: Path,
        *,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
    ) -> None:
        self.log_dir = log_dir
        self.producer_id_expiration_ms = producer_id_expiration_ms
        self.producers: dict[int, ProducerStateEntry] = {}
        self.map_end_offset = 0

    # -- the leader's check --------------------------------------------------------------

    def last_entry(self, producer_id: int) -> ProducerStateEntry | None:
        return self.producers.get(producer_id)

    def find_duplicate(self, header: BatchHeader) -> BatchMetadata | None:
        """The cached batch a retried client batch duplicates, if any."""
        if header.producer_id < 0:
            return None
        entry = self.producers.get(header.producer_id)
        return entry.find_duplicate_batch(header) if entry is not None else None

    def prepare_update(
        self,
        headers: Iterable[BatchHeader],
        first_offset: int,
        origin: AppendOrigin,
        append_time: int | None = None,
    ) -> dict[int, ProducerAppendInfo]:
        """Check the batches to be written from ``first_offset`` (KafkaError on a bad
        epoch or sequence) and return their state changes, not yet applied.
        ``append_time`` replaces the batches' max timestamps (LogAppendTime topics)."""
        updates: dict[int, ProducerAppendInfo] = {}
        offset = first_offset
        for header in headers:
            if header.producer_id >= 0:
                info = updates.get(header.producer_id)
                if info is None:
                    info = ProducerAppendInfo(
                        header.producer_id, self.producers.get(header.producer_id), origin
                    )
                    updates[header.producer_id] = info
                if append_time is not None:
                    header = header._replace(max_timestamp=append_time)
                info.append(header, offset)
            offset += header.last_offset_delta + 1
        return updates

    def completed_txns(self, updates: dict[int, ProducerAppendInfo]) -> list[CompletedTxn]:
        """The transactions the markers among ``updates`` end, by marker offset, each with
        the last stable offset right after its marker (call before ``update``)."""
        for info in updates.values():
            if info.ended_txns:
                break
        else:
            return []  # the usual append: no marker (a loop: cheaper than any() here)
        ended = sorted(
            (last, first, pid) for pid, info in updates.items() for first, last in info.ended_txns
        )
        open_after: dict[int, int] = {  # producer -> first offset of its open transaction
            pid: e.current_txn_first_offset
            for pid, e in self.producers.items()
            if e.current_txn_first_offset >= 0 and pid not in updates
        }
        for pid, info in updates.items():
            if info.entry.current_txn_first_offset >= 0:
                open_after[pid] = info.entry.current_txn_first_offset
        completed: list[CompletedTxn] = []
        for last, first, pid in ended:
            # Open at this marker: other producers' transactions begun before it and still
            # open after the append, or ended by a later marker of the same append.
            starts = [f for p, f in open_after.items() if p != pid and f < last]
            starts += [f for end, f, p in ended if p != pid and f < last < end]
            completed.append(CompletedTxn(pid, first, last, min(starts, default=last + 1)))
        return completed

    def update(self, updates: dict[int, ProducerAppendInfo], map_end_offset: int) -> None:
        """Install what ``prepare_update`` checked, once the batches are written."""
        for producer_id, info in updates.items():
            self.producers[producer_id] = info.entry
        self.map_end_offset = max(self.map_end_offset, map_end_offset)

    def update_from_replay(self, headers: Iterable[BatchHeader]) -> list[CompletedTxn]:
        """Replay batches already in the log (offsets as written), without checks; returns
        the transactions their markers ended (see ``CompletedTxn``)."""
        completed: list[CompletedTxn] = []
        for header in headers:
            if header.producer_id >= 0:
                info = ProducerAppendInfo(
                    header.producer_id,
                    self.producers.get(header.producer_id),
                    AppendOrigin.REPLICATION,
                )
                info.append(header, header.base_offset)
                self.producers[header.producer_id] = info.entry
                for first, last in info.ended_txns:
                    first_unstable = self.first_unstable_offset()
                    completed.append(
                        CompletedTxn(
                            header.producer_id,
                            first,
                            last,
                            last + 1 if first_unstable is None else first_unstable,
                        )
                    )
            self.map_end_offset = header.next_offset
        return completed

    def set_coordinator_epoch(self, producer_id: int, coordinator_epoch: int) -> None:
        """Record the coordinator epoch of the producer's last transaction marker (Kafka's
        ``ProducerStateEntry.coordinatorEpoch``: a marker from an older coordinator epoch is
        fenced)."""
        entry = self.producers.get(producer_id)
        if entry is not None:
            entry.coordinator_epoch = coordinator_epoch

    def active_producers(self) -> list[ProducerStateEntry]:
        """The producers with state on this partition, by producer id (Kafka's
        ``activeProducers``, what DescribeProducers answers)."""
        return [self.producers[pid] for pid in sorted(self.producers)]

    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest open transaction, None when none is open (the
        last stable offset may not pass it: Kafka's ``firstUnstableOffset``)."""
        offsets = [
            e.current_txn_first_offset
            for e in self.producers.values()
            if e.current_txn_first_offset >= 0
        ]
        return min(offsets) if offsets else None

    # -- expiry ----------------------------------------------------------------------------

    def is_expired(self, entry: ProducerStateEntry, now_ms: int) -> bool:
        return (
            entry.current_txn_first_offset < 0
            and now_ms - entry.last_timestamp >= self.producer_id_expiration_ms
        )

    def remove_expired_producers(self, now_ms: int) -> int:
        """Forget producers idle for ``producer.id.expiration.ms`` (Kafka's
        ``removeExpiredProducers``); return how many."""
        expired = [pid for pid, e in self.producers.items() if self.is_expired(e, now_ms)]
        for producer_id in expired:
            del self.producers[producer_id]
        return len(expired)

    # -- snapshots -------------------------------------------------------------------------

    def truncate_and_reset(self, map_end_offset: int) -> None:
        self.producers.clear()
        self.map_end_offset = map_end_offset

    def snapshot_offsets(self) -> list[int]:
        """Offsets of the snapshot files in ``log_dir``, ascending."""
        offsets = []
        for path in self.log_dir.glob("*" + PRODUCER_SNAPSHOT_FILE_SUFFIX):
            stem = path.name[: -len(PRODUCER_SNAPSHOT_FILE_SUFFIX)]
            if len(stem) == 20 and stem.isdigit():
                offsets.append(int(stem))
        return sorted(offsets)

    def take_snapshot(self, *, sync: bool = True) -> Path | None:
        """Write ``<map_end_offset>.snapshot`` unless it exists (Kafka's ``takeSnapshot``);
        returns the new file. Without ``sync`` it is not fsynced (Kafka's
        ``takeSnapshot(false)`` at roll): the caller fsyncs it later, off the event loop."""
        path = snapshot_file(self.log_dir, self.map_end_offset)
        if path.exists():
            return None
        write_snapshot(path, self.producers.values(), sync=sync)
        return path

    def load(self, log_end_offset: int, now_ms: int) -> int:
        """Load the newest valid snapshot at or below ``log_end_offset``, deleting those
        above it and corrupt ones; producers already expired are skipped. Returns the
        offset to replay the log from (``map_end_offset``, 0 without a snapshot)."""
        self.truncate_and_reset(0)
        self.delete_snapshots(lambda offset: offset > log_end_offset)
        for offset in reversed(self.snapshot_offsets()):
            path = snapshot_file(self.log_dir, offset)
            try:
                entries = read_snapshot(path)
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
                continue
            for entry in entries:
                if not self.is_expired(entry, now_ms):
                    self.producers[entry.producer_id] = entry
            self.map_end_offset = offset
            break
        return self.map_end_offset

    def delete_snapshots(self, predicate: Callable[[int], bool]) -> None:
        for offset in self.snapshot_offsets():
            if predicate(offset):
                snapshot_file(self.log_dir, offset).unlink(missing_ok=True)


def replay_segments(
    state: ProducerStateManager, segments: Sequence[LogSegment], from_offset: int
) -> None:
    """Feed ``state`` the headers of every batch at or after ``from_offset`` (no record
    decoding: producer id, epoch, sequence and offset delta are in the batch header)."""
    for segment in segments:
        if segment.next_offset <= from_offset:
            continue
        start = 0
        if segment.base_offset < from_offset:
            found = segment.translate_offset(from_offset)
            if found is None:
                continue
            start = found[0]
        state.update_from_replay(h for _, h in segment.scan(start) if h.base_offset >= from_offset)


def snapshot_file(log_dir: Path, offset: int) -> Path:
    return log_dir / f"{offset:020d}{PRODUCER_SNAPSHOT_FILE_SUFFIX}"


def encode_snapshot(entries: Iterable[ProducerStateEntry]) -> bytes:
    """Kafka's producer snapshot format, version 1 (only each producer's last batch)."""
    body = bytearray()
    count = 0
    for entry in entries:
        last = entry.batches[-1] if entry.batches else None
        body += _SNAPSHOT_ENTRY.pack(
            entry.producer_id,
            entry.producer_epoch,
            last.last_seq if last else NO_SEQUENCE,
            last.last_offset if last else -1,
            (last.last_offset - last.first_offset) if last else 0,
            entry.last_timestamp,
            entry.coordinator_epoch,
            entry.current_txn_first_offset,
        )
        count += 1
    payload = _SNAPSHOT_COUNT.pack(count) + bytes(body)
    return _SNAPSHOT_HEAD.pack(_SNAPSHOT_VERSION, crc32c(payload)) + payload


def decode_snapshot(data: bytes) -> list[ProducerStateEntry]:
    """Entries of a snapshot; ValueError when it is truncated, corrupt or of a newer version."""
    if len(data) < _SNAPSHOT_HEAD.size + _SNAPSHOT_COUNT.size:
        raise ValueError("producer snapshot is truncated")
    version, crc = _SNAPSHOT_HEAD.unpack_from(data, 0)
    if version != _SNAPSHOT_VERSION:
        raise ValueError(f"unsupported producer snapshot version {version}")
    payload = data[_SNAPSHOT_HEAD.size :]
    if crc32c(payload) != crc:
        raise ValueError("producer snapshot fails its CRC-32C check")
    (count,) = _SNAPSHOT_COUNT.unpack_from(payload, 0)
    if count < 0 or len(payload) != _SNAPSHOT_COUNT.size + count * _SNAPSHOT_ENTRY.size:
        raise ValueError("producer snapshot length does not match its entry count")
    entries = []
    for i in range(count):
        pid, epoch, last_seq, last_offset, delta, timestamp, coord_epoch, txn_first = (
            _SNAPSHOT_ENTRY.unpack_from(payload, _SNAPSHOT_COUNT.size + i * _SNAPSHOT_ENTRY.size)
        )
        entry = ProducerStateEntry(
            pid,
            epoch,
            coordinator_epoch=coord_epoch,
            current_txn_first_offset=txn_first,
            last_timestamp=timestamp,
        )
        if last_offset >= 0:
            first_seq = last_seq - delta
            if first_seq < 0:  # the batch wrapped around int32 max
                first_seq += INT32_MAX + 1
            entry.batches.append(
                BatchMetadata(first_seq, last_seq, last_offset - delta, last_offset, timestamp)
            )
        entries.append(entry)
    return entries


def write_snapshot(path: Path, entries: Iterable[ProducerStateEntry], *, sync: bool = True) -> None:
    """Write a snapshot file atomically (temp file, fsync, rename). Without ``sync`` the
    rename is atomic but not durable: after a power loss the file may be missing, empty
    or partial, which ``load`` treats as no snapshot (CRC check) and replays the log."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(encode_snapshot(entries))
        f.flush()
        if sync:
            os.fsync(f.fileno())
    tmp.replace(path)


def read_snapshot(path: Path) -> list[ProducerStateEntry]:
    return decode_snapshot(path.read_bytes())
