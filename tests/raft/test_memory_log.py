"""MemoryLog: the ReplicatedLog contract (epoch cache, truncation, snapshots, crash recovery)
and the offset/epoch validation built on it."""

from __future__ import annotations

import pytest

from pykbroker.raft import ControlRecordType, LogAppendError, MemoryLog, OffsetAndEpoch, SnapshotId
from pykbroker.raft.log import (
    ValidationKind,
    truncation_offset,
    validate_offset_and_epoch,
)


def log_with(*epochs: int) -> MemoryLog:
    """One single-record batch per epoch given."""
    log = MemoryLog()
    for epoch in epochs:
        log.append_as_leader([f"e{epoch}".encode()], epoch)
    return log


def test_offsets_are_contiguous_and_batches_take_one_offset_per_record() -> None:
    log = MemoryLog()
    assert log.append_as_leader([b"a", b"b", b"c"], 1).last_offset == 2
    info = log.append_as_leader([b"d"], 1, ControlRecordType.LEADER_CHANGE)
    assert (info.first_offset, info.last_offset, log.log_end_offset) == (3, 3, 4)
    assert [v for _, _, v in log.records(1, 4)] == [b"b", b"c", b"d"]


def test_end_offset_for_epoch_answers_like_the_leader_epoch_cache() -> None:
    log = log_with(1, 1, 3, 3, 5)  # epoch 1 at 0-1, epoch 3 at 2-3, epoch 5 at 4
    assert log.end_offset_for_epoch(1) == OffsetAndEpoch(2, 1)
    assert log.end_offset_for_epoch(2) == OffsetAndEpoch(2, 1)
    assert log.end_offset_for_epoch(3) == OffsetAndEpoch(4, 3)
    assert log.end_offset_for_epoch(5) == OffsetAndEpoch(5, 5)
    assert log.end_offset_for_epoch(9) == OffsetAndEpoch(5, 5)
    assert log.end_offset_for_epoch(0) == OffsetAndEpoch(0, 0)
    assert log.last_fetched_epoch == 5


def test_truncation_drops_records_and_their_epochs() -> None:
    log = log_with(1, 2, 2, 3)
    log.truncate_to(2)
    assert (log.log_end_offset, log.last_fetched_epoch) == (2, 2)
    assert log.end_offset_for_epoch(3) == OffsetAndEpoch(2, 2)
    two_records = MemoryLog()
    two_records.append_as_leader([b"a", b"b"], 1)
    with pytest.raises(ValueError, match="batch boundary"):
        two_records.truncate_to(1)


def test_follower_appends_must_start_at_the_log_end_and_respect_the_epoch() -> None:
    leader = log_with(1, 2)
    follower = MemoryLog()
    follower.append_as_follower(leader.read(0, 1 << 20), epoch=2)
    assert list(follower.records(0, 2)) == list(leader.records(0, 2))
    with pytest.raises(LogAppendError):
        follower.append_as_follower(leader.read(0, 1 << 20), epoch=2)  # gap / overlap
    with pytest.raises(LogAppendError):
        MemoryLog().append_as_follower(leader.read(0, 1 << 20), epoch=1)  # epoch 2 > 1


def test_read_returns_at_least_one_batch_and_stops_at_max_bytes() -> None:
    log = log_with(1, 1, 1)
    one = log.read(0, 1)
    assert one
    assert len(one) < len(log.read(0, 1 << 20))
    assert log.read(3, 100) == b""


def test_validation_sends_a_diverging_epoch_or_a_snapshot() -> None:
    log = log_with(1, 1, 3, 3)
    assert validate_offset_and_epoch(log, 0, 0).kind is ValidationKind.VALID
    assert validate_offset_and_epoch(log, 4, 3).kind is ValidationKind.VALID
    diverging = validate_offset_and_epoch(log, 3, 2)  # follower wrote epoch 2 at offset 2
    assert diverging.kind is ValidationKind.DIVERGING
    assert diverging.offset_and_epoch == OffsetAndEpoch(2, 1)
    assert validate_offset_and_epoch(log, 6, 3).kind is ValidationKind.DIVERGING
    log.create_snapshot(SnapshotId(2, 1), b"s")
    log.delete_before_snapshot(SnapshotId(2, 1))
    assert validate_offset_and_epoch(log, 1, 1).kind is ValidationKind.SNAPSHOT
    assert validate_offset_and_epoch(log, 2, 0).kind is ValidationKind.SNAPSHOT
    assert validate_offset_and_epoch(log, 2, 1).kind is ValidationKind.VALID


def test_a_follower_truncates_to_the_divergence_point() -> None:
    follower = log_with(1, 2, 2)  # epoch 2 records at 1-2 never committed
    assert truncation_offset(follower, OffsetAndEpoch(1, 1)) == 1
    follower = log_with(1, 1, 1)
    assert truncation_offset(follower, OffsetAndEpoch(2, 1)) == 2


def test_snapshots_move_the_log_start_and_keep_the_epoch_cache() -> None:
    log = log_with(1, 1, 2, 2)
    snapshot_id = SnapshotId(3, 2)
    log.create_snapshot(snapshot_id, b"state")
    log.delete_before_snapshot(snapshot_id)
    assert (log.log_start_offset, log.log_end_offset) == (3, 4)
    assert log.earliest_snapshot_id == snapshot_id == log.latest_snapshot_id
    assert log.end_offset_for_epoch(2) == OffsetAndEpoch(4, 2)
    assert log.last_fetched_epoch == 2
    with pytest.raises(ValueError, match="epoch"):
        log.create_snapshot(SnapshotId(4, 1), b"wrong epoch")


def test_installing_a_snapshot_truncates_the_whole_log() -> None:
    log = log_with(1, 1)
    log.install_snapshot(SnapshotId(10, 4), b"downloaded")
    assert (log.log_start_offset, log.log_end_offset, log.last_fetched_epoch) == (10, 10, 4)
    assert log.end_offset_for_epoch(4) == OffsetAndEpoch(10, 4)
    log.append_as_leader([b"x"], 5)
    assert log.end_offset_for_epoch(4) == OffsetAndEpoch(10, 4)


def test_recover_forgets_unflushed_changes_and_keeps_flushed_ones() -> None:
    log = log_with(1, 1)
    log.flush()
    log.append_as_leader([b"unflushed"], 1)
    log.truncate_to(1)  # an unflushed truncation is forgotten too
    log.recover()
    assert [v for _, _, v in log.records(0, 10)] == [b"e1", b"e1"]
    assert not log.unflushed


def test_recover_truncates_to_a_snapshot_the_flushed_log_does_not_reach() -> None:
    log = log_with(1)
    log.flush()
    log.install_snapshot(SnapshotId(5, 2), b"snap")  # snapshot files are durable at once
    log.recover()
    assert (log.log_start_offset, log.log_end_offset) == (5, 5)
    assert log.latest_snapshot_id == SnapshotId(5, 2)
