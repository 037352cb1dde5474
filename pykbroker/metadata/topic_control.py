"""Topic and partition creation and deletion on the controller (Kafka's
``ReplicationControlManager.createTopics`` / ``createPartitions`` / ``deleteTopics``).

CreateTopics checks each topic (legal name, not existing, partitions and replication factor
> 0 or -1 for the defaults, the replication factor no more than the unfenced brokers, a valid
manual assignment, known and valid topic configs) and writes a ``TopicRecord``, its
``ConfigRecord``s and one ``PartitionRecord`` per partition: replicas placed by the
``StripedReplicaPlacer`` (or as assigned), leader the first replica, ISR all replicas (a
manual assignment's fenced brokers are left out of the ISR, as Kafka does), leader epoch and
partition epoch 0. CreatePartitions places new partitions with the topic's replication factor
the same way; DeleteTopics writes a ``RemoveTopicRecord``. Errors are per topic; a node that is
not the active controller forwards the request (CreateTopics v7, CreatePartitions v3,
DeleteTopics v6) and answers once its own image shows the result.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log_config import LogConfig

from . import schemas
from .controller_base import ZERO_UUID, ControllerBase
from .image import TOPIC_RESOURCE, MetadataImage
from .leader_election import UNCLEAN_LEADER_ELECTION_ENABLE, is_active
from .records import MetadataRecord, record
from .replica_placement import (
    InvalidReplicationFactor,
    check_replication_factor,
    usable_brokers,
)

MAX_TOPIC_NAME_LENGTH = 249
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
class CreatePartitionsRequest:
    """One topic of a CreatePartitions request: grow it to ``count`` partitions."""

    name: str
    count: int
    assignments: list[list[int]] | None = None


@dataclass(slots=True)
class CreatePartitionsResult:
    name: str
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


@dataclass(slots=True)
class DeleteTopicResult:
    name: str | None
    topic_id: uuid.UUID
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


def check_replication_configs(configs: Mapping[str, str | None]) -> str | None:
    """Why ``min.insync.replicas`` / ``unclean.leader.election.enable`` are invalid, or None
    (Kafka's ConfigDef: an int at least 1, a boolean)."""
    value = configs.get("min.insync.replicas")
    if value is not None:
        try:
            valid = int(value.strip()) >= 1
        except ValueError:
            valid = False
        if not valid:
            return (
                f"Invalid value {value} for configuration min.insync.replicas: Value must be at "
                "least 1"
            )
    value = configs.get(UNCLEAN_LEADER_ELECTION_ENABLE)
    if value is not None and value.strip().lower() not in ("true", "false"):
        return (
            f"Invalid value {value} for configuration {UNCLEAN_LEADER_ELECTION_ENABLE}: "
            "Expected value to be either true or false"
        )
    return None


def partition_record(
    topic_id: uuid.UUID, partition_id: int, replicas: Sequence[int], image: MetadataImage
) -> MetadataRecord | None:
    """A new partition's PartitionRecord: the ISR is its unfenced replicas, the leader the first
    of them, epochs 0 (Kafka's ``buildPartitionRegistration``); None if every replica is
    fenced."""
    isr = [b for b in replicas if is_active(image, b)]
    if not isr:
        return None
    return record(
        schemas.PARTITION_RECORD,
        partition_id=partition_id,
        topic_id=topic_id,
        replicas=list(replicas),
        isr=isr,
        removing_replicas=[],
        adding_replicas=[],
        leader=isr[0],
        leader_epoch=0,
        partition_epoch=0,
        directories=[],
    )


class TopicControl(ControllerBase):
    """CreateTopics, CreatePartitions and DeleteTopics."""

    async def create_topics(
        self, requests: Sequence[CreateTopicRequest], validate_only: bool = False
    ) -> list[CreateTopicResult]:
        """Create topics; each gets its own result (errors are per topic, as in Kafka)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return await self._forward_create_topics(requests, validate_only, deadline)
        image = self._validation_image()
        results = []
        records: list[MetadataRecord] = []
        live = usable_brokers(image)
        seen: set[str] = set()
        for req in requests:
            if req.name in seen:
                results.append(
                    CreateTopicResult(req.name, ErrorCode.INVALID_REQUEST, "Duplicate topic name.")
                )
                continue
            seen.add(req.name)
            result, partitions, replication = self._check_create(req, image, live)
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
                self._topic_records(req, result.topic_id, partitions, replication, live, image)
            )
        if records:
            await self._commit(records, deadline)
        await self._await_existing(results, deadline)
        return results

    async def _await_existing(self, results: Sequence[CreateTopicResult], deadline: float) -> None:
        """A topic reported as already existing may still be an uncommitted append (on the
        leader) or not replayed here yet (forwarded): answer once this node's image has it, so
        a caller that goes on to use the topic (e.g. FindCoordinator) finds it."""
        existing = {r.name for r in results if r.error == ErrorCode.TOPIC_ALREADY_EXISTS}
        if existing:
            await self._await_image(lambda image: existing <= set(image.topics), deadline)

    async def _forward_create_topics(
        self, requests: Sequence[CreateTopicRequest], validate_only: bool, deadline: float
    ) -> list[CreateTopicResult]:
        body = {
            "topics": [
                {
                    "name": req.name,
                    "num_partitions": req.num_partitions,
                    "replication_factor": req.replication_factor,
                    "assignments": [
                        {"partition_index": index, "broker_ids": list(brokers)}
                        for index, brokers in sorted(req.assignments.items())
                    ],
                    "configs": [{"name": k, "value": v} for k, v in req.configs.items()],
                }
                for req in requests
            ],
            "timeout_ms": self.commit_timeout_ms,
            "validate_only": validate_only,
        }
        response = await self._forward(
            ApiKey.CREATE_TOPICS,
            7,
            body,
            deadline,
            lambda r: [t["error_code"] for t in r["topics"]],
        )
        results = [
            CreateTopicResult(
                name=t["name"],
                error=ErrorCode(t["error_code"]),
                message=t["error_message"],
                topic_id=t["topic_id"],
                num_partitions=t["num_partitions"],
                replication_factor=t["replication_factor"],
                configs={c["name"]: c["value"] for c in t["configs"] if c["value"] is not None},
            )
            for t in response["topics"]
        ]
        created = {r.topic_id for r in results if r.error == ErrorCode.NO_ERROR}
        if not validate_only:
            # Read-your-writes for the client: answer once the topics are in the local image.
            await self._await_image(lambda image: created <= set(image.topics_by_id), deadline)
        await self._await_existing(results, deadline)
        return results

    async def create_partitions(
        self, requests: Sequence[CreatePartitionsRequest], validate_only: bool = False
    ) -> list[CreatePartitionsResult]:
        """Add partitions to existing topics (Kafka's CreatePartitions); errors per topic."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return await self._forward_create_partitions(requests, validate_only, deadline)
        image = self._validation_image()
        live = usable_brokers(image)
        results: list[CreatePartitionsResult] = []
        records: list[MetadataRecord] = []
        seen: set[str] = set()
        for req in requests:
            result = CreatePartitionsResult(req.name)
            results.append(result)
            if req.name in seen:
                result.error, result.message = ErrorCode.INVALID_REQUEST, "Duplicate topic name."
                continue
            seen.add(req.name)
            new_records = self._partition_records(req, image, live, result)
            if result.error == ErrorCode.NO_ERROR and not validate_only:
                records.extend(new_records)
        if records:
            await self._commit(records, deadline)
        return results

    def _partition_records(
        self,
        req: CreatePartitionsRequest,
        image: MetadataImage,
        live: Mapping[int, str | None],
        result: CreatePartitionsResult,
    ) -> list[MetadataRecord]:
        topic = image.topics.get(req.name)
        if topic is None:
            result.error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            result.message = f"The topic '{req.name}' does not exist."
            return []
        current = len(topic.partitions)
        if req.count < current:
            result.error = ErrorCode.INVALID_PARTITIONS
            result.message = (
                f"Topic currently has {current} partitions, which is higher than the requested "
                f"{req.count}."
            )
            return []
        if req.count == current:
            result.error = ErrorCode.INVALID_PARTITIONS
            result.message = f"Topic already has {current} partitions."
            return []
        replication = len(topic.partitions[0].replicas) if 0 in topic.partitions else 1
        added = req.count - current
        if req.assignments is not None:
            if len(req.assignments) != added or any(
                len(b) != replication or len(set(b)) != len(b) or not set(b) <= set(image.brokers)
                for b in req.assignments
            ):
                result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                result.message = "Invalid replica assignment"
                return []
            placements = [list(b) for b in req.assignments]
        else:
            try:
                placements = self.placer.place(added, replication, live)
            except InvalidReplicationFactor as exc:
                result.error = exc.code
                result.message = f"Unable to replicate the partition {replication} time(s): " + (
                    exc.message or ""
                )
                return []
        records: list[MetadataRecord] = []
        for offset, replicas in enumerate(placements):
            change = partition_record(topic.topic_id, current + offset, replicas, image)
            if change is None:
                result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                result.message = (
                    "All brokers specified in the manual partition assignment for partition "
                    f"{current + offset} are fenced or in controlled shutdown."
                )
                return []
            records.append(change)
        return records

    async def _forward_create_partitions(
        self, requests: Sequence[CreatePartitionsRequest], validate_only: bool, deadline: float
    ) -> list[CreatePartitionsResult]:
        body = {
            "topics": [
                {
                    "name": req.name,
                    "count": req.count,
                    "assignments": (
                        None
                        if req.assignments is None
                        else [{"broker_ids": list(b)} for b in req.assignments]
                    ),
                }
                for req in requests
            ],
            "timeout_ms": self.commit_timeout_ms,
            "validate_only": validate_only,
        }
        response = await self._forward(
            ApiKey.CREATE_PARTITIONS,
            3,
            body,
            deadline,
            lambda r: [t["error_code"] for t in r["results"]],
        )
        results = [
            CreatePartitionsResult(t["name"], ErrorCode(t["error_code"]), t["error_message"])
            for t in response["results"]
        ]
        if not validate_only:
            grown = {
                req.name: req.count
                for req, res in zip(requests, results, strict=False)
                if res.error == ErrorCode.NO_ERROR
            }

            def visible(image: MetadataImage) -> bool:
                return all(
                    name in image.topics and len(image.topics[name].partitions) >= count
                    for name, count in grown.items()
                )

            await self._await_image(visible, deadline)
        return results

    async def delete_topics(
        self, names: Sequence[str | None], topic_ids: Sequence[uuid.UUID]
    ) -> list[DeleteTopicResult]:
        """Delete topics by name or id (DeleteTopics v6 can mix both)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return await self._forward_delete_topics(names, topic_ids, deadline)
        image = self._validation_image()
        results: list[DeleteTopicResult] = []
        records: list[MetadataRecord] = []
        removed: set[uuid.UUID] = set()
        wanted: list[tuple[str | None, uuid.UUID | None]] = [(n, None) for n in names]
        wanted += [(None, t) for t in topic_ids]
        for name, topic_id in wanted:
            topic = (
                image.topics.get(name) if name is not None else image.topics_by_id.get(topic_id)  # type: ignore[arg-type]
            )
            if topic is None:
                code = (
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    if name is not None
                    else ErrorCode.UNKNOWN_TOPIC_ID
                )
                results.append(DeleteTopicResult(name, topic_id or ZERO_UUID, code))
                continue
            results.append(DeleteTopicResult(topic.name, topic.topic_id))
            if topic.topic_id not in removed:
                removed.add(topic.topic_id)
                records.append(record(schemas.REMOVE_TOPIC_RECORD, topic_id=topic.topic_id))
        if records:
            await self._commit(records, deadline)
        return results

    async def _forward_delete_topics(
        self, names: Sequence[str | None], topic_ids: Sequence[uuid.UUID], deadline: float
    ) -> list[DeleteTopicResult]:
        body = {
            "topics": [{"name": n, "topic_id": ZERO_UUID} for n in names]
            + [{"name": None, "topic_id": t} for t in topic_ids],
            "timeout_ms": self.commit_timeout_ms,
        }
        response = await self._forward(
            ApiKey.DELETE_TOPICS,
            6,
            body,
            deadline,
            lambda r: [t["error_code"] for t in r["responses"]],
        )
        results = [
            DeleteTopicResult(
                t["name"], t["topic_id"], ErrorCode(t["error_code"]), t["error_message"]
            )
            for t in response["responses"]
        ]
        gone = {r.topic_id for r in results if r.error == ErrorCode.NO_ERROR}
        await self._await_image(lambda image: not gone & set(image.topics_by_id), deadline)
        return results

    def topic_configs(self, topic: str) -> Mapping[str, str]:
        return self.image.topic_config(topic)

    def _check_create(
        self, req: CreateTopicRequest, image: MetadataImage, live: Mapping[int, str | None]
    ) -> tuple[CreateTopicResult, int, int]:
        result = CreateTopicResult(req.name)
        problem = validate_topic_name(req.name)
        if problem:
            result.error, result.message = ErrorCode.INVALID_TOPIC_EXCEPTION, problem
            return result, 0, 0
        if req.name in image.topics:
            result.error = ErrorCode.TOPIC_ALREADY_EXISTS
            result.message = f"Topic '{req.name}' already exists."
            return result, 0, 0
        if req.assignments:
            partitions = len(req.assignments)
            replication = len(next(iter(req.assignments.values())))
            if sorted(req.assignments) != list(range(partitions)) or any(
                len(set(b)) != len(b) or not set(b) <= set(image.brokers)
                for b in req.assignments.values()
            ):
                result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                result.message = "Invalid replica assignment"
                return result, 0, 0
            if any(len(b) != replication for b in req.assignments.values()):
                result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                result.message = (
                    "The manual partition assignment includes partitions with different "
                    "replication factors."
                )
                return result, 0, 0
            for index, brokers in sorted(req.assignments.items()):
                if not any(is_active(image, b) for b in brokers):
                    result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                    result.message = (
                        "All brokers specified in the manual partition assignment for "
                        f"partition {index} are fenced or in controlled shutdown."
                    )
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
            try:
                check_replication_factor(replication, len(live))
            except InvalidReplicationFactor as exc:
                result.error = exc.code
                result.message = f"Unable to replicate the partition {replication} time(s): " + (
                    exc.message or ""
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
        problem = check_replication_configs(req.configs)
        if problem:
            result.error, result.message = ErrorCode.INVALID_CONFIG, problem
            return result, 0, 0
        try:
            LogConfig.from_properties({k: v for k, v in req.configs.items() if v is not None})
        except KafkaError as exc:
            result.error = ErrorCode.INVALID_CONFIG
            result.message = exc.message
            return result, 0, 0
        return result, partitions, replication

    def _topic_records(
        self,
        req: CreateTopicRequest,
        topic_id: uuid.UUID,
        partitions: int,
        replication: int,
        live: Mapping[int, str | None],
        image: MetadataImage,
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
        placements = (
            [list(req.assignments[index]) for index in range(partitions)]
            if req.assignments
            else self.placer.place(partitions, replication, live)
        )
        for index, replicas in enumerate(placements):
            partition = partition_record(topic_id, index, replicas, image)
            assert partition is not None, "checked by _check_create"
            records.append(partition)
        return records
