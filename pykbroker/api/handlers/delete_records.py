"""DeleteRecords (key 21), versions 0-2.

Behaviour: for each partition, move the log start offset up to the requested offset
(Kafka's ``Partition.deleteRecordsOnLeader``): -1 means the high watermark; the answer's
``low_watermark`` is the partition's log start offset afterwards (a smaller offset than
the current log start offset changes nothing and answers the current one). Records below
the log start offset are gone for clients at once — Fetch there answers
OFFSET_OUT_OF_RANGE and ListOffsets EARLIEST answers the new start — and their segments
are deleted by the next retention pass (``log.retention.check.interval.ms``). The new log
start offsets are written to ``log-start-offset-checkpoint`` before the answer, so they
survive a crash.

Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER,
OFFSET_OUT_OF_RANGE (an offset above the high watermark, or negative other than -1),
POLICY_VIOLATION (``cleanup.policy`` without ``delete``), INVALID_TOPIC_EXCEPTION
(internal topics).

Per version: v1 is v0 (throttling on quota violation, KIP-219), v2 flexible (KIP-482).

Not implemented: waiting up to ``timeout_ms`` for followers to reach the low watermark
(Kafka's DelayedDeleteRecords; every partition here has one replica), ACLs
(TOPIC_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

import trio

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log_manager import write_checkpoints

API_KEY = ApiKey.DELETE_RECORDS

HIGH_WATERMARK = -1
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


def _delete_records(replica_manager: Any, topic: str, index: int, offset: int) -> tuple[int, bool]:
    """(low watermark, whether the log start offset moved) or KafkaError."""
    if topic in INTERNAL_TOPICS:
        raise KafkaError(
            ErrorCode.INVALID_TOPIC_EXCEPTION, f"Cannot delete records of internal topic {topic}"
        )
    partition = replica_manager.leader_partition(topic, index)
    plog = partition.log
    if not plog.config.delete_enabled:
        raise KafkaError(
            ErrorCode.POLICY_VIOLATION,
            f"Records of partition {topic}-{index} can not be deleted due to the configured policy",
        )
    target = plog.high_watermark if offset == HIGH_WATERMARK else offset
    if target < 0:
        raise KafkaError(ErrorCode.OFFSET_OUT_OF_RANGE, f"invalid offset {offset}")
    moved = plog.maybe_increment_log_start_offset(target)
    return plog.log_start_offset, moved


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    replica_manager = ctx.broker.service("replica_manager")
    any_moved = False
    topics = []
    for topic in request["topics"]:
        partitions = []
        for part in topic["partitions"]:
            index = part["partition_index"]
            try:
                low_watermark, moved = _delete_records(
                    replica_manager, topic["name"], index, part["offset"]
                )
            except KafkaError as exc:
                partitions.append(
                    {"partition_index": index, "low_watermark": -1, "error_code": exc.code}
                )
                continue
            any_moved |= moved
            partitions.append(
                {
                    "partition_index": index,
                    "low_watermark": low_watermark,
                    "error_code": ErrorCode.NO_ERROR,
                }
            )
        topics.append({"name": topic["name"], "partitions": partitions})
    if any_moved:
        log_manager = ctx.broker.service("log_manager")
        snapshot = log_manager.checkpoint_snapshot(recovery_points=False)
        await trio.to_thread.run_sync(write_checkpoints, snapshot)
    return {"throttle_time_ms": 0, "topics": topics}
