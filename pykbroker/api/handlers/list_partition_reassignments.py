"""ListPartitionReassignments (key 46), version 0.

Behaviour: the partition reassignments in progress (KIP-455) as the active controller sees them
-- a broker that is not it forwards the request, as Kafka's brokers do: every partition with
adding or removing replicas when ``topics`` is null, else those of the named partitions (unknown
topics and partitions are left out, as Kafka does), each with its replicas (the target followed
by the replicas being removed), adding and removing replicas. A whole-request failure
(REQUEST_TIMED_OUT) is the top-level error code.

Per version: v0 is flexible. Not implemented: authorization (DESCRIBE on the cluster).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

API_KEY = ApiKey.LIST_PARTITION_REASSIGNMENTS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    wanted = request["topics"]
    topics: dict[str, list[int]] | None = None
    if wanted is not None:
        topics = {}
        for topic in wanted:
            topics.setdefault(topic["name"], []).extend(topic["partition_indexes"])
    try:
        results = await controller.list_partition_reassignments(topics)
    except KafkaError as exc:
        return {
            "throttle_time_ms": 0,
            "error_code": exc.code,
            "error_message": exc.message,
            "topics": [],
        }
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "error_message": None,
        "topics": [
            {
                "name": topic.name,
                "partitions": [
                    {
                        "partition_index": p.partition_index,
                        "replicas": list(p.replicas),
                        "adding_replicas": list(p.adding_replicas),
                        "removing_replicas": list(p.removing_replicas),
                    }
                    for p in topic.partitions
                ],
            }
            for topic in results
        ],
    }
