"""The ``__cluster_metadata`` log: metadata records stored as v2 record batches.

Kafka keeps the metadata log in ``<metadata.log.dir>/__cluster_metadata-0``; so does pykbroker,
in the first of ``log.dirs``. Each append is one batch (one atomic metadata change). A single
node is a one-voter quorum, so an append here is committed once it is written; the Raft layer
replaces ``append`` with replication through the quorum without changing the record format.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from pykbroker.api.protocol.codec import CodecError
from pykbroker.log.log import Log
from pykbroker.log.record_batch import Record, build_batch, decode_records, iter_batch_headers

from .records import MetadataRecord, deserialize, serialize

log = logging.getLogger(__name__)

METADATA_TOPIC = "__cluster_metadata"
_READ_CHUNK = 1 << 20


class MetadataLog:
    """Append metadata records; replay them from the start."""

    def __init__(self, log: Log) -> None:
        self.log = log

    @property
    def end_offset(self) -> int:
        return self.log.log_end_offset

    def append(self, records: Sequence[MetadataRecord], leader_epoch: int, now_ms: int) -> int:
        """Write ``records`` as one batch; return the offset of the last one."""
        batch = build_batch(
            [Record(key=None, value=serialize(r), timestamp=now_ms) for r in records]
        )
        info = self.log.append_as_leader(batch, leader_epoch, now_ms)
        self.log.high_watermark = self.log.log_end_offset
        return info.last_offset

    def replay(self) -> Iterator[tuple[int, MetadataRecord]]:
        """Every record, oldest first, with its offset; undecodable records are skipped
        with a log line (a newer pykbroker may write record types this one cannot read)."""
        offset = self.log.log_start_offset
        end = self.log.log_end_offset
        while offset < end:
            chunk = self.log.read(offset, _READ_CHUNK, min_one_message=True)
            if not chunk:
                break
            next_offset = offset
            for position, header in iter_batch_headers(chunk):
                batch = chunk[position : position + header.size_in_bytes]
                for rec in decode_records(batch):
                    if rec.offset < offset or rec.value is None:
                        continue
                    try:
                        yield rec.offset, deserialize(rec.value)
                    except CodecError as exc:
                        log.warning("skipping metadata record at offset %d: %s", rec.offset, exc)
                next_offset = header.next_offset
            if next_offset <= offset:
                break
            offset = next_offset

    def flush(self) -> None:
        self.log.flush()
