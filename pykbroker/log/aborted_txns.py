"""An in-memory aborted-transaction index per partition log (Kafka's ``.txnindex`` role).

For each ABORT control batch the index keeps ``(producer_id, first_offset, last_offset)``:
the first offset of the aborted transaction on this partition and the offset of its marker.
Fetch with ``isolation_level`` read_committed answers the entries overlapping the fetched
range as ``aborted_transactions``, so the client skips the aborted batches.

The index is built lazily by scanning the whole log the first time a partition is asked for
(so it is rebuilt from the log after every restart), then kept up to date by the transaction
coordinator as it writes markers (``record_abort``). Not persisted as a ``.txnindex`` file;
not adjusted on truncation (single-broker logs do not truncate below the high watermark).
"""

from __future__ import annotations

import struct
import weakref
from dataclasses import dataclass
from typing import Any

from pykbroker.log.record_batch import decode_records, iter_batch_headers

__all__ = ["AbortedTxn", "aborted_transactions", "control_type", "record_abort"]

_READ_CHUNK = 1 << 20
_INT16X2 = struct.Struct(">hh")
ABORT = 0
COMMIT = 1


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int


_INDEXES: weakref.WeakKeyDictionary[Any, list[AbortedTxn]] = weakref.WeakKeyDictionary()


def control_type(key: bytes | None) -> int:
    """The type of a control record key (0 ABORT, 1 COMMIT; -1 unknown)."""
    if key is None or len(key) < 4:
        return -1
    return int(_INT16X2.unpack_from(key, 0)[1])


def _scan(plog: Any) -> list[AbortedTxn]:
    found: list[AbortedTxn] = []
    open_first: dict[int, int] = {}
    offset = plog.log_start_offset
    end = plog.log_end_offset
    while offset < end:
        chunk = plog.read(offset, _READ_CHUNK, min_one_message=True)
        if not chunk:
            break
        next_offset = offset
        for position, header in iter_batch_headers(chunk):
            next_offset = header.next_offset
            if not header.is_transactional:
                continue
            pid = header.producer_id
            if not header.is_control:
                open_first.setdefault(pid, header.base_offset)
                continue
            batch = chunk[position : position + header.size_in_bytes]
            first = open_first.pop(pid, None)
            if first is not None and any(
                control_type(rec.key) == ABORT for rec in decode_records(batch)
            ):
                found.append(AbortedTxn(pid, first, header.base_offset))
        if next_offset <= offset:
            break
        offset = next_offset
    return found


def _index(plog: Any) -> list[AbortedTxn]:
    index = _INDEXES.get(plog)
    if index is None:
        index = _scan(plog)
        _INDEXES[plog] = index
    return index


def record_abort(plog: Any, producer_id: int, first_offset: int, marker_offset: int) -> None:
    """An ABORT marker was appended at ``marker_offset`` (call after the append)."""
    index = _INDEXES.get(plog)
    if index is None:
        return  # built, marker included, on first use
    if first_offset >= 0:
        index.append(AbortedTxn(producer_id, first_offset, marker_offset))


def aborted_transactions(plog: Any, fetch_offset: int, upper_offset: int) -> list[AbortedTxn]:
    """The aborted transactions overlapping ``[fetch_offset, upper_offset)``."""
    return [
        t for t in _index(plog) if t.last_offset >= fetch_offset and t.first_offset < upper_offset
    ]
