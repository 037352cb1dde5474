"""Fetch (key 1), versions 4-18, for consumers and follower replicas.

Behaviour: for each partition, the bytes of whole record batches from the one containing
``fetch_offset`` up to the high watermark (the last stable offset for read_committed), limited
by ``partition_max_bytes`` and the request's ``max_bytes`` — but at least one whole batch for
the first partition with data, as Kafka does, so a consumer always makes progress. When fewer
than ``min_bytes`` are available the request waits until data arrives (it answers as soon as
a produce lands) or ``max_wait_ms`` passes. Fetch sessions (KIP-227) are declined: the
response carries session id 0, so clients keep sending full fetch requests; a request for an
incremental fetch of an unknown session gets FETCH_SESSION_ID_NOT_FOUND.

Errors per partition: OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION (UNKNOWN_TOPIC_ID at
v13+), NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH (v9+, KIP-320).

Per version: v5 log start offset, v7 sessions, v9 current leader epoch, v11 rack and
preferred read replica (always -1: no follower fetching), v12 flexible, v13 topic ids, v15
replica state.

Follower fetches (``replica_id`` >= 0 up to v14, ``replica_state.replica_id`` from v15) are
answered by the partition's leader only (NOT_LEADER_OR_FOLLOWER elsewhere, also for a broker
that is not one of the partition's replicas), read up to the log end offset instead of the high
watermark, and record the follower's fetch offset as its log end offset, which moves the high
watermark and the ISR (``ReplicaManager.read_partitions``). Consumers never read past the high
watermark; followers of a partition answer consumers NOT_LEADER_OR_FOLLOWER (no KIP-392).

read_committed (isolation_level 1) reads up to the last stable offset and answers
``aborted_transactions``: the (producer id, first offset) of every aborted transaction
overlapping the range read — from the fetch offset to the end of the last batch returned —
from the segments' ``.txnindex`` files (``Log.collect_aborted_transactions``, Kafka's), so
the client drops aborted batches; control batches are returned as stored (clients skip them).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.record_batch import iter_batch_headers
from pykbroker.replication.replica_manager import FetchPartitionRequest

API_KEY = ApiKey.FETCH


def _aborted(
    replica_manager: Any, tp: tuple[str, int], isolation_level: int, fetch_offset: int, result: Any
) -> list[dict[str, int]] | None:
    """read_committed: the aborted transactions overlapping the records returned."""
    if isolation_level == 0:
        return None
    if result.error != ErrorCode.NO_ERROR or not result.records:
        return []
    found = replica_manager.get_partition(*tp)
    if found is None:
        return []
    upper_bound_offset = result.last_stable_offset
    for _, header in iter_batch_headers(result.records):
        upper_bound_offset = header.next_offset
    return [
        {"producer_id": t.producer_id, "first_offset": t.first_offset}
        for t in found.log.collect_aborted_transactions(fetch_offset, upper_bound_offset)
    ]


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    replica_manager = ctx.broker.service("replica_manager")
    image = ctx.broker.service("controller").image
    by_id = ctx.api_version >= 13
    if request["session_id"] != 0 or request["session_epoch"] > 0:
        return {
            "throttle_time_ms": 0,
            "error_code": ErrorCode.FETCH_SESSION_ID_NOT_FOUND,
            "session_id": 0,
            "responses": [],
        }
    wanted: list[FetchPartitionRequest] = []
    fetch_offsets: dict[tuple[str, int], int] = {}
    layout: list[tuple[dict[str, Any], list[tuple[int, tuple[str, int] | None]]]] = []
    for topic in request["topics"]:
        name = topic["topic"]
        if by_id:
            found = image.topics_by_id.get(topic["topic_id"])
            name = found.name if found is not None else None
        parts: list[tuple[int, tuple[str, int] | None]] = []
        for part in topic["partitions"]:
            if name is None:
                parts.append((part["partition"], None))
                continue
            wanted.append(
                FetchPartitionRequest(
                    name,
                    part["partition"],
                    part["fetch_offset"],
                    part["partition_max_bytes"],
                    part["current_leader_epoch"],
                )
            )
            parts.append((part["partition"], (name, part["partition"])))
            fetch_offsets[(name, part["partition"])] = part["fetch_offset"]
        layout.append((topic, parts))
    replica_id = (
        request["replica_id"]
        if ctx.api_version < 15
        else (request.get("replica_state") or {}).get("replica_id", -1)
    )
    results = await replica_manager.fetch_records(
        wanted,
        replica_id=replica_id if replica_id is not None and replica_id >= 0 else -1,
        max_wait_ms=request["max_wait_ms"] if len(wanted) == sum(len(p) for _, p in layout) else 0,
        min_bytes=request["min_bytes"],
        max_bytes=request["max_bytes"],
        isolation_level=request["isolation_level"],
    )
    responses = []
    for topic, parts in layout:
        partitions: list[dict[str, Any]] = []
        for index, tp in parts:
            if tp is None:
                partitions.append(
                    {
                        "partition_index": index,
                        "error_code": ErrorCode.UNKNOWN_TOPIC_ID,
                        "high_watermark": -1,
                        "records": None,
                    }
                )
                continue
            result = results[tp]
            partitions.append(
                {
                    "partition_index": index,
                    "error_code": result.error,
                    "high_watermark": result.high_watermark,
                    "last_stable_offset": result.last_stable_offset,
                    "log_start_offset": result.log_start_offset,
                    "aborted_transactions": _aborted(
                        replica_manager, tp, request["isolation_level"], fetch_offsets[tp], result
                    ),
                    "records": result.records,
                }
            )
        responses.append(
            {"topic": topic["topic"], "topic_id": topic["topic_id"], "partitions": partitions}
        )
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "session_id": 0,
        "responses": responses,
    }
