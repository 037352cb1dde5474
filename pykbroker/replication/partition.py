"""Partition: one hosted topic-partition, its log, leadership and high watermark.

Mirrors Kafka's ``Partition``. The leader epoch and replica set come from the metadata image
(``update``); ``last_offset_for_leader_epoch`` answers OffsetForLeaderEpoch from the log's
leader epoch cache. Invariant: ``log_start_offset <= high_watermark <= log_end_offset``. With one
replica in the ISR the high watermark advances to the log end offset on every append; the
replication layer generalises this to the minimum log end offset over the ISR.
"""

from __future__ import annotations

import uuid

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log import Log, LogAppendInfo, LogConfig
from pykbroker.log.record_batch import AppendOrigin
from pykbroker.metadata.image import PartitionRegistration


class Partition:
    """A topic-partition hosted on this broker."""

    def __init__(self, tp: tuple[str, int], topic_id: uuid.UUID, log: Log) -> None:
        self.topic, self.index = tp
        self.topic_id = topic_id
        self.log = log
        self.leader_id = -1
        self.leader_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.is_leader = False

    def update(self, registration: PartitionRegistration, node_id: int, config: LogConfig) -> None:
        """Apply the partition's registration from the metadata image. Becoming leader of a
        new epoch caches it at the log end offset (Kafka's ``makeLeader``), so the epoch ends
        of older epochs are known before this leader appends anything."""
        new_leader_epoch = registration.leader_epoch > self.leader_epoch
        self.leader_id = registration.leader
        self.leader_epoch = registration.leader_epoch
        self.replicas = registration.replicas
        self.isr = registration.isr
        self.is_leader = registration.leader == node_id
        self.log.config = config
        if self.is_leader and new_leader_epoch:
            self.log.maybe_assign_epoch_start_offset(self.leader_epoch, self.log.log_end_offset)
        if self.is_leader and self.isr == (node_id,):
            self.log.high_watermark = self.log.log_end_offset

    def check_leader_epoch(self, requested: int) -> None:
        """Kafka's leader-epoch fencing of produce/fetch/list-offsets (KIP-320)."""
        if requested < 0 or requested == self.leader_epoch:
            return
        if requested < self.leader_epoch:
            raise KafkaError(ErrorCode.FENCED_LEADER_EPOCH)
        raise KafkaError(ErrorCode.UNKNOWN_LEADER_EPOCH)

    def last_offset_for_leader_epoch(
        self, current_leader_epoch: int, leader_epoch: int
    ) -> tuple[int, int]:
        """Kafka's ``Partition.lastOffsetForLeaderEpoch`` (fetchOnlyFromLeader): the
        ``(leader_epoch, end_offset)`` of ``Log.end_offset_for_epoch``. KafkaError as Kafka's
        ``getLocalLog``: first ``current_leader_epoch`` (absent only when -1) against this
        partition's epoch, FENCED_LEADER_EPOCH below it and UNKNOWN_LEADER_EPOCH above; then
        NOT_LEADER_OR_FOLLOWER unless this broker leads the partition."""
        if current_leader_epoch != -1 and current_leader_epoch != self.leader_epoch:
            raise KafkaError(
                ErrorCode.FENCED_LEADER_EPOCH
                if current_leader_epoch < self.leader_epoch
                else ErrorCode.UNKNOWN_LEADER_EPOCH
            )
        if not self.is_leader:
            raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        return self.log.end_offset_for_epoch(leader_epoch)

    @property
    def last_stable_offset(self) -> int:
        """Kafka's LSO: the first offset of the oldest open transaction (from the log's
        producer state) when that is below the high watermark, else the high watermark."""
        high_watermark = self.log.high_watermark
        first_unstable = self.log.producer_state.first_unstable_offset()
        if first_unstable is not None and first_unstable < high_watermark:
            return first_unstable
        return high_watermark

    def append_as_leader(
        self,
        records: bytes | memoryview,
        now_ms: int,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> LogAppendInfo:
        info = self.log.append_as_leader(records, self.leader_epoch, now_ms, origin=origin)
        if self.isr == (self.leader_id,):
            self.log.high_watermark = self.log.log_end_offset
        return info
