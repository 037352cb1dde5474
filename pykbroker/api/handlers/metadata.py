"""Metadata (key 3), versions 0-13.

Behaviour: the registered brokers that are not fenced (with their advertised endpoints), the
cluster id, the controller id (the Raft leader when it is a live broker, else a live broker that
forwards to it), and for the requested
topics (all topics when the list is null, or empty at v0) their partitions with leader, leader
epoch, replicas and ISR. Unknown topics are created when ``auto.create.topics.enable`` is true
and the request allows it (always before v4), as Kafka's AutoTopicCreationManager does; topics
with illegal names get INVALID_TOPIC_EXCEPTION, others UNKNOWN_TOPIC_OR_PARTITION.

Per version: v1 rack/controller/is_internal, v2 cluster id, v3 throttle time, v4
allow_auto_topic_creation, v5 offline replicas (replicas on fenced or unregistered brokers), v7
leader epoch, v8 authorized operations (no authorizer: every operation is allowed), v9
flexible, v10 topic ids (lookup by id when the name is null), v11 drops cluster authorized
operations, v12 nullable topic name in responses, v13 top-level error code.
"""

from __future__ import annotations

import uuid
from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.metadata.controller import CreateTopicRequest, validate_topic_name
from pykbroker.metadata.image import MetadataImage, TopicImage

API_KEY = ApiKey.METADATA

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
AUTHORIZED_OPERATIONS_OMITTED = -2147483648
# AclOperation codes: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8,
# DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11 (topic); + CLUSTER_ACTION 9, IDEMPOTENT_WRITE 12 etc.
TOPIC_OPERATIONS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))
CLUSTER_OPERATIONS = sum(1 << op for op in (5, 7, 8, 9, 10, 11, 12, 13, 14))
_ZERO_UUID = uuid.UUID(int=0)


def offline_replicas(image: MetadataImage, replicas: tuple[int, ...]) -> list[int]:
    """Replicas on brokers that are not registered or fenced (Kafka's KRaftMetadataCache
    ``getOfflineReplicas``)."""
    offline = []
    for broker_id in replicas:
        broker = image.brokers.get(broker_id)
        if broker is None or broker.fenced:
            offline.append(broker_id)
    return offline


def topic_entry(topic: TopicImage, include_ops: bool, image: MetadataImage) -> dict[str, Any]:
    partitions = [
        {
            # Kafka: LEADER_NOT_AVAILABLE for a partition without a live leader.
            "error_code": (
                ErrorCode.NO_ERROR if reg.leader >= 0 else ErrorCode.LEADER_NOT_AVAILABLE
            ),
            "partition_index": index,
            "leader_id": reg.leader,
            "leader_epoch": reg.leader_epoch,
            "replica_nodes": list(reg.replicas),
            "isr_nodes": list(reg.isr),
            "offline_replicas": offline_replicas(image, reg.replicas),
        }
        for index, reg in sorted(topic.partitions.items())
    ]
    return {
        "error_code": ErrorCode.NO_ERROR,
        "name": topic.name,
        "topic_id": topic.topic_id,
        "is_internal": topic.name in INTERNAL_TOPICS,
        "partitions": partitions,
        "topic_authorized_operations": (
            TOPIC_OPERATIONS if include_ops else AUTHORIZED_OPERATIONS_OMITTED
        ),
    }


def _error_entry(code: ErrorCode, name: str | None, topic_id: uuid.UUID) -> dict[str, Any]:
    return {"error_code": code, "name": name, "topic_id": topic_id, "partitions": []}


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    version = ctx.api_version
    controller = ctx.broker.service("controller")
    config = ctx.broker.config
    image: MetadataImage = controller.image
    include_ops = bool(request["include_topic_authorized_operations"])
    wanted = request["topics"]
    if wanted is None or (version == 0 and not wanted):
        topics = [topic_entry(t, include_ops, image) for _, t in sorted(image.topics.items())]
    else:
        allow_create = config.auto_create_topics_enable and (
            version < 4 or request["allow_auto_topic_creation"]
        )
        to_create = []
        for item in wanted:
            name = item["name"]
            if name is None and version >= 10:
                continue
            if name not in image.topics and allow_create and validate_topic_name(name) is None:
                to_create.append(CreateTopicRequest(name))
        if to_create:
            try:
                await controller.create_topics(to_create)
            except KafkaError:
                pass  # no controller now: the topics are reported unknown, the client retries
            image = controller.image
        topics = []
        for item in wanted:
            name, topic_id = item["name"], item["topic_id"]
            if name is None and version >= 10:
                topic = image.topics_by_id.get(topic_id)
                if topic is None:
                    topics.append(_error_entry(ErrorCode.UNKNOWN_TOPIC_ID, None, topic_id))
                    continue
            else:
                topic = image.topics.get(name)
            if topic is None:
                code = (
                    ErrorCode.INVALID_TOPIC_EXCEPTION
                    if validate_topic_name(name)
                    else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                )
                topics.append(_error_entry(code, name, _ZERO_UUID))
                continue
            topics.append(topic_entry(topic, include_ops, image))
    brokers = [
        {"node_id": reg.node_id, "host": reg.host, "port": reg.port, "rack": reg.rack}
        for _, reg in sorted(image.brokers.items())
        if not reg.fenced
    ]
    me = ctx.broker.endpoint()
    if not any(b["node_id"] == me.node_id for b in brokers):
        brokers.append({"node_id": me.node_id, "host": me.host, "port": me.port, "rack": me.rack})
    return {
        "throttle_time_ms": 0,
        "brokers": brokers,
        "cluster_id": ctx.broker.cluster_id,
        "controller_id": controller.client_controller_id,
        "topics": topics,
        "cluster_authorized_operations": (
            CLUSTER_OPERATIONS
            if request["include_cluster_authorized_operations"]
            else AUTHORIZED_OPERATIONS_OMITTED
        ),
        "error_code": ErrorCode.NO_ERROR,
    }
