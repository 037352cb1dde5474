"""Metadata snapshots (KIP-630): a ``MetadataImage`` as the records that rebuild it, and back.

Mirrors Kafka's ``MetadataImage.write`` (``ImageWriter``: FeaturesImage, ClusterImage,
TopicsImage, ConfigurationsImage, ProducerIdsImage each write their records) and the snapshot
file layout of ``RecordsSnapshotWriter``: v2 record batches in the snapshot's epoch -- a control
batch with a ``SnapshotHeaderRecord``, with a dynamic quorum (KIP-853, kraft.version 1) the
``KRaftVersionRecord`` and ``VotersRecord`` in force at the snapshot's end (so a node that
installs it knows the voters), the metadata records in batches of at most
``RECORDS_PER_BATCH``, then a control batch with a ``SnapshotFooterRecord``. Replaying
``image_records(image)`` into an empty image gives ``image`` back (the property the tests
check); ``load_snapshot`` is how a node starts from a snapshot file or one it fetched from the
leader. ``SnapshotPolicy`` says when to take the next one (Kafka's ``SnapshotGenerator``:
``metadata.log.max.record.bytes.between.snapshots`` / ``metadata.log.max.snapshot.interval.ms``).
Pure: bytes and images in and out, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import KafkaError
from pykbroker.log.record_batch import Record, build_batch, decode_records, iter_batch_headers
from pykbroker.raft.log import ControlRecordType, control_record_key
from pykbroker.raft.schemas import SNAPSHOT_FOOTER_RECORD, SNAPSHOT_HEADER_RECORD

from . import schemas
from .image import MetadataImage
from .records import MetadataRecord, deserialize, record, serialize

#: Metadata records per data batch of a snapshot (Kafka's writer fills batches by size).
RECORDS_PER_BATCH = 1000
#: Kafka's ``metadata.log.max.record.bytes.between.snapshots`` default (20 MiB).
DEFAULT_MAX_BYTES_BETWEEN_SNAPSHOTS = 20 * 1024 * 1024
#: Kafka's ``metadata.log.max.snapshot.interval.ms`` default (1 hour).
DEFAULT_MAX_SNAPSHOT_INTERVAL_MS = 3_600_000


class SnapshotFormatError(ValueError):
    """Bytes that are not a metadata snapshot (no header/footer, or a bad record)."""


def image_records(image: MetadataImage) -> list[MetadataRecord]:
    """The records that rebuild ``image`` from an empty one, in Kafka's image-writer order:
    features, brokers, topics and their partitions, configs, producer ids."""
    out: list[MetadataRecord] = [
        record(schemas.FEATURE_LEVEL_RECORD, name=name, feature_level=level)
        for name, level in sorted(image.features.items())
    ]
    for broker_id in sorted(image.brokers):
        reg = image.brokers[broker_id]
        endpoints = reg.endpoints
        if not endpoints and reg.port >= 0:  # a registration built without its listener list
            endpoints = (("PLAINTEXT", reg.host, reg.port, 0),)
        out.append(
            record(
                schemas.REGISTER_BROKER_RECORD,
                broker_id=broker_id,
                incarnation_id=reg.incarnation_id,
                broker_epoch=reg.epoch,
                end_points=[
                    {"name": n, "host": h, "port": p, "security_protocol": s}
                    for n, h, p, s in endpoints
                ],
                features=[],
                rack=reg.rack,
                fenced=reg.fenced,
                in_controlled_shutdown=reg.in_controlled_shutdown,
            )
        )
    for topic in sorted(image.topics_by_id.values(), key=lambda t: t.name):
        out.append(record(schemas.TOPIC_RECORD, name=topic.name, topic_id=topic.topic_id))
        for partition_id in sorted(topic.partitions):
            partition = topic.partitions[partition_id]
            out.append(
                record(
                    schemas.PARTITION_RECORD,
                    partition_id=partition_id,
                    topic_id=topic.topic_id,
                    replicas=list(partition.replicas),
                    isr=list(partition.isr),
                    removing_replicas=list(partition.removing_replicas),
                    adding_replicas=list(partition.adding_replicas),
                    leader=partition.leader,
                    leader_recovery_state=partition.leader_recovery_state,
                    leader_epoch=partition.leader_epoch,
                    partition_epoch=partition.partition_epoch,
                    directories=[],
                )
            )
    for (resource_type, resource_name), config in sorted(image.configs.items()):
        for name, value in sorted(config.items()):
            out.append(
                record(
                    schemas.CONFIG_RECORD,
                    resource_type=resource_type,
                    resource_name=resource_name,
                    name=name,
                    value=value,
                )
            )
    if image.next_producer_id > 0:
        out.append(
            record(
                schemas.PRODUCER_IDS_RECORD,
                broker_id=-1,
                broker_epoch=-1,
                next_producer_id=image.next_producer_id,
            )
        )
    return out


def image_from_records(records: Sequence[MetadataRecord], offset: int) -> MetadataImage:
    """The image a snapshot's records describe, at ``offset`` (its last contained offset)."""
    return MetadataImage().apply(records, offset)


def _control_batch(
    control_type: ControlRecordType, value: bytes, epoch: int, timestamp: int
) -> bytes:
    return build_batch(
        [Record(key=control_record_key(control_type), value=value, timestamp=timestamp)],
        partition_leader_epoch=epoch,
        is_control=True,
    )


def write_snapshot(
    image: MetadataImage,
    epoch: int,
    last_contained_log_time_ms: int,
    control_records: Iterable[tuple[ControlRecordType, bytes]] = (),
) -> bytes:
    """The snapshot file bytes of ``image``: header batch, ``control_records`` (the raft's
    KRaftVersionRecord and VotersRecord, ``RaftReplica.snapshot_control_records``) in one
    control batch, record batches, footer batch."""
    header = codec.encode(
        SNAPSHOT_HEADER_RECORD,
        0,
        {"version": 0, "last_contained_log_timestamp": last_contained_log_time_ms},
    )
    parts = [
        _control_batch(ControlRecordType.SNAPSHOT_HEADER, header, epoch, last_contained_log_time_ms)
    ]
    offset = 1
    control = list(control_records)
    if control:
        parts.append(
            build_batch(
                [
                    Record(
                        key=control_record_key(control_type),
                        value=value,
                        timestamp=last_contained_log_time_ms,
                    )
                    for control_type, value in control
                ],
                base_offset=offset,
                partition_leader_epoch=epoch,
                is_control=True,
            )
        )
        offset += len(control)
    records = image_records(image)
    for start in range(0, len(records), RECORDS_PER_BATCH):
        chunk = records[start : start + RECORDS_PER_BATCH]
        parts.append(
            build_batch(
                [
                    Record(key=None, value=serialize(r), timestamp=last_contained_log_time_ms)
                    for r in chunk
                ],
                base_offset=offset,
                partition_leader_epoch=epoch,
            )
        )
        offset += len(chunk)
    footer = codec.encode(SNAPSHOT_FOOTER_RECORD, 0, {"version": 0})
    parts.append(
        _control_batch(ControlRecordType.SNAPSHOT_FOOTER, footer, epoch, last_contained_log_time_ms)
    )
    return b"".join(parts)


def snapshot_records(data: bytes) -> Iterator[MetadataRecord]:
    """The metadata records of a snapshot file; ``SnapshotFormatError`` if it is not one
    (first batch not a header, last not a footer, undecodable records)."""
    seen_header = seen_footer = False
    try:
        for position, header in iter_batch_headers(data):
            batch = data[position : position + header.size_in_bytes]
            if seen_footer:
                raise SnapshotFormatError("records after the snapshot footer")
            if header.is_control:
                for rec in decode_records(batch):
                    key = rec.key or b""
                    if key == control_record_key(ControlRecordType.SNAPSHOT_HEADER):
                        seen_header = True
                    elif key == control_record_key(ControlRecordType.SNAPSHOT_FOOTER):
                        seen_footer = True
                continue
            if not seen_header:
                raise SnapshotFormatError("no snapshot header before the records")
            for rec in decode_records(batch):
                if rec.value is not None:
                    yield deserialize(rec.value)
    except (codec.CodecError, KafkaError) as exc:
        raise SnapshotFormatError(str(exc)) from exc
    if not (seen_header and seen_footer):
        raise SnapshotFormatError("a snapshot needs a header and a footer")


def load_snapshot(data: bytes, end_offset: int) -> MetadataImage:
    """The image stored in a snapshot of every record below ``end_offset``."""
    return image_from_records(list(snapshot_records(data)), end_offset - 1)


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When a node writes its next metadata snapshot (Kafka's ``SnapshotGenerator``): once
    ``max_bytes_between_snapshots`` bytes of records were committed since the last one, or
    ``max_interval_ms`` passed since it with something new committed (0 turns time off)."""

    max_bytes_between_snapshots: int = DEFAULT_MAX_BYTES_BETWEEN_SNAPSHOTS
    max_interval_ms: int = DEFAULT_MAX_SNAPSHOT_INTERVAL_MS

    def due(self, new_bytes: int, since_last_ms: int) -> bool:
        if new_bytes <= 0:
            return False
        if new_bytes >= self.max_bytes_between_snapshots:
            return True
        return self.max_interval_ms > 0 and since_last_ms >= self.max_interval_ms
