"""ReplicaManager: the partitions this broker hosts, appends to their leaders, and fetches.

Mirrors Kafka's ``ReplicaManager`` (with its ISR expiration task and ``AlterPartitionManager``).
It follows the metadata image: when a partition names this broker as a replica, the partition
and its log exist here; when its topic is removed or the broker leaves its replicas (a completed
reassignment), the partition stops and its log is deleted; leadership and the committed ISR come
from the image (``Partition.update``) and the partitions this broker follows are published to the
replica fetcher manager (``add_follower_listener``).

``append_records`` validates and appends produce data to leader partitions; with ``acks=all``
it first answers NOT_ENOUGH_REPLICAS when the committed ISR is smaller than
``min.insync.replicas`` (topic config, else the broker's), and ``wait_for_acks`` then parks the
request (Kafka's DelayedProduce) until the high watermark passes each batch's last offset --
NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile,
NOT_LEADER_OR_FOLLOWER if leadership moved, REQUEST_TIMED_OUT at the request's timeout.
``fetch_records`` reads up to the high watermark (consumers; the last stable offset with
read_committed) or the log end offset (followers: ``replica_id >= 0``, whose fetch offset is
their log end offset and updates the ISR and high watermark) and, when there is less than
``min_bytes``, parks the fetch until data arrives or ``max_wait_ms`` passes (Kafka's
DelayedFetch). Parked fetches and produces wake on every append and high watermark move.

``run`` is the background part: every ``replica.lag.time.max.ms / 2`` the ISR of each led
partition is checked for followers that fell behind (Kafka's ``isr-expiration``), and ISR
changes (shrinks, and expansions decided on follower fetches) are sent to the active controller
as AlterPartition (v3, over the controller channel), retried with a bounded backoff while the
proposal is still the partition's pending one.

With a single replica the ISR is this broker alone, so the high watermark moves to the log end
offset as soon as a batch is written and acks=all answers at once.

Not implemented: batching several partitions' produce waits per partition event (one wake-up
event is shared), fetch sessions for followers, delayed-fetch completion on a high watermark
move for followers (they learn it on their next fetch, as in Kafka), throttling/quotas.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log import LogConfig
from pykbroker.log.log_manager import LogManager
from pykbroker.log.record_batch import AppendOrigin
from pykbroker.metadata.config_control import dynamic_topic_defaults
from pykbroker.metadata.image import MetadataImage

from .partition import Partition, PendingIsr

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class ProducePartitionResult:
    """The outcome of one partition of a produce request."""

    error: ErrorCode = ErrorCode.NO_ERROR
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    #: The last offset appended (-1 when nothing was): what acks=all waits for.
    last_offset: int = -1


@dataclass(slots=True)
class FetchPartitionResult:
    """What a fetch returns for one partition."""

    error: ErrorCode = ErrorCode.NO_ERROR
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: bytes = b""


@dataclass(slots=True)
class FetchPartitionRequest:
    """One partition of a fetch request."""

    topic: str
    partition: int
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1


@dataclass(slots=True)
class _Waiters:
    event: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True, slots=True)
class FollowedPartition:
    """A partition this broker follows: where and at which leader epoch to fetch it."""

    topic_id: uuid.UUID
    leader_id: int
    leader_epoch: int


class ControllerSender(Protocol):
    """What the AlterPartition sender needs of ``server.controller_channel.ControllerChannel``."""

    async def send(
        self, api_key: int, version: int, body: dict[str, Any], deadline: float
    ) -> dict[str, Any]: ...


#: AlterPartition version sent (v3: ``new_isr_with_epochs``, KIP-903).
ALTER_PARTITION_VERSION = 3
_ALTER_PARTITION_TIMEOUT_S = 5.0
_ALTER_PARTITION_BACKOFF_S = 0.1
_ALTER_PARTITION_MAX_BACKOFF_S = 2.0
#: AlterPartition errors after which the committed ISR stands (Kafka resets the pending state).
_RESET_ON = frozenset({ErrorCode.OPERATION_NOT_ATTEMPTED, ErrorCode.INELIGIBLE_REPLICA})
#: Errors that are retried (the controller moved or was busy).
_RETRY_ON = frozenset(
    {ErrorCode.NOT_CONTROLLER, ErrorCode.REQUEST_TIMED_OUT, ErrorCode.UNKNOWN_SERVER_ERROR}
)


class ReplicaManager:
    """Hosts partitions and serves produce and fetch for them."""

    def __init__(
        self,
        log_manager: LogManager,
        *,
        node_id: int,
        log_config_for: Callable[[Mapping[str, str]], LogConfig],
        clock: Callable[[], int],
        replica_lag_time_max_ms: int = 30_000,
        min_insync_replicas: int = 1,
        controller_channel: ControllerSender | None = None,
    ) -> None:
        self.log_manager = log_manager
        self.node_id = node_id
        self._log_config_for = log_config_for
        self._clock = clock
        self.replica_lag_time_max_ms = replica_lag_time_max_ms
        self.min_insync_replicas = min_insync_replicas
        self.controller_channel = controller_channel
        self.partitions: dict[TopicPartition, Partition] = {}
        self._image = MetadataImage()
        self._arrivals = _Waiters()
        self.shutting_down = trio.Event()
        self._follower_listeners: list[
            Callable[[dict[TopicPartition, FollowedPartition]], None]
        ] = []
        # Unbounded in type only: a partition has at most one pending proposal at a time.
        self._alter_send, self._alter_receive = trio.open_memory_channel[
            tuple[TopicPartition, PendingIsr]
        ](math.inf)

    # -- following the metadata -------------------------------------------------------------

    def on_metadata_update(self, old: MetadataImage, new: MetadataImage) -> None:
        """Create partitions this broker now hosts; delete those of removed topics and those
        this broker is no longer a replica of (a completed reassignment moved them away: Kafka's
        ``ReplicaManager.applyDelta`` stops and deletes them)."""
        self._image = new
        for topic_id, topic in old.topics_by_id.items():
            if topic_id not in new.topics_by_id:
                for index in topic.partitions:
                    self._remove_partition((topic.name, index))
        for tp, hosted in list(self.partitions.items()):
            still = new.topics_by_id.get(hosted.topic_id)
            registration = still.partitions.get(tp[1]) if still is not None else None
            if registration is None or self.node_id not in registration.replicas:
                self._remove_partition(tp)
        # Dynamic broker configs (Kafka's DynamicLogConfig) are the defaults under topic overrides.
        defaults = dynamic_topic_defaults(new, self.node_id)
        for topic in new.topics.values():
            config = self._log_config_for({**defaults, **new.topic_config(topic.name)})
            for index, registration in topic.partitions.items():
                if self.node_id not in registration.replicas:
                    continue
                tp = (topic.name, index)
                partition = self.partitions.get(tp)
                if partition is None or partition.topic_id != topic.topic_id:
                    if partition is not None:
                        self._remove_partition(tp)
                    partition = Partition(
                        tp,
                        topic.topic_id,
                        self.log_manager.get_or_create_log(
                            topic.name, index, config, now_ms=self._clock()
                        ),
                    )
                    self.partitions[tp] = partition
                partition.update(registration, self.node_id, config, self._clock())
        followed = self.followed_partitions()
        for listener in self._follower_listeners:
            listener(followed)
        self._notify_arrivals()

    def add_follower_listener(
        self, listener: Callable[[dict[TopicPartition, FollowedPartition]], None]
    ) -> None:
        """Call ``listener`` with ``followed_partitions()`` after every metadata update."""
        self._follower_listeners.append(listener)
        listener(self.followed_partitions())

    def followed_partitions(self) -> dict[TopicPartition, FollowedPartition]:
        """The hosted partitions another broker leads (leaderless ones are not fetched)."""
        return {
            tp: FollowedPartition(p.topic_id, p.leader_id, p.leader_epoch)
            for tp, p in self.partitions.items()
            if not p.is_leader and p.leader_id >= 0 and self.node_id in p.replicas
        }

    @property
    def image(self) -> MetadataImage:
        return self._image

    def min_insync_replicas_for(self, topic: str) -> int:
        """``min.insync.replicas``: the topic's config, else the dynamic broker config, else the
        broker's static one."""
        value = self._image.topic_config(topic).get("min.insync.replicas")
        if value is None:
            value = dynamic_topic_defaults(self._image, self.node_id).get("min.insync.replicas")
        try:
            return int(value) if value is not None else self.min_insync_replicas
        except ValueError:
            return self.min_insync_replicas

    def _remove_partition(self, tp: TopicPartition) -> None:
        partition = self.partitions.pop(tp, None)
        if partition is not None:
            log.info("deleting partition %s-%d", tp[0], tp[1])
            self.log_manager.delete_log(tp[0], tp[1])

    def get_partition(self, topic: str, partition: int) -> Partition | None:
        return self.partitions.get((topic, partition))

    def leader_partition(self, topic: str, partition: int, leader_epoch: int = -1) -> Partition:
        """The partition if this broker leads it, else a KafkaError as Kafka answers."""
        found = self.partitions.get((topic, partition))
        if found is None:
            known = self._image.topics.get(topic)
            if known is not None and partition in known.partitions:
                # In the metadata but hosted by other brokers (Kafka's ReplicaManager answers so).
                raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
            raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        if not found.is_leader:
            raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
        found.check_leader_epoch(leader_epoch)
        return found

    # -- produce ------------------------------------------------------------------------------

    def append_records(
        self,
        entries: Mapping[TopicPartition, bytes | memoryview | None],
        required_acks: int,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> dict[TopicPartition, ProducePartitionResult]:
        """Append to each leader partition; a failure of one partition does not affect others."""
        results: dict[TopicPartition, ProducePartitionResult] = {}
        now = self._clock()
        appended = False
        for tp, records in entries.items():
            result = ProducePartitionResult()
            results[tp] = result
            try:
                if required_acks not in (-1, 0, 1):
                    raise KafkaError(ErrorCode.INVALID_REQUIRED_ACKS)
                partition = self.leader_partition(*tp)
                if records is None or len(records) == 0:
                    raise KafkaError(ErrorCode.INVALID_RECORD, "no records in the produce request")
                min_isr = self.min_insync_replicas_for(tp[0])
                if required_acks == -1 and partition.in_sync_count() < min_isr:
                    raise KafkaError(
                        ErrorCode.NOT_ENOUGH_REPLICAS,
                        f"the size of the current ISR {partition.isr} is insufficient to satisfy "
                        f"the min.isr requirement of {min_isr} for partition {tp[0]}-{tp[1]}",
                    )
                info = partition.append_as_leader(records, now, origin=origin)
            except KafkaError as exc:
                result.error = exc.code
                result.error_message = exc.message
                continue
            appended = True
            result.base_offset = info.first_offset
            result.log_append_time_ms = info.log_append_time_ms
            result.log_start_offset = info.log_start_offset
            result.last_offset = info.last_offset
        if appended:
            self._notify_arrivals()
        return results

    def _acks_outcome(self, tp: TopicPartition, result: ProducePartitionResult) -> ErrorCode | None:
        """Kafka's ``checkEnoughReplicasReachOffset``: None while waiting, else the outcome."""
        partition = self.partitions.get(tp)
        if partition is None or not partition.is_leader:
            return ErrorCode.NOT_LEADER_OR_FOLLOWER
        if partition.log.high_watermark <= result.last_offset:
            return None
        if partition.in_sync_count() < self.min_insync_replicas_for(tp[0]):
            return ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        return ErrorCode.NO_ERROR

    async def wait_for_acks(
        self, results: Mapping[TopicPartition, ProducePartitionResult], timeout_ms: int
    ) -> None:
        """acks=all (Kafka's DelayedProduce): wait until the high watermark passes each
        appended batch, then set each result's outcome; REQUEST_TIMED_OUT after
        ``timeout_ms``."""
        waiting = {
            tp: r
            for tp, r in results.items()
            if r.error == ErrorCode.NO_ERROR and r.last_offset >= r.base_offset >= 0
        }
        deadline = trio.current_time() + max(timeout_ms, 0) / 1000
        while waiting:  # bounded by the deadline
            waiter = self._arrivals
            for tp, result in list(waiting.items()):
                outcome = self._acks_outcome(tp, result)
                if outcome is None:
                    continue
                del waiting[tp]
                if outcome != ErrorCode.NO_ERROR:
                    result.error = outcome
            if not waiting:
                return
            if trio.current_time() >= deadline or self.shutting_down.is_set():
                break
            with trio.move_on_at(deadline):
                await waiter.event.wait()
        for result in waiting.values():
            result.error = ErrorCode.REQUEST_TIMED_OUT
            result.error_message = "the ISR did not replicate the records in time"

    def _notify_arrivals(self) -> None:
        self._arrivals.event.set()
        self._arrivals = _Waiters()

    # -- fetch --------------------------------------------------------------------------------

    def read_partitions(
        self,
        requests: list[FetchPartitionRequest],
        max_bytes: int,
        isolation_level: int,
        *,
        replica_id: int = -1,
        update_fetch_state: bool = False,
    ) -> tuple[dict[TopicPartition, FetchPartitionResult], int]:
        """Read each partition once; return the results and the bytes read. A follower
        (``replica_id >= 0``) reads up to the log end offset and, with ``update_fetch_state``,
        its fetch offset updates its state, the ISR and the high watermark."""
        results: dict[TopicPartition, FetchPartitionResult] = {}
        total = 0
        hw_moved = False
        for req in requests:
            tp = (req.topic, req.partition)
            result = FetchPartitionResult()
            results[tp] = result
            try:
                partition = self.leader_partition(
                    req.topic, req.partition, req.current_leader_epoch
                )
            except KafkaError as exc:
                result.error = exc.code
                continue
            plog = partition.log
            result.high_watermark = plog.high_watermark
            result.last_stable_offset = partition.last_stable_offset
            result.log_start_offset = plog.log_start_offset
            limit = min(req.partition_max_bytes, max(max_bytes - total, 0))
            max_offset: int | None = (
                partition.last_stable_offset if isolation_level == 1 else plog.high_watermark
            )
            if replica_id >= 0:
                max_offset = None  # Kafka's FetchLogEnd
                if replica_id not in partition.remote_replicas:
                    result.error = ErrorCode.NOT_LEADER_OR_FOLLOWER  # not a follower of it
                    continue
            leader_end_offset = plog.log_end_offset
            try:
                data = plog.read(
                    req.fetch_offset, limit, max_offset=max_offset, min_one_message=total == 0
                )
            except KafkaError as exc:
                result.error = exc.code
                continue
            result.records = data
            total += len(data)
            if replica_id >= 0 and update_fetch_state:
                hw_moved |= self._follower_fetched(
                    partition, replica_id, req.fetch_offset, leader_end_offset
                )
        if hw_moved:
            self._notify_arrivals()
        return results, total

    def _follower_fetched(
        self, partition: Partition, replica_id: int, fetch_offset: int, leader_end_offset: int
    ) -> bool:
        """Kafka's ``updateFollowerFetchState``: the follower's state, then maybe an ISR
        expansion and a high watermark move (True when it moved)."""
        partition.update_follower_fetch_state(
            replica_id, fetch_offset, self._clock(), leader_end_offset
        )
        proposal = partition.maybe_expand_isr(replica_id, self._is_isr_eligible)
        if proposal is not None:
            log.info(
                "expanding the ISR of %s-%d from %s to %s",
                partition.topic,
                partition.index,
                partition.isr,
                proposal.isr,
            )
            self._alter_send.send_nowait(((partition.topic, partition.index), proposal))
        return partition.maybe_increment_high_watermark()

    def _is_isr_eligible(self, replica_id: int) -> bool:
        """Kafka's ``isReplicaIsrEligible``: a registered, unfenced broker."""
        broker = self._image.brokers.get(replica_id)
        return broker is not None and not broker.fenced

    async def fetch_records(
        self,
        requests: list[FetchPartitionRequest],
        *,
        max_wait_ms: int,
        min_bytes: int,
        max_bytes: int,
        isolation_level: int,
        replica_id: int = -1,
    ) -> dict[TopicPartition, FetchPartitionResult]:
        """Read now; if fewer than ``min_bytes`` are there and nothing failed, wait for more
        data until ``max_wait_ms`` (a parked fetch answers as soon as data arrives). A
        follower's fetch state is updated by the first read only."""
        deadline = trio.current_time() + max(max_wait_ms, 0) / 1000
        first = True
        while True:  # bounded by the deadline
            waiter = self._arrivals
            results, total = self.read_partitions(
                requests,
                max_bytes,
                isolation_level,
                replica_id=replica_id,
                update_fetch_state=first,
            )
            first = False
            if (
                total >= min_bytes
                or not requests
                or any(r.error != ErrorCode.NO_ERROR for r in results.values())
                or trio.current_time() >= deadline
                or self.shutting_down.is_set()
            ):
                return results
            with trio.move_on_at(deadline):
                await waiter.event.wait()

    def wake_fetchers(self) -> None:
        """Let parked fetches answer now (at shutdown)."""
        self._notify_arrivals()

    # -- ISR expiration and AlterPartition (Kafka's AlterPartitionManager) -------------------

    def maybe_shrink_isrs(self) -> int:
        """Propose an ISR shrink for every led partition with out-of-sync followers; the
        number proposed."""
        now = self._clock()
        proposed = 0
        for tp, partition in self.partitions.items():
            proposal = partition.maybe_shrink_isr(now, self.replica_lag_time_max_ms)
            if proposal is None:
                continue
            log.info(
                "shrinking the ISR of %s-%d from %s to %s (lagging: %s)",
                tp[0],
                tp[1],
                partition.isr,
                proposal.isr,
                [r for r in partition.isr if r not in proposal.isr],
            )
            self._alter_send.send_nowait((tp, proposal))
            proposed += 1
        if proposed:
            self._notify_arrivals()
        return proposed

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background: ISR expiration every ``replica.lag.time.max.ms / 2`` and the
        AlterPartition sender; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._isr_expiration_loop)
            nursery.start_soon(self._alter_partition_loop)
            task_status.started()

    async def _isr_expiration_loop(self) -> None:
        interval_s = max(self.replica_lag_time_max_ms / 2, 10) / 1000
        while True:  # until cancelled; every round sleeps
            await trio.sleep(interval_s)
            self.maybe_shrink_isrs()

    async def _alter_partition_loop(self) -> None:
        backoff_s = _ALTER_PARTITION_BACKOFF_S
        queued: dict[TopicPartition, PendingIsr] = {}
        while True:  # until cancelled; a failed round backs off (bounded)
            if not queued:
                tp, proposal = await self._alter_receive.receive()
                queued[tp] = proposal
            while True:  # drain what else is queued now (bounded by the channel's content)
                try:
                    tp, proposal = self._alter_receive.receive_nowait()
                except trio.WouldBlock:
                    break
                queued[tp] = proposal
            # Only proposals still pending on their partition are worth sending.
            queued = {
                tp: proposal
                for tp, proposal in queued.items()
                if (p := self.partitions.get(tp)) is not None and p.pending_isr is proposal
            }
            if not queued:
                continue
            try:
                retry = await self._send_alter_partition(queued)
            except Exception:  # a bad answer must not stop the broker
                log.exception("AlterPartition failed; retrying")
                retry = queued
            queued = retry
            if retry:
                await trio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _ALTER_PARTITION_MAX_BACKOFF_S)
            else:
                backoff_s = _ALTER_PARTITION_BACKOFF_S

    def alter_partition_request(
        self, proposals: Mapping[TopicPartition, PendingIsr]
    ) -> dict[str, Any]:
        """The AlterPartition v3 body for ``proposals``."""
        image = self._image
        own = image.brokers.get(self.node_id)
        topics: dict[uuid.UUID, dict[str, Any]] = {}
        for (topic, index), proposal in proposals.items():
            partition = self.partitions[(topic, index)]
            entry = topics.setdefault(
                partition.topic_id,
                {"topic_name": topic, "topic_id": partition.topic_id, "partitions": []},
            )
            entry["partitions"].append(
                {
                    "partition_index": index,
                    "leader_epoch": proposal.leader_epoch,
                    "new_isr": list(proposal.isr),
                    "new_isr_with_epochs": [
                        {
                            "broker_id": replica,
                            "broker_epoch": (
                                b.epoch if (b := image.brokers.get(replica)) is not None else -1
                            ),
                        }
                        for replica in proposal.isr
                    ],
                    "leader_recovery_state": 0,
                    "partition_epoch": proposal.partition_epoch,
                }
            )
        return {
            "broker_id": self.node_id,
            "broker_epoch": own.epoch if own is not None else -1,
            "topics": list(topics.values()),
        }

    async def _send_alter_partition(
        self, proposals: dict[TopicPartition, PendingIsr]
    ) -> dict[TopicPartition, PendingIsr]:
        """Send one AlterPartition; apply the answers; return the proposals to retry."""
        channel = self.controller_channel
        if channel is None:
            return proposals
        body = self.alter_partition_request(proposals)
        try:
            response = await channel.send(
                ApiKey.ALTER_PARTITION,
                ALTER_PARTITION_VERSION,
                body,
                trio.current_time() + _ALTER_PARTITION_TIMEOUT_S,
            )
        except KafkaError as exc:
            log.info("AlterPartition not answered (%s), retrying", exc)
            return proposals
        top_error = ErrorCode(response.get("error_code", 0))
        if top_error != ErrorCode.NO_ERROR:
            log.info("AlterPartition answered %s, retrying", top_error.name)
            return proposals
        by_id = {p.topic_id: tp[0] for tp, p in self.partitions.items()}
        retry: dict[TopicPartition, PendingIsr] = {}
        answered: set[TopicPartition] = set()
        for topic in response.get("topics", []):
            name = by_id.get(topic.get("topic_id")) or topic.get("topic_name")
            if name is None:
                continue
            for part in topic.get("partitions", []):
                tp = (name, part["partition_index"])
                proposal = proposals.get(tp)
                if proposal is None:
                    continue
                answered.add(tp)
                if self._apply_alter_partition_answer(tp, proposal, part):
                    retry[tp] = proposal
        # A partition missing from the answer is asked again.
        retry.update({tp: p for tp, p in proposals.items() if tp not in answered})
        self._notify_arrivals()
        return {tp: p for tp, p in retry.items() if self._still_pending(tp, p)}

    def _apply_alter_partition_answer(
        self, tp: TopicPartition, proposal: PendingIsr, answer: Mapping[str, Any]
    ) -> bool:
        """Apply one partition's answer (Kafka's ``handleAlterPartitionUpdate`` / error
        handling); True when it should be sent again."""
        partition = self.partitions.get(tp)
        if partition is None:
            return False
        error = ErrorCode(answer.get("error_code", 0))
        if error == ErrorCode.NO_ERROR:
            applied = partition.alter_partition_completed(
                proposal,
                answer["leader_epoch"],
                tuple(answer["isr"]),
                answer["partition_epoch"],
            )
            log.info(
                "%s-%d: AlterPartition committed ISR %s (partition epoch %d)%s",
                tp[0],
                tp[1],
                list(answer["isr"]),
                answer["partition_epoch"],
                "" if applied else ", already superseded",
            )
            return False
        if error in _RETRY_ON:
            return True
        log.info("%s-%d: AlterPartition failed with %s", tp[0], tp[1], error.name)
        partition.alter_partition_failed(proposal, reset=error in _RESET_ON)
        return False

    def _still_pending(self, tp: TopicPartition, proposal: PendingIsr) -> bool:
        partition = self.partitions.get(tp)
        return partition is not None and partition.pending_isr is proposal
