"""The pure group coordinator: classic and consumer groups, offsets, admin, expiry.

Mirrors Kafka's ``GroupCoordinatorShard``: it owns the classic ``GroupMetadataManager``, the
KIP-848 ``ConsumerGroupManager`` and the ``OffsetMetadataManager``, routes the requests that
concern both kinds of group, and runs the periodic offset expiry
(``offsets.retention.check.interval.ms``). A group id is one kind of group at a time, as in
Kafka: a classic JoinGroup may take over an *empty* consumer group (its records are
tombstoned) and a consumer heartbeat an *empty* classic group (its offsets stay); a non-empty
group of the other kind answers INCONSISTENT_GROUP_PROTOCOL (JoinGroup) or
GROUP_ID_NOT_FOUND (ConsumerGroupHeartbeat, DescribeGroups, ConsumerGroupDescribe).

Pure: ``now_ms`` in, ``PendingWrite``s and completed ``ResponseFuture``s out; wall-clock
timestamps are ``now_ms + wall_offset_ms``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.image import MetadataImage

from . import records
from .config import GroupCoordinatorConfig
from .consumer_group import Assignment, ConsumerGroupState
from .consumer_group_manager import ConsumerGroupManager
from .consumer_group_records import ConsumerGroupRecord
from .consumer_group_requests import ConsumerGroupHeartbeatRequest
from .group import DEAD, EMPTY, STABLE
from .group_metadata_manager import GroupMetadataManager
from .offset_metadata_manager import OffsetMetadataManager
from .records import GroupMetadataRecord, OffsetAndMetadata, OffsetCommitRecord
from .requests import JoinGroupRequest, append_error_to_response_error, join_error
from .result import NO_PRODUCER_ID, PendingWrite, Record, ResponseFuture, TxnMarker

NO_ERROR = ErrorCode.NO_ERROR
CLASSIC = "classic"
CONSUMER = "consumer"
_EXPIRATION_KEY = ("offsets-expiration",)
#: Kafka's ``AclOperation`` bits a group supports, all granted without an authorizer:
#: READ(3), DELETE(6), DESCRIBE(8), DESCRIBE_CONFIGS(10), ALTER_CONFIGS(11).
GROUP_AUTHORIZED_OPERATIONS = sum(1 << op for op in (3, 6, 8, 10, 11))
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)
#: ConsumerGroupDescribe v1 ``member_type``: 1 for a member using the consumer protocol.
CONSUMER_MEMBER_TYPE = 1


class GroupCoordinatorShard:
    """Every group and committed offset this coordinator serves."""

    def __init__(
        self,
        config: GroupCoordinatorConfig,
        *,
        new_uuid: Callable[[], Any] = uuid.uuid4,
        wall_offset_ms: int = 0,
    ) -> None:
        self.config = config
        self.classic = GroupMetadataManager(
            config, new_uuid=new_uuid, wall_offset_ms=wall_offset_ms
        )
        self.consumer = ConsumerGroupManager(config, self.classic, new_uuid=new_uuid)
        self.offsets = OffsetMetadataManager(config, self.classic, self.consumer)

    @property
    def wall_offset_ms(self) -> int:
        return self.classic.wall_offset_ms

    @wall_offset_ms.setter
    def wall_offset_ms(self, value: int) -> None:
        self.classic.wall_offset_ms = value

    def partition_for(self, group_id: str) -> int:
        return self.classic.partition_for(group_id)

    def next_deadline(self) -> int | None:
        return self.classic.next_deadline()

    def tick(self, now_ms: int) -> list[PendingWrite]:
        return self.classic.tick(now_ms)

    # -- loading -----------------------------------------------------------------------

    def replay(
        self,
        record: OffsetCommitRecord | GroupMetadataRecord | ConsumerGroupRecord,
        now_ms: int,
        producer_id: int = NO_PRODUCER_ID,
    ) -> None:
        """Apply one record read back from ``__consumer_offsets`` (``producer_id``: the
        producer of the transactional batch it is in)."""
        if isinstance(record, OffsetCommitRecord):
            self.offsets.replay(record, producer_id)
        elif isinstance(record, GroupMetadataRecord):
            self.classic.load_group(record.group_id, record.value, now_ms)
        else:
            self.consumer.load(record)

    def replay_end_transaction_marker(self, producer_id: int, commit: bool) -> None:
        """Apply a transaction marker read back from (or written to) ``__consumer_offsets``."""
        self.offsets.replay_end_transaction_marker(producer_id, commit)

    def complete_transaction(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
        future: ResponseFuture,
    ) -> list[PendingWrite]:
        """Write a transaction marker to a ``__consumer_offsets`` partition (Kafka's
        ``completeTransaction``); once written it is replayed. ``future`` gets
        ``{"error_code"}``."""

        def on_appended(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            if error == NO_ERROR:
                self.replay_end_transaction_marker(producer_id, commit)
            future.complete({"error_code": error})
            return []

        return [
            PendingWrite(
                partition,
                [],
                on_appended,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
                marker=TxnMarker(commit, coordinator_epoch),
            )
        ]

    def on_loaded(self, now_ms: int) -> list[PendingWrite]:
        """After loading: offsets-only ids become Empty classic groups (as Kafka), the
        members' sessions start and the offset expiry is scheduled."""
        for group_id in sorted(self.offsets.group_ids()):
            if self.consumer.group(group_id) is None:
                self.classic.get_or_create_group(group_id, now_ms)
        for group_id in list(self.consumer.groups):
            # A consumer group's id cannot also be a classic group (a stale record).
            self.classic.groups.pop(group_id, None)
        writes = self.classic.on_loaded(now_ms)
        self.consumer.on_loaded(now_ms)
        self.schedule_expiration(now_ms)
        return writes

    def on_unloaded(self) -> None:
        """The partition moved to another coordinator (Kafka's ``onUnloaded``): parked
        joins and syncs answer NOT_COORDINATOR and no timer fires any more."""
        self.classic.on_unloaded()

    # -- classic protocol entry points that must know about consumer groups -------------

    def join_group(
        self, request: JoinGroupRequest, future: ResponseFuture, now_ms: int
    ) -> list[PendingWrite]:
        writes: list[PendingWrite] = []
        consumer = self.consumer.group(request.group_id)
        if consumer is not None:
            if not consumer.is_empty():
                # Classic members in a consumer group (KIP-848 upgrade path) are not supported.
                future.complete(
                    join_error(request.member_id, ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
                )
                return []
            # An empty consumer group is replaced by a classic group (its offsets stay).
            out: list[Record] = []
            self.consumer.tombstones(request.group_id, out)
            writes.append(PendingWrite(self.partition_for(request.group_id), out, None))
        return writes + self.classic.join_group(request, future, now_ms)

    # -- consumer protocol -------------------------------------------------------------

    def consumer_group_heartbeat(
        self,
        request: ConsumerGroupHeartbeatRequest,
        future: ResponseFuture,
        now_ms: int,
        image: MetadataImage | None = None,
    ) -> list[PendingWrite]:
        return self.consumer.heartbeat(request, future, now_ms, image)

    def consumer_group_describe(
        self, group_ids: Sequence[str], include_authorized_operations: bool, image: MetadataImage
    ) -> list[dict[str, Any]]:
        described = []
        for group_id in group_ids:
            if not group_id:
                described.append(
                    {
                        "error_code": ErrorCode.INVALID_GROUP_ID,
                        "error_message": "Group id can't be empty.",
                        "group_id": group_id,
                        "group_state": "",
                        "group_epoch": 0,
                        "assignment_epoch": 0,
                        "assignor_name": "",
                        "members": [],
                        "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED,
                    }
                )
                continue
            described.append(
                self._describe_consumer_group(group_id, include_authorized_operations, image)
            )
        return described

    def _describe_consumer_group(
        self, group_id: str, include_authorized_operations: bool, image: MetadataImage
    ) -> dict[str, Any]:
        group = self.consumer.group(group_id)
        if group is None:
            classic = self.classic.group(group_id)
            return {
                "error_code": ErrorCode.GROUP_ID_NOT_FOUND,
                "error_message": (
                    f"Group {group_id} is not a consumer group."
                    if classic is not None and not classic.is_in_state(DEAD)
                    else f"Group {group_id} not found."
                ),
                "group_id": group_id,
                "group_state": "",
                "group_epoch": 0,
                "assignment_epoch": 0,
                "assignor_name": "",
                "members": [],
                "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED,
            }

        def topic_partitions(assignment: Assignment) -> dict[str, Any]:
            items = []
            for topic_id, partitions in sorted(assignment.items(), key=lambda kv: str(kv[0])):
                topic = image.topics_by_id.get(topic_id)
                if topic is not None:  # a deleted topic is left out (as Kafka)
                    items.append(
                        {
                            "topic_id": topic_id,
                            "topic_name": topic.name,
                            "partitions": sorted(partitions),
                        }
                    )
            return {"topic_partitions": items}

        return {
            "error_code": NO_ERROR,
            "error_message": None,
            "group_id": group_id,
            "group_state": group.state.value,
            "group_epoch": group.group_epoch,
            "assignment_epoch": group.assignment_epoch,
            "assignor_name": group.preferred_server_assignor(self.config.default_consumer_assignor),
            "members": [
                {
                    "member_id": m.member_id,
                    "instance_id": m.instance_id,
                    "rack_id": m.rack_id,
                    "member_epoch": m.member_epoch,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "subscribed_topic_names": sorted(m.subscribed_topic_names),
                    "subscribed_topic_regex": m.subscribed_topic_regex,
                    "assignment": topic_partitions(m.assigned_partitions),
                    "target_assignment": topic_partitions(group.target(m.member_id)),
                    "member_type": CONSUMER_MEMBER_TYPE,
                }
                for m in group.members.values()
            ],
            "authorized_operations": (
                GROUP_AUTHORIZED_OPERATIONS
                if include_authorized_operations
                else AUTHORIZED_OPERATIONS_OMITTED
            ),
        }

    # -- offsets -----------------------------------------------------------------------

    def fetch_offsets(
        self,
        group_id: str,
        topics: Sequence[tuple[str, Sequence[int]]] | None,
        member_id: str | None = None,
        member_epoch: int = -1,
        require_stable: bool = False,
    ) -> tuple[ErrorCode, list[dict[str, Any]]]:
        """One group's OffsetFetch: (group error, topics)."""
        error = self.offsets.validate_offset_fetch(group_id, member_id, member_epoch)
        if error is not None:
            return error, []
        group = self.classic.group(group_id)
        if group is not None and group.is_in_state(DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND, []
        return NO_ERROR, self.offsets.fetch_offsets(group_id, topics, require_stable)

    def delete_offsets(
        self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]], future: ResponseFuture
    ) -> list[PendingWrite]:
        """OffsetDelete; ``future`` gets ``{"error_code", "topics"}`` (Kafka's rules: partitions
        of a subscribed topic get GROUP_SUBSCRIBED_TO_TOPIC, partitions without an offset are
        left out of the answer)."""
        error = self._validate_offset_delete(group_id)
        if error is not None:
            future.complete({"error_code": error, "topics": []})
            return []
        is_subscribed = self._subscription_check(group_id)
        response: list[dict[str, Any]] = []
        deleted: list[tuple[str, int]] = []
        for name, partition_indexes in topics:
            partitions: list[dict[str, Any]] = []
            response.append({"name": name, "partitions": partitions})
            if is_subscribed(name):
                partitions.extend(
                    {"partition_index": p, "error_code": ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC}
                    for p in partition_indexes
                )
                continue
            for p in partition_indexes:
                if self.offsets.committed(group_id, name, p) is not None:
                    partitions.append({"partition_index": p, "error_code": NO_ERROR})
                    deleted.append((name, p))
        if not deleted:
            future.complete({"error_code": NO_ERROR, "topics": response})
            return []

        def on_appended(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            if error == NO_ERROR:
                for topic, partition in deleted:
                    self.offsets.forget(group_id, topic, partition)
                future.complete({"error_code": NO_ERROR, "topics": response})
            else:
                future.complete({"error_code": append_error_to_response_error(error), "topics": []})
            return []

        batch = [self.offsets.tombstone(group_id, t, p) for t, p in deleted]
        return [PendingWrite(self.partition_for(group_id), batch, on_appended)]

    def _validate_offset_delete(self, group_id: str) -> ErrorCode | None:
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        if self.consumer.group(group_id) is not None:
            return None
        group = self.classic.group(group_id)
        if group is None or group.is_in_state(DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND
        if not group.is_in_state(EMPTY) and not group.uses_consumer_protocol():
            return ErrorCode.NON_EMPTY_GROUP
        return None

    def _subscription_check(self, group_id: str) -> Callable[[str], bool]:
        consumer = self.consumer.group(group_id)
        if consumer is not None:
            return lambda topic: (
                consumer.is_subscribed_to_topic(topic) or topic in consumer.subscription_metadata
            )
        group = self.classic.group(group_id)
        subscribed = group.subscribed_topics() if group is not None else None
        return lambda topic: subscribed is not None and topic in subscribed

    # -- DescribeGroups / ListGroups / DeleteGroups -------------------------------------

    def describe_groups(
        self, group_ids: Sequence[str], api_version: int, include_authorized_operations: bool
    ) -> list[dict[str, Any]]:
        """DescribeGroups ``DescribedGroup``s (classic groups only, as Kafka)."""
        operations = (
            GROUP_AUTHORIZED_OPERATIONS
            if include_authorized_operations
            else AUTHORIZED_OPERATIONS_OMITTED
        )
        return [self._describe_group(g, api_version, operations) for g in group_ids]

    def _describe_group(self, group_id: str, api_version: int, operations: int) -> dict[str, Any]:
        group = self.classic.group(group_id)
        if group is None or group.is_in_state(DEAD):
            found = self.consumer.group(group_id) is not None
            described: dict[str, Any] = {
                "error_code": NO_ERROR,
                "error_message": None,
                "group_id": group_id,
                "group_state": DEAD.value,
                "protocol_type": "",
                "protocol_data": "",
                "members": [],
                "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED,
            }
            if api_version >= 6:
                # KIP-1043: an unknown (or not classic) group is an error from v6 on.
                described["error_code"] = ErrorCode.GROUP_ID_NOT_FOUND
                described["error_message"] = (
                    f"Group {group_id} is not a classic group."
                    if found
                    else f"Group {group_id} not found."
                )
            return described
        stable = group.is_in_state(STABLE)
        protocol_name = group.protocol_name
        return {
            "error_code": NO_ERROR,
            "error_message": None,
            "group_id": group_id,
            "group_state": group.state.value,
            "protocol_type": group.protocol_type or "",
            "protocol_data": (protocol_name or "") if stable else "",
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    # Metadata and assignment only once the group is stable (as Kafka).
                    "member_metadata": (
                        m.metadata(protocol_name) if stable and protocol_name is not None else b""
                    ),
                    "member_assignment": m.assignment if stable else b"",
                }
                for m in group.all_members()
            ],
            "authorized_operations": operations,
        }

    def list_groups(
        self, states_filter: Sequence[str] = (), types_filter: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """ListGroups ``ListedGroup``s; both filters are case-insensitive (Kafka's rules: an
        unknown type matches nothing)."""
        states = {s.strip().lower() for s in states_filter}
        types = {t.strip().lower() for t in types_filter}
        listed: list[dict[str, Any]] = []
        if not types or CLASSIC in types:
            for group in self.classic.groups.values():
                if group.is_in_state(DEAD):
                    continue
                if states and group.state.value.lower() not in states:
                    continue
                listed.append(
                    {
                        "group_id": group.group_id,
                        "protocol_type": group.protocol_type or "",
                        "group_state": group.state.value,
                        "group_type": CLASSIC,
                    }
                )
        if not types or CONSUMER in types:
            for consumer in self.consumer.groups.values():
                if states and consumer.state.value.lower() not in states:
                    continue
                listed.append(
                    {
                        "group_id": consumer.group_id,
                        "protocol_type": "consumer",
                        "group_state": consumer.state.value,
                        "group_type": CONSUMER,
                    }
                )
        return listed

    def delete_groups(self, group_ids: Sequence[str], future: ResponseFuture) -> list[PendingWrite]:
        """DeleteGroups; ``future`` gets ``{group_id: ErrorCode}`` once the tombstones are
        written (NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND, INVALID_GROUP_ID per group)."""
        results: dict[str, ErrorCode] = {}
        staged: dict[int, list[tuple[str, list[Record], bool]]] = {}
        for group_id in group_ids:
            error = self._validate_delete_group(group_id)
            if error is not None:
                results[group_id] = error
                continue
            batch: list[Record] = self.offsets.tombstones(group_id)
            is_classic = self.consumer.group(group_id) is None
            if is_classic:
                batch.append((records.group_metadata_key(group_id), None))
            else:
                self.consumer.tombstones(group_id, batch)
            staged.setdefault(self.partition_for(group_id), []).append(
                (group_id, batch, is_classic)
            )
            results[group_id] = NO_ERROR
        if not staged:
            future.complete(results)
            return []
        pending = [len(staged)]

        def finish() -> None:
            pending[0] -= 1
            if pending[0] == 0:
                future.complete(results)

        writes = []
        for partition, groups in staged.items():

            def on_appended(
                error: ErrorCode, now_ms: int, groups: list[tuple[str, list[Record], bool]] = groups
            ) -> list[PendingWrite]:
                for group_id, _, is_classic in groups:
                    if error != NO_ERROR:
                        results[group_id] = append_error_to_response_error(error)
                        continue
                    self.offsets.delete_group(group_id)
                    group = self.classic.group(group_id)
                    if is_classic and group is not None and group.is_in_state(EMPTY):
                        self.classic.delete_empty_group(group_id)
                finish()
                return []

            batch = [record for _, group_batch, _ in groups for record in group_batch]
            writes.append(PendingWrite(partition, batch, on_appended))
        return writes

    def _validate_delete_group(self, group_id: str) -> ErrorCode | None:
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        consumer = self.consumer.group(group_id)
        if consumer is not None:
            return None if consumer.is_empty() else ErrorCode.NON_EMPTY_GROUP
        group = self.classic.group(group_id)
        if group is None or group.is_in_state(DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND
        if not group.is_in_state(EMPTY):
            return ErrorCode.NON_EMPTY_GROUP
        return None

    # -- offset expiry (offsets.retention.minutes) --------------------------------------

    def schedule_expiration(self, now_ms: int) -> None:
        self.classic.timer.schedule(
            _EXPIRATION_KEY,
            now_ms + self.config.offsets_retention_check_interval_ms,
            self._run_expiration,
        )

    def _run_expiration(self) -> list[PendingWrite]:
        now_ms = self.classic.now_ms
        writes = self.cleanup_group_metadata(now_ms)
        self.schedule_expiration(now_ms)
        return writes

    def _expiration_base(self, group_id: str) -> Callable[[OffsetAndMetadata], int] | None:
        """Kafka's ``offsetExpirationCondition``: what an offset's age is measured from."""
        by_commit: Callable[[OffsetAndMetadata], int] = lambda o: o.commit_timestamp_ms  # noqa: E731
        if self.consumer.group(group_id) is not None:
            return by_commit
        group = self.classic.group(group_id)
        if group is None or group.protocol_type is None:
            return by_commit  # a simple consumer's offsets
        if group.is_in_state(EMPTY):
            if group.state_timestamp_ms < 0:
                return by_commit
            empty_since = group.state_timestamp_ms + self.wall_offset_ms
            return lambda _: empty_since
        if (
            group.uses_consumer_protocol()
            and group.is_in_state(STABLE)
            and group.subscribed_topics() is not None
        ):
            return by_commit
        return None

    def cleanup_group_metadata(self, now_ms: int) -> list[PendingWrite]:
        """Expire old offsets and delete Empty groups left without offsets (Kafka's
        ``cleanupGroupMetadata``); tombstones are written, memory follows the append."""
        now_wall_ms = now_ms + self.wall_offset_ms
        per_partition: dict[int, list[tuple[str, list[tuple[str, int]], bool]]] = {}
        batches: dict[int, list[Record]] = {}
        for group_id in [*self.classic.groups, *self.consumer.groups]:
            expired: list[tuple[str, int]] = []
            all_expired = self.offsets.expired_offsets(
                group_id,
                self._expiration_base(group_id),
                self._subscription_check(group_id),
                now_wall_ms,
                expired,
            )
            partition = self.partition_for(group_id)
            batch = [self.offsets.tombstone(group_id, t, p) for t, p in expired]
            delete_classic = False
            if all_expired:
                consumer = self.consumer.group(group_id)
                classic = self.classic.group(group_id)
                if consumer is not None and consumer.state is ConsumerGroupState.EMPTY:
                    self.consumer.tombstones(group_id, batch)
                elif classic is not None and classic.is_in_state(EMPTY):
                    batch.append((records.group_metadata_key(group_id), None))
                    delete_classic = True
            if batch:
                batches.setdefault(partition, []).extend(batch)
                per_partition.setdefault(partition, []).append((group_id, expired, delete_classic))
        writes = []
        for partition, groups in per_partition.items():

            def on_appended(
                error: ErrorCode,
                now_ms: int,
                groups: list[tuple[str, list[tuple[str, int]], bool]] = groups,
            ) -> list[PendingWrite]:
                if error != NO_ERROR:
                    return []
                for group_id, expired, delete_classic in groups:
                    for topic, p in expired:
                        self.offsets.forget(group_id, topic, p)
                    group = self.classic.group(group_id)
                    if (
                        delete_classic
                        and group is not None
                        and group.is_in_state(EMPTY)
                        and not self.offsets.has_offsets(group_id)
                    ):
                        self.classic.delete_empty_group(group_id)
                return []

            writes.append(PendingWrite(partition, batches[partition], on_appended))
        return writes
