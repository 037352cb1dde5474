"""RecordBatch v2 (magic 2) layout, after Kafka's ``DefaultRecordBatch`` / ``DefaultRecord``.

Mirrors ``org.apache.kafka.common.record.DefaultRecordBatch`` (header layout, CRC,
in-place offset assignment), ``LogValidator``'s header-level checks and
``MemoryRecordsBuilder`` (``build_batch``, and ``rebuild_batch`` for recompression and
the cleaner).

Invariant: a batch stays bytes on the produce and fetch paths. ``validate_batches`` and
``assign_offsets`` touch only the 61-byte header of each batch plus one CRC-32C over
it; records are decoded (``decode_records``) only for internal topics and tests.
The CRC covers ``attributes`` to the end of the batch, so ``baseOffset``,
``batchLength`` and ``partitionLeaderEpoch`` can be patched without recomputing it.
Pure: no file I/O, no clock.

Batch header (big-endian)::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 |
    crc uint32 | attributes int16 | lastOffsetDelta int32 | baseTimestamp int64 |
    maxTimestamp int64 | producerId int64 | producerEpoch int16 | baseSequence int32 |
    recordsCount int32 | records...

Record: ``length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
key varint-bytes | value varint-bytes | headers count varint | (key varint-string,
value varint-bytes)*`` where a length of -1 means null.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from crc32c import crc32c

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.compression import CompressionType, compress, decompress

__all__ = [
    "BATCH_HEADER_SIZE",
    "HEADER_STRUCT",
    "LOG_OVERHEAD",
    "AppendOrigin",
    "BatchHeader",
    "EndTxnMarker",
    "Record",
    "TimestampType",
    "assign_offsets",
    "build_batch",
    "decode_records",
    "end_txn_marker_type",
    "iter_batch_headers",
    "iter_batches",
    "parse_header",
    "rebuild_batch",
    "unpack_header",
    "validate_batches",
]

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes not counted in batchLength
MAGIC_VALUE_V2 = 2
# batchLength of a batch without records: everything after the batchLength field
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD

BASE_OFFSET_OFFSET = 0
LENGTH_OFFSET = 8
PARTITION_LEADER_EPOCH_OFFSET = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
LAST_OFFSET_DELTA_OFFSET = 23
MAX_TIMESTAMP_OFFSET = 35
RECORDS_COUNT_OFFSET = 57

COMPRESSION_CODEC_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_FLAG_MASK = 0x10
CONTROL_FLAG_MASK = 0x20
DELETE_HORIZON_FLAG_MASK = 0x40

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1
NO_PARTITION_LEADER_EPOCH = -1

DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024

HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")
_AFTER_CRC = struct.Struct(">hiqqqhii")  # attributes .. recordsCount
_BEFORE_CRC = struct.Struct(">qiibI")  # baseOffset .. crc
_PREFIX = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_INT64 = struct.Struct(">q")
assert HEADER_STRUCT.size == BATCH_HEADER_SIZE


Buffer = bytes | bytearray | memoryview


class TimestampType(IntEnum):
    """Bit 3 of the attributes: which clock set the batch's timestamps."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class EndTxnMarker(IntEnum):
    """The type of a transaction marker's control record (Kafka's ``ControlRecordType``
    ABORT and COMMIT; the KRaft control types live in ``raft.log``)."""

    ABORT = 0
    COMMIT = 1


class AppendOrigin(IntEnum):
    """Who appends, as Kafka's ``AppendOrigin``: client batches get the strictest checks."""

    REPLICATION = 0
    COORDINATOR = 1
    CLIENT = 2
    RAFT_LEADER = 3


class BatchHeader(NamedTuple):
    """The fixed 61-byte header of a v2 record batch.

    A NamedTuple rather than a frozen dataclass: it is built once per batch on the
    produce path, and a frozen dataclass costs ~4x more to construct.
    """

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size_in_bytes(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def compression_type(self) -> CompressionType:
        codec = self.attributes & COMPRESSION_CODEC_MASK
        try:
            return CompressionType(codec)
        except ValueError:
            raise KafkaError(
                ErrorCode.CORRUPT_MESSAGE, f"unknown compression type {codec}"
            ) from None

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType((self.attributes & TIMESTAMP_TYPE_MASK) >> 3)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG_MASK)

    @property
    def has_delete_horizon_ms(self) -> bool:
        return bool(self.attributes & DELETE_HORIZON_FLAG_MASK)


def unpack_header(buf: Buffer, position: int = 0) -> BatchHeader:
    """The header at ``position``, unchecked (the caller knows 61 bytes are there)."""
    return tuple.__new__(BatchHeader, HEADER_STRUCT.unpack_from(buf, position))


@dataclass(frozen=True, slots=True)
class Record:
    """One record; ``offset`` and ``timestamp`` are absolute once decoded (-1: unset)."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int = NO_TIMESTAMP
    offset: int = -1


def _corrupt(message: str) -> KafkaError:
    return KafkaError(ErrorCode.CORRUPT_MESSAGE, message)


def parse_header(buf: Buffer, position: int = 0) -> BatchHeader:
    """Parse the batch header at ``position``; fewer than 61 bytes is CORRUPT_MESSAGE."""
    if position < 0 or len(buf) - position < BATCH_HEADER_SIZE:
        raise _corrupt(f"record batch header needs {BATCH_HEADER_SIZE} bytes")
    return unpack_header(buf, position)


def iter_batch_headers(buf: Buffer) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` of each complete batch in ``buf``.

    Stops quietly at a trailing partial batch (a fetch response may end with one);
    a batchLength too small for a header is CORRUPT_MESSAGE.
    """
    position = 0
    end = len(buf)
    while end - position >= LOG_OVERHEAD:
        (batch_length,) = _INT32.unpack_from(buf, position + LENGTH_OFFSET)
        if batch_length < MIN_BATCH_LENGTH:
            raise _corrupt(f"record batch length {batch_length} at {position} is too small")
        size = batch_length + LOG_OVERHEAD
        if end - position < size:
            return
        yield position, unpack_header(buf, position)
        position += size


def iter_batches(buf: Buffer) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Yield each complete batch of ``buf`` with a zero-copy view of its bytes."""
    view = memoryview(buf)
    for position, header in iter_batch_headers(view):
        yield header, view[position : position + header.size_in_bytes]


def validate_batches(
    buf: Buffer, max_batch_bytes: int, *, origin: AppendOrigin = AppendOrigin.CLIENT
) -> list[BatchHeader]:
    """Check every batch of a produce (or replicated) buffer at header level.

    Errors, as Kafka's ``LogValidator`` and ``ProduceRequest.validateRecords``:
    magic other than 2 -> UNSUPPORTED_FOR_MESSAGE_FORMAT; truncated, too short,
    trailing bytes, bad CRC-32C or unknown codec -> CORRUPT_MESSAGE; a batch larger
    than ``max_batch_bytes`` -> MESSAGE_TOO_LARGE (not checked for REPLICATION, as
    Kafka). For CLIENT origin also: exactly one batch, records count > 0 and equal to
    lastOffsetDelta + 1, no control batch, a sequence when there is a producer id ->
    INVALID_RECORD. Never decodes records.
    """
    view = memoryview(buf)
    end = len(view)
    client = origin is AppendOrigin.CLIENT
    check_size = origin is not AppendOrigin.REPLICATION
    headers: list[BatchHeader] = []
    position = 0
    while position < end:
        remaining = end - position
        if remaining <= MAGIC_OFFSET:
            raise _corrupt(f"{remaining} trailing bytes are less than a record batch header")
        magic = view[position + MAGIC_OFFSET]
        if magic != MAGIC_VALUE_V2:
            raise KafkaError(
                ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                f"record batch magic {magic}: only magic 2 is supported",
            )
        (batch_length,) = _INT32.unpack_from(view, position + LENGTH_OFFSET)
        if batch_length < MIN_BATCH_LENGTH:
            raise _corrupt(f"record batch length {batch_length} is too small")
        size = batch_length + LOG_OVERHEAD
        if size > remaining:
            raise _corrupt(f"record batch of {size} bytes but only {remaining} bytes left")
        if check_size and size > max_batch_bytes:
            raise KafkaError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"record batch of {size} bytes exceeds the maximum of {max_batch_bytes}",
            )
        header = unpack_header(view, position)
        if crc32c(view[position + ATTRIBUTES_OFFSET : position + size]) != header.crc:
            raise _corrupt(f"record batch at {position} fails its CRC-32C check")
        if header.attributes & COMPRESSION_CODEC_MASK > CompressionType.ZSTD:
            raise _corrupt(f"unknown compression type {header.attributes & 7}")
        if header.last_offset_delta < 0 or header.records_count < 0:
            raise _corrupt("negative lastOffsetDelta or records count")
        if client:
            _validate_client_batch(header, bool(headers))
        headers.append(header)
        position += size
    if client and not headers:
        raise KafkaError(ErrorCode.INVALID_RECORD, "produce request has no record batch")
    return headers


def _validate_client_batch(header: BatchHeader, not_first: bool) -> None:
    problem = None
    if not_first:
        problem = "only one record batch per partition is allowed in a produce request"
    elif header.records_count == 0:
        problem = "record batch has no records"
    elif header.records_count != header.last_offset_delta + 1:
        problem = (
            f"records count {header.records_count} does not match "
            f"lastOffsetDelta {header.last_offset_delta}"
        )
    elif header.is_control:
        problem = "clients may not write control records"
    elif header.producer_id >= 0 and header.base_sequence < 0:
        problem = f"invalid sequence {header.base_sequence} with producerId {header.producer_id}"
    if problem is not None:
        raise KafkaError(ErrorCode.INVALID_RECORD, problem)


def assign_offsets(
    buf: bytearray,
    base_offset: int,
    partition_leader_epoch: int,
    log_append_time_ms: int | None = None,
) -> int:
    """Patch baseOffset and partitionLeaderEpoch of each batch in place; return next offset.

    With ``log_append_time_ms`` set (topic ``message.timestamp.type=LogAppendTime``),
    also set the timestamp-type bit and maxTimestamp, and recompute the CRC, as
    Kafka's ``DefaultRecordBatch.setMaxTimestamp``. ``buf`` must be validated first.
    """
    next_offset = base_offset
    position = 0
    end = len(buf)
    with memoryview(buf) as view:
        while position < end:
            (batch_length,) = _INT32.unpack_from(view, position + LENGTH_OFFSET)
            (last_offset_delta,) = _INT32.unpack_from(view, position + LAST_OFFSET_DELTA_OFFSET)
            _PREFIX.pack_into(view, position, next_offset, batch_length, partition_leader_epoch)
            size = batch_length + LOG_OVERHEAD
            if log_append_time_ms is not None:
                (attributes,) = _INT16.unpack_from(view, position + ATTRIBUTES_OFFSET)
                _INT16.pack_into(view, position + ATTRIBUTES_OFFSET, attributes | 0x08)
                _INT64.pack_into(view, position + MAX_TIMESTAMP_OFFSET, log_append_time_ms)
                crc = crc32c(view[position + ATTRIBUTES_OFFSET : position + size])
                _UINT32.pack_into(view, position + CRC_OFFSET, crc)
            next_offset += last_offset_delta + 1
            position += size
    return next_offset


# -- records ---------------------------------------------------------------------------


def _write_varint(out: bytearray, value: int) -> None:
    """Append the zigzag varint (or varlong) encoding of ``value``."""
    v = (value << 1) ^ (value >> 63)
    while v & ~0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _write_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        out.append(1)  # zigzag(-1)
    else:
        _write_varint(out, len(data))
        out += data


def _encode_record(record: Record, offset_delta: int, timestamp_delta: int) -> bytearray:
    body = bytearray(b"\x00")  # record attributes: unused
    _write_varint(body, timestamp_delta)
    _write_varint(body, offset_delta)
    _write_bytes(body, record.key)
    _write_bytes(body, record.value)
    _write_varint(body, len(record.headers))
    for header_key, header_value in record.headers:
        _write_bytes(body, header_key.encode())
        _write_bytes(body, header_value)
    out = bytearray()
    _write_varint(out, len(body))
    out += body
    return out


def build_batch(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    compression: CompressionType = CompressionType.NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    is_transactional: bool = False,
    is_control: bool = False,
    timestamp_type: int = TimestampType.CREATE_TIME,
    last_offset_delta: int | None = None,
) -> bytes:
    """Encode one v2 batch, as Kafka's ``MemoryRecordsBuilder``.

    A record's ``offset`` (when >= 0) is absolute and gives its offset delta from
    ``base_offset``; otherwise records take consecutive offsets. baseTimestamp is the
    first record's timestamp, maxTimestamp the largest. ``last_offset_delta`` defaults
    to the largest offset delta (0 for an empty batch).
    """
    attributes = (
        (TIMESTAMP_TYPE_MASK if timestamp_type == TimestampType.LOG_APPEND_TIME else 0)
        | (TRANSACTIONAL_FLAG_MASK if is_transactional else 0)
        | (CONTROL_FLAG_MASK if is_control else 0)
    )
    return _encode_batch(
        records,
        base_offset=base_offset,
        compression=CompressionType(compression),
        attributes=attributes,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        partition_leader_epoch=partition_leader_epoch,
        last_offset_delta=last_offset_delta,
        base_timestamp=records[0].timestamp if records else NO_TIMESTAMP,
        max_timestamp=max((r.timestamp for r in records), default=NO_TIMESTAMP),
    )


def rebuild_batch(
    header: BatchHeader,
    records: Sequence[Record],
    *,
    compression: CompressionType | None = None,
    delete_horizon_ms: int | None = None,
) -> bytes:
    """Re-encode decoded ``records`` (absolute offsets) in a batch shaped like ``header``.

    Kept from ``header``: base offset, lastOffsetDelta (so producer state survives, as
    Kafka's ``MemoryRecords.filterTo``), partition leader epoch, producer id, epoch and
    base sequence, the transactional, control and timestamp-type bits. The codec is
    ``compression`` (default: the original one). With ``delete_horizon_ms`` the batch gets
    Kafka's delete-horizon bit and that horizon as its baseTimestamp (KIP-534); record
    timestamps are re-based on it, so they decode unchanged.
    """
    attributes = header.attributes & ~(COMPRESSION_CODEC_MASK | DELETE_HORIZON_FLAG_MASK)
    log_append_time = header.timestamp_type is TimestampType.LOG_APPEND_TIME
    if delete_horizon_ms is not None:
        attributes |= DELETE_HORIZON_FLAG_MASK
        base_timestamp = delete_horizon_ms
    elif header.has_delete_horizon_ms:
        attributes |= DELETE_HORIZON_FLAG_MASK
        base_timestamp = header.base_timestamp
    elif records and not log_append_time:
        base_timestamp = records[0].timestamp
    else:
        base_timestamp = header.base_timestamp
    if log_append_time or not records:
        max_timestamp = header.max_timestamp
    else:
        max_timestamp = max(r.timestamp for r in records)
    return _encode_batch(
        records,
        base_offset=header.base_offset,
        compression=header.compression_type if compression is None else compression,
        attributes=attributes,
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence,
        partition_leader_epoch=header.partition_leader_epoch,
        last_offset_delta=header.last_offset_delta,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        timestamps_from_base=not log_append_time,
    )


def _encode_batch(
    records: Sequence[Record],
    *,
    base_offset: int,
    compression: CompressionType,
    attributes: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    partition_leader_epoch: int,
    last_offset_delta: int | None,
    base_timestamp: int,
    max_timestamp: int,
    timestamps_from_base: bool = True,
) -> bytes:
    body = bytearray()
    max_delta = 0
    for index, record in enumerate(records):
        delta = record.offset - base_offset if record.offset >= 0 else index
        max_delta = max(max_delta, delta)
        timestamp_delta = record.timestamp - base_timestamp if timestamps_from_base else 0
        body += _encode_record(record, delta, timestamp_delta)
    payload = body if compression == CompressionType.NONE else compress(compression, body)
    after_crc = bytearray(
        _AFTER_CRC.pack(
            attributes | int(compression),
            max_delta if last_offset_delta is None else last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            len(records),
        )
    )
    after_crc += payload
    batch_length = BATCH_HEADER_SIZE - LOG_OVERHEAD + len(payload)
    prefix = _BEFORE_CRC.pack(
        base_offset, batch_length, partition_leader_epoch, MAGIC_VALUE_V2, crc32c(after_crc)
    )
    return prefix + after_crc


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    """Decode a zigzag varint/varlong at ``position``; return ``(value, new position)``."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if position >= end:
            raise _corrupt("record ends inside a varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7
        if shift > 63:
            raise _corrupt("varint longer than 10 bytes")


def _read_bytes(data: bytes, position: int, limit: int) -> tuple[bytes | None, int]:
    length, position = _read_varint(data, position)
    if length < 0:
        return None, position
    if position + length > limit:
        raise _corrupt("record field runs past the end of the record")
    return data[position : position + length], position + length


def decode_records(
    batch_bytes: Buffer, max_decompressed: int = DEFAULT_MAX_DECOMPRESSED
) -> list[Record]:
    """Decode the records of the batch at the start of ``batch_bytes``.

    Records carry absolute offsets and timestamps (maxTimestamp for LogAppendTime
    batches). Malformed input raises CORRUPT_MESSAGE.
    """
    header = parse_header(batch_bytes)
    size = header.size_in_bytes
    if header.batch_length < MIN_BATCH_LENGTH or len(batch_bytes) < size:
        raise _corrupt("record batch is truncated")
    payload = memoryview(batch_bytes)[BATCH_HEADER_SIZE:size]
    ctype = header.compression_type
    data = (
        bytes(payload)
        if ctype is CompressionType.NONE
        else decompress(ctype, payload, max_decompressed)
    )
    log_append_time = header.timestamp_type is TimestampType.LOG_APPEND_TIME
    records: list[Record] = []
    position = 0
    end = len(data)
    for _ in range(header.records_count):
        length, position = _read_varint(data, position)
        record_end = position + length
        if length < 0 or record_end > end:
            raise _corrupt("record length runs past the end of the batch")
        position += 1  # attributes
        timestamp_delta, position = _read_varint(data, position)
        offset_delta, position = _read_varint(data, position)
        key, position = _read_bytes(data, position, record_end)
        value, position = _read_bytes(data, position, record_end)
        header_count, position = _read_varint(data, position)
        if header_count < 0 or header_count > record_end - position:
            raise _corrupt(f"invalid header count {header_count}")
        record_headers: list[tuple[str, bytes | None]] = []
        for _ in range(header_count):
            raw_key, position = _read_bytes(data, position, record_end)
            if raw_key is None:
                raise _corrupt("null record header key")
            try:
                header_key = raw_key.decode()
            except UnicodeDecodeError:
                raise _corrupt("record header key is not UTF-8") from None
            header_value, position = _read_bytes(data, position, record_end)
            record_headers.append((header_key, header_value))
        if position != record_end:
            raise _corrupt("record length does not match its fields")
        records.append(
            Record(
                key,
                value,
                tuple(record_headers),
                header.max_timestamp
                if log_append_time
                else header.base_timestamp + timestamp_delta,
                header.base_offset + offset_delta,
            )
        )
    if position != end:
        raise _corrupt(f"{end - position} bytes left after the last record of the batch")
    return records


def end_txn_marker_type(batch_bytes: Buffer) -> EndTxnMarker | None:
    """The marker type of the control batch at the start of ``batch_bytes`` (Kafka's
    ``ControlRecordType.parse`` of its first record's key: version int16, type int16);
    None when the batch is not a transaction marker or its key is unreadable."""
    records = decode_records(batch_bytes)
    if not records:
        return None
    key = records[0].key
    if key is None or len(key) < _INT16.size * 2:
        return None
    (marker_type,) = _INT16.unpack_from(key, _INT16.size)
    try:
        return EndTxnMarker(marker_type)
    except ValueError:
        return None
