"""OffsetDelete (key 47), version 0.

Behaviour: deletes committed offsets of a group for the given partitions (tombstones in
``__consumer_offsets``), as Kafka: a partition of a topic the group is subscribed to gets
GROUP_SUBSCRIBED_TO_TOPIC (for a classic group: a topic in its members' consumer-protocol
subscriptions; for a consumer group: a subscribed topic); a partition of an unknown topic,
or one the topic does not have, gets UNKNOWN_TOPIC_OR_PARTITION; a partition without a
committed offset is left out of the answer. Top-level errors (then no topics are returned):
GROUP_ID_NOT_FOUND (unknown group), NON_EMPTY_GROUP (a classic group with members that does
not use the consumer protocol), INVALID_GROUP_ID, COORDINATOR_NOT_AVAILABLE.

Per version: v0 only (not flexible).

Not implemented: ACLs (GROUP/TOPIC_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.OFFSET_DELETE


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    image = ctx.broker.service("controller").image
    answered: dict[str, list[dict[str, Any]]] = {}
    valid: list[tuple[str, list[int]]] = []
    for topic in request["topics"]:
        name = topic["name"]
        partitions = answered.setdefault(name, [])
        topic_image = image.topics.get(name)
        known = []
        for p in topic["partitions"]:
            index = p["partition_index"]
            if topic_image is None or index not in topic_image.partitions:
                partitions.append(
                    {"partition_index": index, "error_code": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
                )
            else:
                known.append(index)
        if known:
            valid.append((name, known))
    coordinator = ctx.broker.service("group_coordinator")
    result = await coordinator.delete_offsets(request["group_id"], valid)
    if result["error_code"] != ErrorCode.NO_ERROR:
        return {"error_code": result["error_code"], "throttle_time_ms": 0, "topics": []}
    for topic in result["topics"]:
        answered.setdefault(topic["name"], []).extend(topic["partitions"])
    return {
        "error_code": ErrorCode.NO_ERROR,
        "throttle_time_ms": 0,
        "topics": [{"name": name, "partitions": parts} for name, parts in answered.items()],
    }
