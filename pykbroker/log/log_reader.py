"""Reading a whole Log back as records, for the internal topics that are replayed at start-up.

``__cluster_metadata``, ``__consumer_offsets`` and ``__transaction_state`` are loaded by reading
every batch from the log start offset to the log end offset and decoding its records — the one
place outside compaction where records are decoded. Control batches (transaction markers,
KRaft control records) are skipped unless asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

from .log import Log
from .record_batch import Record, decode_records, iter_batch_headers

READ_CHUNK_BYTES = 1 << 20


def iter_records(log: Log, *, include_control: bool = False) -> Iterator[Record]:
    """Every record of ``log``, oldest first, with absolute offsets."""
    offset = log.log_start_offset
    end = log.log_end_offset
    while offset < end:
        chunk = log.read(offset, READ_CHUNK_BYTES, min_one_message=True)
        if not chunk:
            return
        next_offset = offset
        for position, header in iter_batch_headers(chunk):
            next_offset = header.next_offset
            if header.is_control and not include_control:
                continue
            batch = chunk[position : position + header.size_in_bytes]
            for record in decode_records(batch):
                if record.offset >= offset:
                    yield record
        if next_offset <= offset:
            return
        offset = next_offset
