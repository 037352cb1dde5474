"""OffsetCommit (key 8), versions 2-9.

Behaviour: stores committed offsets (offset, leader epoch, metadata string) of a group as
OffsetCommit records in ``__consumer_offsets``; they survive restarts and are answered by
OffsetFetch. A commit from a classic group member must name the current generation and
member id (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, REBALANCE_IN_PROGRESS
while the group is CompletingRebalance) and keeps the member's session alive; a commit to a
consumer (KIP-848) group must name a member and its current member epoch
(``generation_id_or_member_epoch``: UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH, and
UNSUPPORTED_VERSION below v9). Generation/epoch -1 with no member id is a "simple" commit
(the admin client, or a consumer without group management), accepted while the group is
Empty or unknown (an unknown group is then created, Empty). Per partition:
UNKNOWN_TOPIC_OR_PARTITION for a topic or partition the metadata does not know,
OFFSET_METADATA_TOO_LARGE above ``offset.metadata.max.bytes``. The empty group id is allowed
(as Kafka, for old clients). Offsets expire ``offsets.retention.minutes`` after their commit
(or after a classic group became Empty) unless the group still subscribes to the topic.

Per version: v2 retention_time_ms (ignored, as Kafka 4.x), v3 throttle time, v4 same, v5 no
retention time, v6 committed_leader_epoch (KIP-320), v7 group_instance_id (KIP-345), v8
flexible, v9 member epochs of consumer groups (KIP-848), and an unknown group with a
generation/epoch answers GROUP_ID_NOT_FOUND (ILLEGAL_GENERATION before v9).

Not implemented: ACLs (TOPIC/GROUP_AUTHORIZATION_FAILED), v10 topic ids (Kafka 4.1
advertises v2-9).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.OFFSET_COMMIT


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    image = ctx.broker.service("controller").image
    version = ctx.api_version
    errors: dict[tuple[int, int], ErrorCode] = {}  # (topic index, partition index) -> error
    valid_topics: list[dict[str, Any]] = []
    names: list[str] = []
    for t_index, topic in enumerate(request["topics"]):
        name = topic.get("name") or ""
        if not name and version >= 10:
            found = image.topics_by_id.get(topic.get("topic_id"))
            name = found.name if found is not None else ""
        names.append(name)
        topic_image = image.topics.get(name) if name else None
        valid = []
        for p in topic["partitions"]:
            if topic_image is None or p["partition_index"] not in topic_image.partitions:
                errors[(t_index, p["partition_index"])] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                valid.append(p)
        if valid:
            valid_topics.append({"name": name, "partitions": valid, "_index": t_index})
    if valid_topics:
        coordinator = ctx.broker.service("group_coordinator")
        result = await coordinator.commit_offsets({**request, "topics": valid_topics}, version)
        for sent, answered in zip(valid_topics, result["topics"], strict=True):
            for p in answered["partitions"]:
                errors[(sent["_index"], p["partition_index"])] = p["error_code"]
    topics = []
    for t_index, topic in enumerate(request["topics"]):
        topics.append(
            {
                "name": names[t_index],
                "topic_id": topic.get("topic_id"),
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": errors[(t_index, p["partition_index"])],
                    }
                    for p in topic["partitions"]
                ],
            }
        )
    return {"throttle_time_ms": 0, "topics": topics}
