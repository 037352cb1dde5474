"""Partition: one hosted topic-partition, its log, leadership, ISR and high watermark.

Mirrors Kafka's ``Partition`` and ``Replica``. The leader epoch, partition epoch, replica set
and committed ISR come from the metadata image (``update``); ``last_offset_for_leader_epoch``
answers OffsetForLeaderEpoch from the log's leader epoch cache.

As leader (Kafka's ``makeLeader``): becoming leader of a new epoch records the epoch at the log
end offset (the leader epoch start offset) and resets the followers' states. Every follower
fetch (``update_follower_fetch_state``) records the follower's log end offset (its fetch offset)
and its last caught-up time (Kafka's ``Replica.updateFetchStateOrThrow``). The high watermark is
the minimum log end offset over the *maximal* ISR (Kafka's ``maybeIncrementLeaderHW``): while an
ISR change is pending at the controller (``pending_isr``), HW counts the union of the committed
and the proposed ISR, so it never moves past what a replica of either set holds; it only grows.
ISR expansion (``maybe_expand_isr``): a follower not in the ISR whose log end offset reached the
high watermark and the leader epoch start offset. ISR shrink (``out_of_sync_replicas``): a
follower in the ISR not caught up with the leader's log end offset for ``replica.lag.time.max.ms``.
Both become a pending proposal (one at a time, Kafka's ``isInflight``) that the replica manager
sends as AlterPartition; ``alter_partition_completed`` applies the committed answer,
``alter_partition_failed`` drops the proposal when the controller did not attempt it (a fenced
epoch or stale partition epoch waits for the next metadata image, as Kafka). The committed ISR
decides ``min.insync.replicas`` (``in_sync_count``).

As follower (Kafka's ``makeFollower``): the replica fetcher appends with ``Log.append_as_follower``
and sets the high watermark to min(leader's, own log end offset).

Not implemented: ``shouldWaitForReplicaToJoinIsr`` (a caught-up follower outside the ISR does
not hold the high watermark back), fetch-from-follower (KIP-392), leader recovery state
(KIP-704), the diverging-epoch check of follower fetches (followers truncate with
OffsetForLeaderEpoch instead), and eligible leader replicas (KIP-966).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log import Log, LogAppendInfo, LogConfig
from pykbroker.log.record_batch import AppendOrigin
from pykbroker.metadata.image import PartitionRegistration

#: Kafka's UnifiedLog.UNKNOWN_OFFSET: a follower's log end offset before its first fetch.
UNKNOWN_OFFSET = -1


@dataclass(slots=True)
class ReplicaState:
    """What the leader knows of one follower (Kafka's ``Replica`` / ``ReplicaState``)."""

    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_time_ms: int = 0
    last_fetch_leader_log_end_offset: int = UNKNOWN_OFFSET
    last_fetch_time_ms: int = 0

    def update_fetch_state(
        self, fetch_offset: int, fetch_time_ms: int, leader_end_offset: int
    ) -> None:
        """Kafka's ``updateFetchStateOrThrow``: caught up when the fetch reached the leader's
        log end offset, or the one the leader had at the previous fetch."""
        if fetch_offset >= leader_end_offset:
            self.last_caught_up_time_ms = max(self.last_caught_up_time_ms, fetch_time_ms)
        elif fetch_offset >= self.last_fetch_leader_log_end_offset:
            self.last_caught_up_time_ms = max(self.last_caught_up_time_ms, self.last_fetch_time_ms)
        self.log_end_offset = fetch_offset
        self.last_fetch_leader_log_end_offset = leader_end_offset
        self.last_fetch_time_ms = fetch_time_ms

    def is_caught_up(self, leader_end_offset: int, now_ms: int, max_lag_ms: int) -> bool:
        """Kafka's ``isCaughtUp``."""
        return (
            leader_end_offset == self.log_end_offset
            or now_ms - self.last_caught_up_time_ms <= max_lag_ms
        )


@dataclass(frozen=True, slots=True)
class PendingIsr:
    """An ISR change sent to the controller and not answered yet (Kafka's PendingExpandIsr /
    PendingShrinkIsr)."""

    isr: tuple[int, ...]
    leader_epoch: int
    partition_epoch: int


class Partition:
    """A topic-partition hosted on this broker."""

    def __init__(self, tp: tuple[str, int], topic_id: uuid.UUID, log: Log) -> None:
        self.topic, self.index = tp
        self.topic_id = topic_id
        self.log = log
        self.node_id = -1
        self.leader_id = -1
        self.leader_epoch = -1
        self.partition_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.is_leader = False
        #: The log end offset when this broker became leader of ``leader_epoch``.
        self.leader_epoch_start_offset = -1
        self.remote_replicas: dict[int, ReplicaState] = {}
        self.pending_isr: PendingIsr | None = None

    def update(
        self,
        registration: PartitionRegistration,
        node_id: int,
        config: LogConfig,
        now_ms: int = 0,
    ) -> bool:
        """Apply the partition's registration from the metadata image; True when it changed
        (a new leader epoch or partition epoch). Becoming leader of a new epoch caches it at
        the log end offset (Kafka's ``makeLeader``), so the epoch ends of older epochs are known
        before this leader appends anything, and resets the followers' states (an ISR member
        counts as caught up now, the others not). An older partition epoch is ignored."""
        self.log.config = config
        self.node_id = node_id
        if registration.leader_epoch < self.leader_epoch or (
            registration.leader_epoch == self.leader_epoch
            and registration.partition_epoch <= self.partition_epoch
        ):
            return False
        new_leader_epoch = registration.leader_epoch > self.leader_epoch
        was_leader = self.is_leader
        self.leader_id = registration.leader
        self.leader_epoch = registration.leader_epoch
        self.partition_epoch = registration.partition_epoch
        self.replicas = registration.replicas
        self.isr = registration.isr
        self.pending_isr = None
        self.is_leader = registration.leader == node_id
        if self.is_leader and (new_leader_epoch or not was_leader):
            leader_end_offset = self.log.log_end_offset
            self.log.maybe_assign_epoch_start_offset(self.leader_epoch, leader_end_offset)
            self.leader_epoch_start_offset = leader_end_offset
            self.remote_replicas = {
                replica: ReplicaState(
                    last_caught_up_time_ms=now_ms if replica in self.isr else 0,
                )
                for replica in self.replicas
                if replica != node_id
            }
        elif self.is_leader:
            for replica in self.replicas:
                if replica != node_id and replica not in self.remote_replicas:
                    self.remote_replicas[replica] = ReplicaState()
            for replica in [r for r in self.remote_replicas if r not in self.replicas]:
                del self.remote_replicas[replica]
        else:
            self.remote_replicas = {}
            self.leader_epoch_start_offset = -1
        if self.is_leader:
            self.maybe_increment_high_watermark()
        return True

    # -- the leader's view of the ISR ----------------------------------------------------------

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The committed ISR plus a pending proposal's members (Kafka's ``maximalIsr``)."""
        if self.pending_isr is None:
            return self.isr
        extra = tuple(r for r in self.pending_isr.isr if r not in self.isr)
        return self.isr + extra

    def in_sync_count(self) -> int:
        """The committed ISR's size, for ``min.insync.replicas`` (Kafka's ``isr.size``)."""
        return len(self.isr)

    def maybe_increment_high_watermark(self) -> bool:
        """Leader: move the high watermark up to the minimum log end offset over the maximal
        ISR (this broker's own included); True when it moved."""
        if not self.is_leader:
            return False
        new_high_watermark = self.log.log_end_offset
        for replica in self.maximal_isr:
            if replica == self.node_id:
                continue
            state = self.remote_replicas.get(replica)
            end = state.log_end_offset if state is not None else UNKNOWN_OFFSET
            new_high_watermark = min(new_high_watermark, end)
        if new_high_watermark > self.log.high_watermark:
            self.log.high_watermark = new_high_watermark
            return True
        return False

    def update_follower_fetch_state(
        self, replica_id: int, fetch_offset: int, fetch_time_ms: int, leader_end_offset: int
    ) -> None:
        """Record a follower's fetch (Kafka's ``updateFollowerFetchState``). KafkaError
        NOT_LEADER_OR_FOLLOWER when ``replica_id`` is not a replica of this partition."""
        state = self.remote_replicas.get(replica_id)
        if state is None:
            raise KafkaError(
                ErrorCode.NOT_LEADER_OR_FOLLOWER,
                f"replica {replica_id} is not assigned to {self.topic}-{self.index}",
            )
        state.update_fetch_state(fetch_offset, fetch_time_ms, leader_end_offset)

    def maybe_expand_isr(
        self, replica_id: int, is_eligible: Callable[[int], bool]
    ) -> PendingIsr | None:
        """Kafka's ``maybeExpandIsr``: the proposal adding ``replica_id`` when it is caught up to
        the high watermark and the leader epoch start offset and no change is pending."""
        if not self.is_leader or self.pending_isr is not None or replica_id in self.isr:
            return None
        state = self.remote_replicas.get(replica_id)
        if state is None or not is_eligible(replica_id):
            return None
        end = state.log_end_offset
        if end < self.log.high_watermark or end < self.leader_epoch_start_offset:
            return None
        self.pending_isr = PendingIsr(
            (*self.isr, replica_id), self.leader_epoch, self.partition_epoch
        )
        return self.pending_isr

    def out_of_sync_replicas(self, now_ms: int, max_lag_ms: int) -> tuple[int, ...]:
        """Kafka's ``getOutOfSyncReplicas``: ISR followers not caught up for ``max_lag_ms``."""
        leader_end_offset = self.log.log_end_offset
        return tuple(
            replica
            for replica in self.isr
            if replica != self.node_id
            and not self.remote_replicas.get(replica, ReplicaState()).is_caught_up(
                leader_end_offset, now_ms, max_lag_ms
            )
        )

    def maybe_shrink_isr(self, now_ms: int, max_lag_ms: int) -> PendingIsr | None:
        """Kafka's ``maybeShrinkIsr``: the proposal without the out-of-sync followers."""
        if not self.is_leader or self.pending_isr is not None:
            return None
        out_of_sync = self.out_of_sync_replicas(now_ms, max_lag_ms)
        if not out_of_sync:
            return None
        self.pending_isr = PendingIsr(
            tuple(r for r in self.isr if r not in out_of_sync),
            self.leader_epoch,
            self.partition_epoch,
        )
        return self.pending_isr

    def alter_partition_completed(
        self, proposal: PendingIsr, leader_epoch: int, isr: tuple[int, ...], partition_epoch: int
    ) -> bool:
        """The controller committed an ISR (Kafka's ``handleAlterPartitionUpdate``): applied
        unless the leader epoch moved on or the image already has a newer partition epoch;
        True when applied."""
        if self.pending_isr is proposal:
            self.pending_isr = None
        if leader_epoch != self.leader_epoch or partition_epoch < self.partition_epoch:
            return False
        self.isr = isr
        self.partition_epoch = partition_epoch
        self.maybe_increment_high_watermark()
        return True

    def alter_partition_failed(self, proposal: PendingIsr, *, reset: bool) -> None:
        """Drop ``proposal`` when the controller did not apply it and says the committed state
        stands (``reset``, Kafka's OPERATION_NOT_ATTEMPTED / INELIGIBLE_REPLICA); otherwise it
        stays pending until the next image (FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION)."""
        if reset and self.pending_isr is proposal:
            self.pending_isr = None

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
        self.maybe_increment_high_watermark()
        return info

    def append_as_follower(
        self, records: bytes | memoryview, leader_high_watermark: int, now_ms: int
    ) -> LogAppendInfo:
        """Replicated batches at the leader's offsets and epochs; the high watermark becomes
        min(the leader's, this log end offset) (Kafka's ``processPartitionData``)."""
        info = self.log.append_as_follower(records, now_ms)
        self.update_follower_high_watermark(leader_high_watermark)
        return info

    def update_follower_high_watermark(self, leader_high_watermark: int) -> None:
        if not self.is_leader and leader_high_watermark >= 0:
            self.log.high_watermark = min(leader_high_watermark, self.log.log_end_offset)
