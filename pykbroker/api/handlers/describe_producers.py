"""DescribeProducers (key 61), version 0.

Behaviour: for each requested partition this broker hosts (leader or follower: any replica
answers, as Kafka's ``Partition.activeProducerState``), the producers with state in the
partition's log (Kafka's ``UnifiedLog.activeProducers``, the producer state also used for
idempotence and the last stable offset): producer id, epoch, last sequence (-1 when it only
wrote markers), timestamp of its last batch, coordinator epoch of its last transaction marker,
and the first offset of its open transaction (-1 when none). A producer stays listed until
``producer.id.expiration.ms`` expires it, as in Kafka.

Errors, per partition as Kafka's ``handleDescribeProducersRequest``: an illegal topic name
INVALID_TOPIC_EXCEPTION and an unknown topic UNKNOWN_TOPIC_OR_PARTITION (both with a
message, for every partition asked of that topic); a partition the topic does not have
UNKNOWN_TOPIC_OR_PARTITION; one that exists but has no replica on this broker
NOT_LEADER_OR_FOLLOWER (Kafka's ``getPartitionOrError``). Partitions are answered in
request order, duplicates included.

Not implemented: ACLs (TOPIC_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.controller import validate_topic_name

API_KEY = ApiKey.DESCRIBE_PRODUCERS

#: Kafka's default message of UNKNOWN_TOPIC_OR_PARTITION (``ApiError`` without a message).
_UNKNOWN_TOPIC_MESSAGE = "This server does not host this topic-partition."


def _partition_error(index: int, error: ErrorCode, message: str | None) -> dict[str, Any]:
    return {
        "partition_index": index,
        "error_code": error,
        "error_message": message,
        "active_producers": [],
    }


def _partition(ctx: RequestContext, topic: str, index: int, known: bool) -> dict[str, Any]:
    partition = ctx.broker.service("replica_manager").get_partition(topic, index)
    if partition is None:
        error = ErrorCode.NOT_LEADER_OR_FOLLOWER if known else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return _partition_error(index, error, None)
    producers = [
        {
            "producer_id": entry.producer_id,
            "producer_epoch": entry.producer_epoch,
            "last_sequence": entry.last_seq,
            "last_timestamp": entry.last_timestamp,
            "coordinator_epoch": entry.coordinator_epoch,
            "current_txn_start_offset": entry.current_txn_first_offset,
        }
        for entry in partition.log.producer_state.active_producers()
    ]
    return {
        "partition_index": index,
        "error_code": ErrorCode.NO_ERROR,
        "error_message": None,
        "active_producers": producers,
    }


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    image = ctx.broker.service("controller").image
    topics = []
    for topic in request["topics"]:
        name = topic["name"]
        problem = validate_topic_name(name)
        if problem is not None:
            error: tuple[ErrorCode, str] | None = (ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
        elif name not in image.topics:
            error = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, _UNKNOWN_TOPIC_MESSAGE)
        else:
            error = None
        known = image.topics[name].partitions if error is None else {}
        partitions = [
            _partition_error(index, *error)
            if error
            else _partition(ctx, name, index, index in known)
            for index in topic["partition_indexes"]
        ]
        topics.append({"name": name, "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}
