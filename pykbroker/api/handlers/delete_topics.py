"""DeleteTopics (key 20), versions 1-6.

Behaviour: removes each named topic through the controller (a RemoveTopicRecord); its
partitions' logs are deleted by the replica manager. Unknown names get
UNKNOWN_TOPIC_OR_PARTITION, unknown ids UNKNOWN_TOPIC_ID. With ``delete.topic.enable=false``
every topic gets TOPIC_DELETION_DISABLED.

Per version: v4 flexible, v5 error messages, v6 (KIP-516) topics by name or by id.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.DELETE_TOPICS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    if ctx.api_version >= 6:
        names = [t["name"] for t in request["topics"] if t["name"] is not None]
        ids = [t["topic_id"] for t in request["topics"] if t["name"] is None]
    else:
        names, ids = list(request["topic_names"]), []
    if not ctx.broker.config.delete_topic_enable:
        responses = [
            {"name": n, "error_code": ErrorCode.TOPIC_DELETION_DISABLED} for n in names
        ] + [
            {"name": None, "topic_id": i, "error_code": ErrorCode.TOPIC_DELETION_DISABLED}
            for i in ids
        ]
        return {"throttle_time_ms": 0, "responses": responses}
    results = await controller.delete_topics(names, ids)
    return {
        "throttle_time_ms": 0,
        "responses": [
            {
                "name": r.name,
                "topic_id": r.topic_id,
                "error_code": r.error,
                "error_message": r.message,
            }
            for r in results
        ],
    }
