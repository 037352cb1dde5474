"""Background storage tasks: retention, group-commit flushing, checkpoints."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from pykbroker.log import TopicPartition
from pykbroker.log.checkpoint import read_offset_checkpoint
from pykbroker.log.log import Log
from pykbroker.log.log_manager import LogManager
from pykbroker.log.log_tasks import (
    FlushCoordinator,
    checkpoint_loop,
    flush_loop,
    retention_loop,
    run_retention,
)

from .support import all_records, make_batch, small_config

NOW = 1_700_000_000_000


def started_manager(path: Path, **config: object) -> LogManager:
    manager = LogManager([path], small_config(**{"segment_bytes": 400, **config}))
    manager.startup(now_ms=NOW)
    return manager


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5) -> None:
    """Wait (real time) until ``predicate`` holds: background work runs in threads."""
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 - the work happens in worker threads
            await trio.sleep(0.005)


def fill(log: Log, batches: int, timestamp: int) -> None:
    for i in range(batches):
        log.append_as_leader(make_batch(2, timestamp=timestamp + i), 0, now_ms=NOW)
    log.high_watermark = log.log_end_offset


async def test_retention_by_time_deletes_whole_segments_and_persists_the_start(
    tmp_path: Path,
) -> None:
    manager = started_manager(tmp_path, retention_ms=60_000)
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    fill(log, 12, timestamp=NOW - 120_000)  # expired
    expired_end = log.log_end_offset
    log.roll(now_ms=NOW)
    fill(log, 12, timestamp=NOW)
    files_before = {p.name for p in (tmp_path / "t-0").iterdir()}
    deleted = await run_retention(manager, NOW)
    assert deleted >= 2
    assert log.log_start_offset == expired_end == log.segments[0].base_offset
    files_after = {p.name for p in (tmp_path / "t-0").iterdir()}
    assert files_after < files_before
    assert not any(name.endswith(".deleted") for name in files_after)
    checkpoint = read_offset_checkpoint(tmp_path / "log-start-offset-checkpoint")
    assert checkpoint == {TopicPartition("t", 0): expired_end}
    assert all_records(log)[0].offset == expired_end
    assert await run_retention(manager, NOW) == 0
    manager.shutdown()
    again = started_manager(tmp_path, retention_ms=60_000)
    reloaded = again.get_log("t", 0)
    assert reloaded is not None
    assert reloaded.log_start_offset == expired_end
    again.shutdown()


async def test_retention_by_size_keeps_the_newest_segments(tmp_path: Path) -> None:
    manager = started_manager(tmp_path, retention_ms=-1, retention_bytes=1_000)
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    fill(log, 40, timestamp=NOW)
    await run_retention(manager, NOW)
    assert log.size_in_bytes - log.active_segment.size <= 1_000
    assert log.size_in_bytes > 1_000 - 400
    assert all_records(log)[-1].offset == log.log_end_offset - 1
    manager.shutdown()


async def test_delete_records_start_offset_is_applied_by_retention(tmp_path: Path) -> None:
    manager = started_manager(tmp_path, retention_ms=-1, cleanup_policy="compact")
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    fill(log, 20, timestamp=NOW)
    assert log.maybe_increment_log_start_offset(25)
    await run_retention(manager, NOW)  # compact only: just what is below the start
    assert log.segments[0].base_offset <= 25 < log.segments[0].next_offset
    assert log.log_start_offset == 25
    assert all_records(log)[0].offset == 25
    manager.shutdown()


async def test_the_metadata_log_is_exempt_from_retention(tmp_path: Path) -> None:
    manager = started_manager(tmp_path, retention_ms=1)
    metadata = manager.get_or_create_log("__cluster_metadata", 0, now_ms=NOW)
    fill(metadata, 12, timestamp=0)
    assert await run_retention(manager, NOW) == 0
    assert metadata.log_start_offset == 0
    manager.shutdown()


async def test_retention_loop_runs_every_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    manager = started_manager(tmp_path, retention_ms=60_000)
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    fill(log, 12, timestamp=NOW - 30_000)
    log.roll(now_ms=NOW)
    fill(log, 1, timestamp=NOW)
    now = [NOW]
    async with trio.open_nursery() as nursery:
        await nursery.start(retention_loop, manager, 300_000, lambda: now[0])
        await trio.sleep(301)
        assert log.log_start_offset == 0  # not expired yet
        now[0] += 60_000
        await trio.sleep(300)
        assert log.log_start_offset == 24
        nursery.cancel_scope.cancel()
    manager.shutdown()


async def test_group_commit_shares_fsyncs_between_concurrent_producers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = started_manager(tmp_path, flush_messages=1, segment_bytes=1 << 20)
    manager.inline_flush = False
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    assert not log.inline_flush
    fsync_threads: list[int] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        fsync_threads.append(threading.get_ident())
        real_fsync(fd)
        threading.Event().wait(0.01)  # a slow disk, so producers pile up

    monkeypatch.setattr(os, "fsync", slow_fsync)
    flusher = FlushCoordinator(clock=lambda: NOW)
    acknowledged: list[int] = []

    async def produce(i: int) -> None:
        await trio.sleep(i * 0.001)
        log.append_as_leader(make_batch(1, tag=f"p{i}-"), 0, now_ms=NOW)
        end = log.log_end_offset
        assert log.recovery_point < end  # nothing fsynced on the event loop
        await flusher.flush_if_needed(log, end)
        assert log.recovery_point >= end
        acknowledged.append(end)

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(produce, i)
    assert len(acknowledged) == 40
    assert log.recovery_point == 40
    assert flusher.fsync_rounds < 20  # 40 producers, far fewer fsync rounds
    assert threading.get_ident() not in fsync_threads
    await flusher.flush_if_needed(log, 40)  # already durable: no new round
    assert not FlushCoordinator.must_wait(log, 40)
    manager.shutdown()


async def test_flush_messages_above_one_waits_only_at_the_threshold(tmp_path: Path) -> None:
    manager = started_manager(tmp_path, flush_messages=10, segment_bytes=1 << 20)
    manager.inline_flush = False
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    flusher = FlushCoordinator()
    fill(log, 4, timestamp=NOW)  # 8 messages
    assert not FlushCoordinator.must_wait(log, log.log_end_offset)
    fill(log, 1, timestamp=NOW)
    assert FlushCoordinator.must_wait(log, log.log_end_offset)
    await flusher.flush_appended([(log, log.log_end_offset)])
    assert log.recovery_point == 10
    manager.shutdown()


async def test_flush_loop_flushes_rolled_segments_and_flush_ms(tmp_path: Path) -> None:
    manager = started_manager(tmp_path, flush_ms=5_000)
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    now = [NOW]
    flusher = FlushCoordinator(clock=lambda: now[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(flush_loop, manager, flusher, 10, lambda: now[0])
        assert not manager.inline_flush
        fill(log, 12, timestamp=NOW)  # rolls segments
        await eventually(lambda: log.recovery_point >= log.active_segment.base_offset > 0)
        log.append_as_leader(make_batch(1), 0, now_ms=NOW)
        await trio.sleep(0.05)
        assert log.recovery_point < log.log_end_offset  # flush.ms not reached
        now[0] += 5_000
        await eventually(lambda: log.recovery_point == log.log_end_offset)
        nursery.cancel_scope.cancel()
    assert all(log.inline_flush for log in manager.all_logs().values())  # restored
    manager.shutdown()


async def test_rolls_never_fsync_on_the_event_loop_and_snapshots_are_synced_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default flush policy: a roll writes the producer snapshot unsynced (Kafka's
    ``takeSnapshot(false)``); the flush loop fsyncs it, and the rolled segment, off-loop."""
    manager = started_manager(tmp_path)
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    trio_thread = threading.get_ident()
    fsynced: list[tuple[int, str]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        fsynced.append((threading.get_ident(), os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    flusher = FlushCoordinator(clock=lambda: NOW)
    async with trio.open_nursery() as nursery:
        await nursery.start(flush_loop, manager, flusher, 10, lambda: NOW)
        fill(log, 12, timestamp=NOW)  # 400-byte segments: several rolls
        assert len(log.segments) > 2
        assert log.flush_files_pending  # snapshots written, not yet fsynced
        assert not [path for thread, path in fsynced if thread == trio_thread]
        snapshots = {str(p) for p in (tmp_path / "t-0").glob("*.snapshot")}
        assert len(snapshots) >= len(log.segments) - 1
        await eventually(lambda: not log.flush_files_pending)
        await eventually(lambda: log.recovery_point >= log.active_segment.base_offset)
        nursery.cancel_scope.cancel()
    assert not [path for thread, path in fsynced if thread == trio_thread]
    assert snapshots <= {path for _, path in fsynced}  # each snapshot fsynced off-loop
    manager.shutdown()


async def test_checkpoint_loop_writes_both_checkpoints_on_schedule(tmp_path: Path) -> None:
    manager = started_manager(tmp_path)
    log = manager.get_or_create_log("t", 0, now_ms=NOW)
    fill(log, 3, timestamp=NOW)
    log.flush()
    log.maybe_increment_log_start_offset(2)
    recovery = tmp_path / "recovery-point-offset-checkpoint"
    start = tmp_path / "log-start-offset-checkpoint"
    async with trio.open_nursery() as nursery:
        await nursery.start(checkpoint_loop, manager, 20, 200)
        await eventually(lambda: read_offset_checkpoint(recovery) == {("t", 0): 6})
        assert not start.exists()
        await eventually(lambda: read_offset_checkpoint(start) == {("t", 0): 2})
        nursery.cancel_scope.cancel()
    manager.shutdown()


def test_unclean_restart_recovers_a_log_opened_after_startup(tmp_path: Path) -> None:
    manager = started_manager(tmp_path, segment_bytes=1 << 20)
    metadata = manager.get_or_create_log("__cluster_metadata", 0, now_ms=NOW)
    fill(metadata, 3, timestamp=NOW)
    manager.checkpoint()
    metadata.close()  # a crash: no clean-shutdown marker, then a torn tail
    segment = metadata.dir / "00000000000000000000.log"
    os.truncate(segment, segment.stat().st_size - 7)
    again = started_manager(tmp_path, segment_bytes=1 << 20)
    reopened = again.get_or_create_log("__cluster_metadata", 0, now_ms=NOW)
    assert reopened.log_end_offset == 4
    reopened.append_as_leader(make_batch(1), 0, now_ms=NOW)
    assert [r.offset for r in all_records(reopened)] == [0, 1, 2, 3, 4]
    again.shutdown()
