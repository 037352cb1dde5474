"""KafkaReplicatedLog: the KRaft ``ReplicatedLog`` on pykbroker's on-disk ``Log``.

Mirrors Kafka's ``KafkaMetadataLog`` (over ``UnifiedLog``) with its ``LeaderEpochFileCache``
(``LeaderEpochCheckpointFile``) and its snapshot files (``Snapshots`` / ``FileRawSnapshotWriter``)
for the ``__cluster_metadata-0`` partition directory:

* records are v2 record batches whose partitionLeaderEpoch is the raft epoch; control batches
  (LeaderChangeMessage, ...) have the control bit and the key ``control_record_key(type)``;
* the leader epoch cache (``epoch -> start offset``, ``log.leader_epoch_cache``'s
  ``LeaderEpochFileCache``; the ``Log`` below keeps none of its own) is kept in memory and
  persisted as ``leader-epoch-checkpoint`` (Kafka's text format: version ``0``, the count,
  then ``epoch start_offset`` lines), written atomically on ``flush``, on truncation and on
  snapshot installation; on open it is loaded, entries at or past the log end are dropped and
  the tail from its last entry is rebuilt from batch headers (all of it if the file is missing
  or bad);
* snapshots are ``<end_offset:020d>-<epoch:010d>.checkpoint`` files in the partition
  directory, written as ``.checkpoint.part`` + fsync + rename + directory fsync;
* ``maybe_clean`` (Kafka's ``KafkaMetadataLog.maybeClean``) deletes the log and snapshots
  before a newer snapshot while ``metadata.max.retention.bytes``/``.ms`` are exceeded.

On open (Kafka's ``recoverSnapshots`` + ``truncateToLatestSnapshot``): partial snapshots are
deleted; the log start offset, which is not checkpointed (as in Kafka's metadata log), is
restored from where the epoch checkpoint was trimmed by ``delete_before_snapshot``; if the
latest snapshot is past the log end or its epoch does not match the log, the log is truncated
fully to start at it; snapshots below the log start are deleted. So ``log_start_offset`` is
always 0 or the end offset of a held snapshot (else ``InconsistentSnapshotStateError``). A log
start move not yet flushed may be forgotten by a crash (the records stay), as with MemoryLog.
When the log becomes empty above 0 (snapshot of all of it, truncation to the log start) it is
restarted as one empty segment at that offset, so a reopen starts there too.

Durability: appends, truncations and log start moves reach the page cache at once and are
durable after ``flush()`` (the driver calls it for ``RaftOutput.flush_log``); snapshot files are
durable when ``create_snapshot``/``install_snapshot`` return. Not thread-safe: use it from the
trio thread (``flush`` fsyncs inline).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.log.leader_epoch_cache import (
    LEADER_EPOCH_CHECKPOINT_FILE,
    EpochEntry,
    LeaderEpochFileCache,
    read_leader_epoch_checkpoint,
    write_file_atomically,
    write_leader_epoch_checkpoint,
)
from pykbroker.log.log import Log
from pykbroker.log.log_config import LogConfig
from pykbroker.log.record_batch import (
    AppendOrigin,
    BatchHeader,
    Record,
    build_batch,
    decode_records,
    iter_batch_headers,
    validate_batches,
)
from pykbroker.raft.log import (
    ControlRecordType,
    LogAppendError,
    LogAppendInfo,
    control_record_key,
    end_offset_for_epoch,
)
from pykbroker.raft.messages import OffsetAndEpoch, SnapshotId
from pykbroker.raft.schemas import SNAPSHOT_HEADER_RECORD

__all__ = [
    "LEADER_EPOCH_CHECKPOINT_FILE",  # re-exported from pykbroker.log.leader_epoch_cache
    "METADATA_PARTITION_DIR",
    "RAFT_LOG_CONFIG",
    "InconsistentSnapshotStateError",
    "KafkaReplicatedLog",
    "read_leader_epoch_checkpoint",
    "snapshot_file_name",
    "write_file_atomically",
    "write_leader_epoch_checkpoint",
]

logger = logging.getLogger(__name__)

METADATA_PARTITION_DIR = "__cluster_metadata-0"
SNAPSHOT_SUFFIX = ".checkpoint"
PARTIAL_SUFFIX = ".part"
DELETED_SUFFIX = ".deleted"
_SNAPSHOT_NAME = re.compile(r"^(\d{20})-(\d{10})\.checkpoint$")
_SCAN_BYTES = 1 << 20
_SNAPSHOT_HEAD_BYTES = 4096

#: The metadata log never expires by time or size: only snapshots clean it (KIP-630).
RAFT_LOG_CONFIG = LogConfig.from_properties(
    {"segment.bytes": str(64 * 1024 * 1024), "retention.ms": "-1", "retention.bytes": "-1"}
)


def snapshot_file_name(snapshot_id: SnapshotId) -> str:
    """Kafka's ``Snapshots.filenameFromSnapshotId`` + ``.checkpoint``."""
    return f"{snapshot_id.offset:020d}-{snapshot_id.epoch:010d}{SNAPSHOT_SUFFIX}"


class InconsistentSnapshotStateError(RuntimeError):
    """The log starts above 0 but no snapshot covers what it lost (Kafka's
    ``IllegalStateException("Inconsistent snapshot state")``)."""


# --- the log --------------------------------------------------------------------------------


class KafkaReplicatedLog:
    """``ReplicatedLog`` over a ``Log`` directory (Kafka's ``KafkaMetadataLog``); see the module
    docstring. Build it with ``open``."""

    def __init__(self, log: Log, clock: Callable[[], int] = wall_clock_ms) -> None:
        self._log = log
        self._dir = log.dir
        self._clock = clock
        self._checkpoint_path = self._dir / LEADER_EPOCH_CHECKPOINT_FILE
        # Kafka's LeaderEpochFileCache; the underlying Log keeps none (with_leader_epoch_cache).
        self._epoch_cache = LeaderEpochFileCache(self._checkpoint_path)
        self._snapshots: set[SnapshotId] = set()
        try:
            self._recover_snapshot_files()
            self._load_epoch_cache()
            self._settle_log_start()
        except BaseException:
            log.close()
            raise

    @classmethod
    def open(
        cls,
        partition_dir: Path,
        *,
        config: LogConfig = RAFT_LOG_CONFIG,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> KafkaReplicatedLog:
        """Load (or create) ``partition_dir`` (``<metadata.log.dir>/__cluster_metadata-0``),
        recovering every segment (a torn tail is cut off, as after a crash)."""
        log = Log.open(
            partition_dir,
            config,
            recover=True,
            recovery_point=0,
            now_ms=clock(),
            with_leader_epoch_cache=False,
        )
        return cls(log, clock)

    # --- start-up ------------------------------------------------------------------------

    def _recover_snapshot_files(self) -> None:
        """Kafka's ``recoverSnapshots``: drop partial/deleted files, remember the rest."""
        for entry in os.scandir(self._dir):
            name = entry.name
            if not name.endswith(
                (SNAPSHOT_SUFFIX + PARTIAL_SUFFIX, SNAPSHOT_SUFFIX + DELETED_SUFFIX)
            ):
                match = _SNAPSHOT_NAME.match(name)
                if match is not None:
                    self._snapshots.add(SnapshotId(int(match[1]), int(match[2])))
                continue
            Path(entry.path).unlink(missing_ok=True)

    def _load_epoch_cache(self) -> None:
        """Load ``leader-epoch-checkpoint``, drop what the log no longer holds, and rebuild the
        tail (or all of it) from the batch headers."""
        log = self._log
        cache, loaded = LeaderEpochFileCache.load(self._checkpoint_path)
        as_loaded = list(cache.entries)
        cache.truncate_from_end(log.log_end_offset)
        latest = cache.latest_entry()
        scan_from = log.log_start_offset if latest is None else latest.start_offset
        self._epoch_cache = cache
        for header in self._headers(max(scan_from, log.log_start_offset)):
            self._assign(header.partition_leader_epoch, header.base_offset)
        self._trim_epochs_to_start(log.log_start_offset)
        if not loaded or as_loaded != list(cache.entries):
            self._write_epoch_checkpoint()

    def _settle_log_start(self) -> None:
        """Restore the log start offset and apply Kafka's ``truncateToLatestSnapshot``.

        The log start offset is not checkpointed (as in Kafka's metadata log): ``Log`` opens at
        its first segment's base offset. An epoch cache that starts later was trimmed there by
        ``delete_before_snapshot``, so the log starts at that snapshot again. Then, if the
        latest snapshot is past the log or disagrees with its epochs (a follower crashed while
        installing it), the log is truncated fully to start at it. A log that starts above 0
        without a snapshot there moves up to the first snapshot it holds, or is refused."""
        log = self._log
        known = self._epochs[0][1] if self._epochs else log.log_end_offset
        if known > log.log_start_offset and any(s.offset == known for s in self._snapshots):
            self._move_log_start(known)
        latest = self.latest_snapshot_id
        if latest is not None and latest.offset > log.log_start_offset and not self._holds(latest):
            self._truncate_fully_and_start_at(latest.offset)
        elif log.log_start_offset > 0 and self.earliest_snapshot_id is None:
            held = sorted(
                s.offset
                for s in self._snapshots
                if s.offset > log.log_start_offset and self._holds(s)
            )
            if not held:
                raise InconsistentSnapshotStateError(
                    f"inconsistent snapshot state in {self._dir}: the log starts at "
                    f"{log.log_start_offset} but no snapshot ends there"
                )
            self._move_log_start(held[0])
        self._delete_snapshots_below(log.log_start_offset)
        self._epoch_cache.flush()

    # --- ReplicatedLog: offsets and epochs -------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log.log_end_offset

    @property
    def last_fetched_epoch(self) -> int:
        if self.log_end_offset > self.log_start_offset and self._epochs:
            return self._epochs[-1][0]
        earliest = self.earliest_snapshot_id
        return earliest.epoch if earliest is not None else 0

    def end_offset_for_epoch(self, epoch: int) -> OffsetAndEpoch:
        """Kafka's ``LeaderEpochFileCache.endOffsetFor`` as ``KafkaMetadataLog`` answers it."""
        return end_offset_for_epoch(self, self._epochs, epoch)

    def epoch_entries(self) -> list[tuple[int, int]]:
        """The leader epoch cache, ``(epoch, start_offset)`` ascending (inspection)."""
        return list(self._epochs)

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
        now_ms = self._clock()
        key = None if control_type is None else control_record_key(control_type)
        batch = build_batch(
            [Record(key=key, value=value, timestamp=now_ms) for value in records],
            partition_leader_epoch=epoch,
            is_control=control_type is not None,
        )
        try:
            info = self._log.append_as_leader(batch, epoch, now_ms, origin=AppendOrigin.RAFT_LEADER)
        except KafkaError as exc:
            raise LogAppendError(str(exc)) from exc
        self._assign(epoch, info.first_offset)
        return LogAppendInfo(info.first_offset, info.last_offset)

    def append_as_follower(self, records: bytes, epoch: int) -> LogAppendInfo:
        try:
            headers = validate_batches(
                records, self._log.config.max_message_bytes, origin=AppendOrigin.REPLICATION
            )
        except KafkaError as exc:
            raise LogAppendError(str(exc)) from exc
        if not headers:
            raise LogAppendError("no batches")
        expected = self.log_end_offset
        last_epoch = self._epochs[-1][0] if self._epochs else -1
        for header in headers:
            batch_epoch = header.partition_leader_epoch
            if header.base_offset != expected:
                raise LogAppendError(f"batch at {header.base_offset}, log end offset {expected}")
            if batch_epoch > epoch or batch_epoch < last_epoch:
                raise LogAppendError(f"batch epoch {batch_epoch} out of order (epoch {epoch})")
            expected = header.next_offset
            last_epoch = batch_epoch
        try:
            self._log.append_as_follower(records, self._clock())
        except KafkaError as exc:
            raise LogAppendError(str(exc)) from exc
        for header in headers:
            self._assign(header.partition_leader_epoch, header.base_offset)
        return LogAppendInfo(headers[0].base_offset, headers[-1].last_offset)

    def read(self, start_offset: int, max_bytes: int) -> bytes:
        if start_offset == self.log_end_offset:
            return b""
        if not self.log_start_offset <= start_offset < self.log_end_offset:
            raise ValueError(
                f"offset {start_offset} outside [{self.log_start_offset}, {self.log_end_offset}]"
            )
        data = self._log.read(start_offset, max_bytes)
        first = next(iter_batch_headers(data), None)
        if first is None or first[1].base_offset != start_offset:
            raise ValueError(f"offset {start_offset} is not a batch boundary")
        return data

    def truncate_to(self, offset: int) -> None:
        if offset >= self.log_end_offset:
            return
        if offset < self.log_start_offset:
            raise ValueError(f"truncation to {offset} below log start {self.log_start_offset}")
        if not self._is_boundary(offset):
            raise ValueError(f"truncation offset {offset} is not a batch boundary")
        if offset == self.log_start_offset:
            self._log.truncate_fully_and_start_at(offset)  # empty: reopen must start here
        else:
            self._log.truncate_to(offset)
        self._epoch_cache.truncate_from_end(offset)
        self._write_epoch_checkpoint()  # as Kafka's truncateFromEnd: never a stale tail

    # --- ReplicatedLog: snapshots ----------------------------------------------------------

    @property
    def earliest_snapshot_id(self) -> SnapshotId | None:
        start = self.log_start_offset
        if start == 0:
            return None
        at_start = [s for s in self._snapshots if s.offset == start]
        return max(at_start, key=lambda s: s.epoch) if at_start else None

    @property
    def latest_snapshot_id(self) -> SnapshotId | None:
        if not self._snapshots:
            return None
        return max(self._snapshots, key=lambda s: (s.offset, s.epoch))

    def snapshot_path(self, snapshot_id: SnapshotId) -> Path:
        return self._dir / snapshot_file_name(snapshot_id)

    def read_snapshot(self, snapshot_id: SnapshotId) -> bytes | None:
        if snapshot_id not in self._snapshots:
            return None
        try:
            return self.snapshot_path(snapshot_id).read_bytes()
        except FileNotFoundError:
            return None

    def create_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        start, end = self.log_start_offset, self.log_end_offset
        if snapshot_id.offset > end or snapshot_id.offset < start:
            raise ValueError(f"snapshot {snapshot_id} outside the log")
        if snapshot_id.offset > start:
            if not self._is_boundary(snapshot_id.offset):
                raise ValueError(f"snapshot {snapshot_id} not at a batch boundary")
            if self._epoch_at(snapshot_id.offset - 1) != snapshot_id.epoch:
                raise ValueError(f"snapshot {snapshot_id} epoch does not match the log")
        self._write_snapshot(snapshot_id, data)

    def delete_before_snapshot(self, snapshot_id: SnapshotId) -> None:
        if snapshot_id not in self._snapshots:
            raise ValueError(f"unknown snapshot {snapshot_id}")
        if snapshot_id.offset <= self.log_start_offset:
            return
        self._move_log_start(snapshot_id.offset)
        self._delete_snapshots_below(snapshot_id.offset)

    def install_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        self._write_snapshot(snapshot_id, data)
        self._truncate_fully_and_start_at(snapshot_id.offset)
        self._delete_snapshots_below(snapshot_id.offset)

    # --- KIP-630 log cleaning (Kafka's ``KafkaMetadataLog.maybeClean``) ---------------------

    def maybe_clean(self, retention_max_bytes: int, retention_ms: int, now_ms: int) -> bool:
        """Delete the log (whole segments) and snapshots before a newer snapshot while
        ``metadata.max.retention.bytes`` (log + snapshot bytes above it; < 1: no limit) or
        ``metadata.max.retention.ms`` (age of the oldest snapshot's last record; < 0: no limit)
        is exceeded, as Kafka's ``cleanSnapshots``: oldest first, never the latest snapshot,
        never past the high watermark. The log start counts as the oldest "snapshot" when no
        snapshot ends there (Kafka formats a 0-0 bootstrap snapshot there). True if it
        cleaned."""
        cleaned = False
        if retention_max_bytes >= 1:
            cleaned |= self._clean_snapshots(
                lambda _: self._log.size_in_bytes + self._snapshot_bytes() > retention_max_bytes
            )
        if retention_ms >= 0:

            def expired(snapshot_id: SnapshotId | None) -> bool:
                timestamp = self._snapshot_timestamp(snapshot_id)
                return timestamp is not None and now_ms - timestamp > retention_ms

            cleaned |= self._clean_snapshots(expired)
        return cleaned

    def _clean_snapshots(self, predicate: Callable[[SnapshotId | None], bool]) -> bool:
        cleaned = False
        for _ in range(len(self._snapshots) + 1):  # each round drops a snapshot or stops
            ordered = sorted(self._snapshots, key=lambda s: (s.offset, s.epoch))
            chain: list[SnapshotId | None] = [*ordered]
            if not any(s.offset <= self.log_start_offset for s in ordered):
                # The log start, with no snapshot there (a 0-0 bootstrap checkpoint is one).
                chain.insert(0, None)
            if len(chain) < 2:
                return cleaned
            oldest, successor = chain[0], chain[1]
            assert successor is not None
            if successor.offset > self._log.high_watermark or not predicate(oldest):
                return cleaned
            self.delete_before_snapshot(successor)  # drops ``oldest`` too
            cleaned = True
        return cleaned

    def _snapshot_bytes(self) -> int:
        total = 0
        for snapshot_id in self._snapshots:
            try:
                total += self.snapshot_path(snapshot_id).stat().st_size
            except OSError:
                continue
        return total

    def _snapshot_timestamp(self, snapshot_id: SnapshotId | None) -> int | None:
        """Kafka's ``readSnapshotTimestamp``: the header's ``lastContainedLogTimestamp``; for
        the log start without a snapshot, the first batch's largest timestamp."""
        if snapshot_id is None:
            if self.log_end_offset <= self.log_start_offset:
                return None
            first = next(iter_batch_headers(self._log.read(self.log_start_offset, 1)), None)
            return None if first is None else first[1].max_timestamp
        try:
            with self.snapshot_path(snapshot_id).open("rb") as file:
                head = file.read(_SNAPSHOT_HEAD_BYTES)
        except OSError:
            return None
        for position, header in iter_batch_headers(head):
            if not header.is_control:
                break
            for rec in decode_records(head[position : position + header.size_in_bytes]):
                if rec.key == control_record_key(ControlRecordType.SNAPSHOT_HEADER) and rec.value:
                    try:
                        data = codec.decode(SNAPSHOT_HEADER_RECORD, 0, rec.value)
                    except codec.CodecError:
                        return None
                    timestamp: int = data["last_contained_log_timestamp"]
                    return timestamp
            break
        return None

    # --- durability and lifecycle (the driver's side) --------------------------------------

    @property
    def log(self) -> Log:
        """The underlying partition log (readers such as ``MetadataLog.replay`` use it)."""
        return self._log

    @property
    def high_watermark(self) -> int:
        return self._log.high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        """Publish the raft high watermark to readers of the ``Log`` (the driver does, from
        ``RaftOutput.high_watermark``; after ``open`` it is the log start offset)."""
        self._log.high_watermark = offset

    def flush(self) -> None:
        """fsync the segments, then the epoch checkpoint if it changed (``flush_log``)."""
        self._log.flush(self._clock())
        self._epoch_cache.flush()

    def close(self) -> None:
        if self._log.is_closed:
            return
        self.flush()
        self._log.close()

    # --- internals -------------------------------------------------------------------------

    def _headers(self, start_offset: int) -> Iterator[BatchHeader]:
        """Every batch header from the batch at ``start_offset`` to the log end."""
        log = self._log
        offset = start_offset
        while offset < log.log_end_offset:
            data = log.read(offset, _SCAN_BYTES)
            last: BatchHeader | None = None
            for _, header in iter_batch_headers(data):
                last = header
                yield header
            if last is None:
                return
            offset = last.next_offset

    def _is_boundary(self, offset: int) -> bool:
        """``offset`` is where a batch starts, or the log end offset."""
        if offset == self.log_end_offset:
            return True
        if not self.log_start_offset <= offset < self.log_end_offset:
            return False
        first = next(iter_batch_headers(self._log.read(offset, 1)), None)
        return first is not None and first[1].base_offset == offset

    @property
    def _epochs(self) -> Sequence[EpochEntry]:
        """The leader epoch cache's entries, ``(epoch, start_offset)`` ascending."""
        return self._epoch_cache.entries

    def _epoch_at(self, offset: int) -> int:
        """Epoch of the record at ``offset`` (inside the log), from the epoch cache."""
        epoch = self._epoch_cache.epoch_for_offset(offset)
        return -1 if epoch is None else epoch

    def _holds(self, snapshot_id: SnapshotId) -> bool:
        """The log contains every record the snapshot covers, ending in the snapshot's epoch."""
        if snapshot_id.offset > self.log_end_offset or snapshot_id.offset <= self.log_start_offset:
            return False
        return self._is_boundary(snapshot_id.offset) and (
            self._epoch_at(snapshot_id.offset - 1) == snapshot_id.epoch
        )

    def _assign(self, epoch: int, start_offset: int) -> None:
        """Kafka's ``LeaderEpochFileCache.assign``: a new epoch starting at ``start_offset``
        replaces every entry it contradicts (a batch without an epoch, -1, starts none)."""
        if epoch >= 0:
            self._epoch_cache.assign(epoch, start_offset)

    def _trim_epochs_to_start(self, new_start: int) -> None:
        """Kafka's ``truncateFromStart``: entries below ``new_start`` go, the last one moved to
        ``new_start`` while the log still holds records."""
        if self.log_end_offset > new_start:
            self._epoch_cache.truncate_from_start(new_start)
        elif len(self._epoch_cache):  # an empty log keeps no epoch: its snapshot answers
            self._epoch_cache.clear()

    def _move_log_start(self, offset: int) -> None:
        """Raise the log start offset to a snapshot's end (whole segments below go). A snapshot
        of the whole log restarts it empty at ``offset`` so a reopen finds its start there."""
        log = self._log
        if offset >= log.log_end_offset:
            log.truncate_fully_and_start_at(offset)
            self._trim_epochs_to_start(offset)
            return
        log.high_watermark = max(log.high_watermark, offset)
        log.maybe_increment_log_start_offset(offset)
        log.delete_old_segments(self._clock())
        self._trim_epochs_to_start(offset)

    def _truncate_fully_and_start_at(self, offset: int) -> None:
        self._log.truncate_fully_and_start_at(offset)
        self._epoch_cache.clear()
        self._write_epoch_checkpoint()

    def _write_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        write_file_atomically(self.snapshot_path(snapshot_id), bytes(data), PARTIAL_SUFFIX)
        self._snapshots.add(snapshot_id)

    def _delete_snapshots_below(self, offset: int) -> None:
        for old in [s for s in self._snapshots if s.offset < offset]:
            self._snapshots.discard(old)
            self.snapshot_path(old).unlink(missing_ok=True)

    def _write_epoch_checkpoint(self) -> None:
        self._epoch_cache.write()

    def __repr__(self) -> str:
        return (
            f"KafkaReplicatedLog({self._dir}, log_start_offset={self.log_start_offset}, "
            f"log_end_offset={self.log_end_offset}, epochs={self._epochs})"
        )
