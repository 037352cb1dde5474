"""Log compaction, after Kafka's ``LogCleaner``, ``Cleaner`` and ``LogCleanerManager``.

For logs whose ``cleanup.policy`` contains ``compact``, keep at least the latest record
of every key. One cleaning round, as Kafka's:

1. *Choose* (trio thread, ``LogCleaner.plan``): the dirty section of a log runs from its
   cleaner checkpoint (``cleaner-offset-checkpoint``, default the log start offset) to the
   first uncleanable offset: the active segment, the high watermark, the first dirty
   segment younger than ``min.compaction.lag.ms``, the first open transaction. The log
   with the largest dirty ratio (dirty bytes / cleanable bytes) at or above
   ``min.cleanable.dirty.ratio`` is cleaned, or any log whose first dirty record is older
   than ``max.compaction.lag.ms``.
2. *Clean* (worker thread, ``clean``): map each key of the dirty section to its last
   offset; rewrite every cleanable segment, in groups no larger than ``segment.bytes``,
   into ``*.cleaned`` segments keeping only records that are the latest for their key.
   Offsets are preserved; a batch that loses records is re-encoded with its own codec,
   base offset, lastOffsetDelta and producer fields (``record_batch.rebuild_batch``);
   an untouched batch is copied byte for byte. A cleaned segment keeps the ``.txnindex``
   entries of the segments it replaces (their ABORT markers all stay), as Kafka's cleaner
   re-indexes the aborted transactions whose markers it retains. Tombstones (null values)
   are kept until their batch's delete horizon (KIP-534): the first cleaning that keeps a
   tombstone sets the horizon to ``now + delete.retention.ms``; a later one drops them.
   Records without a key are dropped. Transactional records of aborted transactions
   (the producer's next control batch is an ABORT marker) are dropped and never enter
   the map; records of open transactions stop the round before them. Control batches
   are always kept. A batch left empty is kept (as an empty batch) when it is its
   producer's last batch in the log, so producer state survives, as Kafka does.
3. *Swap* (trio thread, ``Log.replace_segments``): each group's cleaned segment replaces
   its old segments if the log did not change them meanwhile; otherwise the round is
   dropped. The checkpoint then moves to the end of the cleaned section.

Invariant: the worker thread touches only duplicated file descriptors and the new
``*.cleaned`` segments it creates, never a live ``LogSegment``; everything it produces
is fsynced before the swap, and a crash at any point leaves either the old segments, or
a ``*.log.swap`` that ``LogLoader`` installs. Deviations: no I/O throttling
(``log.cleaner.io.max.bytes.per.second``), one cleaner (``log.cleaner.threads=1``), and
control batches are never removed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pykbroker.log import TopicPartition
from pykbroker.log.checkpoint import read_offset_checkpoint, write_offset_checkpoint
from pykbroker.log.log import Log
from pykbroker.log.log_config import MAX_LONG, LogConfig
from pykbroker.log.record_batch import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    EndTxnMarker,
    Record,
    decode_records,
    end_txn_marker_type,
    rebuild_batch,
    unpack_header,
)
from pykbroker.log.segment import (
    CLEANED_FILE_SUFFIX,
    MAX_RELATIVE_OFFSET,
    LogSegment,
    log_file,
    offset_index_file,
    time_index_file,
    txn_index_file,
)
from pykbroker.log.transaction_index import AbortedTxn

__all__ = [
    "CLEANER_OFFSET_CHECKPOINT_FILE",
    "CleanerStats",
    "CleaningPlan",
    "LogCleaner",
    "clean",
]

CLEANER_OFFSET_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
DEFAULT_DEDUPE_BUFFER_SIZE = 134_217_728  # log.cleaner.dedupe.buffer.size
_BYTES_PER_MAP_ENTRY = 128  # a Python dict entry with a small bytes key, measured roughly
_READ_CHUNK = 1024 * 1024
_WRITE_CHUNK = 1024 * 1024

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SegmentView:
    """A cleanable segment as the worker thread sees it: a duplicated descriptor."""

    segment: LogSegment  # identity only: never touched by the worker thread
    base_offset: int
    upper_bound: int  # the next segment's base offset
    size: int
    fd: int
    aborted_txns: list[AbortedTxn] = field(default_factory=list)  # its .txnindex entries


@dataclass(slots=True)
class CleaningPlan:
    """What one round cleans: ``segments`` (cleanable, from the log start) and ``tail``
    (the rest, scanned for transaction markers and producers' last batches)."""

    tp: TopicPartition
    log: Log
    config: LogConfig
    now_ms: int
    first_dirty_offset: int
    end_offset: int
    segments: list[SegmentView]
    tail: list[SegmentView]
    max_map_entries: int

    def close(self) -> None:
        for view in (*self.segments, *self.tail):
            if view.fd >= 0:
                os.close(view.fd)
                view.fd = -1


@dataclass(slots=True)
class CleanerStats:
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_removed: int = 0
    batches_rewritten: int = 0


@dataclass(slots=True)
class CleaningResult:
    end_offset: int
    groups: list[tuple[list[SegmentView], LogSegment]] = field(default_factory=list)
    stats: CleanerStats = field(default_factory=CleanerStats)

    def discard(self) -> None:
        """Delete the cleaned segments that were not swapped in."""
        for _, cleaned in self.groups:
            cleaned.delete()
        self.groups.clear()


class LogCleaner:
    """Chooses, cleans and swaps; ``log_tasks.cleaner_loop`` drives it."""

    def __init__(
        self,
        logs: Callable[[], dict[TopicPartition, Log]],
        *,
        dedupe_buffer_size: int = DEFAULT_DEDUPE_BUFFER_SIZE,
    ) -> None:
        """``logs`` lists the logs to consider (``LogManager.retained_logs``)."""
        self._logs = logs
        self.max_map_entries = max(1, dedupe_buffer_size // _BYTES_PER_MAP_ENTRY)
        self._checkpoints: dict[Path, dict[TopicPartition, int]] = {}

    # -- checkpoints ------------------------------------------------------------------

    def _checkpoint_of(self, log_dir: Path) -> dict[TopicPartition, int]:
        if log_dir not in self._checkpoints:
            self._checkpoints[log_dir] = read_offset_checkpoint(
                log_dir / CLEANER_OFFSET_CHECKPOINT_FILE
            )
        return self._checkpoints[log_dir]

    def first_dirty_offset(self, tp: TopicPartition, log: Log) -> int:
        offset = self._checkpoint_of(log.dir.parent).get(tp, log.log_start_offset)
        if offset < log.log_start_offset or offset > log.log_end_offset:
            return log.log_start_offset  # a truncated or deleted-and-recreated log
        return offset

    def checkpoint_snapshot(self, log_dir: Path) -> tuple[Path, dict[TopicPartition, int]]:
        live = {tp for tp, log in self._logs().items() if log.dir.parent == log_dir}
        offsets = {tp: o for tp, o in self._checkpoint_of(log_dir).items() if tp in live}
        return log_dir / CLEANER_OFFSET_CHECKPOINT_FILE, offsets

    # -- phase 1: choose ----------------------------------------------------------------

    def plan(self, now_ms: int) -> CleaningPlan | None:
        """The filthiest cleanable log's round, or None (trio thread)."""
        best: tuple[tuple[bool, float], TopicPartition, Log, int, int] | None = None
        for tp, log in self._logs().items():
            if log.is_closed or not log.config.compact_enabled:
                continue
            first_dirty = self.first_dirty_offset(tp, log)
            end, clean_bytes, dirty_bytes, overdue = _cleanable_range(log, first_dirty, now_ms)
            if dirty_bytes <= 0:
                continue
            ratio = dirty_bytes / (clean_bytes + dirty_bytes)
            if not overdue and ratio < log.config.min_cleanable_dirty_ratio:
                continue
            if best is None or (overdue, ratio) > best[0]:
                best = ((overdue, ratio), tp, log, first_dirty, end)
        if best is None:
            return None
        _, tp, log, first_dirty, end = best
        return self.plan_for(tp, log, first_dirty, end, now_ms)

    def plan_for(
        self, tp: TopicPartition, log: Log, first_dirty: int, end: int, now_ms: int
    ) -> CleaningPlan:
        segments = list(log.segments)
        plan = CleaningPlan(
            tp, log, log.config, now_ms, first_dirty, end, [], [], self.max_map_entries
        )
        try:
            for i, segment in enumerate(segments):
                last = i + 1 == len(segments)
                upper = log.log_end_offset if last else segments[i + 1].base_offset
                view = SegmentView(
                    segment,
                    segment.base_offset,
                    upper,
                    segment.size,
                    -1,
                    segment.txn_index.all_aborted_txns(),
                )
                view.fd = os.dup(segment.fd)
                (plan.segments if upper <= end else plan.tail).append(view)
        except BaseException:
            plan.close()
            raise
        return plan

    # -- phase 3: swap ------------------------------------------------------------------

    def install(self, plan: CleaningPlan, result: CleaningResult) -> list[LogSegment]:
        """Swap the cleaned groups in (trio thread); the replaced segments are returned
        for the caller to delete. A changed log drops the rest of the round."""
        replaced: list[LogSegment] = []
        log = plan.log
        while result.groups:
            views, cleaned = result.groups[0]
            if log.is_closed or any(v.segment.size != v.size for v in views):
                break
            try:
                log.replace_segments(cleaned, [v.segment for v in views])
            except ValueError:
                break
            result.groups.pop(0)
            replaced.extend(v.segment for v in views)
        if result.groups:
            logger.info("log %s changed while being cleaned; round dropped", plan.tp)
            result.discard()
            return replaced
        self._checkpoint_of(log.dir.parent)[plan.tp] = result.end_offset
        return replaced

    def clean_now(self, now_ms: int) -> CleaningResult | None:
        """One whole round on this thread (tests, tools); None when nothing is due."""
        plan = self.plan(now_ms)
        if plan is None:
            return None
        try:
            result = clean(plan)
        finally:
            plan.close()
        for segment in self.install(plan, result):
            segment.delete()
        path, offsets = self.checkpoint_snapshot(plan.log.dir.parent)
        write_offset_checkpoint(path, offsets)
        return result


def _cleanable_range(log: Log, first_dirty: int, now_ms: int) -> tuple[int, int, int, bool]:
    """(first uncleanable offset, clean bytes, dirty bytes, past max.compaction.lag.ms)."""
    config = log.config
    segments = log.segments
    end = segments[-1].base_offset  # the active segment is never cleaned
    clean_bytes = dirty_bytes = 0
    overdue = False
    for i, segment in enumerate(segments[:-1]):
        upper = segments[i + 1].base_offset
        if upper > log.high_watermark:
            end = segment.base_offset
            break
        if upper <= first_dirty:
            clean_bytes += segment.size
            continue
        if config.min_compaction_lag_ms > 0 and (
            segment.largest_timestamp > now_ms - config.min_compaction_lag_ms
        ):
            end = segment.base_offset
            break
        if not dirty_bytes and config.max_compaction_lag_ms < MAX_LONG:
            first_timestamp = segment.rolling_based_timestamp
            overdue = first_timestamp is not None and (
                0 <= first_timestamp < now_ms - config.max_compaction_lag_ms
            )
        dirty_bytes += segment.size
    return end, clean_bytes, dirty_bytes, overdue


# -- phase 2: clean (worker thread) -------------------------------------------------------


def _iter_batches(view: SegmentView) -> Iterator[tuple[BatchHeader, bytes]]:
    """Whole batches of a segment read through its duplicated descriptor."""
    position = 0
    chunk = b""
    chunk_start = 0
    while view.size - position >= BATCH_HEADER_SIZE:
        offset_in_chunk = position - chunk_start
        if offset_in_chunk + BATCH_HEADER_SIZE > len(chunk):
            chunk = os.pread(view.fd, min(_READ_CHUNK, view.size - position), position)
            chunk_start, offset_in_chunk = position, 0
            if len(chunk) < BATCH_HEADER_SIZE:
                return  # truncated meanwhile: the swap will notice and drop the round
        header = unpack_header(chunk, offset_in_chunk)
        size = header.batch_length + LOG_OVERHEAD
        if size < BATCH_HEADER_SIZE or position + size > view.size:
            return
        if offset_in_chunk + size > len(chunk):
            chunk = os.pread(view.fd, max(size, min(_READ_CHUNK, view.size - position)), position)
            chunk_start, offset_in_chunk = position, 0
            if len(chunk) < size:
                return
        yield header, chunk[offset_in_chunk : offset_in_chunk + size]
        position += size


@dataclass(slots=True)
class _LogFacts:
    """What a header scan of the whole log tells the cleaner."""

    aborted: set[int] = field(default_factory=set)  # base offsets of aborted batches
    first_open_txn: int | None = None
    last_batch_of_producer: dict[int, int] = field(default_factory=dict)


def _scan_log(plan: CleaningPlan) -> _LogFacts:
    facts = _LogFacts()
    open_txns: dict[int, list[int]] = {}
    for view in (*plan.segments, *plan.tail):
        for header, batch in _iter_batches(view):
            pid = header.producer_id
            if pid < 0:
                continue
            facts.last_batch_of_producer[pid] = header.base_offset
            if not header.is_transactional:
                continue
            if not header.is_control:
                open_txns.setdefault(pid, []).append(header.base_offset)
                continue
            batches = open_txns.pop(pid, [])
            if end_txn_marker_type(batch) is EndTxnMarker.ABORT:
                facts.aborted.update(batches)
    starts = [offsets[0] for offsets in open_txns.values() if offsets]
    facts.first_open_txn = min(starts) if starts else None
    return facts


def _build_offset_map(
    plan: CleaningPlan, facts: _LogFacts, end: int, stats: CleanerStats
) -> tuple[dict[bytes, int], int]:
    """key -> last offset over the dirty section below ``end``; stops at a segment
    boundary when the map is full (Kafka's ``buildOffsetMap``). Returns the map and the
    offset the round may clean up to."""
    offset_map: dict[bytes, int] = {}
    for view in plan.segments:
        if view.upper_bound <= plan.first_dirty_offset:
            continue
        if view.upper_bound > end:
            break
        undo: list[tuple[bytes, int | None]] = []
        for header, batch in _iter_batches(view):
            stats.bytes_read += len(batch)
            if header.is_control or header.base_offset in facts.aborted:
                continue
            for record in decode_records(batch):
                if record.key is None or record.offset < plan.first_dirty_offset:
                    continue
                undo.append((record.key, offset_map.get(record.key)))
                offset_map[record.key] = record.offset
        if len(offset_map) > plan.max_map_entries and view.base_offset > plan.first_dirty_offset:
            for key, previous in reversed(undo):
                if previous is None:
                    offset_map.pop(key, None)
                else:
                    offset_map[key] = previous
            return offset_map, view.base_offset
    return offset_map, end


def _group_segments(views: list[SegmentView], config: LogConfig) -> list[list[SegmentView]]:
    """Consecutive segments whose sum fits one segment (Kafka's ``groupSegmentsBySize``)."""
    groups: list[list[SegmentView]] = []
    for view in views:
        current = groups[-1] if groups else None
        if (
            current is not None
            and sum(v.size for v in current) + view.size <= config.segment_bytes
            and view.upper_bound - 1 - current[0].base_offset <= MAX_RELATIVE_OFFSET
        ):
            current.append(view)
        else:
            groups.append([view])
    return groups


def _retained_batch(
    header: BatchHeader,
    batch: bytes,
    offset_map: dict[bytes, int],
    facts: _LogFacts,
    plan: CleaningPlan,
    stats: CleanerStats,
) -> bytes | None:
    """The batch as the cleaned log keeps it (maybe the same bytes), or None."""
    if header.is_control:
        return batch
    records = [] if header.base_offset in facts.aborted else decode_records(batch)
    stats.records_read += header.records_count
    horizon = header.base_timestamp if header.has_delete_horizon_ms else None
    kept: list[Record] = []
    for record in records:
        if record.key is None or offset_map.get(record.key, -1) > record.offset:
            continue
        if record.value is None and horizon is not None and plan.now_ms >= horizon:
            continue
        kept.append(record)
    stats.records_removed += header.records_count - len(kept)
    new_horizon = None
    if horizon is None and any(r.value is None for r in kept):
        new_horizon = plan.now_ms + plan.config.delete_retention_ms
    if kept and len(kept) == header.records_count and new_horizon is None:
        return batch
    if not kept and facts.last_batch_of_producer.get(header.producer_id) != header.base_offset:
        return None  # a producer's last batch stays, even empty, for its sequence state
    stats.batches_rewritten += 1
    return rebuild_batch(header, kept, delete_horizon_ms=new_horizon)


def _clean_group(
    group: list[SegmentView],
    offset_map: dict[bytes, int],
    facts: _LogFacts,
    plan: CleaningPlan,
    stats: CleanerStats,
) -> LogSegment:
    base_offset = group[0].base_offset
    for file_of in (log_file, offset_index_file, time_index_file, txn_index_file):
        stale = file_of(plan.log.dir, base_offset)
        stale.with_name(stale.name + CLEANED_FILE_SUFFIX).unlink(missing_ok=True)
    cleaned = LogSegment(
        plan.log.dir,
        base_offset,
        index_interval_bytes=plan.config.index_interval_bytes,
        max_index_size=plan.config.segment_index_bytes,
        created_ms=plan.now_ms,
        file_suffix=CLEANED_FILE_SUFFIX,
    )
    try:
        pending: list[bytes] = []
        pending_size = 0
        max_timestamp, offset_of_max, last_offset = -1, -1, base_offset
        for view in group:
            for header, batch in _iter_batches(view):
                kept = _retained_batch(header, batch, offset_map, facts, plan, stats)
                if kept is None:
                    continue
                pending.append(kept)
                pending_size += len(kept)
                last_offset = header.last_offset
                timestamp = unpack_header(kept).max_timestamp
                if timestamp > max_timestamp:
                    max_timestamp, offset_of_max = timestamp, last_offset
                if pending_size >= _WRITE_CHUNK:
                    cleaned.append(last_offset, b"".join(pending), max_timestamp, offset_of_max)
                    pending, pending_size = [], 0
        if pending:
            cleaned.append(last_offset, b"".join(pending), max_timestamp, offset_of_max)
        for view in group:
            for txn in view.aborted_txns:
                cleaned.txn_index.append(txn)
        stats.bytes_written += cleaned.size
        cleaned.on_become_inactive()
        fd, index_paths = cleaned.flush_handles()
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for path in index_paths:
            try:
                index_fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # no aborted transaction: no .txnindex
            try:
                os.fsync(index_fd)
            finally:
                os.close(index_fd)
    except BaseException:
        cleaned.delete()
        raise
    return cleaned


def clean(plan: CleaningPlan) -> CleaningResult:
    """Phase 2 of a round: write the cleaned segments (safe in a worker thread)."""
    facts = _scan_log(plan)
    end = plan.end_offset
    if facts.first_open_txn is not None:
        end = min(end, facts.first_open_txn)
    stats = CleanerStats()
    offset_map, end = _build_offset_map(plan, facts, end, stats)
    views = [v for v in plan.segments if v.upper_bound <= end]
    result = CleaningResult(end_offset=max(end, plan.first_dirty_offset), stats=stats)
    try:
        for group in _group_segments(views, plan.config):
            cleaned = _clean_group(group, offset_map, facts, plan, stats)
            result.groups.append((group, cleaned))
    except BaseException:
        result.discard()
        raise
    return result
