"""ListOffsets (key 2), versions 1-10.

Behaviour: per partition, the offset for a timestamp: -2 EARLIEST_TIMESTAMP (log start
offset), -1 LATEST_TIMESTAMP (high watermark; last stable offset for read_committed), -3
MAX_TIMESTAMP (the record with the largest timestamp, KIP-734, v7+), -4 EARLIEST_LOCAL
(the local log start offset, v8+), -5 LATEST_TIERED (no tiered storage: offset -1, v9+), or
else the first offset whose timestamp is >= the given one (-1 when there is none). Errors per
partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH /
UNKNOWN_LEADER_EPOCH (v4+).

Per version: v2 isolation level, v4 current leader epoch and leader epoch in the answer,
v6 flexible, v10 timeout_ms (no remote lookups here, so nothing waits).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

API_KEY = ApiKey.LIST_OFFSETS

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL_TIMESTAMP = -4
LATEST_TIERED_TIMESTAMP = -5


def _lookup(partition: Any, timestamp: int, isolation_level: int) -> tuple[int, int]:
    plog = partition.log
    if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
        return -1, plog.log_start_offset
    if timestamp == LATEST_TIMESTAMP:
        latest = partition.last_stable_offset if isolation_level == 1 else plog.high_watermark
        return -1, latest
    if timestamp == LATEST_TIERED_TIMESTAMP:
        return -1, -1
    if timestamp == MAX_TIMESTAMP:
        max_ts, offset = plog.max_timestamp_and_offset()
        return (max_ts, offset) if offset >= 0 else (-1, -1)
    if timestamp < 0:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"unknown special timestamp {timestamp}")
    found = plog.fetch_offset_by_timestamp(timestamp)
    if found is None or found[0] >= plog.high_watermark:
        return -1, -1
    offset, ts = found
    return ts, offset


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    replica_manager = ctx.broker.service("replica_manager")
    isolation_level = request["isolation_level"]
    topics = []
    for topic in request["topics"]:
        partitions = []
        for part in topic["partitions"]:
            entry: dict[str, Any] = {"partition_index": part["partition_index"]}
            try:
                partition = replica_manager.leader_partition(
                    topic["name"], part["partition_index"], part["current_leader_epoch"]
                )
                ts, offset = _lookup(partition, part["timestamp"], isolation_level)
                entry.update(
                    error_code=ErrorCode.NO_ERROR,
                    timestamp=ts,
                    offset=offset,
                    leader_epoch=partition.leader_epoch,
                )
            except KafkaError as exc:
                entry.update(error_code=exc.code, timestamp=-1, offset=-1)
            partitions.append(entry)
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}
