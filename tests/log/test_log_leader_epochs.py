"""The partition Log's leader epoch cache: assignment on append, the checkpoint file, reload,
rebuild, truncation at both ends, off-loop flushing and ``end_offset_for_epoch``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pykbroker.log.leader_epoch_cache import (
    LEADER_EPOCH_CHECKPOINT_FILE,
    read_leader_epoch_checkpoint,
)
from pykbroker.log.log import Log, LogConfig
from pykbroker.log.log_tasks import FlushCoordinator
from pykbroker.log.record_batch import iter_batch_headers

from .support import all_records, make_batch, small_config


def open_log(path: Path, config: LogConfig | None = None, **kwargs: object) -> Log:
    return Log.open(path, config or small_config(), now_ms=0, **kwargs)  # type: ignore[arg-type]


def checkpoint(log_dir: Path) -> list[tuple[int, int]] | None:
    return read_leader_epoch_checkpoint(log_dir / LEADER_EPOCH_CHECKPOINT_FILE)


def dirty(log: Log) -> bool:
    """Whether the checkpoint waits for a write (a call, so mypy does not narrow it)."""
    return log.epoch_checkpoint_dirty


def lead(log: Log, epochs: list[int], per_batch: int = 2) -> None:
    """One leader batch of ``per_batch`` records per epoch listed."""
    for i, epoch in enumerate(epochs):
        log.append_as_leader(make_batch(per_batch, tag=f"e{epoch}-{i}-"), epoch, now_ms=0)


def leader_bytes(tmp_path: Path, epochs: list[int], name: str = "leader-0") -> bytes:
    """Batches as a leader stores them (offsets and epochs stamped) to replicate."""
    leader = open_log(tmp_path / name)
    lead(leader, epochs)
    data = leader.read(0, 1 << 20)
    leader.close()
    return data


# --- assignment --------------------------------------------------------------------------------


def test_leader_appends_start_an_entry_only_for_a_greater_epoch(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    lead(log, [0, 0, 3, 3, 3, 7])
    assert log.leader_epoch_cache is not None
    assert log.leader_epoch_cache.entries == [(0, 0), (3, 4), (7, 10)]
    stamped = [h.partition_leader_epoch for _, h in iter_batch_headers(log.read(0, 1 << 20))]
    assert stamped[:2] == [0, 0]
    # written at once (inline flushing), in Kafka's format
    assert (tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT_FILE).read_bytes() == (
        b"0\n3\n0 0\n3 4\n7 10\n"
    )
    log.close()


def test_a_new_empty_log_writes_no_checkpoint(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    assert not (tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT_FILE).exists()
    assert log.end_offset_for_epoch(0) == (-1, -1)
    log.close()


def test_appends_without_an_epoch_assign_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append_as_leader(make_batch(2), -1, now_ms=0)
    assert log.leader_epoch_cache is not None
    assert len(log.leader_epoch_cache) == 0
    lead(log, [2])
    assert log.leader_epoch_cache.entries == [(2, 2)]
    log.close()


def test_duplicate_batches_assign_nothing(tmp_path: Path) -> None:
    from pykbroker.log.record_batch import Record, build_batch

    log = open_log(tmp_path / "t-0")
    batch = build_batch(
        [Record(key=None, value=b"x", timestamp=1)],
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
    )
    log.append_as_leader(batch, 1, now_ms=0)
    log.append_as_leader(batch, 2, now_ms=0)  # a retry, answered with the first offsets
    assert log.leader_epoch_cache is not None
    assert log.leader_epoch_cache.entries == [(1, 0)]
    log.close()


def test_follower_appends_keep_the_leaders_epochs(tmp_path: Path) -> None:
    data = leader_bytes(tmp_path, [1, 1, 4, 6])
    follower = open_log(tmp_path / "follower-0")
    follower.append_as_follower(data, now_ms=0)
    assert follower.leader_epoch_cache is not None
    assert follower.leader_epoch_cache.entries == [(1, 0), (4, 4), (6, 6)]
    assert checkpoint(tmp_path / "follower-0") == [(1, 0), (4, 4), (6, 6)]
    follower.close()


def test_a_follower_copying_a_lower_epoch_drops_the_contradicted_entries(tmp_path: Path) -> None:
    follower = open_log(tmp_path / "follower-0")
    lead(follower, [1, 5])  # it led epoch 5 at offset 2 (never committed)
    follower.truncate_to(2)
    follower.append_as_follower(leader_bytes(tmp_path, [1, 3])[_second_batch(tmp_path) :], 0)
    assert follower.leader_epoch_cache is not None
    assert follower.leader_epoch_cache.entries == [(1, 0), (3, 2)]
    follower.close()


def _second_batch(tmp_path: Path) -> int:
    """Byte position of the second batch in ``leader_bytes(tmp_path, [1, 3])``."""
    data = leader_bytes(tmp_path, [1, 3], name="probe-0")
    positions = [position for position, _ in iter_batch_headers(data)]
    return positions[1]


# --- reload and rebuild --------------------------------------------------------------------


def test_reopen_loads_the_checkpoint(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    lead(log, [0, 2, 2, 5])
    log.close()
    again = open_log(tmp_path / "t-0", recover=False)
    assert again.leader_epoch_cache is not None
    assert again.leader_epoch_cache.entries == [(0, 0), (2, 2), (5, 6)]
    assert again.end_offset_for_epoch(2) == (2, 6)
    again.close()


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated"])
def test_a_missing_or_malformed_checkpoint_is_rebuilt_from_batch_headers(
    tmp_path: Path, damage: str
) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir)
    lead(log, [0, 0, 2, 9, 9, 9, 11] * 1, per_batch=20)  # several segments
    assert len(log.segments) > 2
    log.close()
    path = log_dir / LEADER_EPOCH_CHECKPOINT_FILE
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(b"garbage\n\x00\x01")
    else:
        path.write_text("0\n4\n0 0\n")
    again = open_log(log_dir, recover=False)
    expected = [(0, 0), (2, 40), (9, 60), (11, 120)]
    assert again.leader_epoch_cache is not None
    assert again.leader_epoch_cache.entries == expected
    assert checkpoint(log_dir) == expected  # rewritten at once
    again.close()


def test_an_unclean_shutdown_completes_the_checkpoint_from_the_recovered_tail(
    tmp_path: Path,
) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir)
    lead(log, [1, 1])
    log.flush()
    lead(log, [2, 3])
    log.close()
    (log_dir / LEADER_EPOCH_CHECKPOINT_FILE).write_text("0\n1\n1 0\n")  # as if lost in a crash
    again = open_log(log_dir, recover=True, recovery_point=4)
    assert again.leader_epoch_cache is not None
    assert again.leader_epoch_cache.entries == [(1, 0), (2, 4), (3, 6)]
    assert checkpoint(log_dir) == [(1, 0), (2, 4), (3, 6)]
    again.close()


def test_entries_past_a_torn_tail_are_dropped_on_open(tmp_path: Path) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir, small_config(segment_bytes=1 << 20))
    lead(log, [1, 2, 4])
    log.close()
    (segment,) = log_dir.glob("*.log")
    segment.write_bytes(segment.read_bytes()[:-5])  # the epoch-4 batch is torn
    again = open_log(log_dir, small_config(segment_bytes=1 << 20), recover=True)
    assert again.log_end_offset == 4
    assert again.leader_epoch_cache is not None
    assert again.leader_epoch_cache.entries == [(1, 0), (2, 2)]
    assert again.end_offset_for_epoch(4) == (-1, -1)
    assert again.end_offset_for_epoch(2) == (2, 4)
    again.close()


def test_the_metadata_log_opens_a_log_without_a_cache(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", with_leader_epoch_cache=False)
    lead(log, [3])
    assert log.leader_epoch_cache is None
    assert log.end_offset_for_epoch(3) == (-1, -1)
    assert not (tmp_path / "t-0" / LEADER_EPOCH_CHECKPOINT_FILE).exists()
    log.close()


# --- truncation -------------------------------------------------------------------------------


def test_truncate_to_truncates_the_cache_from_the_end(tmp_path: Path) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir)
    lead(log, [1, 2, 2, 4, 5])  # (1,0) (2,2) (4,6) (5,8)
    log.truncate_to(6)
    assert log.leader_epoch_cache is not None
    assert log.leader_epoch_cache.entries == [(1, 0), (2, 2)]
    assert checkpoint(log_dir) == [(1, 0), (2, 2)]
    log.truncate_to(3)  # inside the epoch-2 batch at 2: the whole batch goes
    assert log.log_end_offset == 2
    assert log.leader_epoch_cache.entries == [(1, 0)]
    lead(log, [7])
    assert checkpoint(log_dir) == [(1, 0), (7, 2)]
    log.close()


def test_truncate_fully_clears_the_cache(tmp_path: Path) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir)
    lead(log, [1, 2])
    log.truncate_fully_and_start_at(50)
    assert log.leader_epoch_cache is not None
    assert len(log.leader_epoch_cache) == 0
    assert (log_dir / LEADER_EPOCH_CHECKPOINT_FILE).read_text() == "0\n0\n"
    lead(log, [3])
    assert checkpoint(log_dir) == [(3, 50)]
    log.close()


def test_delete_records_truncates_the_cache_from_the_start(tmp_path: Path) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir)
    lead(log, [1, 2, 2, 4])  # (1,0) (2,2) (4,6)
    log.high_watermark = log.log_end_offset
    assert log.maybe_increment_log_start_offset(3)
    assert log.leader_epoch_cache is not None
    assert log.leader_epoch_cache.entries == [(2, 3), (4, 6)]
    assert checkpoint(log_dir) == [(2, 3), (4, 6)]
    assert log.end_offset_for_epoch(1) == (1, 3)  # below the first epoch: Kafka's answer
    assert log.maybe_increment_log_start_offset(8)  # everything: the latest epoch stays
    assert log.leader_epoch_cache.entries == [(4, 8)]
    assert log.end_offset_for_epoch(4) == (4, 8)
    log.close()
    again = open_log(log_dir, recover=False, log_start_offset=8)
    assert again.leader_epoch_cache is not None
    # Kafka's LogLoader truncates from the end at the log end offset first: an empty log
    # keeps no epoch across a restart
    assert again.leader_epoch_cache.entries == []
    assert again.end_offset_for_epoch(4) == (-1, -1)
    again.close()


def test_retention_truncates_the_cache_from_the_start(tmp_path: Path) -> None:
    log_dir = tmp_path / "t-0"
    config = small_config(retention_bytes=1500)
    log = open_log(log_dir, config)
    lead(log, [1] * 6 + [2] * 6, per_batch=10)
    log.high_watermark = log.log_end_offset
    assert log.delete_old_segments(now_ms=0) > 0
    start = log.log_start_offset
    assert start > 0
    assert log.leader_epoch_cache is not None
    first = log.leader_epoch_cache.entries[0]
    assert first.start_offset == start
    assert checkpoint(log_dir) == list(log.leader_epoch_cache.entries)
    log.close()


# --- end_offset_for_epoch ----------------------------------------------------------------------


def test_end_offset_for_epoch(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    lead(log, [1, 3, 3, 6])  # (1,0) (3,2) (6,6), log end offset 8
    assert log.end_offset_for_epoch(6) == (6, 8)  # the latest: the log end offset
    assert log.end_offset_for_epoch(3) == (3, 6)
    assert log.end_offset_for_epoch(4) == (3, 6)  # unknown: the greatest epoch below
    assert log.end_offset_for_epoch(2) == (1, 2)
    assert log.end_offset_for_epoch(0) == (0, 0)  # below the first
    assert log.end_offset_for_epoch(7) == (-1, -1)  # above the latest
    assert log.end_offset_for_epoch(-1) == (-1, -1)  # UNDEFINED_EPOCH
    assert log.end_offset_for_epoch(2**31 - 1) == (-1, -1)
    lead(log, [6])
    assert log.end_offset_for_epoch(6) == (6, 10)
    log.close()


# --- off-loop flushing ----------------------------------------------------------------------


def test_without_inline_flush_changes_are_fsynced_by_the_flush_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir)
    log.inline_flush = False
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    lead(log, [1, 2])
    # replaced at once in the page cache (a process crash keeps it), nothing fsynced
    assert checkpoint(log_dir) == [(1, 0), (2, 2)]
    assert fsyncs == []
    assert dirty(log)
    assert log.flush_due(now_ms=0)
    snapshot = log.flush_snapshot()
    assert snapshot is not None
    assert snapshot.epoch_checkpoint is not None
    snapshot.fsync()  # a worker thread's part
    log.complete_flush(snapshot, now_ms=0)
    assert fsyncs
    assert checkpoint(log_dir) == [(1, 0), (2, 2)]
    assert not dirty(log)
    # only the cache changed (a log start move): a flush round for the checkpoint alone
    log.high_watermark = log.log_end_offset
    log.maybe_increment_log_start_offset(1)
    assert checkpoint(log_dir) == [(1, 1), (2, 2)]
    snapshot = log.flush_snapshot()
    assert snapshot is not None
    assert snapshot.handles == []
    snapshot.fsync()
    log.complete_flush(snapshot, now_ms=0)
    assert not dirty(log)
    assert log.flush_snapshot() is None
    log.close()


async def test_the_flush_coordinator_writes_the_checkpoint_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir, small_config(flush_messages=1))
    log.inline_flush = False
    fsync_threads: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        fsync_threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    lead(log, [4])
    await FlushCoordinator().flush_if_needed(log, log.log_end_offset)
    assert checkpoint(log_dir) == [(4, 0)]
    assert fsync_threads
    assert threading.get_ident() not in fsync_threads
    # a truncation alone still gets written by the next round
    log.truncate_to(0)
    await FlushCoordinator().flush_up_to(log, log.log_end_offset)
    assert checkpoint(log_dir) == []
    assert threading.get_ident() not in fsync_threads
    log.close()


def test_a_process_crash_after_a_follower_truncation_keeps_the_new_epochs(tmp_path: Path) -> None:
    log_dir = tmp_path / "follower-0"
    log = open_log(log_dir)
    log.inline_flush = False  # as under LogManager's flush task
    lead(log, [1, 2, 2])  # (1,0) (2,2); it led epoch 2, then lost leadership
    log.truncate_to(2)  # diverged at 2
    log.append_as_follower(leader_bytes(tmp_path, [1, 3])[_second_batch(tmp_path) :], 0)
    # kill -9 now: nothing fsynced, the page cache (files) survives; the recovery point
    # checkpoint is stale (past the truncation)
    again = open_log(log_dir, recover=True, recovery_point=6)
    assert again.log_end_offset == 4
    assert again.leader_epoch_cache is not None
    assert again.leader_epoch_cache.entries == [(1, 0), (3, 2)]
    assert again.end_offset_for_epoch(2) == (1, 2)
    again.close()


def test_close_writes_a_pending_checkpoint(tmp_path: Path) -> None:
    log_dir = tmp_path / "t-0"
    log = open_log(log_dir)
    log.inline_flush = False
    lead(log, [3, 8])
    log.close()
    assert checkpoint(log_dir) == [(3, 0), (8, 2)]
    again = open_log(log_dir, recover=False)
    assert [r.offset for r in all_records(again)] == [0, 1, 2, 3]
    again.close()
