"""Idempotent producer state: the ProducerStateManager rules, snapshots, and the Log path."""

from __future__ import annotations

import os
import struct
import uuid
from pathlib import Path

import pytest

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log import Log, LogConfig
from pykbroker.log.producer_state import (
    INT32_MAX,
    ProducerStateEntry,
    ProducerStateManager,
    decode_snapshot,
    encode_snapshot,
    increment_sequence,
    snapshot_file,
)
from pykbroker.log.record_batch import AppendOrigin, Record, build_batch, parse_header
from pykbroker.replication.partition import Partition

from .support import all_records, small_config

PID = 1000


def batch(
    seq: int,
    count: int = 2,
    *,
    pid: int = PID,
    epoch: int = 0,
    timestamp: int = 1_000,
    tag: str = "v",
) -> bytes:
    records = [
        Record(key=None, value=f"{tag}{seq}-{i}".encode(), timestamp=timestamp + i)
        for i in range(count)
    ]
    return build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def open_log(
    path: Path, config: LogConfig | None = None, *, producer_id_expiration_ms: int = 86_400_000
) -> Log:
    return Log.open(
        path, config or LogConfig(), now_ms=0, producer_id_expiration_ms=producer_id_expiration_ms
    )


def append(log: Log, data: bytes, now_ms: int = 2_000) -> tuple[int, int]:
    info = log.append_as_leader(data, 0, now_ms)
    return info.first_offset, info.last_offset


def error_of(log: Log, data: bytes) -> ErrorCode:
    end = log.log_end_offset
    with pytest.raises(KafkaError) as excinfo:
        log.append_as_leader(data, 0, 2_000)
    assert log.log_end_offset == end
    return excinfo.value.code


# -- the state machine, no files ---------------------------------------------------------


def test_increment_sequence_wraps_at_int32_max() -> None:
    assert increment_sequence(5, 3) == 8
    assert increment_sequence(INT32_MAX, 1) == 0
    assert increment_sequence(INT32_MAX - 1, 3) == 1


def test_manager_tracks_epoch_and_last_five_batches(tmp_path: Path) -> None:
    state = ProducerStateManager(tmp_path)
    offset = 0
    for seq in range(0, 14, 2):
        header = parse_header(batch(seq))
        updates = state.prepare_update([header], offset, AppendOrigin.CLIENT)
        offset += 2
        state.update(updates, offset)
    entry = state.last_entry(PID)
    assert entry is not None
    assert entry.producer_epoch == 0
    assert [b.first_seq for b in entry.batches] == [4, 6, 8, 10, 12]
    assert entry.last_seq == 13
    assert state.find_duplicate(parse_header(batch(4))) is not None
    assert state.find_duplicate(parse_header(batch(2))) is None  # fell out of the cache
    assert state.find_duplicate(parse_header(batch(4, epoch=1))) is None
    assert state.find_duplicate(parse_header(batch(4, count=1))) is None  # not the same range


def test_replication_skips_sequence_checks(tmp_path: Path) -> None:
    state = ProducerStateManager(tmp_path)
    state.update(state.prepare_update([parse_header(batch(0))], 0, AppendOrigin.CLIENT), 2)
    gap = parse_header(batch(50))
    with pytest.raises(KafkaError):
        state.prepare_update([gap], 2, AppendOrigin.CLIENT)
    state.update(state.prepare_update([gap], 2, AppendOrigin.REPLICATION), 4)
    entry = state.last_entry(PID)
    assert entry is not None
    assert entry.last_seq == 51


def test_expiry_forgets_idle_producers_but_not_open_transactions(tmp_path: Path) -> None:
    state = ProducerStateManager(tmp_path, producer_id_expiration_ms=1_000)
    state.producers[1] = ProducerStateEntry(1, 0, last_timestamp=100)
    state.producers[2] = ProducerStateEntry(2, 0, last_timestamp=100, current_txn_first_offset=5)
    state.producers[3] = ProducerStateEntry(3, 0, last_timestamp=900)
    assert state.remove_expired_producers(1_100) == 1
    assert sorted(state.producers) == [2, 3]


def test_snapshot_format_round_trips_and_rejects_corruption(tmp_path: Path) -> None:
    state = ProducerStateManager(tmp_path)
    header = parse_header(batch(INT32_MAX - 1, count=3))  # wraps: seqs MAX-1, MAX, 0
    state.update(state.prepare_update([header], 10, AppendOrigin.CLIENT), 13)
    data = encode_snapshot(state.producers.values())
    # int16 version 1, uint32 crc, int32 count, 46-byte entries (Kafka's layout)
    assert data[:2] == b"\x00\x01"
    assert len(data) == 2 + 4 + 4 + 46
    (entry,) = decode_snapshot(data)
    (cached,) = entry.batches
    assert (cached.first_seq, cached.last_seq) == (INT32_MAX - 1, 0)
    assert (cached.first_offset, cached.last_offset) == (10, 12)
    assert entry.find_duplicate_batch(header) is not None
    corrupt = bytearray(data)
    corrupt[-1] ^= 1
    with pytest.raises(ValueError, match="CRC"):
        decode_snapshot(bytes(corrupt))
    with pytest.raises(ValueError, match="truncated"):
        decode_snapshot(data[:5])


# -- through the Log ---------------------------------------------------------------------


def test_retried_batch_returns_the_original_offsets_and_is_not_appended(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    assert append(log, batch(0)) == (0, 1)
    assert append(log, batch(2)) == (2, 3)
    assert append(log, batch(0)) == (0, 1)  # retry of an older cached batch
    assert append(log, batch(2)) == (2, 3)
    assert log.log_end_offset == 4
    assert append(log, batch(4)) == (4, 5)
    assert [r.value for r in all_records(log)] == [
        b"v0-0",
        b"v0-1",
        b"v2-0",
        b"v2-1",
        b"v4-0",
        b"v4-1",
    ]


def test_sequence_gap_is_out_of_order(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, batch(0))
    assert error_of(log, batch(5)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert error_of(log, batch(1)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER  # overlaps
    assert append(log, batch(2)) == (2, 3)


def test_stale_epoch_is_invalid_producer_epoch_and_a_new_epoch_starts_at_zero(
    tmp_path: Path,
) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, batch(0, epoch=1))
    assert error_of(log, batch(2, epoch=0)) == ErrorCode.INVALID_PRODUCER_EPOCH
    assert error_of(log, batch(2, epoch=2)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert append(log, batch(0, epoch=2)) == (2, 3)
    assert error_of(log, batch(2, epoch=1)) == ErrorCode.INVALID_PRODUCER_EPOCH


def test_unknown_producer_is_accepted_at_any_sequence(tmp_path: Path) -> None:
    """Kafka 4 answers no UNKNOWN_PRODUCER_ID on produce: no state, no sequence check."""
    log = open_log(tmp_path / "t-0")
    assert append(log, batch(42)) == (0, 1)
    assert append(log, batch(44)) == (2, 3)
    assert error_of(log, batch(47)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_sequence_wraps_from_int32_max_to_zero(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, batch(INT32_MAX - 1))
    assert append(log, batch(0)) == (2, 3)
    assert append(log, batch(0)) == (2, 3)  # and dedup still works after the wrap


def test_non_idempotent_batches_are_not_tracked(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    plain = build_batch([Record(key=None, value=b"x", timestamp=1)])
    assert append(log, plain) == (0, 0)
    assert append(log, plain) == (1, 1)
    assert not log.producer_state.producers


def test_restart_keeps_dedup_through_the_shutdown_snapshot(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, batch(0))
    append(log, batch(2))
    log.close()
    assert snapshot_file(tmp_path / "t-0", 4).exists()
    log = open_log(tmp_path / "t-0")
    assert append(log, batch(2)) == (2, 3)  # the last batch is in the snapshot
    assert error_of(log, batch(7)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert append(log, batch(4)) == (4, 5)
    assert log.log_end_offset == 6


def test_restart_without_snapshots_rebuilds_state_from_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    for seq in range(0, 10, 2):
        append(log, batch(seq))
    log.close()
    for path in (tmp_path / "t-0").glob("*.snapshot"):
        path.unlink()
    log = open_log(tmp_path / "t-0")
    for seq in range(0, 10, 2):  # all five cached batches rebuilt from batch headers
        assert append(log, batch(seq)) == (seq, seq + 1)
    assert log.log_end_offset == 10


def test_roll_snapshots_and_restart_replays_the_tail(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=300))
    for seq in range(0, 20, 2):
        append(log, batch(seq, tag="x" * 40))
    assert len(log.segments) > 1
    rolled = sorted(int(p.stem) for p in (tmp_path / "t-0").glob("*.snapshot"))
    assert rolled == [s.base_offset for s in log.segments[1:]]
    end = log.log_end_offset
    log.flush()
    # an unclean stop: no shutdown snapshot, so the tail after the last roll is replayed
    for segment in log.segments:
        segment.close()
    log = Log.open(tmp_path / "t-0", small_config(segment_bytes=300), now_ms=0)
    assert append(log, batch(18, tag="x" * 40)) == (18, 19)
    assert append(log, batch(20, tag="x" * 40)) == (end, end + 1)


def test_corrupt_snapshot_is_deleted_and_an_older_one_used(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, batch(0))
    log.close()
    log = open_log(tmp_path / "t-0")
    append(log, batch(2))
    log.close()
    snapshot_file(tmp_path / "t-0", 4).write_bytes(b"\x00\x01garbage")
    log = open_log(tmp_path / "t-0")
    assert not snapshot_file(tmp_path / "t-0", 4).exists()
    assert append(log, batch(2)) == (2, 3)  # replayed from the snapshot at 2


def test_roll_snapshot_is_fsynced_by_the_flush_not_the_roll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off-loop flushing: the roll writes the snapshot unsynced (Kafka's
    ``takeSnapshot(false)``), the next ``flush_snapshot`` carries it; a snapshot torn by a
    power loss is dropped on open and the state is replayed from the log."""
    log = open_log(tmp_path / "t-0")
    log.inline_flush = False
    append(log, batch(0))
    synced: list[str] = []
    monkeypatch.setattr("os.fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    log.roll()
    path = snapshot_file(tmp_path / "t-0", 2)
    assert path.exists()
    assert synced == []  # nothing fsynced by the roll
    assert log.flush_files_pending
    snapshot = log.flush_snapshot(log.active_segment.base_offset)
    assert snapshot is not None
    assert snapshot.producer_snapshots == [path]
    snapshot.fsync()
    assert str(path) in synced  # the snapshot file ...
    assert str(tmp_path / "t-0") in synced  # ... and the directory holding its name
    log.complete_flush(snapshot, now_ms=0)
    assert not log.flush_files_pending
    assert log.recovery_point == 2
    monkeypatch.undo()
    append(log, batch(2))
    log.close()
    snapshot_file(tmp_path / "t-0", 4).unlink()
    path.write_bytes(path.read_bytes()[:7])  # torn by a power loss
    log = Log.open(tmp_path / "t-0", LogConfig(), now_ms=0, recover=True, recovery_point=2)
    assert not path.exists()  # dropped
    assert append(log, batch(2)) == (2, 3)  # a duplicate: the state was replayed
    assert error_of(log, batch(6)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_truncation_rebuilds_the_state(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, batch(0))
    append(log, batch(2))
    log.truncate_to(2)
    assert append(log, batch(2, tag="new")) == (2, 3)
    assert [r.value for r in all_records(log)][2:] == [b"new2-0", b"new2-1"]


def test_follower_appends_update_the_state(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append_as_follower(build_batch_at(batch(0), 0), 0)
    assert append(log, batch(0)) == (0, 1)
    assert error_of(log, batch(4)) == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


def test_expired_producer_forgotten_on_load_and_on_check(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", producer_id_expiration_ms=1_000)
    append(log, batch(0, timestamp=1_000))
    assert log.remove_expired_producers(1_500) == 0
    assert log.remove_expired_producers(2_500) == 1
    assert append(log, batch(9, timestamp=3_000)) == (2, 3)  # unknown again: accepted
    log.close()
    log = Log.open(tmp_path / "t-0", LogConfig(), now_ms=10_000, producer_id_expiration_ms=1_000)
    assert not log.producer_state.producers


def build_batch_at(data: bytes, base_offset: int) -> bytes:
    buffer = bytearray(data)
    buffer[0:8] = base_offset.to_bytes(8, "big")
    return bytes(buffer)


# -- open transactions and the last stable offset ------------------------------------------


def txn_batch(seq: int, *, pid: int = PID, epoch: int = 0) -> bytes:
    records = [Record(key=None, value=f"t{seq}".encode(), timestamp=1_000)]
    return build_batch(
        records,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        is_transactional=True,
    )


def commit_marker(*, pid: int = PID, epoch: int = 0) -> bytes:
    """A COMMIT control batch: key (version 0, type 1), value (version 0, coordinator epoch)."""
    record = Record(key=struct.pack(">hh", 0, 1), value=struct.pack(">hi", 0, 0), timestamp=1_000)
    return build_batch(
        [record], producer_id=pid, producer_epoch=epoch, is_transactional=True, is_control=True
    )


def leader_partition(log: Log) -> Partition:
    return Partition(("t", 0), uuid.uuid4(), log)


def test_open_transaction_holds_the_last_stable_offset_until_its_marker(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    partition = leader_partition(log)
    append(log, batch(0, pid=7))  # not transactional
    append(log, txn_batch(0))
    append(log, txn_batch(1))
    log.high_watermark = log.log_end_offset
    assert (partition.last_stable_offset, log.high_watermark) == (2, 4)
    log.close()
    log = open_log(tmp_path / "t-0")  # the open transaction is in the snapshot
    partition = leader_partition(log)
    log.high_watermark = log.log_end_offset
    assert partition.last_stable_offset == 2
    log.append_as_leader(commit_marker(), 0, 2_000, origin=AppendOrigin.COORDINATOR)
    log.high_watermark = log.log_end_offset
    assert partition.last_stable_offset == log.high_watermark == 5
    assert append(log, txn_batch(2)) == (5, 5)  # sequences carry on after the marker


def test_stale_marker_is_rejected(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, txn_batch(0, epoch=3))
    with pytest.raises(KafkaError) as excinfo:
        log.append_as_leader(commit_marker(epoch=2), 0, 2_000, origin=AppendOrigin.COORDINATOR)
    assert excinfo.value.code == ErrorCode.INVALID_PRODUCER_EPOCH


def test_retention_deletes_the_snapshots_of_deleted_segments(tmp_path: Path) -> None:
    config = small_config(segment_bytes=300, retention_bytes=600)
    log = open_log(tmp_path / "t-0", config)
    for seq in range(0, 30, 2):
        append(log, batch(seq, tag="x" * 40))
    log.high_watermark = log.log_end_offset
    assert log.delete_old_segments(now_ms=2_000) > 0
    first_kept = log.segments[0].base_offset
    snapshots = [int(p.stem) for p in (tmp_path / "t-0").glob("*.snapshot")]
    assert snapshots
    assert min(snapshots) >= first_kept
    assert append(log, batch(28, tag="x" * 40)) == (28, 29)  # dedup state is kept


def test_snapshot_past_the_recovered_log_end_is_deleted(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append(log, batch(0))
    log.close()
    stray = snapshot_file(tmp_path / "t-0", 99)
    stray.write_bytes(snapshot_file(tmp_path / "t-0", 2).read_bytes())
    log = open_log(tmp_path / "t-0")
    assert not stray.exists()
    assert append(log, batch(0)) == (0, 1)
