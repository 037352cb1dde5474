"""ListOffsets (key 2), versions 1-10.

Behaviour (Kafka 4.1's ``Partition.fetchOffsetForTimestamp`` over
``UnifiedLog.fetchOffsetByTimestamp``), per partition ``(timestamp, offset, leader_epoch)``:
-2 EARLIEST_TIMESTAMP and -4 EARLIEST_LOCAL (no tiered storage: the same) answer the log
start offset with the epoch it starts in (the earliest leader epoch entry, -1 if that starts
later); -1 LATEST_TIMESTAMP the last fetchable offset with the current leader epoch; -5
LATEST_TIERED (no tiered storage) offset -1, epoch -1; -3 MAX_TIMESTAMP (KIP-734, v7+) the
record with the largest timestamp and a plain timestamp the first record stamped at or after
it, each with its batch's leader epoch. The last fetchable offset is the high watermark, the
last stable offset for read_committed, and the log end offset for a broker (``replica_id``
other than -1, the consumer's); a MAX_TIMESTAMP or timestamp answer at or beyond it, or no
answer, is timestamp -1, offset -1, epoch -1. Errors per partition:
UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH /
UNKNOWN_LEADER_EPOCH (v4+), INVALID_REQUEST for another negative timestamp.

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

CONSUMER_REPLICA_ID = -1
READ_COMMITTED = 1
#: ``(timestamp, offset, leader_epoch)`` when there is nothing to answer (Kafka's UNKNOWN_*)
_UNKNOWN = (-1, -1, -1)


def _last_fetchable_offset(partition: Any, replica_id: int, isolation_level: int) -> int:
    """Kafka's ``lastFetchableOffset``: LSO (read_committed) or high watermark for a
    consumer, the log end offset for another broker."""
    if replica_id != CONSUMER_REPLICA_ID:
        return int(partition.log.log_end_offset)
    if isolation_level == READ_COMMITTED:
        return int(partition.last_stable_offset)
    return int(partition.log.high_watermark)


def _lookup(
    partition: Any, timestamp: int, replica_id: int, isolation_level: int
) -> tuple[int, int, int]:
    """``(timestamp, offset, leader_epoch)`` answering ``timestamp`` for ``partition``."""
    plog = partition.log
    if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
        return -1, plog.log_start_offset, plog.epoch_at_log_start()
    last_fetchable = _last_fetchable_offset(partition, replica_id, isolation_level)
    if timestamp == LATEST_TIMESTAMP:
        return -1, last_fetchable, partition.leader_epoch
    if timestamp == LATEST_TIERED_TIMESTAMP:
        return _UNKNOWN
    if timestamp == MAX_TIMESTAMP:
        found_ts, found_offset = plog.max_timestamp_and_offset()
        if found_offset < 0:
            return _UNKNOWN
    elif timestamp < 0:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"unknown special timestamp {timestamp}")
    else:
        found = plog.fetch_offset_by_timestamp(timestamp)
        if found is None:
            return _UNKNOWN
        found_offset, found_ts = found
    if found_offset >= last_fetchable:
        return _UNKNOWN
    return found_ts, found_offset, plog.batch_leader_epoch(found_offset)


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    replica_manager = ctx.broker.service("replica_manager")
    isolation_level = request["isolation_level"]
    replica_id = request["replica_id"]
    topics = []
    for topic in request["topics"]:
        partitions = []
        for part in topic["partitions"]:
            entry: dict[str, Any] = {"partition_index": part["partition_index"]}
            try:
                partition = replica_manager.leader_partition(
                    topic["name"], part["partition_index"], part["current_leader_epoch"]
                )
                ts, offset, epoch = _lookup(
                    partition, part["timestamp"], replica_id, isolation_level
                )
                entry.update(
                    error_code=ErrorCode.NO_ERROR, timestamp=ts, offset=offset, leader_epoch=epoch
                )
            except KafkaError as exc:
                entry.update(error_code=exc.code, timestamp=-1, offset=-1, leader_epoch=-1)
            partitions.append(entry)
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"throttle_time_ms": 0, "topics": topics}
