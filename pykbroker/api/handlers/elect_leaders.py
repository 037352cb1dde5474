"""ElectLeaders (key 43), versions 0-2.

Behaviour: a leader election for the named partitions (or, with ``topic_partitions`` null,
every partition) run by the active controller -- a broker that is not the active controller
forwards it, as Kafka's brokers forward this API. PREFERRED (0) moves leadership to the first
replica when it is live and in the ISR: ELECTION_NOT_NEEDED if it already leads,
PREFERRED_LEADER_NOT_AVAILABLE if it cannot. UNCLEAN (1) elects a leader for a partition
without one, from outside the ISR if need be: ELECTION_NOT_NEEDED if it has a leader,
ELIGIBLE_LEADERS_NOT_AVAILABLE if no replica is live. Unknown topics or partitions get
UNKNOWN_TOPIC_OR_PARTITION; an unknown election type is INVALID_REQUEST for the whole request.
When every partition is asked for, those needing no election are left out of the answer. The
answer comes once this broker's metadata image shows the new leaders.

Per version: v0 has no election type (always preferred) and no top-level error code; v1 adds
both; v2 is flexible. Not implemented: authorization (ALTER on the cluster).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.ELECT_LEADERS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    election_type = request.get("election_type", 0) if ctx.api_version >= 1 else 0
    wanted = request["topic_partitions"]
    partitions: dict[str, list[int]] | None = None
    if wanted is not None:
        partitions = {}
        for topic in wanted:
            partitions.setdefault(topic["topic"], []).extend(topic["partitions"])
    results = await controller.elect_leaders(election_type, partitions)
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "replica_election_results": [
            {
                "topic": topic.topic,
                "partition_result": [
                    {
                        "partition_id": p.partition_id,
                        "error_code": p.error,
                        "error_message": p.message,
                    }
                    for p in topic.partitions
                ],
            }
            for topic in results
        ],
    }
