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
from pykbroker.log.log_reader import iter_records
from pykbroker.log.record_batch import Record, build_batch

from .records import MetadataRecord, deserialize, serialize

log = logging.getLogger(__name__)

METADATA_TOPIC = "__cluster_metadata"


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
        for rec in iter_records(self.log):
            if rec.value is None:
                continue
            try:
                yield rec.offset, deserialize(rec.value)
            except CodecError as exc:
                log.warning("skipping metadata record at offset %d: %s", rec.offset, exc)

    def flush(self) -> None:
        self.log.flush()
