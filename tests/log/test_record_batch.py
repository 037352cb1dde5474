"""RecordBatch v2: build/validate/decode round trips, interop with kafka-python, errors."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.compression import CompressionType
from pykbroker.log.record_batch import (
    BATCH_HEADER_SIZE,
    AppendOrigin,
    Record,
    TimestampType,
    assign_offsets,
    build_batch,
    decode_records,
    iter_batch_headers,
    parse_header,
    validate_batches,
)

from .support import DefaultRecordBatch, DefaultRecordBatchBuilder, make_batch

CODECS = list(CompressionType)
MAX = 1 << 20


def error_code(fn: object, *args: object, **kwargs: object) -> ErrorCode:
    with pytest.raises(KafkaError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value.code


def patch(batch: bytes, position: int, fmt: str, value: int, *, fix_crc: bool = True) -> bytes:
    """Overwrite one header field, recomputing the CRC unless told not to."""
    data = bytearray(batch)
    struct.pack_into(fmt, data, position, value)
    if fix_crc:
        struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


RECORDS = [
    Record(b"k0", b"v0", (("h1", b"x"), ("h2", None)), 1_000),
    Record(None, b"value without key", (), 1_005),
    Record(b"tombstone", None, (), 999),
    Record(b"", b"", (("", b""),), 1_002),
]


@pytest.mark.parametrize("ctype", CODECS, ids=lambda c: c.name)
def test_build_validate_decode_round_trip(ctype: CompressionType) -> None:
    batch = build_batch(
        RECORDS, base_offset=0, compression=ctype, producer_id=7, producer_epoch=1, base_sequence=0
    )
    [header] = validate_batches(batch, MAX)
    assert header.compression_type is ctype
    assert header.records_count == 4
    assert header.last_offset_delta == 3
    assert header.base_timestamp == 1_000
    assert header.max_timestamp == 1_005
    assert header.size_in_bytes == len(batch)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (7, 1, 0)
    decoded = decode_records(batch)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in decoded] == [
        (r.key, r.value, r.headers, r.timestamp) for r in RECORDS
    ]
    assert [r.offset for r in decoded] == [0, 1, 2, 3]


@pytest.mark.parametrize("ctype", CODECS, ids=lambda c: c.name)
def test_kafka_python_batches_are_accepted_and_decoded(ctype: CompressionType) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(ctype),
        is_transactional=False,
        producer_id=42,
        producer_epoch=3,
        base_sequence=10,
        batch_size=1 << 20,
    )
    for i in range(20):
        builder.append(
            i,
            timestamp=1_700_000_000_000 + i,
            key=b"key-%d" % i,
            value=b"compressible value " * 20,
            headers=[("trace", b"id-%d" % i)],
        )
    data = bytes(builder.build())
    [header] = validate_batches(data, MAX)
    assert header.compression_type is ctype  # the payload is compressible: really compressed
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 3, 10)
    records = decode_records(data)
    assert [r.offset for r in records] == list(range(20))
    assert records[5].key == b"key-5"
    assert records[5].headers == (("trace", b"id-5"),)
    assert records[19].timestamp == 1_700_000_000_019


@pytest.mark.parametrize("ctype", CODECS, ids=lambda c: c.name)
def test_kafka_python_reads_our_batches_after_offset_assignment(ctype: CompressionType) -> None:
    buf = bytearray(build_batch(RECORDS, compression=ctype))
    assert assign_offsets(buf, 500, 9) == 504
    reader = DefaultRecordBatch(bytes(buf))
    assert reader.validate_crc()
    assert reader.base_offset == 500
    assert parse_header(buf).partition_leader_epoch == 9
    got = [(r.offset, r.key, r.value, r.timestamp) for r in reader]
    assert got == [(500 + i, r.key, r.value, r.timestamp) for i, r in enumerate(RECORDS)]


def test_bad_crc_is_corrupt_message() -> None:
    batch = make_batch(3)
    flipped = batch[:-1] + bytes([batch[-1] ^ 0xFF])
    assert error_code(validate_batches, flipped, MAX) == ErrorCode.CORRUPT_MESSAGE


def test_magic_1_is_unsupported_for_message_format() -> None:
    legacy = patch(make_batch(), 16, ">b", 1)
    assert error_code(validate_batches, legacy, MAX) == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT


def test_batch_larger_than_max_is_message_too_large() -> None:
    batch = make_batch(5, value_size=300)
    assert validate_batches(batch, len(batch))
    assert error_code(validate_batches, batch, len(batch) - 1) == ErrorCode.MESSAGE_TOO_LARGE
    # replicated batches were checked by the leader: size is not enforced again (Kafka)
    assert validate_batches(batch, 10, origin=AppendOrigin.REPLICATION)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(make_batch(2)[:-1], id="truncated"),
        pytest.param(make_batch(2) + b"\x00" * 5, id="trailing-garbage"),
        pytest.param(make_batch(2)[:10], id="shorter-than-header"),
        pytest.param(patch(make_batch(2), 8, ">i", 20), id="batch-length-too-small"),
        pytest.param(patch(make_batch(2), 21, ">h", 6), id="unknown-codec"),
    ],
)
def test_malformed_framing_is_corrupt_message(data: bytes) -> None:
    assert error_code(validate_batches, data, MAX) == ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize(
    ("position", "fmt", "value"),
    [
        pytest.param(23, ">i", 5, id="last-offset-delta-mismatch"),
        pytest.param(57, ">i", 0, id="no-records"),
        pytest.param(21, ">h", 0x20, id="control-batch"),
        pytest.param(43, ">q", 17, id="producer-id-without-sequence"),
    ],
)
def test_client_batch_rules_are_invalid_record(position: int, fmt: str, value: int) -> None:
    batch = patch(make_batch(2), position, fmt, value)
    assert error_code(validate_batches, batch, MAX) == ErrorCode.INVALID_RECORD


def test_client_may_send_only_one_batch_but_coordinator_may_append_several() -> None:
    two = make_batch(2) + make_batch(3)
    assert error_code(validate_batches, two, MAX) == ErrorCode.INVALID_RECORD
    assert error_code(validate_batches, b"", MAX) == ErrorCode.INVALID_RECORD
    headers = validate_batches(two, MAX, origin=AppendOrigin.COORDINATOR)
    assert [h.records_count for h in headers] == [2, 3]
    control = build_batch([Record(b"\x00\x00\x00\x00", b"")], is_control=True)
    assert validate_batches(control, MAX, origin=AppendOrigin.COORDINATOR)[0].is_control


def test_assign_offsets_patches_every_batch_without_touching_the_crc() -> None:
    buf = bytearray(make_batch(2) + make_batch(3) + make_batch(1))
    before = [h.crc for _, h in iter_batch_headers(buf)]
    assert assign_offsets(buf, 100, 4) == 106
    headers = validate_batches(buf, MAX, origin=AppendOrigin.COORDINATOR)
    assert [h.base_offset for h in headers] == [100, 102, 105]
    assert {h.partition_leader_epoch for h in headers} == {4}
    assert [h.crc for h in headers] == before


def test_assign_offsets_with_log_append_time_sets_timestamps_and_crc() -> None:
    buf = bytearray(make_batch(3, timestamp=5, compression=CompressionType.ZSTD))
    assign_offsets(buf, 0, 0, log_append_time_ms=99_999)
    [header] = validate_batches(buf, MAX)
    assert header.timestamp_type is TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == 99_999
    assert header.compression_type is CompressionType.ZSTD
    assert {r.timestamp for r in decode_records(buf)} == {99_999}


def test_iter_batch_headers_stops_at_a_trailing_partial_batch() -> None:
    data = make_batch(1) + make_batch(2) + make_batch(3)[:40]
    positions = [p for p, _ in iter_batch_headers(data)]
    assert positions == [0, len(make_batch(1))]
    assert list(iter_batch_headers(b"")) == []


def test_parse_header_needs_61_bytes() -> None:
    batch = make_batch()
    assert parse_header(batch).magic == 2
    assert error_code(parse_header, batch[: BATCH_HEADER_SIZE - 1]) == ErrorCode.CORRUPT_MESSAGE


def test_header_properties() -> None:
    batch = build_batch(
        RECORDS[:2],
        base_offset=10,
        is_transactional=True,
        producer_id=1,
        producer_epoch=0,
        base_sequence=0,
    )
    header = parse_header(batch)
    assert (header.last_offset, header.next_offset) == (11, 12)
    assert header.is_transactional
    assert not header.is_control
    assert header.timestamp_type is TimestampType.CREATE_TIME


def test_explicit_record_offsets_leave_gaps_like_compaction() -> None:
    batch = build_batch([Record(b"a", b"1", offset=3), Record(b"b", b"2", offset=7)], base_offset=3)
    header = parse_header(batch)
    assert header.last_offset_delta == 4
    assert header.records_count == 2
    assert [r.offset for r in decode_records(batch)] == [3, 7]
    assert validate_batches(batch, MAX, origin=AppendOrigin.REPLICATION)
    assert error_code(validate_batches, batch, MAX) == ErrorCode.INVALID_RECORD


record_strategy = st.builds(
    Record,
    key=st.none() | st.binary(max_size=20),
    value=st.none() | st.binary(max_size=200),
    headers=st.lists(
        st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=3
    ).map(tuple),
    timestamp=st.integers(0, 2**40),
)


@settings(max_examples=30, deadline=None)
@given(records=st.lists(record_strategy, min_size=1, max_size=8), ctype=st.sampled_from(CODECS))
def test_round_trip_property(records: list[Record], ctype: CompressionType) -> None:
    batch = build_batch(records, compression=ctype)
    validate_batches(batch, MAX)
    decoded = decode_records(batch)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in decoded] == [
        (r.key, r.value, r.headers, r.timestamp) for r in records
    ]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_corrupted_records_raise_only_corrupt_message(data: st.DataObject) -> None:
    batch = bytearray(make_batch(4, value_size=30))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(BATCH_HEADER_SIZE, len(batch) - 1))
        batch[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(BATCH_HEADER_SIZE, len(batch)))
    del batch[cut:]
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    validate_batches(batch, MAX)  # header-level checks cannot see inside the records
    code = None
    try:
        decode_records(batch)
    except KafkaError as exc:
        code = exc.code
    assert code in (None, ErrorCode.CORRUPT_MESSAGE)


@settings(max_examples=80, deadline=None)
@given(
    prefix=st.sampled_from([b"", make_batch(1)]),
    garbage=st.binary(max_size=120),
    origin=st.sampled_from(list(AppendOrigin)),
)
def test_garbage_produce_data_raises_only_kafka_errors(
    prefix: bytes, garbage: bytes, origin: AppendOrigin
) -> None:
    data = prefix + garbage
    try:
        headers = validate_batches(data, MAX, origin=origin)
    except KafkaError:
        return
    assert sum(h.size_in_bytes for h in headers) == len(data)
    for position, header in iter_batch_headers(data):
        assert header in headers
        assert position < len(data)
