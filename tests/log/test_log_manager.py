"""LogManager: partition directories, checkpoints, clean-shutdown marker, deletion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log import TopicPartition
from pykbroker.log.checkpoint import read_offset_checkpoint, write_offset_checkpoint
from pykbroker.log.log_manager import (
    CLEAN_SHUTDOWN_FILE,
    LogManager,
    parse_topic_partition_name,
)
from pykbroker.log.segment import log_file

from .support import all_records, make_batch, small_config


def manager(*dirs: Path) -> LogManager:
    return LogManager(list(dirs), small_config(segment_bytes=1 << 20))


def test_parse_topic_partition_name() -> None:
    assert parse_topic_partition_name("my-topic-3") == TopicPartition("my-topic", 3)
    assert parse_topic_partition_name("__consumer_offsets-49") == ("__consumer_offsets", 49)
    for name in ("topic", "topic-", "-1", "t-01", "t-1.abc-delete", "t-x", "bad topic-0"):
        assert parse_topic_partition_name(name) is None


def test_checkpoint_file_format_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "recovery-point-offset-checkpoint"
    write_offset_checkpoint(path, {("a", 0): 5, ("b-c", 12): 0})
    assert path.read_text() == "0\n2\na 0 5\nb-c 12 0\n"
    assert read_offset_checkpoint(path) == {("a", 0): 5, ("b-c", 12): 0}
    path.write_text("0\n3\na 0 5\n")  # count mismatch: ignored, so everything is recovered
    assert read_offset_checkpoint(path) == {}
    assert read_offset_checkpoint(tmp_path / "missing") == {}


def test_logs_are_spread_over_log_dirs_and_reloaded(tmp_path: Path) -> None:
    dirs = [tmp_path / "d1", tmp_path / "d2"]
    lm = manager(*dirs)
    lm.startup(now_ms=0)
    for partition in range(4):
        log = lm.get_or_create_log("orders", partition, now_ms=0)
        log.append_as_leader(make_batch(partition + 1), 0, now_ms=0)
    assert lm.get_or_create_log("orders", 0) is lm.get_log("orders", 0)
    assert lm.get_log("orders", 9) is None
    assert sorted(p.name for d in dirs for p in d.iterdir() if p.is_dir()) == [
        "orders-0",
        "orders-1",
        "orders-2",
        "orders-3",
    ]
    assert all(any(p.is_dir() for p in d.iterdir()) for d in dirs)
    lm.shutdown()
    for d in dirs:
        assert (d / CLEAN_SHUTDOWN_FILE).exists()
        text = (d / "recovery-point-offset-checkpoint").read_text().splitlines()
        assert text[:2] == ["0", "2"]
        assert (d / "log-start-offset-checkpoint").exists()

    again = manager(*dirs)
    again.startup(now_ms=0)
    for d in dirs:
        assert not (d / CLEAN_SHUTDOWN_FILE).exists()
    logs = again.all_logs()
    assert sorted(logs) == [("orders", p) for p in range(4)]
    assert [logs[TopicPartition("orders", p)].log_end_offset for p in range(4)] == [1, 2, 3, 4]
    again.shutdown()


def test_unclean_startup_recovers_torn_tails(tmp_path: Path) -> None:
    lm = manager(tmp_path)
    lm.startup(now_ms=0)
    log = lm.get_or_create_log("t", 0, now_ms=0)
    for _ in range(3):
        log.append_as_leader(make_batch(2), 0, now_ms=0)
    lm.checkpoint()
    log.close()  # a crash: no marker, and a torn last write
    path = log_file(tmp_path / "t-0", 0)
    os.truncate(path, path.stat().st_size - 3)

    after_crash = manager(tmp_path)
    after_crash.startup(now_ms=0)
    recovered = after_crash.get_log("t", 0)
    assert recovered is not None
    assert recovered.log_end_offset == 4
    assert [r.offset for r in all_records(recovered)] == [0, 1, 2, 3]


def _shutdown_cleanly_then_corrupt_the_tail(path: Path) -> tuple[Path, int]:
    """Three batches, a clean shutdown, then a torn batch header after the last batch."""
    lm = manager(path)
    lm.startup(now_ms=0)
    log = lm.get_or_create_log("t", 0, now_ms=0)
    for _ in range(3):
        log.append_as_leader(make_batch(2), 0, now_ms=0)
    lm.shutdown()
    assert (path / CLEAN_SHUTDOWN_FILE).exists()
    segment = log_file(path / "t-0", 0)
    valid_size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write((6).to_bytes(8, "big") + (500).to_bytes(4, "big") + b"\x00" * 9)
    return segment, valid_size


def test_clean_shutdown_marker_skips_recovery(tmp_path: Path) -> None:
    """With the marker the tail is not scanned, so the corrupt bytes stay (Kafka trusts a
    clean shutdown); without it recovery truncates them."""
    segment, valid_size = _shutdown_cleanly_then_corrupt_the_tail(tmp_path / "clean")
    clean = manager(tmp_path / "clean")
    clean.startup(now_ms=0)
    assert not (tmp_path / "clean" / CLEAN_SHUTDOWN_FILE).exists()  # consumed
    assert segment.stat().st_size == valid_size + 21  # not recovered: the tail is kept
    clean_log = clean.get_log("t", 0)
    assert clean_log is not None
    assert clean_log.log_end_offset == 6
    clean.shutdown()

    segment, valid_size = _shutdown_cleanly_then_corrupt_the_tail(tmp_path / "unclean")
    (tmp_path / "unclean" / CLEAN_SHUTDOWN_FILE).unlink()  # as if the process was killed
    unclean = manager(tmp_path / "unclean")
    unclean.startup(now_ms=0)
    assert segment.stat().st_size == valid_size  # recovered: the torn batch is truncated
    recovered = unclean.get_log("t", 0)
    assert recovered is not None
    assert recovered.log_end_offset == 6
    assert [r.offset for r in all_records(recovered)] == list(range(6))
    unclean.shutdown()


def test_startup_skips_foreign_dirs_and_finishes_deletions(tmp_path: Path) -> None:
    (tmp_path / "not a partition").mkdir()
    (tmp_path / "__cluster_metadata-0").mkdir()  # owned by the raft layer
    (tmp_path / "t-0.0123abcd-delete").mkdir()
    (tmp_path / "meta.properties").write_text("node.id=1\n")
    lm = manager(tmp_path)
    lm.startup(now_ms=0)
    assert lm.all_logs() == {}
    assert not (tmp_path / "t-0.0123abcd-delete").exists()
    assert (tmp_path / "__cluster_metadata-0").exists()


def test_delete_log_removes_the_directory_and_checkpoint_entries(tmp_path: Path) -> None:
    lm = manager(tmp_path)
    lm.startup(now_ms=0)
    lm.get_or_create_log("gone", 0).append_as_leader(make_batch(), 0, now_ms=0)
    lm.get_or_create_log("kept", 0)
    assert lm.delete_log("gone", 0)
    assert not lm.delete_log("gone", 0)
    assert not (tmp_path / "gone-0").exists()
    assert not any(p.name.endswith("-delete") for p in tmp_path.iterdir())
    lm.checkpoint()
    assert read_offset_checkpoint(tmp_path / "recovery-point-offset-checkpoint") == {("kept", 0): 0}
    lm.shutdown()


def test_invalid_topic_name_is_refused(tmp_path: Path) -> None:
    lm = manager(tmp_path)
    lm.startup(now_ms=0)
    with pytest.raises(KafkaError) as info:
        lm.get_or_create_log("bad/name", 0)
    assert info.value.code == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_topic_config_updates_and_retention(tmp_path: Path) -> None:
    lm = manager(tmp_path)
    lm.startup(now_ms=0)
    log = lm.get_or_create_log("t", 0)
    lm.update_topic_config("t", small_config(segment_bytes=300, retention_ms=10))
    assert log.config.segment_bytes == 300
    for _ in range(6):
        log.append_as_leader(make_batch(2, timestamp=0), 0, now_ms=0)
    log.high_watermark = log.log_end_offset
    assert lm.cleanup_logs(now_ms=1_000) >= 2
    assert log.log_start_offset > 0
    lm.flush_all()
    assert log.recovery_point == log.log_end_offset
    lm.shutdown()
