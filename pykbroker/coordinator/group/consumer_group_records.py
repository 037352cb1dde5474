"""``__consumer_offsets`` records of KIP-848 consumer groups (Kafka's record helpers).

Mirrors the consumer-group half of Kafka's ``GroupCoordinatorRecordHelpers``: the key
versions (int16 before the key struct) are Kafka's record types, every value is written at
version 0; a None value is a tombstone.

========  ===========================================  =============================
key ver.  record                                        replayed as
========  ===========================================  =============================
3         ConsumerGroupMetadata (group epoch)           ``ConsumerGroupEpoch``
4         ConsumerGroupPartitionMetadata                ``ConsumerGroupSubscriptionMetadata``
5         ConsumerGroupMemberMetadata (subscription)    ``ConsumerGroupMemberSubscription``
6         ConsumerGroupTargetAssignmentMetadata         ``ConsumerGroupTargetAssignmentEpoch``
7         ConsumerGroupTargetAssignmentMember           ``ConsumerGroupTargetAssignmentMember``
8         ConsumerGroupCurrentMemberAssignment          ``ConsumerGroupCurrentAssignment``
========  ===========================================  =============================

Each record type is a small frozen dataclass with ``encode() -> (key, value)``;
``decode_consumer_group_record`` turns bytes back into one, and ``replay`` applies one to the
in-memory groups (Kafka's ``GroupMetadataManager.replay``), live and when loading. Pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Any

from pykbroker.api.protocol import codec

from . import schemas
from .consumer_group import (
    LEAVE_GROUP_MEMBER_EPOCH,
    Assignment,
    ConsumerGroup,
    ConsumerGroupMember,
    ConsumerGroupState,
    MemberState,
    TopicMetadata,
    make_assignment,
)

GROUP_EPOCH_KEY_VERSION = 3
SUBSCRIPTION_METADATA_KEY_VERSION = 4
MEMBER_SUBSCRIPTION_KEY_VERSION = 5
TARGET_ASSIGNMENT_EPOCH_KEY_VERSION = 6
TARGET_ASSIGNMENT_MEMBER_KEY_VERSION = 7
CURRENT_ASSIGNMENT_KEY_VERSION = 8
KEY_VERSIONS = range(GROUP_EPOCH_KEY_VERSION, CURRENT_ASSIGNMENT_KEY_VERSION + 1)
VALUE_VERSION = 0

_INT16 = struct.Struct(">h")
Record = tuple[bytes, bytes | None]


def _key(version: int, schema: Any, fields: dict[str, Any]) -> bytes:
    return _INT16.pack(version) + codec.encode(schema, version, fields)


def _value(schema: Any, fields: dict[str, Any] | None) -> bytes | None:
    if fields is None:
        return None
    return _INT16.pack(VALUE_VERSION) + codec.encode(schema, VALUE_VERSION, fields)


def _topic_partitions(assignment: Assignment) -> list[dict[str, Any]]:
    return [
        {"topic_id": topic_id, "partitions": sorted(partitions)}
        for topic_id, partitions in sorted(assignment.items(), key=lambda kv: str(kv[0]))
    ]


def _from_topic_partitions(items: list[dict[str, Any]]) -> Assignment:
    return make_assignment((t["topic_id"], t["partitions"]) for t in items)


@dataclass(frozen=True, slots=True)
class ConsumerGroupEpoch:
    group_id: str
    epoch: int | None  # None: tombstone (the group is deleted)

    def encode(self) -> Record:
        key = _key(
            GROUP_EPOCH_KEY_VERSION,
            schemas.CONSUMER_GROUP_METADATA_KEY,
            {"group_id": self.group_id},
        )
        value = None if self.epoch is None else {"epoch": self.epoch}
        return key, _value(schemas.CONSUMER_GROUP_METADATA_VALUE, value)


@dataclass(frozen=True, slots=True)
class ConsumerGroupSubscriptionMetadata:
    group_id: str
    topics: dict[str, TopicMetadata] | None

    def encode(self) -> Record:
        key = _key(
            SUBSCRIPTION_METADATA_KEY_VERSION,
            schemas.CONSUMER_GROUP_PARTITION_METADATA_KEY,
            {"group_id": self.group_id},
        )
        value = None
        if self.topics is not None:
            value = {
                "topics": [
                    {
                        "topic_id": t.topic_id,
                        "topic_name": t.name,
                        "num_partitions": t.num_partitions,
                        "partition_metadata": [],
                    }
                    for _, t in sorted(self.topics.items())
                ]
            }
        return key, _value(schemas.CONSUMER_GROUP_PARTITION_METADATA_VALUE, value)


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    """The ConsumerGroupMemberMetadata value."""

    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None


@dataclass(frozen=True, slots=True)
class ConsumerGroupMemberSubscription:
    group_id: str
    member_id: str
    value: MemberSubscription | None

    def encode(self) -> Record:
        key = _key(
            MEMBER_SUBSCRIPTION_KEY_VERSION,
            schemas.CONSUMER_GROUP_MEMBER_METADATA_KEY,
            {"group_id": self.group_id, "member_id": self.member_id},
        )
        v = self.value
        value = None
        if v is not None:
            value = {
                "instance_id": v.instance_id,
                "rack_id": v.rack_id,
                "client_id": v.client_id,
                "client_host": v.client_host,
                "subscribed_topic_names": list(v.subscribed_topic_names),
                "subscribed_topic_regex": v.subscribed_topic_regex,
                "rebalance_timeout_ms": v.rebalance_timeout_ms,
                "server_assignor": v.server_assignor,
                "classic_member_metadata": None,
            }
        return key, _value(schemas.CONSUMER_GROUP_MEMBER_METADATA_VALUE, value)


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentEpoch:
    group_id: str
    epoch: int | None

    def encode(self) -> Record:
        key = _key(
            TARGET_ASSIGNMENT_EPOCH_KEY_VERSION,
            schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY,
            {"group_id": self.group_id},
        )
        value = None if self.epoch is None else {"assignment_epoch": self.epoch}
        return key, _value(schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_VALUE, value)


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMember:
    group_id: str
    member_id: str
    partitions: Assignment | None

    def encode(self) -> Record:
        key = _key(
            TARGET_ASSIGNMENT_MEMBER_KEY_VERSION,
            schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY,
            {"group_id": self.group_id, "member_id": self.member_id},
        )
        value = None
        if self.partitions is not None:
            value = {"topic_partitions": _topic_partitions(self.partitions)}
        return key, _value(schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_VALUE, value)


@dataclass(frozen=True, slots=True)
class CurrentAssignment:
    """The ConsumerGroupCurrentMemberAssignment value."""

    member_epoch: int
    previous_member_epoch: int
    state: MemberState
    assigned_partitions: Assignment
    partitions_pending_revocation: Assignment


@dataclass(frozen=True, slots=True)
class ConsumerGroupCurrentAssignment:
    group_id: str
    member_id: str
    value: CurrentAssignment | None

    def encode(self) -> Record:
        key = _key(
            CURRENT_ASSIGNMENT_KEY_VERSION,
            schemas.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY,
            {"group_id": self.group_id, "member_id": self.member_id},
        )
        v = self.value
        value = None
        if v is not None:
            value = {
                "member_epoch": v.member_epoch,
                "previous_member_epoch": v.previous_member_epoch,
                "state": int(v.state),
                "assigned_partitions": _topic_partitions(v.assigned_partitions),
                "partitions_pending_revocation": _topic_partitions(v.partitions_pending_revocation),
            }
        return key, _value(schemas.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_VALUE, value)


ConsumerGroupRecord = (
    ConsumerGroupEpoch
    | ConsumerGroupSubscriptionMetadata
    | ConsumerGroupMemberSubscription
    | ConsumerGroupTargetAssignmentEpoch
    | ConsumerGroupTargetAssignmentMember
    | ConsumerGroupCurrentAssignment
)


def _decode_value(schema: Any, value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) < 2:
        raise codec.CodecError("value shorter than its version")
    (version,) = _INT16.unpack_from(value)
    if version not in schema.valid:
        raise codec.CodecError(f"unknown {schema.name} version {version}")
    return codec.decode(schema, version, value[2:])


def decode_consumer_group_record(
    key_version: int, key_body: bytes, value: bytes | None
) -> ConsumerGroupRecord:
    """Decode a record whose key version is in ``KEY_VERSIONS``; raises ``CodecError``."""
    if key_version == GROUP_EPOCH_KEY_VERSION:
        k = codec.decode(schemas.CONSUMER_GROUP_METADATA_KEY, key_version, key_body)
        v = _decode_value(schemas.CONSUMER_GROUP_METADATA_VALUE, value)
        return ConsumerGroupEpoch(k["group_id"], None if v is None else v["epoch"])
    if key_version == SUBSCRIPTION_METADATA_KEY_VERSION:
        k = codec.decode(schemas.CONSUMER_GROUP_PARTITION_METADATA_KEY, key_version, key_body)
        v = _decode_value(schemas.CONSUMER_GROUP_PARTITION_METADATA_VALUE, value)
        topics = None
        if v is not None:
            topics = {
                t["topic_name"]: TopicMetadata(t["topic_id"], t["topic_name"], t["num_partitions"])
                for t in v["topics"]
            }
        return ConsumerGroupSubscriptionMetadata(k["group_id"], topics)
    if key_version == MEMBER_SUBSCRIPTION_KEY_VERSION:
        k = codec.decode(schemas.CONSUMER_GROUP_MEMBER_METADATA_KEY, key_version, key_body)
        v = _decode_value(schemas.CONSUMER_GROUP_MEMBER_METADATA_VALUE, value)
        subscription = None
        if v is not None:
            subscription = MemberSubscription(
                instance_id=v["instance_id"],
                rack_id=v["rack_id"],
                client_id=v["client_id"],
                client_host=v["client_host"],
                subscribed_topic_names=tuple(v["subscribed_topic_names"]),
                subscribed_topic_regex=v["subscribed_topic_regex"],
                rebalance_timeout_ms=v["rebalance_timeout_ms"],
                server_assignor=v["server_assignor"],
            )
        return ConsumerGroupMemberSubscription(k["group_id"], k["member_id"], subscription)
    if key_version == TARGET_ASSIGNMENT_EPOCH_KEY_VERSION:
        k = codec.decode(
            schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY, key_version, key_body
        )
        v = _decode_value(schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_VALUE, value)
        return ConsumerGroupTargetAssignmentEpoch(
            k["group_id"], None if v is None else v["assignment_epoch"]
        )
    if key_version == TARGET_ASSIGNMENT_MEMBER_KEY_VERSION:
        k = codec.decode(schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY, key_version, key_body)
        v = _decode_value(schemas.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_VALUE, value)
        partitions = None if v is None else _from_topic_partitions(v["topic_partitions"])
        return ConsumerGroupTargetAssignmentMember(k["group_id"], k["member_id"], partitions)
    if key_version == CURRENT_ASSIGNMENT_KEY_VERSION:
        k = codec.decode(
            schemas.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY, key_version, key_body
        )
        v = _decode_value(schemas.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_VALUE, value)
        current = None
        if v is not None:
            current = CurrentAssignment(
                member_epoch=v["member_epoch"],
                previous_member_epoch=v["previous_member_epoch"],
                state=MemberState.from_value(v["state"]),
                assigned_partitions=_from_topic_partitions(v["assigned_partitions"]),
                partitions_pending_revocation=_from_topic_partitions(
                    v["partitions_pending_revocation"]
                ),
            )
        return ConsumerGroupCurrentAssignment(k["group_id"], k["member_id"], current)
    raise codec.CodecError(f"key version {key_version} is not a consumer group record")


def _get_or_create(groups: dict[str, ConsumerGroup], group_id: str) -> ConsumerGroup:
    group = groups.get(group_id)
    if group is None:
        group = ConsumerGroup(group_id)
        groups[group_id] = group
    return group


def replay(groups: dict[str, ConsumerGroup], record: ConsumerGroupRecord) -> ConsumerGroup | None:
    """Apply one record to ``groups``; returns the group a tombstone deleted, if any."""
    group_id = record.group_id
    group = groups.get(group_id)
    if isinstance(record, ConsumerGroupEpoch):
        if record.epoch is None:
            if group is not None:
                group.state = ConsumerGroupState.DEAD
                del groups[group_id]
            return group
        _get_or_create(groups, group_id).set_group_epoch(record.epoch)
    elif isinstance(record, ConsumerGroupSubscriptionMetadata):
        if record.topics is None:
            if group is not None:
                group.subscription_metadata = {}
            return None
        _get_or_create(groups, group_id).subscription_metadata = dict(record.topics)
    elif isinstance(record, ConsumerGroupMemberSubscription):
        if record.value is None:
            if group is not None:
                group.remove_member(record.member_id)
            return None
        group = _get_or_create(groups, group_id)
        v = record.value
        old = group.member(record.member_id) or ConsumerGroupMember(record.member_id)
        group.update_member(
            replace(
                old,
                instance_id=v.instance_id,
                rack_id=v.rack_id,
                client_id=v.client_id,
                client_host=v.client_host,
                subscribed_topic_names=frozenset(v.subscribed_topic_names),
                subscribed_topic_regex=v.subscribed_topic_regex,
                rebalance_timeout_ms=v.rebalance_timeout_ms,
                server_assignor_name=v.server_assignor,
            )
        )
    elif isinstance(record, ConsumerGroupTargetAssignmentEpoch):
        if record.epoch is None:
            if group is not None:
                group.set_assignment_epoch(-1)
            return None
        _get_or_create(groups, group_id).set_assignment_epoch(record.epoch)
    elif isinstance(record, ConsumerGroupTargetAssignmentMember):
        if record.partitions is None:
            if group is not None:
                group.update_target_assignment(record.member_id, None)
            return None
        _get_or_create(groups, group_id).update_target_assignment(
            record.member_id, record.partitions
        )
    elif isinstance(record, ConsumerGroupCurrentAssignment):
        if record.value is None:
            leaving = group.member(record.member_id) if group is not None else None
            if group is not None and leaving is not None:
                group.update_member(
                    replace(
                        leaving,
                        member_epoch=LEAVE_GROUP_MEMBER_EPOCH,
                        previous_member_epoch=LEAVE_GROUP_MEMBER_EPOCH,
                        assigned_partitions={},
                        partitions_pending_revocation={},
                    )
                )
            return None
        group = _get_or_create(groups, group_id)
        c = record.value
        old = group.member(record.member_id) or ConsumerGroupMember(record.member_id)
        group.update_member(
            replace(
                old,
                member_epoch=c.member_epoch,
                previous_member_epoch=c.previous_member_epoch,
                state=c.state,
                assigned_partitions=c.assigned_partitions,
                partitions_pending_revocation=c.partitions_pending_revocation,
            )
        )
    return None
