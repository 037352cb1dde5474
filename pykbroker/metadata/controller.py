"""QuorumController: checks metadata changes and writes them as records to the metadata log.

Mirrors Kafka's ``QuorumController`` / ``ReplicationControlManager`` for what a single node needs:
topic creation and deletion, and broker registration. Every change is validated first, then
written as records (``TopicRecord``, ``PartitionRecord``, ``ConfigRecord``, ``RemoveTopicRecord``,
``RegisterBrokerRecord``) in one batch, then replayed into a new ``MetadataImage`` that is
published to listeners. A request that fails validation writes nothing.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log_config import LogConfig

from . import schemas
from .image import TOPIC_RESOURCE, MetadataImage
from .metadata_log import MetadataLog
from .records import MetadataRecord, record

log = logging.getLogger(__name__)

MAX_TOPIC_NAME_LENGTH = 249
ZERO_UUID = uuid.UUID(int=0)
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")

#: Topic-level configs Kafka accepts (LogConfig); others get INVALID_CONFIG.
TOPIC_CONFIG_KEYS = frozenset(
    {
        "cleanup.policy",
        "compression.type",
        "compression.gzip.level",
        "compression.lz4.level",
        "compression.zstd.level",
        "delete.retention.ms",
        "file.delete.delay.ms",
        "flush.messages",
        "flush.ms",
        "follower.replication.throttled.replicas",
        "index.interval.bytes",
        "leader.replication.throttled.replicas",
        "local.retention.bytes",
        "local.retention.ms",
        "max.compaction.lag.ms",
        "max.message.bytes",
        "message.downconversion.enable",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.type",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "min.insync.replicas",
        "preallocate",
        "remote.storage.enable",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.index.bytes",
        "segment.jitter.ms",
        "segment.ms",
        "unclean.leader.election.enable",
    }
)


def validate_topic_name(name: str | None) -> str | None:
    """None if ``name`` is a legal topic name, else why not (Kafka's Topic.validate)."""
    if not name:
        return "Topic name is illegal, it can't be empty"
    if name in (".", ".."):
        return 'Topic name cannot be "." or ".."'
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters"
    if not _LEGAL_TOPIC.match(name):
        return (
            f"Topic name {name!r} is illegal, it contains a character other than ASCII "
            "alphanumerics, '.', '_' and '-'"
        )
    return None


@dataclass(slots=True)
class CreateTopicRequest:
    """One topic of a CreateTopics request, or an auto-creation."""

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    assignments: dict[int, list[int]] = field(default_factory=dict)
    configs: dict[str, str | None] = field(default_factory=dict)


@dataclass(slots=True)
class CreateTopicResult:
    name: str
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None
    topic_id: uuid.UUID = ZERO_UUID
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class DeleteTopicResult:
    name: str | None
    topic_id: uuid.UUID
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


class QuorumController:
    """The active controller of a one-voter quorum (this node)."""

    def __init__(
        self,
        metadata_log: MetadataLog,
        *,
        node_id: int,
        default_num_partitions: int,
        default_replication_factor: int,
        clock: Callable[[], int],
    ) -> None:
        self.metadata_log = metadata_log
        self.node_id = node_id
        self.default_num_partitions = default_num_partitions
        self.default_replication_factor = default_replication_factor
        self._clock = clock
        self.image = MetadataImage()
        self._listeners: list[Callable[[MetadataImage, MetadataImage], None]] = []
        self._lock = trio.Lock()
        self.leader_epoch = 0

    def load(self) -> MetadataImage:
        """Replay the whole metadata log into the image (at start-up)."""
        records: list[MetadataRecord] = []
        last = -1
        for offset, rec in self.metadata_log.replay():
            records.append(rec)
            last = offset
        self.image = MetadataImage().apply(records, last)
        log.info(
            "loaded metadata up to offset %d: %d topics, %d brokers",
            last,
            len(self.image.topics),
            len(self.image.brokers),
        )
        return self.image

    def add_listener(self, listener: Callable[[MetadataImage, MetadataImage], None]) -> None:
        """Called with (old image, new image) after every committed change."""
        self._listeners.append(listener)

    def _commit(self, records: Sequence[MetadataRecord]) -> None:
        if not records:
            return
        offset = self.metadata_log.append(records, self.leader_epoch, self._clock())
        old = self.image
        self.image = old.apply(records, offset)
        for listener in self._listeners:
            listener(old, self.image)

    async def register_broker(self, host: str, port: int, rack: str | None) -> None:
        """Write this broker's registration (a new incarnation each start)."""
        async with self._lock:
            records = []
            if "metadata.version" not in self.image.features:
                records.append(
                    record(schemas.FEATURE_LEVEL_RECORD, name="metadata.version", feature_level=27)
                )
            records.append(
                record(
                    schemas.REGISTER_BROKER_RECORD,
                    broker_id=self.node_id,
                    incarnation_id=uuid.uuid4(),
                    broker_epoch=self.metadata_log.end_offset,
                    end_points=[
                        {"name": "PLAINTEXT", "host": host, "port": port, "security_protocol": 0}
                    ],
                    features=[],
                    rack=rack,
                    fenced=False,
                )
            )
            self._commit(records)

    def _check_create(
        self, req: CreateTopicRequest, live_brokers: int
    ) -> tuple[CreateTopicResult, int, int]:
        result = CreateTopicResult(req.name)
        problem = validate_topic_name(req.name)
        if problem:
            result.error, result.message = ErrorCode.INVALID_TOPIC_EXCEPTION, problem
            return result, 0, 0
        if req.name in self.image.topics:
            result.error = ErrorCode.TOPIC_ALREADY_EXISTS
            result.message = f"Topic '{req.name}' already exists."
            return result, 0, 0
        if req.assignments:
            partitions = len(req.assignments)
            replication = len(next(iter(req.assignments.values())))
            if sorted(req.assignments) != list(range(partitions)) or any(
                len(set(b)) != len(b) or not set(b) <= set(self.image.brokers)
                for b in req.assignments.values()
            ):
                result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                result.message = "Invalid replica assignment"
                return result, 0, 0
        else:
            partitions = req.num_partitions
            replication = req.replication_factor
            if partitions == -1:
                partitions = self.default_num_partitions
            if replication == -1:
                replication = self.default_replication_factor
            if partitions <= 0:
                result.error = ErrorCode.INVALID_PARTITIONS
                result.message = "Number of partitions was set to an invalid non-positive value."
                return result, 0, 0
            if replication <= 0 or replication > live_brokers:
                result.error = ErrorCode.INVALID_REPLICATION_FACTOR
                result.message = (
                    f"Unable to replicate the partition {replication} time(s): The target "
                    f"replication factor of {replication} cannot be reached because only "
                    f"{live_brokers} broker(s) are registered."
                )
                return result, 0, 0
        for key, value in req.configs.items():
            if key not in TOPIC_CONFIG_KEYS:
                result.error = ErrorCode.INVALID_CONFIG
                result.message = f"Unknown topic config name: {key}"
                return result, 0, 0
            if value is None:
                result.error = ErrorCode.INVALID_CONFIG
                result.message = f"Null value not supported for topic configs: {key}"
                return result, 0, 0
        try:
            LogConfig.from_properties({k: v for k, v in req.configs.items() if v is not None})
        except KafkaError as exc:
            result.error = ErrorCode.INVALID_CONFIG
            result.message = exc.message
            return result, 0, 0
        return result, partitions, replication

    async def create_topics(
        self, requests: Sequence[CreateTopicRequest], validate_only: bool = False
    ) -> list[CreateTopicResult]:
        """Create topics; each gets its own result (errors are per topic, as in Kafka)."""
        async with self._lock:
            results = []
            records: list[MetadataRecord] = []
            live = sorted(b for b, reg in self.image.brokers.items() if not reg.fenced)
            seen: set[str] = set()
            for req in requests:
                if req.name in seen:
                    results.append(
                        CreateTopicResult(
                            req.name, ErrorCode.INVALID_REQUEST, "Duplicate topic name."
                        )
                    )
                    continue
                seen.add(req.name)
                result, partitions, replication = self._check_create(req, len(live))
                results.append(result)
                if result.error != ErrorCode.NO_ERROR:
                    continue
                result.num_partitions = partitions
                result.replication_factor = replication
                result.configs = {k: v for k, v in req.configs.items() if v is not None}
                if validate_only:
                    continue
                result.topic_id = uuid.uuid4()
                records.extend(
                    self._topic_records(req, result.topic_id, partitions, replication, live)
                )
            if records:
                self._commit(records)
            return results

    def _topic_records(
        self,
        req: CreateTopicRequest,
        topic_id: uuid.UUID,
        partitions: int,
        replication: int,
        live: list[int],
    ) -> list[MetadataRecord]:
        records = [record(schemas.TOPIC_RECORD, name=req.name, topic_id=topic_id)]
        for key, value in sorted(req.configs.items()):
            records.append(
                record(
                    schemas.CONFIG_RECORD,
                    resource_type=TOPIC_RESOURCE,
                    resource_name=req.name,
                    name=key,
                    value=value,
                )
            )
        for index in range(partitions):
            if req.assignments:
                replicas = list(req.assignments[index])
            else:
                start = index % len(live)
                replicas = [live[(start + i) % len(live)] for i in range(replication)]
            records.append(
                record(
                    schemas.PARTITION_RECORD,
                    partition_id=index,
                    topic_id=topic_id,
                    replicas=replicas,
                    isr=replicas,
                    removing_replicas=[],
                    adding_replicas=[],
                    leader=replicas[0],
                    leader_epoch=0,
                    partition_epoch=0,
                    directories=[],
                )
            )
        return records

    async def delete_topics(
        self, names: Sequence[str | None], topic_ids: Sequence[uuid.UUID]
    ) -> list[DeleteTopicResult]:
        """Delete topics by name or id (DeleteTopics v6 can mix both)."""
        async with self._lock:
            results: list[DeleteTopicResult] = []
            records: list[MetadataRecord] = []
            removed: set[uuid.UUID] = set()
            wanted: list[tuple[str | None, uuid.UUID | None]] = [(n, None) for n in names]
            wanted += [(None, t) for t in topic_ids]
            for name, topic_id in wanted:
                topic = (
                    self.image.topics.get(name)
                    if name is not None
                    else self.image.topics_by_id.get(topic_id)  # type: ignore[arg-type]
                )
                zero = uuid.UUID(int=0)
                if topic is None:
                    code = (
                        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                        if name is not None
                        else ErrorCode.UNKNOWN_TOPIC_ID
                    )
                    results.append(DeleteTopicResult(name, topic_id or zero, code))
                    continue
                results.append(DeleteTopicResult(topic.name, topic.topic_id))
                if topic.topic_id not in removed:
                    removed.add(topic.topic_id)
                    records.append(record(schemas.REMOVE_TOPIC_RECORD, topic_id=topic.topic_id))
            self._commit(records)
            return results

    async def allocate_producer_ids(self, block_size: int) -> int:
        """Reserve ``block_size`` producer ids for this broker (Kafka's AllocateProducerIds:
        a ProducerIdsRecord moves the cluster's next producer id past the block)."""
        async with self._lock:
            start = self.image.next_producer_id
            self._commit(
                [
                    record(
                        schemas.PRODUCER_IDS_RECORD,
                        broker_id=self.node_id,
                        broker_epoch=-1,
                        next_producer_id=start + block_size,
                    )
                ]
            )
            return start

    def topic_configs(self, topic: str) -> Mapping[str, str]:
        return self.image.topic_config(topic)
