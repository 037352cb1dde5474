"""Committed offsets of groups: OffsetCommit, OffsetFetch, OffsetDelete, expiry (Kafka's
``OffsetMetadataManager``).

A commit is validated against the group: a classic group checks generation and member
(``ClassicGroup.validate_offset_commit``: generation -1 with no member id is a "simple" commit,
allowed while the group is empty or unknown); a consumer (KIP-848) group checks the member
and its epoch (``ConsumerGroupManager.validate_offset_commit``: UNKNOWN_MEMBER_ID,
STALE_MEMBER_EPOCH, OffsetCommit v9+). Each partition's metadata is checked against
``offset.metadata.max.bytes``, and the accepted offsets become ``OffsetCommit`` records; they
are visible to OffsetFetch only once the driver reports the append succeeded (as Kafka, where
uncommitted writes are not read). Deleting (OffsetDelete, DeleteGroups, expiry) writes
tombstones and forgets the offsets once they are written. Loading replays the records (a
tombstone deletes). Pure: no clock, no I/O.

Transactional offsets (TxnOffsetCommit, Kafka's ``commitTransactionalOffset``): validated as
a commit (transactional rules: no REBALANCE_IN_PROGRESS, a classic group accepts the producer's
commit without member id and generation, a consumer group answers ILLEGAL_GENERATION for a
stale member epoch), then written as a *transactional* batch of the producer (its producer id
and epoch) and kept as the producer's *pending transactional offsets*
(``pending_transactional_offsets``, with ``open_transactions_by_group``), invisible to
OffsetFetch. The transaction's marker on the group's ``__consumer_offsets`` partition ends them
(``replay_end_transaction_marker``): COMMIT makes each one the committed offset unless a
regular commit of the partition was written after it (Kafka keeps the most recent record),
ABORT drops them. Loading does the same: a record of a transactional batch is pending until
its producer's marker is replayed; with no marker yet it stays pending (the transaction
coordinator then completes or aborts the transaction and writes the marker). OffsetFetch with
``require_stable`` answers UNSTABLE_OFFSET_COMMIT (offset -1) for a partition with a pending
offset; a tombstone of a partition also drops its pending offsets; offsets with a pending
transactional offset do not expire, nor does a group with open transactions.

Expiry (``offsets.retention.minutes``, Kafka's ``cleanupExpiredOffsets``): an offset of a
topic the group does not subscribe to expires ``offsets.retention.minutes`` after its base
time: the commit time, or, for an Empty classic group with a protocol type, the time the group
became Empty; records written with an explicit expire timestamp (OffsetCommitValue v1) expire
then.

Not implemented: the v2-4 retention time (ignored, as Kafka 4.x does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode

from . import records
from .config import GroupCoordinatorConfig
from .consumer_group_manager import ConsumerGroupManager
from .group import PREPARING_REBALANCE, STABLE, GroupError
from .group_metadata_manager import GroupMetadataManager
from .records import OffsetAndMetadata, OffsetCommitRecord
from .result import NO_PRODUCER_ID, PendingWrite, Record, ResponseFuture

INVALID_OFFSET = -1
NO_LEADER_EPOCH = -1
NO_METADATA = ""

#: group -> topic -> partition -> offset (Kafka's ``Offsets``)
GroupOffsets = dict[str, dict[str, dict[int, OffsetAndMetadata]]]
_Staged = list[tuple[str, int, OffsetAndMetadata, dict[str, Any]]]


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

    def __init__(
        self,
        config: GroupCoordinatorConfig,
        groups: GroupMetadataManager,
        consumer_groups: ConsumerGroupManager | None = None,
    ) -> None:
        self.config = config
        self.groups = groups
        self.consumer_groups = consumer_groups
        self.offsets: GroupOffsets = {}
        #: producer id -> the offsets its open transaction wrote (no marker replayed yet)
        self.pending_transactional_offsets: dict[int, GroupOffsets] = {}
        #: group id -> producer ids with pending transactional offsets for the group
        self.open_transactions_by_group: dict[str, set[int]] = {}
        self._next_record_offset = 0

    def commit_offsets(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        topics: Sequence[dict[str, Any]],
        future: ResponseFuture,
        now_ms: int,
        *,
        api_version: int = 9,
    ) -> list[PendingWrite]:
        """Validate and stage an OffsetCommit; ``future`` gets ``{"topics": [...]}``.

        ``topics`` is the request's list: ``{"name", "partitions": [{"partition_index",
        "committed_offset", "committed_leader_epoch", "committed_metadata"}]}``.
        ``generation_id`` is the member epoch for a consumer group.
        """
        error = self._validate_commit(
            group_id, generation_id, member_id, group_instance_id, now_ms, api_version
        )
        if error is not None:
            future.complete({"topics": error_topics(topics, error)})
            return []
        response, staged, batch = self._stage(group_id, topics, now_ms)
        if not batch:
            future.complete({"topics": response})
            return []

        def on_appended(append_error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            if append_error == ErrorCode.NO_ERROR:
                for name, partition, offset, _ in staged:
                    self._put(group_id, name, partition, self._stamp(offset))
            else:
                code = commit_error(append_error)
                for _, _, _, entry in staged:
                    entry["error_code"] = code
            future.complete({"topics": response})
            return []

        return [PendingWrite(self.groups.partition_for(group_id), batch, on_appended)]

    def commit_transactional_offsets(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        topics: Sequence[dict[str, Any]],
        future: ResponseFuture,
        now_ms: int,
    ) -> list[PendingWrite]:
        """Validate and stage a TxnOffsetCommit (Kafka's ``commitTransactionalOffset``);
        ``future`` gets ``{"topics": [...]}`` once the transactional batch is written, and the
        offsets are then pending until the producer's transaction marker."""
        error = self._validate_transactional_commit(
            group_id, generation_id, member_id, group_instance_id, now_ms
        )
        if error is not None:
            future.complete({"topics": error_topics(topics, error)})
            return []
        response, staged, batch = self._stage(group_id, topics, now_ms)
        if not batch:
            future.complete({"topics": response})
            return []

        def on_appended(append_error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            if append_error == ErrorCode.NO_ERROR:
                for name, partition, offset, _ in staged:
                    self._put_pending(producer_id, group_id, name, partition, self._stamp(offset))
            else:
                code = commit_error(append_error)
                for _, _, _, entry in staged:
                    entry["error_code"] = code
            future.complete({"topics": response})
            return []

        return [
            PendingWrite(
                self.groups.partition_for(group_id),
                batch,
                on_appended,
                producer_id=producer_id,
                producer_epoch=producer_epoch,
            )
        ]

    def _stage(
        self, group_id: str, topics: Sequence[dict[str, Any]], now_ms: int
    ) -> tuple[list[dict[str, Any]], _Staged, list[Record]]:
        """The response skeleton, the accepted offsets and their records of a commit."""
        commit_timestamp_ms = now_ms + self.groups.wall_offset_ms
        response: list[dict[str, Any]] = []
        staged: _Staged = []
        batch: list[Record] = []
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
        return response, staged, batch

    def _validate_commit(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        now_ms: int,
        api_version: int,
    ) -> ErrorCode | None:
        consumer = self.consumer_groups.group(group_id) if self.consumer_groups else None
        if consumer is not None:
            assert self.consumer_groups is not None
            return self.consumer_groups.validate_offset_commit(
                consumer, member_id, generation_id, api_version
            )
        group = self.groups.group(group_id)
        if group is None:
            if generation_id < 0:
                # Not using group management: a "simple" group is created for its offsets.
                self.groups.get_or_create_group(group_id, now_ms)
                return None
            # Kafka: GROUP_ID_NOT_FOUND from v9 on (both protocols understand it), before
            # that ILLEGAL_GENERATION.
            return (
                ErrorCode.GROUP_ID_NOT_FOUND if api_version >= 9 else ErrorCode.ILLEGAL_GENERATION
            )
        try:
            group.validate_offset_commit(member_id, group_instance_id, generation_id)
        except GroupError as exc:
            return exc.code
        if group.state in (STABLE, PREPARING_REBALANCE) and group.has_member(member_id):
            # A commit from a member keeps its session alive (classic protocol).
            self.groups.keep_session_alive(group, member_id, now_ms)
        return None

    def _validate_transactional_commit(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        now_ms: int,
    ) -> ErrorCode | None:
        """Kafka's ``validateTransactionalOffsetCommit``."""
        consumer = self.consumer_groups.group(group_id) if self.consumer_groups else None
        if consumer is not None:
            assert self.consumer_groups is not None
            error = self.consumer_groups.validate_offset_commit(
                consumer,
                member_id,
                generation_id,
                0,
                group_instance_id=group_instance_id,
                is_transactional=True,
            )
            # A stale member epoch is reported as the classic error (backward compatibility).
            return ErrorCode.ILLEGAL_GENERATION if error == ErrorCode.STALE_MEMBER_EPOCH else error
        group = self.groups.group(group_id)
        if group is None:
            if generation_id < 0:
                # The admin client, or a consumer without group management: a simple group.
                self.groups.get_or_create_group(group_id, now_ms)
                return None
            return ErrorCode.ILLEGAL_GENERATION
        try:
            group.validate_offset_commit(
                member_id, group_instance_id, generation_id, is_transactional=True
            )
        except GroupError as exc:
            return exc.code
        return None

    def validate_offset_fetch(
        self, group_id: str, member_id: str | None, member_epoch: int
    ) -> ErrorCode | None:
        """OffsetFetch v9+ member checks: only consumer groups check them (as Kafka)."""
        consumer = self.consumer_groups.group(group_id) if self.consumer_groups else None
        if consumer is None:
            return None
        assert self.consumer_groups is not None
        return self.consumer_groups.validate_offset_fetch(consumer, member_id, member_epoch)

    def fetch_offsets(
        self,
        group_id: str,
        topics: Sequence[tuple[str, Sequence[int]]] | None,
        require_stable: bool = False,
    ) -> list[dict[str, Any]]:
        """Committed offsets; ``topics`` None means every partition with an offset.

        Returns OffsetFetch topics: ``{"name", "partitions": [{"partition_index",
        "committed_offset", "committed_leader_epoch", "metadata", "error_code"}]}``; a
        partition without a committed offset gets offset -1 and metadata "" (as Kafka), and
        with ``require_stable`` a partition with a pending transactional offset gets
        UNSTABLE_OFFSET_COMMIT and offset -1.
        """
        group_offsets = self.offsets.get(group_id, {})
        if topics is None:
            topics = [(name, sorted(parts)) for name, parts in group_offsets.items()]
        result: list[dict[str, Any]] = []
        for name, partition_indexes in topics:
            topic_offsets = group_offsets.get(name, {})
            partitions = []
            for index in partition_indexes:
                if require_stable and self.has_pending_transactional_offsets(group_id, name, index):
                    partitions.append(
                        {
                            "partition_index": index,
                            "committed_offset": INVALID_OFFSET,
                            "committed_leader_epoch": NO_LEADER_EPOCH,
                            "metadata": NO_METADATA,
                            "error_code": ErrorCode.UNSTABLE_OFFSET_COMMIT,
                        }
                    )
                    continue
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

    def has_pending_transactional_offsets(self, group_id: str, topic: str, partition: int) -> bool:
        """Whether an open transaction wrote an offset of this partition (Kafka's
        ``hasPendingTransactionalOffsets``)."""
        for producer_id in self.open_transactions_by_group.get(group_id, ()):
            pending = self.pending_transactional_offsets.get(producer_id, {})
            if partition in pending.get(group_id, {}).get(topic, {}):
                return True
        return False

    def group_ids(self) -> set[str]:
        """Every group with a committed or pending transactional offset."""
        return set(self.offsets) | set(self.open_transactions_by_group)

    def tombstones(self, group_id: str) -> list[tuple[bytes, bytes | None]]:
        """Records deleting every offset of a group (Kafka's ``deleteAllOffsets``): the
        committed ones, and the pending transactional ones of partitions without any."""
        deleted = {
            (topic, partition)
            for topic, parts in self.offsets.get(group_id, {}).items()
            for partition in parts
        }
        for producer_id in sorted(self.open_transactions_by_group.get(group_id, ())):
            pending = self.pending_transactional_offsets.get(producer_id, {})
            for topic, parts in pending.get(group_id, {}).items():
                deleted.update((topic, partition) for partition in parts)
        return [self.tombstone(group_id, t, p) for t, p in sorted(deleted)]

    def delete_group(self, group_id: str) -> None:
        """Forget every offset of a group (its ``tombstones`` were written)."""
        self.offsets.pop(group_id, None)
        for producer_id in self.open_transactions_by_group.pop(group_id, set()):
            pending = self.pending_transactional_offsets.get(producer_id)
            if pending is not None:
                pending.pop(group_id, None)
                if not pending:
                    del self.pending_transactional_offsets[producer_id]

    def committed(self, group_id: str, topic: str, partition: int) -> OffsetAndMetadata | None:
        return self.offsets.get(group_id, {}).get(topic, {}).get(partition)

    def topics_of(self, group_id: str) -> dict[str, dict[int, OffsetAndMetadata]]:
        return self.offsets.get(group_id, {})

    def forget(self, group_id: str, topic: str, partition: int) -> None:
        """Drop one offset (its tombstone was written)."""
        self.replay(OffsetCommitRecord(group_id, topic, partition, None))

    def expired_offsets(
        self,
        group_id: str,
        base_time: Callable[[OffsetAndMetadata], int] | None,
        is_subscribed: Callable[[str], bool],
        now_wall_ms: int,
        out: list[tuple[str, int]],
    ) -> bool:
        """Kafka's ``cleanupExpiredOffsets``: append the expired (topic, partition)s to
        ``out``; True when the group has no offset left afterwards.

        ``base_time`` None means the group's offsets do not expire in its state.
        """
        open_transactions = group_id in self.open_transactions_by_group
        by_topic = self.offsets.get(group_id)
        if not by_topic:
            return not open_transactions
        if base_time is None:
            return False
        all_expired = True
        retention_ms = self.config.offsets_retention_ms
        for topic, partitions in by_topic.items():
            if is_subscribed(topic):
                all_expired = False
                continue
            for partition, offset in partitions.items():
                if offset.expire_timestamp_ms >= 0:
                    expired = now_wall_ms >= offset.expire_timestamp_ms
                else:
                    expired = now_wall_ms - base_time(offset) >= retention_ms
                # An offset with a pending transactional offset does not expire yet.
                if expired and not self.has_pending_transactional_offsets(
                    group_id, topic, partition
                ):
                    out.append((topic, partition))
                else:
                    all_expired = False
        # A group with open transactions is not removed.
        return all_expired and not open_transactions

    def tombstone(self, group_id: str, topic: str, partition: int) -> Record:
        return (records.offset_commit_key(group_id, topic, partition), None)

    def replay(self, record: OffsetCommitRecord, producer_id: int = NO_PRODUCER_ID) -> None:
        """Apply one loaded offset commit record (None offset: a tombstone, which also drops
        the partition's pending transactional offsets); a record of a transactional batch
        (``producer_id``) is pending until its producer's marker is replayed."""
        group_id, topic, partition = record.group_id, record.topic, record.partition
        if record.offset is None:
            _remove(self.offsets, group_id, topic, partition)
            for open_id in list(self.open_transactions_by_group.get(group_id, ())):
                pending = self.pending_transactional_offsets.get(open_id)
                if pending is not None:
                    # The group stays listed: the marker still closes the producer's entry.
                    _remove(pending, group_id, topic, partition, keep_group=True)
            return
        offset = self._stamp(record.offset)
        if producer_id == NO_PRODUCER_ID:
            self._put(group_id, topic, partition, offset)
        else:
            self._put_pending(producer_id, group_id, topic, partition, offset)

    def replay_end_transaction_marker(self, producer_id: int, commit: bool) -> None:
        """A transaction marker of ``producer_id`` on the group's partition (Kafka's
        ``replayEndTransactionMarker``): COMMIT makes its pending offsets committed, unless a
        regular commit of the partition was written after them; ABORT drops them."""
        pending = self.pending_transactional_offsets.pop(producer_id, None)
        if pending is None:
            return
        for group_id in pending:
            open_ids = self.open_transactions_by_group.get(group_id)
            if open_ids is not None:
                open_ids.discard(producer_id)
                if not open_ids:
                    del self.open_transactions_by_group[group_id]
        if not commit:
            return
        for group_id, by_topic in pending.items():
            for topic, partitions in by_topic.items():
                for partition, offset in partitions.items():
                    existing = self.committed(group_id, topic, partition)
                    if existing is None or offset.record_offset > existing.record_offset:
                        self._put(group_id, topic, partition, offset)

    def _stamp(self, offset: OffsetAndMetadata) -> OffsetAndMetadata:
        """The offset with the position of its record among those written so far."""
        self._next_record_offset += 1
        return replace(offset, record_offset=self._next_record_offset)

    def _put(self, group_id: str, topic: str, partition: int, offset: OffsetAndMetadata) -> None:
        self.offsets.setdefault(group_id, {}).setdefault(topic, {})[partition] = offset

    def _put_pending(
        self, producer_id: int, group_id: str, topic: str, partition: int, offset: OffsetAndMetadata
    ) -> None:
        pending = self.pending_transactional_offsets.setdefault(producer_id, {})
        pending.setdefault(group_id, {}).setdefault(topic, {})[partition] = offset
        self.open_transactions_by_group.setdefault(group_id, set()).add(producer_id)


def _remove(
    offsets: GroupOffsets, group_id: str, topic: str, partition: int, *, keep_group: bool = False
) -> None:
    """Drop one offset from ``offsets``, and the topic (and, unless ``keep_group``, the
    group) entries left empty."""
    group_offsets = offsets.get(group_id)
    if group_offsets is None:
        return
    topic_offsets = group_offsets.get(topic)
    if topic_offsets is not None:
        topic_offsets.pop(partition, None)
        if not topic_offsets:
            del group_offsets[topic]
    if not group_offsets and not keep_group:
        del offsets[group_id]
