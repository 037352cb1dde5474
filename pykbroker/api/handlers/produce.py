"""Produce (key 0), versions 3-13 (v0-2 are listed in ApiVersions but rejected, as Kafka 4.x).

Behaviour: each partition's record batches (message format v2 only) are validated at batch
level — magic, lengths, CRC-32C, size against ``max.message.bytes`` — given offsets by
patching the batch header, and appended to the partition's log as bytes; records are never
decoded one by one. Errors are per partition: UNKNOWN_TOPIC_OR_PARTITION (UNKNOWN_TOPIC_ID at
v13), NOT_LEADER_OR_FOLLOWER, CORRUPT_MESSAGE, MESSAGE_TOO_LARGE,
UNSUPPORTED_FOR_MESSAGE_FORMAT, INVALID_REQUIRED_ACKS, INVALID_RECORD, and for idempotent
batches (a producer id) OUT_OF_ORDER_SEQUENCE_NUMBER and INVALID_PRODUCER_EPOCH; a retry of one
of the producer's last five batches is answered NO_ERROR with the original base offset and not
appended again (``log/producer_state.py``, Kafka's ProducerStateManager). With acks=0 no response
is sent, as Kafka does (the client does not read one). Before answering, the request waits for
the fsync the topic's flush policy asks for (``flush.messages``/``flush.ms``; ``flush.messages=1``
is strict mode), shared with concurrent producers.

acks=all (-1): before appending, a partition whose committed ISR is smaller than
``min.insync.replicas`` (topic, else broker config) answers NOT_ENOUGH_REPLICAS; after the append
the request waits (up to its ``timeout_ms``, Kafka's DelayedProduce) until the high watermark
passes the batch -- i.e. every ISR member has it -- and answers NO_ERROR,
NOT_ENOUGH_REPLICAS_AFTER_APPEND (the ISR shrank below the minimum meanwhile),
NOT_LEADER_OR_FOLLOWER (leadership moved) or REQUEST_TIMED_OUT. acks=1 answers after the local
append. Followers and other brokers answer NOT_LEADER_OR_FOLLOWER.

Per version: v5 log_start_offset, v8 record_errors and error_message (KIP-467), v9 flexible,
v10 current leader and node endpoints (KIP-951, sent only on NOT_LEADER_OR_FOLLOWER), v13
topic ids instead of names (KIP-516).

Not implemented yet: transactional produce checks (transactional ids are accepted and the
batches appended as they are; KIP-890 verification).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

API_KEY = ApiKey.PRODUCE


async def _flush_per_policy(ctx: RequestContext, results: dict[Any, Any]) -> None:
    """Wait for the fsync the topic's flush policy asks for (flush.messages / flush.ms), shared
    with concurrent producers (group commit); a failed fsync fails those partitions."""
    replica_manager = ctx.broker.service("replica_manager")
    flusher = ctx.broker.service("flush_coordinator")
    appended = []
    for (name, index), result in results.items():
        if result.error == ErrorCode.NO_ERROR:
            partition = replica_manager.get_partition(name, index)
            if partition is not None:
                appended.append((partition.log, partition.log.log_end_offset))
    if not appended:
        return
    try:
        await flusher.flush_appended(appended)
    except KafkaError as exc:
        for result in results.values():
            if result.error == ErrorCode.NO_ERROR:
                result.error = exc.code
                result.error_message = exc.message


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any] | None:
    replica_manager = ctx.broker.service("replica_manager")
    image = ctx.broker.service("controller").image
    by_id = ctx.api_version >= 13
    acks = request["acks"]
    entries: dict[tuple[str, int], Any] = {}
    unknown: list[tuple[dict[str, Any], int]] = []
    for topic in request["topic_data"]:
        name = topic["name"]
        if by_id:
            found = image.topics_by_id.get(topic["topic_id"])
            name = found.name if found is not None else None
        for part in topic["partition_data"]:
            if name is None:
                unknown.append((topic, part["index"]))
                continue
            entries[(name, part["index"])] = part["records"]
    results = replica_manager.append_records(entries, acks)
    if acks == 0:
        return None
    await _flush_per_policy(ctx, results)
    if acks == -1:
        await replica_manager.wait_for_acks(results, request["timeout_ms"])
    responses: dict[Any, dict[str, Any]] = {}
    for topic in request["topic_data"]:
        key = topic["topic_id"] if by_id else topic["name"]
        if key not in responses:
            responses[key] = {
                "name": topic["name"],
                "topic_id": topic["topic_id"],
                "partition_responses": [],
            }
    for (name, index), result in results.items():
        key = image.topics[name].topic_id if by_id and name in image.topics else name
        responses[key]["partition_responses"].append(
            {
                "index": index,
                "error_code": result.error,
                "base_offset": result.base_offset,
                "log_append_time_ms": result.log_append_time_ms,
                "log_start_offset": result.log_start_offset,
                "error_message": result.error_message,
            }
        )
    for topic, index in unknown:
        responses[topic["topic_id"]]["partition_responses"].append(
            {"index": index, "error_code": ErrorCode.UNKNOWN_TOPIC_ID, "base_offset": -1}
        )
    return {"responses": list(responses.values()), "throttle_time_ms": 0}
