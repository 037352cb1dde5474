"""A partition's log: ordered segments and its offsets, after Kafka's ``UnifiedLog``.

Mirrors ``kafka.log.UnifiedLog`` / ``LocalLog`` (local storage only): validate and
append batches as leader (offsets assigned here) or as follower (offsets kept), roll
segments, read whole batches for fetches, look up offsets by timestamp, truncate,
apply retention, swap in segments the cleaner rewrote, and load plus recover the
segments of a directory. Flushing is either inline (``inline_flush``, Kafka's way) or
split into ``flush_snapshot`` / ``FlushSnapshot.fsync`` (any thread) /
``complete_flush`` so the fsync runs off the event loop (``FlushCoordinator``).
Idempotent producer state (``producer_state.ProducerStateManager``) is checked on
leader appends, fed by follower appends, snapshotted on roll and close, and rebuilt
on open and truncation from the newest snapshot plus the batch headers after it. With
off-loop flushing a roll writes its snapshot without fsync (Kafka's ``takeSnapshot(false)``)
and the next flush round fsyncs it (``flush_files_pending``); a snapshot torn by a power loss
fails its CRC on open and the state is replayed from an older one.
Each ABORT marker appended (by the transaction coordinator as leader, or replicated) adds
an entry to the active segment's ``.txnindex`` before the append may be flushed;
``collect_aborted_transactions`` answers read_committed fetches from those indexes
(Kafka's ``collectAbortedTransactions``).
The leader epoch cache (``leader_epoch_cache.LeaderEpochFileCache``, the partition's
``leader-epoch-checkpoint``, KIP-101/KIP-279) takes Kafka's ``assign`` of every appended
batch's partitionLeaderEpoch before the batch is written (leader appends stamp the leader's
epoch; follower appends keep theirs) and of a new leader's epoch at the log end offset
(``Partition``); it is loaded on open (rebuilt from the batch headers when the file is missing
or malformed, completed from the recovered tail after an unclean shutdown), truncated from the
end by ``truncate_to``, from the start when the log start offset moves, cleared by
``truncate_fully_and_start_at``, and rewritten atomically whenever it changes, as Kafka's
``assign`` does: fsynced at once with inline flushing, else fsynced by the next flush round
(``FlushSnapshot``) off the event loop. ``end_offset_for_epoch`` answers OffsetForLeaderEpoch.

Invariants: segments are sorted by base offset, only the last (active) one takes
appends, and offsets increase through them;
``log_start_offset <= high_watermark <= log_end_offset`` and
``recovery_point <= log_end_offset``; everything below ``recovery_point`` was
fsynced; every leader epoch entry starts in ``[log_start_offset, log_end_offset]``, epochs
and start offsets ascending. The log persists nothing global: checkpoints belong to
``LogManager``.
Not thread-safe: call it from the trio thread; only ``FlushSnapshot.fsync`` and
``LogSegment.delete`` of removed segments may run in a worker thread.
"""

from __future__ import annotations

import bisect
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.leader_epoch_cache import (
    LEADER_EPOCH_CHECKPOINT_FILE,
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    LeaderEpochFileCache,
)
from pykbroker.log.log_config import LogConfig
from pykbroker.log.log_flush import FlushSnapshot
from pykbroker.log.log_loader import load_segments, new_segment
from pykbroker.log.log_validator import LogAppendInfo, max_timestamp_of, validate_records
from pykbroker.log.producer_state import (
    DEFAULT_PRODUCER_ID_EXPIRATION_MS,
    CompletedTxn,
    ProducerStateManager,
    replay_segments,
)
from pykbroker.log.record_batch import (
    AppendOrigin,
    BatchHeader,
    EndTxnMarker,
    assign_offsets,
    end_txn_marker_type,
    iter_batch_headers,
    validate_batches,
)
from pykbroker.log.segment import CLEANED_FILE_SUFFIX, SWAP_FILE_SUFFIX, LogSegment
from pykbroker.log.transaction_index import AbortedTxn

__all__ = [
    "EARLIEST_TIMESTAMP",
    "LATEST_TIMESTAMP",
    "MAX_TIMESTAMP",
    "FlushSnapshot",
    "Log",
    "LogAppendInfo",
    "LogConfig",
]

#: How much ``assign_epochs_from`` reads at a time while scanning batch headers.
_EPOCH_SCAN_BYTES = 1 << 20

# ListOffsets special timestamps
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3


class Log:
    """The segments of one topic partition in ``dir``; see the module docstring."""

    def __init__(
        self,
        log_dir: Path,
        config: LogConfig,
        segments: list[LogSegment],
        *,
        log_start_offset: int,
        now_ms: int,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        with_leader_epoch_cache: bool = True,
    ) -> None:
        if not segments:
            raise ValueError("a log has at least one segment")
        self._dir = log_dir
        self._config = config
        self._segments = segments
        self._base_offsets = [s.base_offset for s in segments]
        self._log_end_offset = segments[-1].next_offset
        self._log_start_offset = min(log_start_offset, self._log_end_offset)
        self._high_watermark = self._log_start_offset
        self._recovery_point = self._log_end_offset
        self._now_ms = now_ms
        self._last_flush_ms = now_ms
        self._closed = False
        self._truncations = 0
        # producer snapshots written without fsync, fsynced by the next flush round
        self._unflushed_snapshots: list[Path] = []
        # False when a FlushCoordinator fsyncs off the event loop (LogManager sets it).
        self.inline_flush = True
        segments[-1].resize_indexes(config.segment_index_bytes)
        self.producer_state = ProducerStateManager(
            log_dir, producer_id_expiration_ms=producer_id_expiration_ms
        )
        self._load_producer_state(now_ms)
        # Kafka's leaderEpochCache; None when the owner keeps its own (the metadata log).
        self.leader_epoch_cache: LeaderEpochFileCache | None = None
        if with_leader_epoch_cache:
            self._load_leader_epoch_cache()

    def _load_producer_state(self, now_ms: int) -> None:
        """Kafka's ``loadProducerState``: newest snapshot, then replay the tail."""
        state = self.producer_state
        replay_from = state.load(self._log_end_offset, now_ms)
        replay_segments(state, self._segments, max(replay_from, self._log_start_offset))
        state.map_end_offset = self._log_end_offset

    def _load_leader_epoch_cache(self) -> None:
        """Load ``leader-epoch-checkpoint`` and fit it to the log (Kafka's
        ``truncateFromEnd(logEndOffset)`` and ``truncateFromStart(logStartOffset)`` after
        loading); a missing or malformed file is rebuilt from every batch header."""
        cache, loaded = LeaderEpochFileCache.load(self._dir / LEADER_EPOCH_CHECKPOINT_FILE)
        self.leader_epoch_cache = cache
        if not loaded and self._log_end_offset > self._log_start_offset:
            cache.clear()  # rewritten below even when the log holds no epoch
            self.assign_epochs_from(self._log_start_offset)
        cache.truncate_from_end(self._log_end_offset)
        cache.truncate_from_start(self._log_start_offset)
        cache.flush()

    def assign_epochs_from(self, start_offset: int) -> None:
        """Kafka's recovery rule (``LogSegment.recover``): every batch from the one holding
        ``start_offset`` whose partitionLeaderEpoch is above the latest cached epoch starts a
        new epoch entry. The cache is written if it changed."""
        cache = self.leader_epoch_cache
        if cache is None:
            return
        offset = max(start_offset, self._log_start_offset)
        for _ in range(len(self._segments) + self._log_end_offset - offset + 1):
            if offset >= self._log_end_offset:
                break
            data = self.read(offset, _EPOCH_SCAN_BYTES)
            next_offset = offset
            for _, header in iter_batch_headers(data):
                epoch = header.partition_leader_epoch
                latest = cache.latest_epoch()
                if epoch >= 0 and (latest is None or epoch > latest):
                    cache.assign(epoch, header.base_offset)
                next_offset = header.next_offset
            if next_offset <= offset:
                break  # nothing readable there (a gap at the end of a segment)
            offset = next_offset
        cache.flush()

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        log_dir: Path,
        config: LogConfig,
        *,
        recover: bool = True,
        now_ms: int,
        recovery_point: int | None = None,
        log_start_offset: int | None = None,
        high_watermark: int | None = None,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        with_leader_epoch_cache: bool = True,
    ) -> Log:
        """Load the segments of ``log_dir`` (created if missing): see ``log_loader``.

        With ``recover`` (unclean shutdown) the segments that may hold offsets >=
        ``recovery_point`` (only the active one when it is None) are recovered.
        ``log_start_offset`` and ``high_watermark`` come from checkpoints; the high
        watermark defaults to the log start offset, as Kafka before a leader or
        follower update (a single-replica leader sets it to ``log_end_offset``).
        The leader epoch cache is loaded (``with_leader_epoch_cache``; the metadata log keeps
        its own) and, with ``recover``, completed from the recovered batches.
        """
        segments, start = load_segments(
            log_dir,
            config,
            recover=recover,
            recovery_point=recovery_point,
            log_start_offset=log_start_offset,
            now_ms=now_ms,
        )
        log = cls(
            log_dir,
            config,
            segments,
            log_start_offset=start,
            now_ms=now_ms,
            producer_id_expiration_ms=producer_id_expiration_ms,
            with_leader_epoch_cache=with_leader_epoch_cache,
        )
        if recover:
            log.assign_epochs_from(
                log.active_segment.base_offset if recovery_point is None else recovery_point
            )
        if high_watermark is not None:
            log.high_watermark = high_watermark
        return log

    # -- properties -------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return self._dir

    @property
    def config(self) -> LogConfig:
        return self._config

    @config.setter
    def config(self, config: LogConfig) -> None:
        if config != self._config:
            self.update_config(config)

    def update_config(self, config: LogConfig) -> None:
        """Apply changed topic configs (Kafka's ``updateConfig``)."""
        self._config = config
        for segment in self._segments:
            segment.index_interval_bytes = config.index_interval_bytes
        self.active_segment.resize_indexes(config.segment_index_bytes)

    @property
    def segments(self) -> Sequence[LogSegment]:
        return tuple(self._segments)

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        self._high_watermark = min(max(offset, self._log_start_offset), self._log_end_offset)

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def unflushed_messages(self) -> int:
        return self._log_end_offset - self._recovery_point

    @property
    def flush_needed(self) -> bool:
        """``flush.messages`` or more appended since the last flush."""
        return self.unflushed_messages >= self._config.flush_messages

    @property
    def is_closed(self) -> bool:
        return self._closed

    # -- append -----------------------------------------------------------------------

    def append_as_leader(
        self,
        records: bytes | bytearray | memoryview,
        leader_epoch: int,
        now_ms: int,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> LogAppendInfo:
        """Validate, assign offsets from ``log_end_offset`` and append (Kafka's leader path).

        Raises KafkaError (CORRUPT_MESSAGE, UNSUPPORTED_FOR_MESSAGE_FORMAT,
        MESSAGE_TOO_LARGE, INVALID_RECORD, INVALID_TIMESTAMP, and from the producer
        state OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH) before touching the
        log. Topic rules (timestamp bounds, keys on compacted topics,
        ``compression.type``) are ``log_validator.validate_records``. A client batch
        that repeats one of its producer's last five batches is not appended: the
        original batch's offsets are returned (Kafka's duplicate handling).
        """
        headers = validate_batches(records, self._config.max_message_bytes, origin=origin)
        if not headers:
            return self._nothing_appended()
        records, headers = validate_records(records, headers, self._config, now_ms, origin)
        first_offset = self._log_end_offset
        if origin is AppendOrigin.CLIENT:
            duplicate = self.producer_state.find_duplicate(headers[0])
            if duplicate is not None:
                return LogAppendInfo(
                    first_offset=duplicate.first_offset,
                    last_offset=duplicate.last_offset,
                    max_timestamp=duplicate.timestamp,
                    log_append_time_ms=(
                        duplicate.timestamp if self._config.is_log_append_time else -1
                    ),
                    log_start_offset=self._log_start_offset,
                    records_count=0,
                    valid_bytes=0,
                )
        append_time = now_ms if self._config.is_log_append_time else None
        producer_updates = self.producer_state.prepare_update(
            headers, first_offset, origin, append_time
        )
        completed = self.producer_state.completed_txns(producer_updates)
        buffer = bytearray(records)  # the one copy: offsets are patched into it
        next_offset = assign_offsets(buffer, first_offset, leader_epoch, append_time)
        max_timestamp, offset_of_max = max_timestamp_of(headers, first_offset, append_time)
        self.maybe_assign_epoch_start_offset(leader_epoch, first_offset)
        self._append(buffer, first_offset, next_offset - 1, max_timestamp, offset_of_max, now_ms)
        self._update_txn_index(completed, buffer)
        self.producer_state.update(producer_updates, next_offset)
        self._maybe_flush(now_ms)
        return LogAppendInfo(
            first_offset=first_offset,
            last_offset=next_offset - 1,
            max_timestamp=max_timestamp,
            log_append_time_ms=-1 if append_time is None else append_time,
            log_start_offset=self._log_start_offset,
            records_count=sum(h.records_count for h in headers),
            valid_bytes=len(buffer),
            offset_of_max_timestamp=offset_of_max,
        )

    def append_as_follower(
        self, records: bytes | bytearray | memoryview, now_ms: int
    ) -> LogAppendInfo:
        """Append replicated batches keeping their offsets and epochs.

        Offsets must increase and start at or after ``log_end_offset`` (a gap is allowed,
        as after compaction on the leader); otherwise KafkaError(UNKNOWN_SERVER_ERROR),
        Kafka's UnexpectedAppendOffsetException / OffsetsOutOfOrderException.
        """
        headers = validate_batches(
            records, self._config.max_message_bytes, origin=AppendOrigin.REPLICATION
        )
        if not headers:
            return self._nothing_appended()
        expected = self._log_end_offset
        for header in headers:
            if header.base_offset < expected:
                raise KafkaError(
                    ErrorCode.UNKNOWN_SERVER_ERROR,
                    f"batch base offset {header.base_offset} is below {expected} in {self._dir}",
                )
            expected = header.next_offset
        first_offset = headers[0].base_offset
        last_offset = headers[-1].last_offset
        max_timestamp, offset_of_max = max_timestamp_of(headers, None, None)
        for header in headers:
            self.maybe_assign_epoch_start_offset(header.partition_leader_epoch, header.base_offset)
        self._append(records, first_offset, last_offset, max_timestamp, offset_of_max, now_ms)
        self._update_txn_index(self.producer_state.update_from_replay(headers), records)
        self._maybe_flush(now_ms)
        return LogAppendInfo(
            first_offset=first_offset,
            last_offset=last_offset,
            max_timestamp=max_timestamp,
            log_append_time_ms=-1,
            log_start_offset=self._log_start_offset,
            records_count=sum(h.records_count for h in headers),
            valid_bytes=len(records),
            offset_of_max_timestamp=offset_of_max,
        )

    def maybe_assign_epoch_start_offset(self, leader_epoch: int, start_offset: int) -> None:
        """Kafka's ``maybeAssignEpochStartOffset``: called before a batch is written (so the
        file never lacks an epoch the log holds) and by ``Partition`` when this broker becomes
        leader of a new epoch (at the log end offset). Negative epochs are ignored."""
        cache = self.leader_epoch_cache
        if cache is not None and leader_epoch >= 0 and cache.assign(leader_epoch, start_offset):
            self._write_epoch_checkpoint()

    def _write_epoch_checkpoint(self) -> None:
        """Write a changed leader epoch cache at once (Kafka writes on ``assign``): fsynced
        with inline flushing; else into the page cache only (it survives a process crash),
        fsynced by the next flush round off the event loop (``flush_due``)."""
        cache = self.leader_epoch_cache
        if cache is not None:
            cache.write(sync=self.inline_flush)

    def _nothing_appended(self) -> LogAppendInfo:
        end = self._log_end_offset
        return LogAppendInfo(end, end - 1, -1, -1, self._log_start_offset, 0, 0)

    def _append(
        self,
        data: bytes | bytearray | memoryview,
        first_offset: int,
        last_offset: int,
        max_timestamp: int,
        offset_of_max: int,
        now_ms: int,
    ) -> None:
        self._check_open()
        self._now_ms = now_ms
        segment = self.active_segment
        if segment.should_roll(
            segment_bytes=self._config.segment_bytes,
            segment_ms=self._config.segment_ms,
            messages_size=len(data),
            max_timestamp_in_messages=max_timestamp,
            max_offset_in_messages=last_offset,
            now_ms=now_ms,
        ):
            segment = self._roll(max(first_offset, self._log_end_offset), now_ms)
        segment.append(last_offset, data, max_timestamp, offset_of_max)
        self._log_end_offset = last_offset + 1

    def _update_txn_index(
        self, completed: list[CompletedTxn], data: bytes | bytearray | memoryview
    ) -> None:
        """Index in the active segment (which took ``data``) the transactions that
        ABORT markers in ``data`` ended (Kafka's ``updateTxnIndex`` during ``append``)."""
        if not completed:
            return
        markers = {
            header.base_offset: _is_abort_marker(header, data, position)
            for position, header in iter_batch_headers(data)
            if header.is_control and header.producer_id >= 0
        }
        segment = self.active_segment
        for txn in completed:
            segment.update_txn_index(txn, markers.get(txn.last_offset, False))

    def _maybe_flush(self, now_ms: int) -> None:
        if self.inline_flush and self.flush_needed:
            self.flush(now_ms)

    # -- roll -------------------------------------------------------------------------

    def roll(self, now_ms: int | None = None) -> LogSegment:
        """Start a new active segment at ``log_end_offset`` (no-op if the active is empty)."""
        self._check_open()
        return self._roll(self._log_end_offset, self._now_ms if now_ms is None else now_ms)

    def _roll(self, base_offset: int, now_ms: int) -> LogSegment:
        active = self.active_segment
        if active.size == 0:
            if active.base_offset == base_offset:
                return active
            # An empty segment is useless once the next one starts further on.
            self._segments.pop()
            self._base_offsets.pop()
            active.delete()
        else:
            active.on_become_inactive()
        # Kafka's roll: the producer state up to the new segment is snapshotted. Off-loop
        # flushing writes it without fsync (Kafka's takeSnapshot(false)); the next flush
        # round, due since the log rolled, fsyncs it in a worker thread (flush_snapshot).
        self.producer_state.map_end_offset = base_offset
        path = self.producer_state.take_snapshot(sync=self.inline_flush)
        if path is not None and not self.inline_flush:
            self._unflushed_snapshots.append(path)
        segment = new_segment(self._dir, self._config, base_offset, now_ms)
        segment.resize_indexes(self._config.segment_index_bytes)
        self._segments.append(segment)
        self._base_offsets.append(base_offset)
        return segment

    # -- read -------------------------------------------------------------------------

    def read(
        self,
        fetch_offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        min_one_message: bool = True,
    ) -> bytes:
        """Whole batches from the one containing ``fetch_offset``, from one segment.

        Stops before the batch containing ``max_offset`` (the high watermark for
        consumers) and after ``max_bytes``, except that with ``min_one_message`` the
        first batch is returned whole. OFFSET_OUT_OF_RANGE below ``log_start_offset`` or
        above ``log_end_offset``; ``b""`` at ``log_end_offset`` or ``max_offset``.
        """
        self._check_open()
        if fetch_offset < self._log_start_offset or fetch_offset > self._log_end_offset:
            raise KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"offset {fetch_offset} is outside [{self._log_start_offset}, "
                f"{self._log_end_offset}] of {self._dir.name}",
            )
        if fetch_offset == self._log_end_offset or (
            max_offset is not None and fetch_offset >= max_offset
        ):
            return b""
        index = max(0, bisect.bisect_right(self._base_offsets, fetch_offset) - 1)
        for segment in self._segments[index:]:
            max_position = None
            if max_offset is not None and max_offset < segment.next_offset:
                found = segment.translate_offset(max_offset)
                max_position = found[0] if found is not None else None
            data = segment.read(fetch_offset, max_bytes, max_position, min_one_message)
            if data is not None:
                return data
        return b""

    def collect_aborted_transactions(
        self, start_offset: int, upper_bound_offset: int
    ) -> list[AbortedTxn]:
        """The aborted transactions overlapping ``[start_offset, upper_bound_offset)``, from
        the ``.txnindex`` of the segment holding ``start_offset`` and the later ones until
        an entry's last stable offset reaches the upper bound (Kafka's
        ``collectAbortedTransactions``)."""
        self._check_open()
        found: list[AbortedTxn] = []
        if upper_bound_offset <= start_offset:
            return found
        index = max(0, bisect.bisect_right(self._base_offsets, start_offset) - 1)
        for segment in self._segments[index:]:
            result = segment.collect_aborted_txns(start_offset, upper_bound_offset)
            found.extend(result.aborted_transactions)
            if result.is_complete:
                break
        return found

    # -- offsets by timestamp --------------------------------------------------------------

    def fetch_offset_by_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record stamped >= ``timestamp`` (ListOffsets).

        The special timestamps answer as Kafka: -2 (earliest) ``(log_start_offset, -1)``,
        -1 (latest) ``(log_end_offset, -1)``, -3 (max timestamp) the record with the
        largest timestamp. None when no record qualifies.
        """
        self._check_open()
        if timestamp == EARLIEST_TIMESTAMP:
            return self._log_start_offset, -1
        if timestamp == LATEST_TIMESTAMP:
            return self._log_end_offset, -1
        if timestamp == MAX_TIMESTAMP:
            max_timestamp, offset = self.max_timestamp_and_offset()
            return (offset, max_timestamp) if offset >= 0 else None
        for segment in self._segments:
            if segment.max_timestamp_and_offset_so_far[0] < timestamp:
                continue
            found = segment.find_offset_by_timestamp(timestamp, self._log_start_offset)
            if found is not None:
                return found
        return None

    def max_timestamp_and_offset(self) -> tuple[int, int]:
        """``(timestamp, offset)`` of the record with the largest timestamp; (-1, -1) if none."""
        self._check_open()
        best: LogSegment | None = None
        best_timestamp, best_offset = -1, -1
        for segment in self._segments:
            timestamp, offset = segment.max_timestamp_and_offset_so_far
            if timestamp > best_timestamp and offset >= self._log_start_offset:
                best, best_timestamp, best_offset = segment, timestamp, offset
        if best is None:
            return -1, -1
        exact = best.find_record_with_timestamp(best_timestamp, best_offset)
        return best_timestamp, best_offset if exact is None else exact

    def batch_leader_epoch(self, offset: int) -> int:
        """The partitionLeaderEpoch of the batch holding ``offset`` (what Kafka's
        ``findOffsetByTimestamp`` answers with a found offset); -1 if none or unstamped."""
        self._check_open()
        if not self._log_start_offset <= offset < self._log_end_offset:
            return -1
        for _, header in iter_batch_headers(self.read(offset, 1)):
            return max(header.partition_leader_epoch, -1)
        return -1

    # -- leader epochs ---------------------------------------------------------------------

    def epoch_at_log_start(self) -> int:
        """Kafka's EARLIEST answer epoch: the earliest cached epoch when it starts at or
        below ``log_start_offset`` (the epoch of the log start offset), else -1."""
        self._check_open()
        cache = self.leader_epoch_cache
        entry = cache.earliest_entry() if cache is not None else None
        if entry is None or entry.start_offset > self._log_start_offset:
            return -1
        return entry.epoch

    def end_offset_for_epoch(self, leader_epoch: int) -> tuple[int, int]:
        """``(epoch, end_offset)`` for OffsetForLeaderEpoch (Kafka's ``endOffsetForEpoch``
        over ``LeaderEpochFileCache.endOffsetFor``): the log end offset for the latest epoch,
        else the start offset of the first epoch above ``leader_epoch`` with the greatest
        epoch not above it; ``(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`` (-1, -1) for -1, an
        unknown greater epoch, or a log without epochs."""
        self._check_open()
        cache = self.leader_epoch_cache
        if cache is None:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        return cache.end_offset_for(leader_epoch, self._log_end_offset)

    # -- truncation and retention ----------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Remove the batch containing ``offset`` and everything after it (Kafka's rule).

        ``log_end_offset`` becomes the base offset of that batch, which is ``offset``
        itself when it is a batch boundary (the usual case for a follower).
        """
        self._check_open()
        if offset >= self._log_end_offset:
            return
        if self._segments[0].base_offset > offset:
            self.truncate_fully_and_start_at(offset)
            return
        while len(self._segments) > 1 and self._segments[-1].base_offset > offset:
            self._segments.pop().delete()
            self._base_offsets.pop()
        self._truncations += 1
        active = self.active_segment
        active.truncate_to(offset)
        active.resize_indexes(self._config.segment_index_bytes)
        self._log_end_offset = active.next_offset
        self._log_start_offset = min(self._log_start_offset, self._log_end_offset)
        self._high_watermark = min(self._high_watermark, self._log_end_offset)
        self._recovery_point = min(self._recovery_point, self._log_end_offset)
        self._load_producer_state(self._now_ms)  # drops the snapshots past the new end
        cache = self.leader_epoch_cache
        if cache is not None and cache.truncate_from_end(self._log_end_offset):
            self._write_epoch_checkpoint()  # Kafka's truncateFromEnd

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and restart the log empty at ``offset``."""
        self._check_open()
        self._truncations += 1
        for segment in self._segments:
            segment.delete()
        segment = new_segment(self._dir, self._config, offset, self._now_ms)
        segment.resize_indexes(self._config.segment_index_bytes)
        self._segments = [segment]
        self._base_offsets = [offset]
        self._log_end_offset = self._log_start_offset = offset
        self._high_watermark = self._recovery_point = offset
        self.producer_state.delete_snapshots(lambda _: True)
        self._unflushed_snapshots.clear()
        self.producer_state.truncate_and_reset(offset)
        if self.leader_epoch_cache is not None:
            self.leader_epoch_cache.clear()  # Kafka's clearAndFlush
            self._write_epoch_checkpoint()

    def maybe_increment_log_start_offset(self, offset: int) -> bool:
        """Move ``log_start_offset`` up to ``offset`` <= high watermark (DeleteRecords)."""
        self._check_open()
        if offset > self._high_watermark:
            raise KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"cannot move the log start offset to {offset} past the high watermark "
                f"{self._high_watermark}",
            )
        if offset <= self._log_start_offset:
            return False
        self._log_start_offset = offset
        self._truncate_epochs_from_start()
        return True

    def _truncate_epochs_from_start(self) -> None:
        """Kafka's ``truncateFromStart(logStartOffset)`` when the log start offset moved."""
        cache = self.leader_epoch_cache
        if cache is not None and cache.truncate_from_start(self._log_start_offset):
            self._write_epoch_checkpoint()

    def delete_old_segments(self, now_ms: int) -> int:
        """Apply retention now and delete the files inline; returns the number deleted."""
        removed = self.remove_old_segments(now_ms)
        for segment in removed:
            segment.delete()
        return len(removed)

    def remove_old_segments(self, now_ms: int) -> list[LogSegment]:
        """Kafka's retention: segments below the log start offset and, with the delete
        policy, past ``retention.ms``/``retention.bytes``; never one holding offsets at or
        above the high watermark. The log start offset moves to the first segment left.
        The removed segments are closed and their files renamed ``*.deleted``; the caller
        deletes them (``LogSegment.delete``), from a worker thread if it likes."""
        self._check_open()
        self._now_ms = now_ms
        deleted = self._delete_segments(self._below_log_start_offset, now_ms)
        if not self._config.delete_enabled:
            return deleted
        retention_ms = self._config.retention_ms
        if retention_ms >= 0:
            deleted += self._delete_segments(
                lambda s, _: now_ms - s.largest_timestamp > retention_ms, now_ms
            )
        if self._config.retention_bytes >= 0:
            excess = [self.size_in_bytes - self._config.retention_bytes]

            def over_size(segment: LogSegment, _: int | None) -> bool:
                if excess[0] - segment.size < 0:
                    return False
                excess[0] -= segment.size
                return True

            deleted += self._delete_segments(over_size, now_ms)
        return deleted

    def _below_log_start_offset(self, _: LogSegment, upper_bound: int | None) -> bool:
        return upper_bound is not None and upper_bound <= self._log_start_offset

    def _delete_segments(
        self, predicate: Callable[[LogSegment, int | None], bool], now_ms: int
    ) -> list[LogSegment]:
        deletable: list[LogSegment] = []
        last = len(self._segments) - 1
        for i, segment in enumerate(self._segments):
            upper_bound = self._base_offsets[i + 1] if i < last else self._log_end_offset
            if i == last and segment.size == 0:
                break
            if self._high_watermark < upper_bound or not predicate(segment, upper_bound):
                break
            deletable.append(segment)
        if not deletable:
            return []
        if len(deletable) == len(self._segments):
            self._roll(self._log_end_offset, now_ms)
        del self._segments[: len(deletable)]
        del self._base_offsets[: len(deletable)]
        for segment in deletable:
            segment.mark_for_deletion()
        self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
        self._high_watermark = max(self._high_watermark, self._log_start_offset)
        self._recovery_point = max(self._recovery_point, self._log_start_offset)
        first_kept = self._base_offsets[0]
        self.producer_state.delete_snapshots(lambda offset: offset < first_kept)
        self._truncate_epochs_from_start()
        return deletable

    def remove_expired_producers(self, now_ms: int) -> int:
        """Forget producers idle for ``producer.id.expiration.ms``; return how many."""
        return self.producer_state.remove_expired_producers(now_ms)

    def replace_segments(self, cleaned: LogSegment, old: Sequence[LogSegment]) -> None:
        """Kafka's ``replaceSegments``: ``cleaned`` (``*.cleaned``, fsynced) becomes
        ``*.swap``, the consecutive non-active ``old`` become ``*.deleted`` (the caller
        deletes them), then ``cleaned`` takes the live names; ``LogLoader`` finishes a swap
        a crash cut short. ValueError, nothing changed, if ``old`` left the log."""
        self._check_open()
        first = next((i for i, s in enumerate(self._segments) if s is old[0]), -1)
        end = first + len(old)
        if (
            first < 0
            or end >= len(self._segments)
            or any(a is not b for a, b in zip(self._segments[first:end], old, strict=True))
            or cleaned.base_offset != old[0].base_offset
        ):
            raise ValueError(f"segments to replace are no longer in {self._dir}")
        cleaned.change_file_suffixes(CLEANED_FILE_SUFFIX, SWAP_FILE_SUFFIX)
        for segment in old:
            segment.mark_for_deletion()
        cleaned.change_file_suffixes(SWAP_FILE_SUFFIX, "")
        cleaned.index_interval_bytes = self._config.index_interval_bytes
        self._segments[first:end] = [cleaned]
        self._base_offsets[first:end] = [cleaned.base_offset]

    # -- flush and lifecycle ------------------------------------------------------------

    def flush(self, now_ms: int | None = None) -> None:
        """fsync, on this thread, every segment holding offsets >= the recovery point."""
        snapshot = self.flush_snapshot()
        now_ms = self._now_ms if now_ms is None else now_ms
        if snapshot is not None:
            snapshot.fsync()
            self.complete_flush(snapshot, now_ms)
        self._last_flush_ms = now_ms

    def flush_if_due(self, now_ms: int) -> bool:
        """Flush when ``flush.ms`` has passed since the last flush (Kafka's log flusher)."""
        if not self.flush_due(now_ms):
            return False
        self.flush(now_ms)
        return True

    def flush_due(self, now_ms: int) -> bool:
        """``flush.ms`` elapsed or ``flush.messages`` reached, with something to flush."""
        if self._closed:
            return False
        if self.epoch_checkpoint_dirty:
            return True
        if self._log_end_offset <= self._recovery_point:
            return False
        return self.flush_needed or now_ms - self._last_flush_ms >= self._config.flush_ms

    def flush_snapshot(self, up_to: int | None = None) -> FlushSnapshot | None:
        """Handles to fsync everything below ``up_to`` (default ``log_end_offset``) off this
        thread (then ``complete_flush``), with the leader epoch checkpoint if it changed and
        the producer snapshots rolls wrote unsynced; None when all that is flushed already.
        ``up_to`` a segment's base offset flushes only the segments before it (Kafka's
        ``flushUptoOffsetExclusive`` after a roll)."""
        self._check_open()
        end = self._log_end_offset if up_to is None else min(up_to, self._log_end_offset)
        cache = self.leader_epoch_cache
        epoch_checkpoint = None
        if cache is not None and cache.dirty:
            version, entries = cache.checkpoint_snapshot()
            epoch_checkpoint = (cache.checkpoint_path, version, entries)
        snapshots = list(self._unflushed_snapshots)
        if end <= self._recovery_point:
            if epoch_checkpoint is None and not snapshots:
                return None
            return FlushSnapshot(end, self._truncations, [], epoch_checkpoint, snapshots)
        handles = []
        last = len(self._segments) - 1
        for i, segment in enumerate(self._segments):
            if i < last and self._base_offsets[i + 1] <= self._recovery_point:
                continue
            if i > 0 and segment.base_offset >= end:
                break
            handles.append(segment.flush_handles())
        return FlushSnapshot(end, self._truncations, handles, epoch_checkpoint, snapshots)

    @property
    def epoch_checkpoint_dirty(self) -> bool:
        """The leader epoch cache changed since ``leader-epoch-checkpoint`` was written."""
        cache = self.leader_epoch_cache
        return not self._closed and cache is not None and cache.dirty

    @property
    def flush_files_pending(self) -> bool:
        """A flush round has files besides segments to make durable: a changed leader epoch
        checkpoint or producer snapshots written without fsync at roll."""
        return self.epoch_checkpoint_dirty or (not self._closed and bool(self._unflushed_snapshots))

    def complete_flush(self, snapshot: FlushSnapshot, now_ms: int) -> None:
        """Move the recovery point to what ``snapshot`` made durable; nothing if the log
        was truncated since (the offsets may now name other, unflushed, batches)."""
        if self._closed:
            return
        if snapshot.epoch_checkpoint is not None and self.leader_epoch_cache is not None:
            self.leader_epoch_cache.mark_written(snapshot.epoch_checkpoint[1])
        if snapshot.producer_snapshots:
            synced = set(snapshot.producer_snapshots)
            self._unflushed_snapshots = [p for p in self._unflushed_snapshots if p not in synced]
        if snapshot.truncations != self._truncations:
            return
        flushed = min(snapshot.log_end_offset, self._log_end_offset)
        self._recovery_point = max(self._recovery_point, flushed)
        self._last_flush_ms = now_ms

    def close(self) -> None:
        """Snapshot the producer state at the log end offset (Kafka's ``close``), close."""
        if self._closed:
            return
        self.producer_state.map_end_offset = self._log_end_offset
        try:
            self.producer_state.take_snapshot()
        except OSError:
            pass  # the directory is going away; the log replays the state next time
        if self.leader_epoch_cache is not None:
            try:
                self.leader_epoch_cache.flush()
            except OSError:
                pass  # as above: rebuilt from the batch headers next time
        for segment in self._segments:
            segment.close()
        self._closed = True

    def delete(self) -> None:
        """Delete every segment file and the directory."""
        for segment in self._segments:
            segment.delete()
        self._closed = True
        shutil.rmtree(self._dir, ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"log {self._dir} is closed")

    def __repr__(self) -> str:
        return (
            f"Log({self._dir.name}, log_start_offset={self._log_start_offset}, "
            f"log_end_offset={self._log_end_offset}, segments={len(self._segments)})"
        )


def _is_abort_marker(
    header: BatchHeader, data: bytes | bytearray | memoryview, position: int
) -> bool:
    batch = memoryview(data)[position : position + header.size_in_bytes]
    try:
        return end_txn_marker_type(batch) is EndTxnMarker.ABORT
    except KafkaError:
        return False  # a CRC-valid control batch whose record is not a marker
