"""Topic-level record rules applied on the leader's append, after Kafka's ``LogValidator``.

Mirrors the parts of ``org.apache.kafka.storage.internals.log.LogValidator`` that need
more than the batch header (``record_batch.validate_batches`` does the header checks):

- ``message.timestamp.before.max.ms`` / ``message.timestamp.after.max.ms`` (KIP-937):
  with ``CreateTime`` a record stamped before ``now - before`` or after ``now + after``
  fails the whole batch with INVALID_TIMESTAMP;
- a compacted topic (``cleanup.policy`` containing ``compact``) refuses records without
  a key with INVALID_RECORD ("Compacted topic cannot accept message without key");
- ``compression.type`` other than ``producer``: a batch in another codec is decoded and
  re-encoded with the topic's codec (``uncompressed`` included), keeping offsets deltas,
  producer id/epoch/sequence and flags.

Invariant: records are decoded only when a rule needs them — never for the defaults
(``before`` unbounded, ``after`` checked on the header's maxTimestamp, delete policy,
``compression.type=producer``). Timestamp and key rules apply to client produce
(``AppendOrigin.CLIENT``) only: internal writers stamp with the broker clock and always
set keys. Control batches are never touched. Pure: no file I/O, no clock.
"""

from __future__ import annotations

from typing import NamedTuple

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log_config import MAX_LONG, LogConfig
from pykbroker.log.record_batch import (
    DEFAULT_MAX_DECOMPRESSED,
    AppendOrigin,
    BatchHeader,
    Record,
    decode_records,
    iter_batches,
    rebuild_batch,
)

__all__ = ["LogAppendInfo", "max_timestamp_of", "validate_records"]

Buffer = bytes | bytearray | memoryview


class LogAppendInfo(NamedTuple):
    """What an append did, for the Produce response (Kafka's ``LogAppendInfo``)."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    log_append_time_ms: int
    log_start_offset: int
    records_count: int
    valid_bytes: int
    offset_of_max_timestamp: int = -1


def validate_records(
    buf: Buffer,
    headers: list[BatchHeader],
    config: LogConfig,
    now_ms: int,
    origin: AppendOrigin,
) -> tuple[Buffer, list[BatchHeader]]:
    """Apply the topic's record rules to header-validated batches.

    Returns the buffer to append (``buf`` itself unless a batch was recompressed) and its
    headers. Raises KafkaError (INVALID_TIMESTAMP, INVALID_RECORD, MESSAGE_TOO_LARGE)
    before anything is written.
    """
    client = origin is AppendOrigin.CLIENT
    check_time = client and not config.is_log_append_time
    lowest = now_ms - config.message_timestamp_before_max_ms
    highest = now_ms + config.message_timestamp_after_max_ms
    check_before = check_time and config.message_timestamp_before_max_ms != MAX_LONG
    check_keys = client and config.compact_enabled
    target = config.target_compression
    if not (check_before or check_keys or target is not None):  # the defaults: headers only
        if check_time:
            for header in headers:
                if header.max_timestamp > highest and not header.is_control:
                    raise _timestamp_error(
                        header.max_timestamp, header.last_offset_delta, lowest, highest
                    )
        return buf, headers
    rebuilt: list[bytes | memoryview] = []
    changed = False
    for header, batch in iter_batches(buf):
        if header.is_control:
            rebuilt.append(batch)
            continue
        if check_time and header.max_timestamp > highest:
            raise _timestamp_error(header.max_timestamp, header.last_offset_delta, lowest, highest)
        recompress = target is not None and target is not header.compression_type
        if not (check_before or check_keys or recompress):
            rebuilt.append(batch)
            continue
        records = decode_records(batch, max(DEFAULT_MAX_DECOMPRESSED, config.max_message_bytes))
        if check_before:
            _check_timestamps(records, lowest, highest)
        if check_keys:
            _check_keys(records)
        if recompress:
            rebuilt.append(rebuild_batch(header, records, compression=target))
            changed = True
        else:
            rebuilt.append(batch)
    if not changed:
        return buf, headers
    out = b"".join(rebuilt)
    new_headers = [header for header, _ in iter_batches(out)]
    for header in new_headers:
        if header.size_in_bytes > config.max_message_bytes:
            raise KafkaError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"record batch of {header.size_in_bytes} bytes after recompression exceeds "
                f"the maximum of {config.max_message_bytes}",
            )
    return out, new_headers


def _timestamp_error(timestamp: int, offset_delta: int, lowest: int, highest: int) -> KafkaError:
    return KafkaError(
        ErrorCode.INVALID_TIMESTAMP,
        f"Timestamp {timestamp} of message with offset delta {offset_delta} is out of range. "
        f"The timestamp should be within [{lowest}, {highest}]",
    )


def _check_timestamps(records: list[Record], lowest: int, highest: int) -> None:
    base = records[0].offset if records else 0
    for record in records:
        if not lowest <= record.timestamp <= highest:
            raise _timestamp_error(record.timestamp, record.offset - base, lowest, highest)


def _check_keys(records: list[Record]) -> None:
    for record in records:
        if record.key is None:
            raise KafkaError(
                ErrorCode.INVALID_RECORD,
                "Compacted topic cannot accept message without key",
            )


def max_timestamp_of(
    headers: list[BatchHeader], first_offset: int | None, append_time: int | None
) -> tuple[int, int]:
    """(max timestamp, last offset of the first batch carrying it) of validated batches.

    ``first_offset`` re-bases batches whose offsets are not assigned yet; with
    ``append_time`` (LogAppendTime) every batch carries that time.
    """
    if append_time is not None:
        assert first_offset is not None
        return append_time, first_offset + headers[0].last_offset_delta
    max_timestamp, offset_of_max = -1, -1
    next_offset = first_offset
    for header in headers:
        if next_offset is None:
            last_offset = header.last_offset
        else:
            last_offset = next_offset + header.last_offset_delta
            next_offset = last_offset + 1
        if header.max_timestamp > max_timestamp:
            max_timestamp, offset_of_max = header.max_timestamp, last_offset
    return max_timestamp, offset_of_max
