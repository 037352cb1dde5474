"""Loading a log directory: clean reopen, torn tails, broken indexes, checkpointed offsets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pykbroker.log.log import Log
from pykbroker.log.log_manager import LogManager
from pykbroker.log.segment import log_file, offset_index_file, time_index_file

from .support import all_records, make_batch, small_config


def build(path: Path, batches: int = 12, segment_bytes: int = 600) -> Log:
    log = Log.open(path, small_config(segment_bytes=segment_bytes), now_ms=0)
    for i in range(batches):
        log.append_as_leader(make_batch(2, timestamp=1_000 + i, tag=f"b{i}-"), 0, now_ms=0)
    return log


def reopen(path: Path, *, recover: bool, segment_bytes: int = 600, **kwargs: int) -> Log:
    return Log.open(
        path, small_config(segment_bytes=segment_bytes), recover=recover, now_ms=0, **kwargs
    )


def test_reopen_after_clean_close_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = build(path)
    records = all_records(log)
    bases = [s.base_offset for s in log.segments]
    entries = [s.offset_index.entries for s in log.segments]
    log.close()
    assert all(  # indexes trimmed to their entries on close
        offset_index_file(path, b).stat().st_size == 8 * n
        for b, n in zip(bases, entries, strict=True)
    )
    reopened = reopen(path, recover=False)
    assert [s.base_offset for s in reopened.segments] == bases
    assert [s.offset_index.entries for s in reopened.segments] == entries
    assert reopened.log_end_offset == 24
    assert reopened.recovery_point == 24
    assert all_records(reopened) == records
    reopened.append_as_leader(make_batch(1), 0, now_ms=0)
    assert reopened.log_end_offset == 25
    assert reopened.fetch_offset_by_timestamp(1_011) == (21, 1_011)


@pytest.mark.parametrize("cut", [1, 13, 60, 61])
def test_recovery_drops_a_torn_last_batch(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "t-0"
    log = build(path, batches=6, segment_bytes=1 << 20)
    records = all_records(log)
    log.close()
    active = log_file(path, 0)
    os.truncate(active, active.stat().st_size - cut)
    recovered = reopen(path, recover=True, segment_bytes=1 << 20)
    assert recovered.log_end_offset == 10
    assert all_records(recovered) == records[:10]
    rebuilt = recovered.active_segment.offset_index.entries
    assert rebuilt > 0
    recovered.append_as_leader(make_batch(2), 0, now_ms=0)
    assert [r.offset for r in all_records(recovered)] == list(range(12))


def test_recovery_truncates_trailing_zeros(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    build(path, batches=3, segment_bytes=1 << 20).close()
    with open(log_file(path, 0), "ab") as f:
        f.write(b"\x00" * 4096)  # preallocated blocks after a crash
    recovered = reopen(path, recover=True, segment_bytes=1 << 20)
    assert recovered.log_end_offset == 6
    assert recovered.active_segment.size == 3 * len(make_batch(2, tag="b0-"))


def test_unclean_open_without_recovery_point_recovers_only_the_active_segment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t-0"
    log = build(path)
    first = log.segments[0]
    first_size = first.size
    log.close()
    with open(log_file(path, 0), "r+b") as f:  # corrupt a batch CRC in an old segment
        f.seek(first_size - 5)
        f.write(b"\xff\xff")
    recovered = reopen(path, recover=True)  # its index is sane: Kafka trusts flushed data
    assert recovered.segments[0].size == first_size
    recovered.close()
    again = reopen(path, recover=True, recovery_point=0)  # checkpoint says nothing flushed
    assert len(again.segments) == 1  # corrupt batch dropped, later segments deleted
    assert again.segments[0].size < first_size
    assert again.log_end_offset == again.segments[0].next_offset


def test_zeroed_index_of_an_old_segment_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = build(path)
    records = all_records(log)
    old = log.segments[0]
    entries = old.offset_index.entries
    assert entries > 0
    log.close()
    index = offset_index_file(path, 0)
    index.write_bytes(b"\x00" * index.stat().st_size)
    time_index = time_index_file(path, 0)
    time_index.write_bytes(b"\x00" * time_index.stat().st_size)
    reopened = reopen(path, recover=False)
    assert reopened.segments[0].offset_index.entries == entries
    assert reopened.segments[0].offset_index.entry(0)[1] > 0
    assert all_records(reopened) == records
    assert reopened.fetch_offset_by_timestamp(1_001) == (1, 1_001)


def test_missing_index_files_are_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = build(path)
    records = all_records(log)
    entries = log.segments[0].offset_index.entries
    log.close()
    offset_index_file(path, 0).unlink()
    time_index_file(path, 0).unlink()
    reopened = reopen(path, recover=False)
    assert reopened.segments[0].offset_index.entries == entries
    assert all_records(reopened) == records


def test_checkpointed_log_start_offset_is_restored(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    build(path).close()
    reopened = reopen(path, recover=False, log_start_offset=5, high_watermark=20)
    assert reopened.log_start_offset == 5
    assert reopened.high_watermark == 20
    assert all_records(reopened)[0].offset == 5
    reopened.close()
    beyond = reopen(path, recover=False, log_start_offset=1_000)
    assert beyond.log_start_offset == beyond.log_end_offset == 1_000
    assert len(beyond.segments) == 1


def test_stray_and_orphan_files_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    build(path, batches=2).close()
    (path / "00000000000000000999.index").write_bytes(b"")
    (path / "00000000000000000000.log.deleted").write_bytes(b"x")
    (path / "leader-epoch-checkpoint").write_text("0\n0\n")
    reopen(path, recover=True).close()
    assert not (path / "00000000000000000999.index").exists()
    assert not (path / "00000000000000000000.log.deleted").exists()
    assert (path / "leader-epoch-checkpoint").exists()


def test_missing_time_index_alone_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = build(path)
    records = all_records(log)
    old_bases = [s.base_offset for s in log.segments[:-1]]
    log.close()
    for base in old_bases:
        time_index_file(path, base).unlink()
    reopened = reopen(path, recover=False)
    assert all(time_index_file(path, base).exists() for base in old_bases)
    assert all_records(reopened) == records
    assert reopened.fetch_offset_by_timestamp(1_004) == (7, 1_004)
    assert reopened.max_timestamp_and_offset() == (1_012, 23)


def test_log_manager_restarts_cleanly_after_several_kinds_of_damage(tmp_path: Path) -> None:
    manager = LogManager([tmp_path], small_config(segment_bytes=600))
    manager.startup(now_ms=0)
    log = manager.get_or_create_log("t", 0, now_ms=0)
    for i in range(12):
        log.append_as_leader(make_batch(2, timestamp=1_000 + i, tag=f"b{i}-"), 0, now_ms=0)
    log.flush()
    for i in range(12, 15):  # unflushed: after the checkpointed recovery point
        log.append_as_leader(make_batch(2, timestamp=1_000 + i, tag=f"b{i}-"), 0, now_ms=0)
    manager.checkpoint()
    records = all_records(log)
    path = log.dir
    bases = [s.base_offset for s in log.segments]
    log.close()  # crash: no clean-shutdown marker
    active = log_file(path, bases[-1])
    with open(active, "r+b") as f:  # a batch torn in the middle of the active segment
        f.seek(active.stat().st_size - 20)
        f.write(b"\x00" * 20)
    index = offset_index_file(path, bases[0])
    index.write_bytes(b"\x00" * index.stat().st_size)  # zeroed index of an old segment
    time_index_file(path, bases[1]).unlink()  # missing .timeindex
    (path / f"{bases[1]:020d}.log.cleaned").write_bytes(b"half-written cleaner output")
    again = LogManager([tmp_path], small_config(segment_bytes=600))
    again.startup(now_ms=0)
    recovered = again.get_log("t", 0)
    assert recovered is not None
    assert recovered.log_end_offset == 28  # the torn last batch (2 records) is gone
    assert all_records(recovered) == records[:28]
    assert recovered.fetch_offset_by_timestamp(1_003) == (5, 1_003)
    assert not list(path.glob("*.cleaned"))
    recovered.append_as_leader(make_batch(3), 0, now_ms=0)
    assert [r.offset for r in all_records(recovered)] == list(range(31))
    again.shutdown()
