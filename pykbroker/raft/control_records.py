"""Control-record readers: the KRaft control records (KRaftVersion, Voters, ...) in log bytes.

Kafka's ``RecordsIterator`` with the ``ControlOnlyDecodingStrategy``: the state machine needs
the control records of what it appends, fetches, truncates and installs, but the byte format of
``ReplicatedLog.read`` / snapshots belongs to the log implementation. A ``ControlRecordReader``
turns those bytes into ``LogBatch``es; two are provided: ``read_v2_control_records`` (v2 record
batches, ``KafkaReplicatedLog`` and Kafka's snapshot files) and ``read_memory_control_records``
(``MemoryLog``'s test format). Data batches are skipped without decoding their records.
``pykbroker.log.record_batch`` is imported on first use, as its compression codecs pull in
``socket``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pykbroker.api.protocol.errors import KafkaError

from .log import ControlRecordType
from .memory_log import _BATCH_HEADER as _MEMORY_HEADER
from .memory_log import NOT_CONTROL, decode_batches

_CONTROL_KEY = struct.Struct(">hh")


@dataclass(frozen=True, slots=True)
class ControlRecord:
    offset: int
    control_type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One batch: its offsets, and its control records (empty for a data batch)."""

    base_offset: int
    next_offset: int
    control_records: tuple[ControlRecord, ...] = ()


#: Bytes (of ``ReplicatedLog.read`` or a snapshot) to their batches.
ControlRecordReader = Callable[[bytes], Iterator[LogBatch]]


def read_v2_control_records(data: bytes) -> Iterator[LogBatch]:
    """Batches of v2 record batches; a control record's type is in its key (int16 version,
    int16 type). A corrupt batch raises ``ValueError``."""
    # Imported here: the codecs behind record_batch pull in socket (tests/raft/test_purity.py).
    from pykbroker.log.record_batch import decode_records, iter_batch_headers

    for position, header in iter_batch_headers(data):
        records: tuple[ControlRecord, ...] = ()
        if header.is_control:
            try:
                decoded = decode_records(data[position : position + header.size_in_bytes])
            except KafkaError as exc:
                raise ValueError(str(exc)) from exc
            found = []
            for record in decoded:
                key = record.key or b""
                if len(key) < _CONTROL_KEY.size:
                    continue
                _, control_type = _CONTROL_KEY.unpack_from(key)
                found.append(ControlRecord(record.offset, control_type, record.value or b""))
            records = tuple(found)
        yield LogBatch(header.base_offset, header.next_offset, records)


def read_memory_control_records(data: bytes) -> Iterator[LogBatch]:
    """Batches of ``MemoryLog.read`` bytes (``MemoryLog``'s documented format); the records of
    data batches are skipped unparsed."""
    position, size = 0, len(data)
    while position < size:
        if position + _MEMORY_HEADER.size > size:
            raise ValueError("truncated batch header")
        base_offset, _, count, control_type, length = _MEMORY_HEADER.unpack_from(data, position)
        end = position + _MEMORY_HEADER.size + length
        records: tuple[ControlRecord, ...] = ()
        if control_type != NOT_CONTROL:
            (batch,) = decode_batches(data[position:end])
            records = tuple(
                ControlRecord(base_offset + i, control_type, value)
                for i, value in enumerate(batch.records)
            )
        yield LogBatch(base_offset, base_offset + count, records)
        position = end


def is_kraft_control(control_type: int) -> bool:
    return control_type in (ControlRecordType.KRAFT_VERSION, ControlRecordType.KRAFT_VOTERS)
