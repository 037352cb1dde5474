"""The ``__cluster_metadata`` log as the metadata layer sees it: records in, committed records out.

Kafka keeps the metadata log in ``<metadata.log.dir>/__cluster_metadata-0``; so does pykbroker,
in the first of ``log.dirs``. Writes go through Raft (``server/raft_driver.py``): ``encode``
turns one atomic metadata change into the record values of one batch, which the Raft leader
appends with its epoch. ``read`` returns the data records of an offset range (the committed
part, below the high watermark, is what the controller replays); control batches written by
Raft (LeaderChangeMessage, ...) are skipped. Logs written before Raft (plain batches with leader
epoch 0) read the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from pykbroker.api.protocol.codec import CodecError
from pykbroker.log.log import Log
from pykbroker.log.record_batch import decode_records, iter_batch_headers

from .records import MetadataRecord, deserialize, serialize

log = logging.getLogger(__name__)

METADATA_TOPIC = "__cluster_metadata"
_READ_CHUNK_BYTES = 1 << 20


def encode(records: Sequence[MetadataRecord]) -> list[bytes]:
    """The record values of one metadata batch (``MetadataRecordSerde``)."""
    return [serialize(r) for r in records]


class MetadataLog:
    """Read metadata records from the ``__cluster_metadata-0`` partition log."""

    def __init__(self, log: Log) -> None:
        self.log = log

    @property
    def start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def end_offset(self) -> int:
        return self.log.log_end_offset

    def read(self, start: int, end: int) -> Iterator[tuple[int, MetadataRecord]]:
        """The data records with offsets in ``[start, end)``, oldest first. ``start`` is a batch
        boundary. Undecodable records are skipped with a log line (a newer pykbroker may write
        record types this one cannot read)."""
        offset = max(start, self.log.log_start_offset)
        end = min(end, self.log.log_end_offset)
        while offset < end:  # each round moves ``offset`` forward by at least one batch
            chunk = self.log.read(offset, _READ_CHUNK_BYTES, min_one_message=True)
            if not chunk:
                return
            next_offset = offset
            for position, header in iter_batch_headers(chunk):
                if header.base_offset >= end:
                    return
                next_offset = header.next_offset
                if header.is_control:
                    continue
                batch = chunk[position : position + header.size_in_bytes]
                for rec in decode_records(batch):
                    if rec.offset < offset or rec.offset >= end or rec.value is None:
                        continue
                    try:
                        yield rec.offset, deserialize(rec.value)
                    except CodecError as exc:
                        log.warning("skipping metadata record at offset %d: %s", rec.offset, exc)
            if next_offset <= offset:
                return
            offset = next_offset
