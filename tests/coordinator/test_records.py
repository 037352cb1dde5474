"""__consumer_offsets records and Kafka's group partitioning."""

from __future__ import annotations

import struct

import pytest

from pykbroker.api.protocol import codec
from pykbroker.coordinator.group import schemas
from pykbroker.coordinator.group.group import ClassicGroup
from pykbroker.coordinator.group.member import ClassicGroupMember
from pykbroker.coordinator.group.records import (
    GroupMetadataRecord,
    OffsetAndMetadata,
    OffsetCommitRecord,
    decode_record,
    group_metadata_key,
    group_metadata_value,
    java_string_hashcode,
    offset_commit_key,
    offset_commit_value,
    partition_for,
)

# (text, String.hashCode(), partition of 50) computed with a JVM (java H.java).
JAVA_VALUES = [
    ("my-group", -1906497762, 12),
    ("polygenelubricants", -(2**31), 0),  # Integer.MIN_VALUE: Utils.abs gives 0
    ("hello", 99162322, 22),
    ("", 0, 0),
    ("console-consumer-12345", 158455506, 6),
    ("test-group", 627841412, 12),
    ("\u00e9t\u00e9-\U0001f600", -1803456526, 26),  # non-ASCII and a surrogate pair
]


@pytest.mark.parametrize(("text", "hashcode", "partition"), JAVA_VALUES)
def test_java_hashcode_and_partition_match_kafka(text: str, hashcode: int, partition: int) -> None:
    assert java_string_hashcode(text) == hashcode
    assert partition_for(text, 50) == partition


def test_offset_commit_record_layout_and_round_trip() -> None:
    key = offset_commit_key("g", "t", 3)
    assert key[:2] == struct.pack(">h", 1)
    assert key[2:] == b"\x00\x01g\x00\x01t\x00\x00\x00\x03"
    offset = OffsetAndMetadata(42, leader_epoch=5, metadata="meta", commit_timestamp_ms=1000)
    value = offset_commit_value(offset)
    assert value[:2] == struct.pack(">h", 3)
    record = decode_record(key, value)
    assert record == OffsetCommitRecord("g", "t", 3, offset)
    assert decode_record(key, None) == OffsetCommitRecord("g", "t", 3, None)


def test_older_and_flexible_offset_values_decode() -> None:
    key = offset_commit_key("g", "t", 0)
    v1 = struct.pack(">h", 1) + codec.encode(
        schemas.OFFSET_COMMIT_VALUE,
        1,
        {"offset": 9, "metadata": "", "commit_timestamp": 1, "expire_timestamp": 2},
    )
    v4 = struct.pack(">h", 4) + codec.encode(
        schemas.OFFSET_COMMIT_VALUE,
        4,
        {"offset": 10, "leader_epoch": 3, "metadata": "x", "commit_timestamp": 1},
    )
    first, second = decode_record(key, v1), decode_record(key, v4)
    assert isinstance(first, OffsetCommitRecord)
    assert isinstance(second, OffsetCommitRecord)
    assert first.offset is not None
    assert first.offset.committed_offset == 9
    assert first.offset.leader_epoch == -1
    assert second.offset is not None
    assert (second.offset.committed_offset, second.offset.leader_epoch) == (10, 3)


def test_group_metadata_record_round_trip() -> None:
    group = ClassicGroup("g", generation_id=4, protocol_type="consumer", protocol_name="range")
    group.add(
        ClassicGroupMember(
            member_id="m-1",
            group_instance_id="i",
            client_id="c",
            client_host="/1.2.3.4",
            rebalance_timeout_ms=30000,
            session_timeout_ms=10000,
            protocol_type="consumer",
            supported_protocols=[("range", b"sub")],
        )
    )
    key = group_metadata_key("g")
    assert key[:2] == struct.pack(">h", 2)
    value = group_metadata_value(group, {"m-1": b"asg"}, 123)
    assert value[:2] == struct.pack(">h", 3)
    record = decode_record(key, value)
    assert isinstance(record, GroupMetadataRecord)
    assert record.value is not None
    assert record.value["generation"] == 4
    assert record.value["leader"] == "m-1"
    assert record.value["protocol"] == "range"
    assert record.value["current_state_timestamp"] == 123
    [member] = record.value["members"]
    assert member["group_instance_id"] == "i"
    assert (member["subscription"], member["assignment"]) == (b"sub", b"asg")
    assert decode_record(key, None) == GroupMetadataRecord("g", None)


def test_other_record_types_are_skipped_and_garbage_raises() -> None:
    # Share group records (key versions 9+) are not this coordinator's.
    assert decode_record(struct.pack(">h", 10) + b"\x00\x01g", b"\x00\x00\x00\x00\x00\x01") is None
    with pytest.raises(codec.CodecError):
        decode_record(b"\x00", None)
    with pytest.raises(codec.CodecError):
        decode_record(offset_commit_key("g", "t", 0), struct.pack(">h", 9) + b"xx")
