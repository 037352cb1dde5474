"""Loading a partition directory into segments, after Kafka's ``LogLoader``.

Mirrors ``org.apache.kafka.storage.internals.log.LogLoader``: finish a segment swap the
cleaner left half done (a ``*.log.swap`` file replaces the segments it overlaps), list
the ``.log`` files, drop stray (``.cleaned``, ``.deleted``, ``.tmp``) and orphaned files,
sanity-check every segment's indexes (rebuilding those that fail), recover the segments
that may hold unflushed data after an unclean shutdown, and settle the log start offset.
A recovered segment's ``.txnindex`` is rebuilt from its markers with the producer state
at the segment's start (newest producer snapshot at or below it, then the batch headers
from there), as Kafka's ``recoverSegment`` does; a swapped-in cleaned segment keeps the
``.txnindex`` the cleaner wrote.

Invariant: the returned segments are sorted by base offset, each passed its sanity
check or was recovered, and none follows a segment whose unflushed tail was torn
(those are deleted, as Kafka does). There is always at least one segment.
"""

from __future__ import annotations

import os
from pathlib import Path

from pykbroker.api.protocol.errors import KafkaError
from pykbroker.log.index import CorruptIndexError
from pykbroker.log.log_config import LogConfig
from pykbroker.log.producer_state import (
    ProducerStateManager,
    read_snapshot,
    replay_segments,
    snapshot_file,
)
from pykbroker.log.segment import (
    INDEX_FILE_SUFFIX,
    LOG_FILE_SUFFIX,
    SWAP_FILE_SUFFIX,
    TIME_INDEX_FILE_SUFFIX,
    TXN_INDEX_FILE_SUFFIX,
    LogSegment,
    log_file,
)

__all__ = ["load_segments", "new_segment"]

_STRAY_SUFFIXES = (".deleted", ".cleaned", ".swap", ".tmp")
_SEGMENT_FILE_SUFFIXES = (
    LOG_FILE_SUFFIX,
    INDEX_FILE_SUFFIX,
    TIME_INDEX_FILE_SUFFIX,
    TXN_INDEX_FILE_SUFFIX,
)


def new_segment(log_dir: Path, config: LogConfig, base_offset: int, now_ms: int) -> LogSegment:
    """A fresh empty segment at ``base_offset`` (leftover files of that name are removed)."""
    path = log_file(log_dir, base_offset)
    for suffix in _SEGMENT_FILE_SUFFIXES:
        path.with_suffix(suffix).unlink(missing_ok=True)
    return LogSegment(
        log_dir,
        base_offset,
        index_interval_bytes=config.index_interval_bytes,
        max_index_size=config.segment_index_bytes,
        created_ms=now_ms,
    )


def load_segments(
    log_dir: Path,
    config: LogConfig,
    *,
    recover: bool,
    recovery_point: int | None,
    log_start_offset: int | None,
    now_ms: int,
) -> tuple[list[LogSegment], int]:
    """The segments of ``log_dir`` (created if missing) and the log start offset.

    With ``recover`` the segments that may hold offsets >= ``recovery_point`` are
    recovered (only the last one when ``recovery_point`` is None).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    _complete_swaps(log_dir, config, now_ms)
    segments = [
        LogSegment(
            log_dir,
            base_offset,
            index_interval_bytes=config.index_interval_bytes,
            max_index_size=config.segment_index_bytes,
            created_ms=now_ms,
        )
        for base_offset in _base_offsets(log_dir)
    ]
    states = _ProducerStateAtSegment(log_dir, segments)
    for i, segment in enumerate(segments):
        unflushed = recover and (
            i == len(segments) - 1
            or (recovery_point is not None and segments[i + 1].base_offset > recovery_point)
        )
        if not unflushed:
            try:
                segment.sanity_check()
            except (CorruptIndexError, KafkaError):
                segment.recover(config.max_message_bytes, states.at(i))
            continue
        if segment.recover(config.max_message_bytes, states.at(i)) > 0:
            for later in segments[i + 1 :]:
                later.delete()
            del segments[i + 1 :]
            break
    start = segments[0].base_offset if segments else (log_start_offset or 0)
    if log_start_offset is not None:
        start = max(start, log_start_offset)
    if segments and start > segments[-1].next_offset:
        # The log lost (or never had) what its checkpointed start offset covers.
        for segment in segments:
            segment.delete()
        segments = []
    if not segments:
        segments = [new_segment(log_dir, config, start, now_ms)]
    return segments, start


class _ProducerStateAtSegment:
    """The producer state at the start of a segment being recovered, built once from the
    newest snapshot at or below it and moved forward through later segments (a recovered
    segment moves it itself, through ``LogSegment.recover``)."""

    def __init__(self, log_dir: Path, segments: list[LogSegment]) -> None:
        self._log_dir = log_dir
        self._segments = segments
        self._state: ProducerStateManager | None = None

    def at(self, index: int) -> ProducerStateManager:
        base_offset = self._segments[index].base_offset
        state = self._state
        if state is None or state.map_end_offset > base_offset:
            state = self._state = self._from_snapshot(base_offset)
        replay_segments(state, self._segments[:index], state.map_end_offset)
        return state

    def _from_snapshot(self, base_offset: int) -> ProducerStateManager:
        """Entries of the newest readable snapshot at or below ``base_offset`` (expired
        or not: only open transactions matter here), else empty at offset 0."""
        state = ProducerStateManager(self._log_dir)
        for offset in reversed(state.snapshot_offsets()):
            if offset > base_offset:
                continue
            try:
                entries = read_snapshot(snapshot_file(self._log_dir, offset))
            except (OSError, ValueError):
                continue  # Log's own load deletes it
            state.producers = {entry.producer_id: entry for entry in entries}
            state.map_end_offset = offset
            break
        return state


def _complete_swaps(log_dir: Path, config: LogConfig, now_ms: int) -> None:
    """Install each ``<base>.log.swap`` (a cleaned segment, fsynced before it was renamed
    ``.swap``) in place of the live segments whose base offsets it covers, as Kafka's
    ``LogLoader`` does; its indexes are rebuilt."""
    for swap in sorted(log_dir.glob("*" + LOG_FILE_SUFFIX + SWAP_FILE_SUFFIX)):
        stem = swap.name.partition(".")[0]
        if len(stem) != 20 or not stem.isdigit():
            continue
        base_offset = int(stem)
        for suffix in (INDEX_FILE_SUFFIX, TIME_INDEX_FILE_SUFFIX):  # the .txnindex stays
            (log_dir / (stem + suffix + SWAP_FILE_SUFFIX)).unlink(missing_ok=True)
        segment = LogSegment(
            log_dir,
            base_offset,
            index_interval_bytes=config.index_interval_bytes,
            max_index_size=config.segment_index_bytes,
            created_ms=now_ms,
            file_suffix=SWAP_FILE_SUFFIX,
        )
        segment.recover(config.max_message_bytes)
        covered_end = max(segment.next_offset, base_offset + 1)
        for live in log_dir.glob("*" + LOG_FILE_SUFFIX):
            live_stem = live.name[: -len(LOG_FILE_SUFFIX)]
            if live_stem.isdigit() and base_offset <= int(live_stem) < covered_end:
                _remove_segment_files(log_dir, live_stem)
        _remove_segment_files(log_dir, stem)
        segment.change_file_suffixes(SWAP_FILE_SUFFIX, "")
        segment.close()


def _remove_segment_files(log_dir: Path, stem: str) -> None:
    for suffix in _SEGMENT_FILE_SUFFIXES:
        (log_dir / (stem + suffix)).unlink(missing_ok=True)


def _base_offsets(log_dir: Path) -> list[int]:
    """Base offsets of the ``.log`` files; removes stray and orphaned index files."""
    base_offsets: set[int] = set()
    index_files: list[tuple[int, Path]] = []
    for entry in os.scandir(log_dir):
        name = entry.name
        if not entry.is_file():
            continue
        path = Path(entry.path)
        if name.endswith(_STRAY_SUFFIXES):
            path.unlink(missing_ok=True)
            continue
        stem, _, suffix = name.partition(".")
        if len(stem) != 20 or not stem.isdigit():
            continue
        if "." + suffix == LOG_FILE_SUFFIX:
            base_offsets.add(int(stem))
        elif "." + suffix in _SEGMENT_FILE_SUFFIXES:
            index_files.append((int(stem), path))
    for base_offset, path in index_files:
        if base_offset not in base_offsets:
            path.unlink(missing_ok=True)
    return sorted(base_offsets)
