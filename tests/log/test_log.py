"""Log (UnifiedLog analogue): append, roll, read, offsets by timestamp, truncation, retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.compression import CompressionType
from pykbroker.log.log import Log, LogConfig
from pykbroker.log.record_batch import (
    AppendOrigin,
    Record,
    TimestampType,
    assign_offsets,
    build_batch,
    decode_records,
    iter_batch_headers,
    iter_batches,
    parse_header,
)

from .support import all_records, make_batch, small_config, values


def open_log(path: Path, config: LogConfig | None = None, now_ms: int = 0) -> Log:
    return Log.open(path, config or small_config(), now_ms=now_ms)


def append_n(log: Log, batches: int, per_batch: int = 2, timestamp: int = 1_000) -> None:
    for i in range(batches):
        log.append_as_leader(
            make_batch(per_batch, timestamp=timestamp + 10 * i, tag=f"b{i}-"), 0, now_ms=0
        )


def test_append_as_leader_assigns_offsets_and_reports_them(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    info = log.append_as_leader(make_batch(3, timestamp=500), leader_epoch=4, now_ms=9)
    assert (info.first_offset, info.last_offset, info.records_count) == (0, 2, 3)
    assert (info.max_timestamp, info.log_append_time_ms, info.log_start_offset) == (502, -1, 0)
    info = log.append_as_leader(make_batch(2), leader_epoch=5, now_ms=9)
    assert (info.first_offset, info.last_offset) == (3, 4)
    assert log.log_end_offset == 5
    assert log.high_watermark == 0  # the replication layer moves it
    log.high_watermark = 100
    assert log.high_watermark == 5  # clamped to the log end offset
    data = log.read(0, 1 << 20)
    assert [(h.base_offset, h.partition_leader_epoch) for _, h in iter_batch_headers(data)] == [
        (0, 4),
        (3, 5),
    ]


def test_rejected_batches_leave_the_log_untouched(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(max_message_bytes=300))
    log.append_as_leader(make_batch(1), 0, now_ms=0)
    size = log.size_in_bytes
    bad_crc = bytearray(make_batch(1))
    bad_crc[-1] ^= 1
    for data, code in [
        (bytes(bad_crc), ErrorCode.CORRUPT_MESSAGE),
        (make_batch(10, value_size=100), ErrorCode.MESSAGE_TOO_LARGE),
    ]:
        with pytest.raises(KafkaError) as info:
            log.append_as_leader(data, 0, now_ms=0)
        assert info.value.code == code
    assert (log.log_end_offset, log.size_in_bytes) == (1, size)


def test_segments_roll_on_segment_bytes(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=500))
    batch_size = len(make_batch(2))
    append_n(log, 20)
    assert len(log.segments) > 3
    for segment in log.segments:
        assert segment.size <= 500 or segment.size == batch_size
    bases = [s.base_offset for s in log.segments]
    assert bases == sorted(bases)
    names = sorted(p.name for p in (tmp_path / "t-0").glob("*.log"))
    assert names == [f"{b:020d}.log" for b in bases]
    assert values(all_records(log)) == values(all_records(log))  # readable end to end
    assert [r.offset for r in all_records(log)] == list(range(40))


def test_segments_roll_on_segment_ms_using_batch_timestamps(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=1 << 20, segment_ms=100))
    log.append_as_leader(make_batch(1, timestamp=1_000), 0, now_ms=0)
    log.append_as_leader(make_batch(1, timestamp=1_050), 0, now_ms=0)
    assert len(log.segments) == 1
    log.append_as_leader(make_batch(1, timestamp=1_101), 0, now_ms=0)
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_segments_roll_when_the_offset_index_is_full(tmp_path: Path) -> None:
    config = small_config(segment_bytes=1 << 20, index_interval_bytes=0, segment_index_bytes=32)
    log = open_log(tmp_path / "t-0", config)
    append_n(log, 12)
    assert len(log.segments) >= 2
    assert all(s.offset_index.entries <= 4 for s in log.segments)


def test_read_mid_batch_returns_the_containing_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append_as_leader(make_batch(5), 0, now_ms=0)
    log.append_as_leader(make_batch(5), 0, now_ms=0)
    data = log.read(7, 1)
    [(header, _)] = list(iter_batches(data))
    assert (header.base_offset, header.last_offset) == (5, 9)


def test_read_stops_before_max_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append_n(log, 5)  # offsets 0..9, two per batch
    assert [r.offset for r in decode_all(log.read(0, 1 << 20, max_offset=6))] == list(range(6))
    assert decode_all(log.read(6, 1 << 20, max_offset=6)) == []
    assert [r.offset for r in decode_all(log.read(0, 1 << 20, max_offset=5))] == list(range(4))
    assert log.read(3, 1 << 20, max_offset=2) == b""


def test_read_max_bytes_and_min_one_message(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append_n(log, 5)
    batch_size = len(make_batch(2, tag="b0-"))
    assert len(log.read(0, 1)) == batch_size
    assert log.read(0, 1, min_one_message=False) == b""
    assert len(log.read(0, 2 * batch_size + 5)) == 2 * batch_size


def test_read_out_of_range_and_at_the_end(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append_n(log, 2)
    assert log.read(4, 100) == b""
    for offset in (5, 1_000, -1):
        with pytest.raises(KafkaError) as info:
            log.read(offset, 100)
        assert info.value.code == ErrorCode.OFFSET_OUT_OF_RANGE


def test_read_crosses_segments_one_segment_per_call(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=400))
    append_n(log, 10)
    second = log.segments[1]
    data = log.read(second.base_offset - 1, 1 << 20)
    headers = [h for _, h in iter_batch_headers(data)]
    assert headers[-1].next_offset == second.base_offset  # stops at the segment end
    assert log.read(second.base_offset, 1 << 20)


def test_log_append_time_overrides_timestamps(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(message_timestamp_type="LogAppendTime"))
    info = log.append_as_leader(make_batch(3, timestamp=5), 0, now_ms=77_000)
    assert (info.log_append_time_ms, info.max_timestamp) == (77_000, 77_000)
    header = parse_header(log.read(0, 1000))
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert {r.timestamp for r in all_records(log)} == {77_000}


def test_fetch_offset_by_timestamp(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=400))
    append_n(log, 10)  # batch i: offsets 2i, 2i+1 stamped 1000+10i, 1001+10i
    assert len(log.segments) > 2
    assert log.fetch_offset_by_timestamp(0) == (0, 1_000)
    assert log.fetch_offset_by_timestamp(1_031) == (7, 1_031)
    assert log.fetch_offset_by_timestamp(1_032) == (8, 1_040)
    assert log.fetch_offset_by_timestamp(1_092) is None
    assert log.fetch_offset_by_timestamp(-2) == (0, -1)
    assert log.fetch_offset_by_timestamp(-1) == (20, -1)
    assert log.max_timestamp_and_offset() == (1_091, 19)


def test_max_timestamp_finds_the_record_not_the_batch_end(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    assert log.max_timestamp_and_offset() == (-1, -1)
    records = [
        Record(b"a", b"1", timestamp=50),
        Record(b"b", b"2", timestamp=90),
        Record(b"c", b"3", timestamp=60),
    ]
    log.append_as_leader(build_batch(records), 0, now_ms=0)
    log.append_as_leader(make_batch(1, timestamp=70), 0, now_ms=0)
    assert log.max_timestamp_and_offset() == (90, 1)
    assert log.fetch_offset_by_timestamp(-3) == (1, 90)


def test_truncate_to_drops_later_segments_and_keeps_appending(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=400))
    append_n(log, 10)
    log.high_watermark = log.log_end_offset
    segments_before = len(log.segments)
    log.truncate_to(6)
    assert log.log_end_offset == 6
    assert log.high_watermark == 6
    assert len(log.segments) < segments_before
    assert [r.offset for r in all_records(log)] == list(range(6))
    log.truncate_to(5)  # mid-batch: the whole batch 4..5 goes, as in Kafka
    assert log.log_end_offset == 4
    info = log.append_as_leader(make_batch(3), 0, now_ms=0)
    assert info.first_offset == 4
    assert [r.offset for r in all_records(log)] == list(range(7))
    log.truncate_to(100)  # beyond the end: nothing happens
    assert log.log_end_offset == 7


def test_append_as_follower_keeps_offsets_and_epochs(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "leader-0")
    append_n(leader, 4)
    follower = open_log(tmp_path / "follower-0")
    info = follower.append_as_follower(leader.read(0, 1 << 20), now_ms=0)
    assert (info.first_offset, info.last_offset) == (0, 7)
    assert follower.read(0, 1 << 20) == leader.read(0, 1 << 20)
    with pytest.raises(KafkaError):
        follower.append_as_follower(leader.read(2, 1 << 20), now_ms=0)  # offsets below LEO


def test_coordinator_appends_several_batches_and_control_batches(tmp_path: Path) -> None:
    log = open_log(tmp_path / "__consumer_offsets-0")
    control = build_batch([Record(b"\x00\x00\x00\x00", b"\x00\x00")], is_control=True)
    info = log.append_as_leader(
        make_batch(2) + control, 0, now_ms=0, origin=AppendOrigin.COORDINATOR
    )
    assert (info.first_offset, info.last_offset) == (0, 2)
    with pytest.raises(KafkaError) as exc:
        log.append_as_leader(control, 0, now_ms=0)
    assert exc.value.code == ErrorCode.INVALID_RECORD


def test_compressed_batches_are_stored_as_sent(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=1 << 20))
    for ctype in CompressionType:
        log.append_as_leader(make_batch(4, value_size=200, compression=ctype), 0, now_ms=0)
    assert [r.offset for r in all_records(log)] == list(range(20))
    codecs = [h.compression_type for _, h in iter_batch_headers(log.read(0, 1 << 20))]
    assert codecs == list(CompressionType)


def test_retention_by_time_size_and_log_start_offset(tmp_path: Path) -> None:
    config = small_config(segment_bytes=400, retention_ms=1_000, retention_bytes=-1)
    log = open_log(tmp_path / "t-0", config)
    append_n(log, 12, timestamp=10_000)
    segments = len(log.segments)
    assert log.delete_old_segments(now_ms=10_500) == 0  # nothing is old yet
    assert log.delete_old_segments(now_ms=100_000) == 0  # above the high watermark
    log.high_watermark = log.log_end_offset
    deleted = log.delete_old_segments(now_ms=100_000)
    assert deleted == segments  # all expired: a fresh empty segment takes over
    assert log.log_start_offset == log.log_end_offset == 24
    assert len(log.segments) == 1

    log.update_config(small_config(segment_bytes=400, retention_ms=-1, retention_bytes=500))
    append_n(log, 12)
    log.high_watermark = log.log_end_offset
    log.delete_old_segments(now_ms=0)
    assert log.size_in_bytes <= 500 + log.active_segment.size
    assert log.log_start_offset == log.segments[0].base_offset

    log.maybe_increment_log_start_offset(log.log_end_offset - 1)
    log.delete_old_segments(now_ms=0)
    assert len(log.segments) == 1
    with pytest.raises(KafkaError) as info:
        log.read(log.log_start_offset - 1, 100)
    assert info.value.code == ErrorCode.OFFSET_OUT_OF_RANGE


def test_flush_advances_the_recovery_point(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(flush_messages=5))
    append_n(log, 2)
    assert log.recovery_point == 0
    append_n(log, 1)  # six unflushed messages >= flush.messages
    assert log.recovery_point == 6
    append_n(log, 1)
    log.flush()
    assert log.recovery_point == 8


def test_log_config_from_topic_and_broker_properties() -> None:
    config = LogConfig.from_properties(
        {
            "segment.bytes": "2048",
            "retention.ms": "-1",
            "cleanup.policy": "compact,delete",
            "message.timestamp.type": "LogAppendTime",
            "compression.type": "zstd",
        }
    )
    assert (config.segment_bytes, config.retention_ms) == (2048, -1)
    assert config.compact_enabled
    assert config.delete_enabled
    assert config.is_log_append_time
    assert config.to_properties()["segment.bytes"] == "2048"
    broker = LogConfig.from_broker_properties(
        {"log.retention.hours": "1", "log.roll.hours": "2", "message.max.bytes": "100"}
    )
    assert (broker.retention_ms, broker.segment_ms, broker.max_message_bytes) == (
        3_600_000,
        7_200_000,
        100,
    )
    for bad in (
        {"segment.bytes": "x"},
        {"segment.bytes": "1"},
        {"message.timestamp.type": "Never"},
        {"cleanup.policy": "shred"},
    ):
        with pytest.raises(KafkaError) as info:
            LogConfig.from_properties(bad)
        assert info.value.code == ErrorCode.INVALID_CONFIG


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.close()
    with pytest.raises(KafkaError) as info:
        log.append_as_leader(make_batch(), 0, now_ms=0)
    assert info.value.code == ErrorCode.KAFKA_STORAGE_ERROR


def test_delete_removes_the_directory(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    append_n(log, 3)
    log.delete()
    assert not (tmp_path / "t-0").exists()


def decode_all(data: bytes) -> list[Record]:
    return [r for _, batch in iter_batches(data) for r in decode_records(batch)]


def test_assign_offsets_is_what_append_stores(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    batch = make_batch(2)
    log.append_as_leader(batch, 3, now_ms=0)
    expected = bytearray(batch)
    assign_offsets(expected, 0, 3)
    assert log.read(0, 1000) == bytes(expected)


def test_batches_without_timestamps(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", small_config(segment_bytes=300))
    for _ in range(8):
        log.append_as_leader(build_batch([Record(b"k", b"v" * 40)]), 0, now_ms=0)
    assert len(log.segments) > 1
    assert log.fetch_offset_by_timestamp(0) is None
    assert log.max_timestamp_and_offset() == (-1, -1)
    log.close()
    reopened = Log.open(tmp_path / "t-0", small_config(segment_bytes=300), now_ms=0)
    assert [r.offset for r in all_records(reopened)] == list(range(8))
