"""CreateTopics (key 19), versions 2-7.

Behaviour: each topic is checked (legal name, not existing, partitions and replication factor
> 0 or -1 for the broker defaults, replication factor <= registered brokers, a valid manual
assignment, known topic-level configs) and, unless ``validate_only``, created through the
controller as metadata records. Errors are per topic, as in Kafka. Duplicate names in one
request get INVALID_REQUEST.

Per version: v5 (flexible) returns the partition count, replication factor and the configs
set on the topic (pykbroker lists only the explicitly set configs, with source
TOPIC_CONFIG(1); Kafka lists every config); v7 returns topic ids.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.metadata.controller import CreateTopicRequest

API_KEY = ApiKey.CREATE_TOPICS

TOPIC_CONFIG_SOURCE = 1


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    requests = [
        CreateTopicRequest(
            name=topic["name"],
            num_partitions=topic["num_partitions"],
            replication_factor=topic["replication_factor"],
            assignments={a["partition_index"]: a["broker_ids"] for a in topic["assignments"]},
            configs={c["name"]: c["value"] for c in topic["configs"]},
        )
        for topic in request["topics"]
    ]
    results = await controller.create_topics(requests, validate_only=request["validate_only"])
    topics = []
    for result in results:
        entry: dict[str, Any] = {
            "name": result.name,
            "topic_id": result.topic_id,
            "error_code": result.error,
            "error_message": result.message,
            "num_partitions": result.num_partitions,
            "replication_factor": result.replication_factor,
            "configs": [
                {
                    "name": key,
                    "value": value,
                    "read_only": False,
                    "config_source": TOPIC_CONFIG_SOURCE,
                    "is_sensitive": False,
                }
                for key, value in sorted(result.configs.items())
            ],
        }
        topics.append(entry)
    return {"throttle_time_ms": 0, "topics": topics}
