"""CreatePartitions (key 37), versions 0-3.

Behaviour: grows each named topic to ``count`` partitions through the controller (a
``PartitionRecord`` per new partition, committed through Raft; a broker that is not the active
controller forwards the request to it). New partitions get the topic's replication factor and
are placed round-robin over the unfenced brokers, or where ``assignments`` says. Errors are per
topic: UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS (count not above the current one),
INVALID_REPLICA_ASSIGNMENT, INVALID_REPLICATION_FACTOR, INVALID_REQUEST (a topic named twice);
``validate_only`` checks without writing.

Per version: v2 is flexible; v1-v3 have the same fields.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.metadata.controller import CreatePartitionsRequest

API_KEY = ApiKey.CREATE_PARTITIONS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    requests = [
        CreatePartitionsRequest(
            topic["name"],
            topic["count"],
            None
            if topic["assignments"] is None
            else [list(a["broker_ids"]) for a in topic["assignments"]],
        )
        for topic in request["topics"]
    ]
    results = await controller.create_partitions(requests, validate_only=request["validate_only"])
    return {
        "throttle_time_ms": 0,
        "results": [
            {"name": r.name, "error_code": r.error, "error_message": r.message} for r in results
        ],
    }
