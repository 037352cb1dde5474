"""OffsetForLeaderEpoch (key 23), versions 2-4 (KIP-101, KIP-279, KIP-320).

Behaviour: per partition, the end offset of the requested ``leader_epoch`` on this broker's log
as Kafka's ``LeaderEpochFileCache.endOffsetFor`` answers it (``Log.end_offset_for_epoch``): for
the partition's latest epoch the log end offset; for an older epoch the start offset of the
first later epoch, with the greatest epoch not above the requested one as ``leader_epoch``;
for an epoch older than the first cached one that epoch and the first start offset; and
``leader_epoch`` -1 / ``end_offset`` -1 (no error) for -1, for an epoch above every cached one
or when the log holds no epoch. Consumers (librdkafka, the Java client) use it after a leader
change to check their fetch position was not truncated away; followers to find where their log
diverged from the leader's.

Errors per partition, in Kafka's order: UNKNOWN_TOPIC_OR_PARTITION (not in the metadata),
NOT_LEADER_OR_FOLLOWER (in the metadata but not hosted here); for a hosted partition first
FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when ``current_leader_epoch`` (ignored when -1) is
below / above the partition's leader epoch from the metadata image, then
NOT_LEADER_OR_FOLLOWER when this broker is not its leader.

Per version: v2 current leader epoch and throttle time, v3 replica id (answered the same for a
follower and a consumer, as Kafka: only the leader answers), v4 flexible.
Not implemented: authorization (no ACLs here, so no TOPIC_AUTHORIZATION_FAILED) and
KAFKA_STORAGE_ERROR for offline log dirs.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

API_KEY = ApiKey.OFFSET_FOR_LEADER_EPOCH


def _partition_result(
    replica_manager: Any, image: Any, topic: str, part: dict[str, Any]
) -> dict[str, Any]:
    index = part["partition"]
    entry: dict[str, Any] = {"partition": index, "leader_epoch": -1, "end_offset": -1}
    partition = replica_manager.get_partition(topic, index)
    if partition is None:
        known = image.topics.get(topic)
        hosted_elsewhere = known is not None and index in known.partitions
        entry["error_code"] = (
            ErrorCode.NOT_LEADER_OR_FOLLOWER
            if hosted_elsewhere
            else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        )
        return entry
    try:
        epoch, end_offset = partition.last_offset_for_leader_epoch(
            part["current_leader_epoch"], part["leader_epoch"]
        )
    except KafkaError as exc:
        entry["error_code"] = exc.code
        return entry
    entry.update(error_code=ErrorCode.NO_ERROR, leader_epoch=epoch, end_offset=end_offset)
    return entry


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    replica_manager = ctx.broker.service("replica_manager")
    image = ctx.broker.service("controller").image
    topics = [
        {
            "topic": topic["topic"],
            "partitions": [
                _partition_result(replica_manager, image, topic["topic"], part)
                for part in topic["partitions"]
            ],
        }
        for topic in request["topics"]
    ]
    return {"throttle_time_ms": 0, "topics": topics}
