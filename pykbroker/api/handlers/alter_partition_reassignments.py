"""AlterPartitionReassignments (key 45), versions 0-1.

Behaviour: starts, changes or cancels (null ``replicas``) partition reassignments (KIP-455)
through the active controller -- a broker that is not it forwards the request, as Kafka's
brokers do. The answer comes once the first step is committed: the new replicas are added to
the partition (``adding_replicas`` / ``removing_replicas`` set) and fetch from the leader; the
controller completes the reassignment when they have joined the ISR, and the brokers left out
delete their replicas. Errors per partition, with Kafka's messages: UNKNOWN_TOPIC_OR_PARTITION,
INVALID_REPLICA_ASSIGNMENT (empty list, a broker named twice or not registered, a cancel that
would need an unclean election), INVALID_REPLICATION_FACTOR (v1 with
``allow_replication_factor_change`` false and another replica count), NO_REASSIGNMENT_IN_PROGRESS
(cancelling nothing). A whole-request failure (REQUEST_TIMED_OUT, NOT_CONTROLLER) is the
top-level error code, repeated on every partition.

Per version: v0 is flexible; v1 adds ``allow_replication_factor_change`` (KIP-860, default
true), echoed in the response. Not implemented: authorization (ALTER on the cluster),
replication throttles.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

API_KEY = ApiKey.ALTER_PARTITION_REASSIGNMENTS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    allow = bool(request.get("allow_replication_factor_change", True))
    topics = [
        (
            topic["name"],
            [(p["partition_index"], p["replicas"]) for p in topic["partitions"]],
        )
        for topic in request["topics"]
    ]
    response: dict[str, Any] = {
        "throttle_time_ms": 0,
        "allow_replication_factor_change": allow,
        "error_code": ErrorCode.NO_ERROR,
        "error_message": None,
    }
    try:
        results = await controller.alter_partition_reassignments(
            topics, allow_replication_factor_change=allow
        )
    except KafkaError as exc:
        response["error_code"], response["error_message"] = exc.code, exc.message
        response["responses"] = [
            {
                "name": name,
                "partitions": [
                    {"partition_index": index, "error_code": exc.code, "error_message": exc.message}
                    for index, _ in partitions
                ],
            }
            for name, partitions in topics
        ]
        return response
    response["responses"] = [
        {
            "name": topic.name,
            "partitions": [
                {
                    "partition_index": p.partition_index,
                    "error_code": p.error,
                    "error_message": p.message,
                }
                for p in topic.partitions
            ],
        }
        for topic in results
    ]
    return response
