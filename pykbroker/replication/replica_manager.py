"""ReplicaManager: the partitions this broker hosts, appends to their leaders, and fetches.

Mirrors Kafka's ``ReplicaManager``. It follows the metadata image: when a partition names this
broker as a replica, the partition and its log exist here; when its topic is removed, its log is
deleted. ``append_records`` validates and appends produce data to leader partitions;
``fetch_records`` reads up to the high watermark and, when there is less than ``min_bytes``,
parks the fetch until data arrives or ``max_wait_ms`` passes (Kafka's DelayedFetch).

With a single replica the ISR is this broker alone, so the high watermark moves to the log end
offset as soon as a batch is written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log import LogConfig
from pykbroker.log.log_manager import LogManager
from pykbroker.log.record_batch import AppendOrigin
from pykbroker.metadata.image import MetadataImage

from .partition import Partition

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


class ReplicaManager:
    """Hosts partitions and serves produce and fetch for them."""

    def __init__(
        self,
        log_manager: LogManager,
        *,
        node_id: int,
        log_config_for: Callable[[Mapping[str, str]], LogConfig],
        clock: Callable[[], int],
    ) -> None:
        self.log_manager = log_manager
        self.node_id = node_id
        self._log_config_for = log_config_for
        self._clock = clock
        self.partitions: dict[TopicPartition, Partition] = {}
        self._image = MetadataImage()
        self._arrivals = _Waiters()
        self.shutting_down = trio.Event()

    # -- following the metadata -------------------------------------------------------------

    def on_metadata_update(self, old: MetadataImage, new: MetadataImage) -> None:
        """Create partitions this broker now hosts; delete those of removed topics."""
        self._image = new
        for topic_id, topic in old.topics_by_id.items():
            if topic_id not in new.topics_by_id:
                for index in topic.partitions:
                    self._remove_partition((topic.name, index))
        for topic in new.topics.values():
            config = self._log_config_for(new.topic_config(topic.name))
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
                partition.update(registration, self.node_id, config)

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
                info = partition.append_as_leader(records, now, origin=origin)
            except KafkaError as exc:
                result.error = exc.code
                result.error_message = exc.message
                continue
            appended = True
            result.base_offset = info.first_offset
            result.log_append_time_ms = info.log_append_time_ms
            result.log_start_offset = info.log_start_offset
        if appended:
            self._notify_arrivals()
        return results

    def _notify_arrivals(self) -> None:
        self._arrivals.event.set()
        self._arrivals = _Waiters()

    # -- fetch --------------------------------------------------------------------------------

    def read_partitions(
        self,
        requests: list[FetchPartitionRequest],
        max_bytes: int,
        isolation_level: int,
    ) -> tuple[dict[TopicPartition, FetchPartitionResult], int]:
        """Read each partition once; return the results and the bytes read."""
        results: dict[TopicPartition, FetchPartitionResult] = {}
        total = 0
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
            max_offset = (
                partition.last_stable_offset if isolation_level == 1 else plog.high_watermark
            )
            try:
                data = plog.read(
                    req.fetch_offset, limit, max_offset=max_offset, min_one_message=total == 0
                )
            except KafkaError as exc:
                result.error = exc.code
                continue
            result.records = data
            total += len(data)
        return results, total

    async def fetch_records(
        self,
        requests: list[FetchPartitionRequest],
        *,
        max_wait_ms: int,
        min_bytes: int,
        max_bytes: int,
        isolation_level: int,
    ) -> dict[TopicPartition, FetchPartitionResult]:
        """Read now; if fewer than ``min_bytes`` are there and nothing failed, wait for more
        data until ``max_wait_ms`` (a parked fetch answers as soon as data arrives)."""
        deadline = trio.current_time() + max(max_wait_ms, 0) / 1000
        while True:
            waiter = self._arrivals
            results, total = self.read_partitions(requests, max_bytes, isolation_level)
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
