"""Committed offsets of groups: OffsetCommit and OffsetFetch (Kafka's ``OffsetMetadataManager``).

A commit is validated against the group (``ClassicGroup.validate_offset_commit``: generation
-1 with no member id is a "simple" commit, allowed while the group is empty or unknown),
each partition's metadata is checked against ``offset.metadata.max.bytes``, and the accepted
offsets become ``OffsetCommit`` records; they are visible to OffsetFetch only once the driver
reports the append succeeded (as Kafka, where uncommitted writes are not read). Loading
replays the records (a tombstone deletes). Pure: no clock, no I/O.

Not implemented: offset expiration (``offsets.retention.minutes``, the v2-4 retention time is
ignored), transactional offsets (``TxnOffsetCommit``; ``require_stable`` therefore never
meets a pending offset), OffsetDelete.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode

from . import records
from .config import GroupCoordinatorConfig
from .group import PREPARING_REBALANCE, STABLE, GroupError
from .group_metadata_manager import GroupMetadataManager
from .records import OffsetAndMetadata, OffsetCommitRecord
from .result import PendingWrite, ResponseFuture

INVALID_OFFSET = -1
NO_LEADER_EPOCH = -1
NO_METADATA = ""


def commit_error(error: ErrorCode) -> ErrorCode:
    """How an append failure is reported to OffsetCommit (Kafka's service layer)."""
    if error in (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.REQUEST_TIMED_OUT,
    ):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if error in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR):
        return ErrorCode.NOT_COORDINATOR
    if error in (
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.RECORD_LIST_TOO_LARGE,
        ErrorCode.INVALID_FETCH_SIZE,
    ):
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    return error


def error_topics(topics: Sequence[dict[str, Any]], error: ErrorCode) -> list[dict[str, Any]]:
    """An OffsetCommit response with ``error`` for every requested partition."""
    return [
        {
            "name": topic["name"],
            "partitions": [
                {"partition_index": p["partition_index"], "error_code": error}
                for p in topic["partitions"]
            ],
        }
        for topic in topics
    ]


def _java_length(text: str) -> int:
    """``String.length()``: UTF-16 code units, what Kafka compares with the limit."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class OffsetMetadataManager:
    """Committed offsets per group, topic and partition."""

    def __init__(self, config: GroupCoordinatorConfig, groups: GroupMetadataManager) -> None:
        self.config = config
        self.groups = groups
        self.offsets: dict[str, dict[str, dict[int, OffsetAndMetadata]]] = {}

    def commit_offsets(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        topics: Sequence[dict[str, Any]],
        future: ResponseFuture,
        now_ms: int,
    ) -> list[PendingWrite]:
        """Validate and stage an OffsetCommit; ``future`` gets ``{"topics": [...]}``.

        ``topics`` is the request's list: ``{"name", "partitions": [{"partition_index",
        "committed_offset", "committed_leader_epoch", "committed_metadata"}]}``.
        """
        group = self.groups.group(group_id)
        error: ErrorCode | None = None
        if group is None:
            if generation_id < 0:
                # Not using group management: a "simple" group is created for its offsets.
                group = self.groups.get_or_create_group(group_id, now_ms)
            else:
                error = ErrorCode.ILLEGAL_GENERATION
        else:
            try:
                group.validate_offset_commit(member_id, group_instance_id, generation_id)
            except GroupError as exc:
                error = exc.code
        if error is not None or group is None:
            code = error if error is not None else ErrorCode.UNKNOWN_SERVER_ERROR
            future.complete({"topics": error_topics(topics, code)})
            return []
        if group.state in (STABLE, PREPARING_REBALANCE) and group.has_member(member_id):
            # A commit from a member keeps its session alive (classic protocol).
            self.groups.keep_session_alive(group, member_id, now_ms)

        commit_timestamp_ms = now_ms + self.groups.wall_offset_ms
        response: list[dict[str, Any]] = []
        staged: list[tuple[str, int, OffsetAndMetadata, dict[str, Any]]] = []
        batch: list[tuple[bytes, bytes | None]] = []
        for topic in topics:
            name = topic["name"]
            partitions: list[dict[str, Any]] = []
            response.append({"name": name, "partitions": partitions})
            for p in topic["partitions"]:
                entry = {"partition_index": p["partition_index"], "error_code": ErrorCode.NO_ERROR}
                partitions.append(entry)
                metadata = p.get("committed_metadata")
                metadata = NO_METADATA if metadata is None else metadata
                if _java_length(metadata) > self.config.offset_metadata_max_bytes:
                    entry["error_code"] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                    continue
                offset = OffsetAndMetadata(
                    committed_offset=p["committed_offset"],
                    leader_epoch=p.get("committed_leader_epoch", NO_LEADER_EPOCH),
                    metadata=metadata,
                    commit_timestamp_ms=commit_timestamp_ms,
                )
                staged.append((name, p["partition_index"], offset, entry))
                batch.append(
                    (
                        records.offset_commit_key(group_id, name, p["partition_index"]),
                        records.offset_commit_value(offset),
                    )
                )
        if not batch:
            future.complete({"topics": response})
            return []

        def on_appended(append_error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            if append_error == ErrorCode.NO_ERROR:
                for name, partition, offset, _ in staged:
                    self._put(group_id, name, partition, offset)
            else:
                code = commit_error(append_error)
                for _, _, _, entry in staged:
                    entry["error_code"] = code
            future.complete({"topics": response})
            return []

        return [PendingWrite(self.groups.partition_for(group_id), batch, on_appended)]

    def fetch_offsets(
        self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]] | None
    ) -> list[dict[str, Any]]:
        """Committed offsets; ``topics`` None means every partition with an offset.

        Returns OffsetFetch topics: ``{"name", "partitions": [{"partition_index",
        "committed_offset", "committed_leader_epoch", "metadata", "error_code"}]}``; a
        partition without a committed offset gets offset -1 and metadata "" (as Kafka).
        """
        group_offsets = self.offsets.get(group_id, {})
        if topics is None:
            topics = [(name, sorted(parts)) for name, parts in group_offsets.items()]
        result: list[dict[str, Any]] = []
        for name, partition_indexes in topics:
            topic_offsets = group_offsets.get(name, {})
            partitions = []
            for index in partition_indexes:
                offset = topic_offsets.get(index)
                partitions.append(
                    {
                        "partition_index": index,
                        "committed_offset": (offset.committed_offset if offset else INVALID_OFFSET),
                        "committed_leader_epoch": (
                            offset.leader_epoch if offset else NO_LEADER_EPOCH
                        ),
                        "metadata": offset.metadata if offset else NO_METADATA,
                        "error_code": ErrorCode.NO_ERROR,
                    }
                )
            result.append({"name": name, "partitions": partitions})
        return result

    def has_offsets(self, group_id: str) -> bool:
        return bool(self.offsets.get(group_id))

    def tombstones(self, group_id: str) -> list[tuple[bytes, bytes | None]]:
        """Records deleting every committed offset of a group."""
        return [
            (records.offset_commit_key(group_id, topic, partition), None)
            for topic, parts in self.offsets.get(group_id, {}).items()
            for partition in parts
        ]

    def delete_group(self, group_id: str) -> None:
        self.offsets.pop(group_id, None)

    def replay(self, record: OffsetCommitRecord) -> None:
        """Apply one loaded offset commit record (None offset: a tombstone)."""
        if record.offset is None:
            group_offsets = self.offsets.get(record.group_id)
            if group_offsets is None:
                return
            topic_offsets = group_offsets.get(record.topic)
            if topic_offsets is not None:
                topic_offsets.pop(record.partition, None)
                if not topic_offsets:
                    del group_offsets[record.topic]
            if not group_offsets:
                del self.offsets[record.group_id]
            return
        self._put(record.group_id, record.topic, record.partition, record.offset)

    def _put(self, group_id: str, topic: str, partition: int, offset: OffsetAndMetadata) -> None:
        self.offsets.setdefault(group_id, {}).setdefault(topic, {})[partition] = offset
