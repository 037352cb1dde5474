"""Topic-level record rules on append: timestamp bounds, keys on compacted topics,
compression.type recompression, LogAppendTime, max.message.bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.compression import CompressionType
from pykbroker.log.log import Log
from pykbroker.log.log_config import LogConfig
from pykbroker.log.record_batch import (
    AppendOrigin,
    Record,
    TimestampType,
    build_batch,
    decode_records,
    iter_batches,
    parse_header,
)

from .support import all_records, make_batch, small_config

NOW = 1_700_000_000_000
HOUR = 3_600_000


def open_log(path: Path, **overrides: object) -> Log:
    return Log.open(path, small_config(segment_bytes=1 << 20, **overrides), now_ms=NOW)


def error_of(log: Log, batch: bytes, **kwargs: object) -> ErrorCode:
    with pytest.raises(KafkaError) as info:
        log.append_as_leader(batch, 0, now_ms=NOW, **kwargs)  # type: ignore[arg-type]
    return info.value.code


def test_future_timestamps_beyond_after_max_ms_are_invalid(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")  # Kafka 4 default: one hour ahead at most
    assert LogConfig().message_timestamp_after_max_ms == HOUR
    assert error_of(log, make_batch(2, timestamp=NOW + HOUR)) == ErrorCode.INVALID_TIMESTAMP
    log.append_as_leader(make_batch(2, timestamp=NOW + HOUR - 1), 0, now_ms=NOW)
    log.append_as_leader(make_batch(1, timestamp=0), 0, now_ms=NOW)  # before: unbounded
    assert log.log_end_offset == 3


def test_old_timestamps_before_before_max_ms_are_invalid(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", message_timestamp_before_max_ms=1_000)
    records = [Record(b"a", b"1", timestamp=NOW), Record(b"b", b"2", timestamp=NOW - 1_001)]
    assert error_of(log, build_batch(records)) == ErrorCode.INVALID_TIMESTAMP
    assert log.log_end_offset == 0
    log.append_as_leader(make_batch(3, timestamp=NOW - 1_000), 0, now_ms=NOW)
    assert log.log_end_offset == 3


def test_timestamp_bounds_do_not_apply_to_log_append_time_or_internal_writes(
    tmp_path: Path,
) -> None:
    log = open_log(tmp_path / "t-0", message_timestamp_type="LogAppendTime")
    info = log.append_as_leader(make_batch(2, timestamp=NOW + 10 * HOUR), 0, now_ms=NOW)
    assert info.log_append_time_ms == NOW
    assert {r.timestamp for r in all_records(log)} == {NOW}
    strict = open_log(tmp_path / "u-0")
    strict.append_as_leader(
        make_batch(1, timestamp=NOW + 10 * HOUR), 0, now_ms=NOW, origin=AppendOrigin.COORDINATOR
    )


def test_compacted_topics_refuse_records_without_a_key(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", cleanup_policy="compact")
    keyless = build_batch([Record(b"k", b"v", timestamp=NOW), Record(None, b"v", timestamp=NOW)])
    assert error_of(log, keyless) == ErrorCode.INVALID_RECORD
    for codec in (CompressionType.NONE, CompressionType.ZSTD):
        compressed = build_batch([Record(None, b"v", timestamp=NOW)], compression=codec)
        assert error_of(log, compressed) == ErrorCode.INVALID_RECORD
    log.append_as_leader(make_batch(2, timestamp=NOW), 0, now_ms=NOW)
    assert log.log_end_offset == 2
    deleting = open_log(tmp_path / "u-0", cleanup_policy="delete")
    deleting.append_as_leader(keyless, 0, now_ms=NOW)


@pytest.mark.parametrize(
    ("topic_codec", "sent", "stored"),
    [
        ("zstd", CompressionType.NONE, CompressionType.ZSTD),
        ("lz4", CompressionType.GZIP, CompressionType.LZ4),
        ("uncompressed", CompressionType.SNAPPY, CompressionType.NONE),
        ("gzip", CompressionType.GZIP, CompressionType.GZIP),
        ("producer", CompressionType.SNAPPY, CompressionType.SNAPPY),
    ],
)
def test_compression_type_recompresses_with_the_topic_codec(
    tmp_path: Path, topic_codec: str, sent: CompressionType, stored: CompressionType
) -> None:
    log = open_log(tmp_path / "t-0", compression_type=topic_codec)
    records = [Record(b"k%d" % i, b"value-%d" % i * 20, (("h", b"x"),), NOW + i) for i in range(5)]
    original = build_batch(
        records, compression=sent, producer_id=7, producer_epoch=2, base_sequence=40
    )
    info = log.append_as_leader(original, 3, now_ms=NOW)
    assert (info.first_offset, info.last_offset, info.max_timestamp) == (0, 4, NOW + 4)
    data = log.read(0, 1 << 20)
    if stored is sent:  # kept byte for byte but for the patched partitionLeaderEpoch
        assert (data[:12], data[16:]) == (original[:12], original[16:])
    header = parse_header(data)
    assert header.compression_type is stored
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 2, 40)
    assert (header.partition_leader_epoch, header.last_offset_delta) == (3, 4)
    got = decode_records(data)
    assert [(r.key, r.value, r.headers, r.timestamp, r.offset) for r in got] == [
        (r.key, r.value, r.headers, r.timestamp, i) for i, r in enumerate(records)
    ]
    log.append_as_leader(make_batch(2, timestamp=NOW), 0, now_ms=NOW)
    assert [h.compression_type for h, _ in iter_batches(log.read(0, 1 << 20))][-1] is (
        stored if topic_codec != "producer" else CompressionType.NONE
    )


def test_recompression_with_log_append_time_sets_the_append_time(tmp_path: Path) -> None:
    log = open_log(
        tmp_path / "t-0", compression_type="gzip", message_timestamp_type="LogAppendTime"
    )
    log.append_as_leader(make_batch(3, timestamp=5), 0, now_ms=NOW)
    header = parse_header(log.read(0, 1 << 20))
    assert header.compression_type is CompressionType.GZIP
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == NOW
    assert {r.timestamp for r in all_records(log)} == {NOW}


def test_per_topic_max_message_bytes(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", max_message_bytes=200)
    assert error_of(log, make_batch(5, value_size=100)) == ErrorCode.MESSAGE_TOO_LARGE
    log.append_as_leader(make_batch(1, value_size=10), 0, now_ms=NOW)


def test_new_topic_configs_parse_and_validate() -> None:
    config = LogConfig.from_properties(
        {
            "min.cleanable.dirty.ratio": "0.25",
            "min.compaction.lag.ms": "10",
            "max.compaction.lag.ms": "20",
            "delete.retention.ms": "30",
            "message.timestamp.before.max.ms": "40",
            "message.timestamp.after.max.ms": "50",
            "compression.type": "ZSTD",
        }
    )
    assert config.min_cleanable_dirty_ratio == 0.25
    assert (config.min_compaction_lag_ms, config.max_compaction_lag_ms) == (10, 20)
    assert config.delete_retention_ms == 30
    assert (config.message_timestamp_before_max_ms, config.message_timestamp_after_max_ms) == (
        40,
        50,
    )
    assert config.target_compression is CompressionType.ZSTD
    assert LogConfig.from_properties(config.to_properties()) == config
    broker = LogConfig.from_broker_properties(
        {
            "log.cleaner.min.cleanable.ratio": "0.1",
            "log.cleaner.delete.retention.ms": "7",
            "log.message.timestamp.after.max.ms": "8",
            "compression.type": "lz4",
            "log.flush.interval.messages": "1",
        }
    )
    assert (broker.min_cleanable_dirty_ratio, broker.delete_retention_ms) == (0.1, 7)
    assert (broker.message_timestamp_after_max_ms, broker.flush_messages) == (8, 1)
    assert broker.target_compression is CompressionType.LZ4
    for bad in (
        {"min.cleanable.dirty.ratio": "1.5"},
        {"min.cleanable.dirty.ratio": "x"},
        {"compression.type": "brotli"},
        {"delete.retention.ms": "-1"},
        {"max.compaction.lag.ms": "0"},
    ):
        with pytest.raises(KafkaError) as info:
            LogConfig.from_properties(bad)
        assert info.value.code == ErrorCode.INVALID_CONFIG
