"""``__consumer_offsets`` records for classic groups and offsets, and group partitioning.

Mirrors Kafka's ``GroupCoordinatorRecordHelpers`` / ``GroupCoordinatorRecordSerde`` for the
record types a classic coordinator writes, and ``GroupCoordinatorService.partitionFor``:

* key = int16 key version + key struct: versions 0 and 1 are ``OffsetCommitKey`` (Kafka
  writes 1), version 2 is ``GroupMetadataKey``, versions 3-8 are KIP-848 consumer group
  records (``consumer_group_records``); higher versions (KIP-932 share groups) are skipped
  when loading;
* value = int16 value version + value struct: ``OffsetCommitValue`` v3 and
  ``GroupMetadataValue`` v3 are written (as Kafka 3.x/4.x with an old-style commit), any of
  v0-v4 is read; a null value is a tombstone.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pykbroker.api.protocol import codec

from . import schemas
from .consumer_group_records import (
    KEY_VERSIONS,
    ConsumerGroupRecord,
    decode_consumer_group_record,
)
from .group import ClassicGroup

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
GROUP_METADATA_VALUE_VERSION = 3

_INT16 = struct.Struct(">h")


def java_string_hashcode(text: str) -> int:
    """Java's ``String.hashCode()``: over UTF-16 code units, with 32-bit overflow."""
    data = text.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def java_abs(value: int) -> int:
    """Kafka's ``Utils.abs``: ``Integer.MIN_VALUE`` maps to 0, not to itself."""
    return 0 if value == -(1 << 31) else abs(value)


#: The group coordinator's topic (Kafka's ``Topic.GROUP_METADATA_TOPIC_NAME``).
OFFSETS_TOPIC = "__consumer_offsets"


def partition_for(group_id: str, num_partitions: int) -> int:
    """The ``__consumer_offsets`` partition of a group, exactly as Kafka computes it."""
    return java_abs(java_string_hashcode(group_id)) % num_partitions


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    """A committed offset (Kafka's ``OffsetAndMetadata``).

    ``record_offset`` orders the records of a group as they were written (Kafka keeps the
    record's log offset; here it is the coordinator's count of records appended or replayed,
    which follows the log order of a partition): a transaction's offsets replace a committed
    offset on COMMIT only if written after it. It is not part of equality.
    """

    committed_offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp_ms: int = -1
    expire_timestamp_ms: int = -1
    record_offset: int = field(default=-1, compare=False, repr=False)


def _prefixed(version: int, body: bytes) -> bytes:
    return _INT16.pack(version) + body


def offset_commit_key(group_id: str, topic: str, partition: int) -> bytes:
    body = codec.encode(
        schemas.OFFSET_COMMIT_KEY,
        OFFSET_COMMIT_KEY_VERSION,
        {"group": group_id, "topic": topic, "partition": partition},
    )
    return _prefixed(OFFSET_COMMIT_KEY_VERSION, body)


def offset_commit_value(offset: OffsetAndMetadata) -> bytes:
    body = codec.encode(
        schemas.OFFSET_COMMIT_VALUE,
        OFFSET_COMMIT_VALUE_VERSION,
        {
            "offset": offset.committed_offset,
            "leader_epoch": offset.leader_epoch,
            "metadata": offset.metadata,
            "commit_timestamp": offset.commit_timestamp_ms,
        },
    )
    return _prefixed(OFFSET_COMMIT_VALUE_VERSION, body)


def group_metadata_key(group_id: str) -> bytes:
    body = codec.encode(schemas.GROUP_METADATA_KEY, GROUP_METADATA_KEY_VERSION, {"group": group_id})
    return _prefixed(GROUP_METADATA_KEY_VERSION, body)


def group_metadata_value(
    group: ClassicGroup, assignment: Mapping[str, bytes], current_state_timestamp_ms: int
) -> bytes:
    """The group as Kafka's ``newGroupMetadataRecord`` writes it."""
    members = []
    for member in group.all_members():
        subscription = (
            member.metadata(group.protocol_name) if group.protocol_name is not None else b""
        )
        members.append(
            {
                "member_id": member.member_id,
                "group_instance_id": member.group_instance_id,
                "client_id": member.client_id,
                "client_host": member.client_host,
                "rebalance_timeout": member.rebalance_timeout_ms,
                "session_timeout": member.session_timeout_ms,
                "subscription": subscription,
                "assignment": assignment.get(member.member_id, b""),
            }
        )
    body = codec.encode(
        schemas.GROUP_METADATA_VALUE,
        GROUP_METADATA_VALUE_VERSION,
        {
            "protocol_type": group.protocol_type or "",
            "generation": group.generation_id,
            "protocol": group.protocol_name,
            "leader": group.leader_id,
            "current_state_timestamp": current_state_timestamp_ms,
            "members": members,
        },
    )
    return _prefixed(GROUP_METADATA_VALUE_VERSION, body)


@dataclass(frozen=True, slots=True)
class OffsetCommitRecord:
    """A decoded offset commit (``offset`` None: a tombstone)."""

    group_id: str
    topic: str
    partition: int
    offset: OffsetAndMetadata | None


@dataclass(frozen=True, slots=True)
class GroupMetadataRecord:
    """A decoded group metadata record (``value`` None: a tombstone)."""

    group_id: str
    value: dict[str, Any] | None


def _split(data: bytes, what: str) -> tuple[int, bytes]:
    if len(data) < 2:
        raise codec.CodecError(f"{what} shorter than its version")
    (version,) = _INT16.unpack_from(data)
    return version, data[2:]


def decode_record(
    key: bytes, value: bytes | None
) -> OffsetCommitRecord | GroupMetadataRecord | ConsumerGroupRecord | None:
    """Decode one record; None for record types this coordinator does not use (share groups).

    Raises ``CodecError`` for a record of a known type that does not decode.
    """
    key_version, key_body = _split(key, "key")
    if key_version in (0, 1):
        k = codec.decode(schemas.OFFSET_COMMIT_KEY, key_version, key_body)
        offset = None
        if value is not None:
            value_version, value_body = _split(value, "value")
            if value_version not in schemas.OFFSET_COMMIT_VALUE.valid:
                raise codec.CodecError(f"unknown OffsetCommitValue version {value_version}")
            v = codec.decode(schemas.OFFSET_COMMIT_VALUE, value_version, value_body)
            offset = OffsetAndMetadata(
                committed_offset=v["offset"],
                leader_epoch=v["leader_epoch"],
                metadata=v["metadata"],
                commit_timestamp_ms=v["commit_timestamp"],
                expire_timestamp_ms=v["expire_timestamp"],
            )
        return OffsetCommitRecord(k["group"], k["topic"], k["partition"], offset)
    if key_version == GROUP_METADATA_KEY_VERSION:
        k = codec.decode(schemas.GROUP_METADATA_KEY, key_version, key_body)
        if value is None:
            return GroupMetadataRecord(k["group"], None)
        value_version, value_body = _split(value, "value")
        if value_version not in schemas.GROUP_METADATA_VALUE.valid:
            raise codec.CodecError(f"unknown GroupMetadataValue version {value_version}")
        return GroupMetadataRecord(
            k["group"], codec.decode(schemas.GROUP_METADATA_VALUE, value_version, value_body)
        )
    if key_version in KEY_VERSIONS:
        return decode_consumer_group_record(key_version, key_body, value)
    return None
