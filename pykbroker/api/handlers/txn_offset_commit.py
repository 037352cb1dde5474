"""TxnOffsetCommit (key 28), versions 0-5.

Behaviour: offsets a transactional producer commits for a consumer group
(``send_offsets_to_transaction``), as Kafka: the group coordinator appends them to the
group's ``__consumer_offsets`` partition as a *transactional* batch of the producer (its
producer id and epoch) and keeps them as the producer's pending transactional offsets; they
become visible to OffsetFetch when the transaction's COMMIT marker reaches that partition and
are dropped by an ABORT marker. Being in the log, they survive a restart at any point of the
transaction. Until the marker, OffsetFetch with ``require_stable`` answers
UNSTABLE_OFFSET_COMMIT for those partitions.

Checks, in order: unknown topics or partitions get UNKNOWN_TOPIC_OR_PARTITION; the
transaction coordinator verifies the transaction (KIP-890 part 1): the producer id and epoch
must be the transaction's (INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED), the transaction
Ongoing with the group's ``__consumer_offsets`` partition added by AddOffsetsToTxn
(INVALID_TXN_STATE). When the transaction coordinator is another broker (the group's and the
transactional id's internal partitions have different leaders) the verification is an
AddPartitionsToTxn v4 ``verify_only`` request to it, as Kafka's; an unreachable coordinator
gives COORDINATOR_NOT_AVAILABLE (retriable). Then the group validates the commit (Kafka's
``validateTransactionalOffsetCommit``: ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
FENCED_INSTANCE_ID; a commit without member id and generation is accepted, an unknown group
is created as a simple group) and each partition's metadata (OFFSET_METADATA_TOO_LARGE). A
producer epoch older than the one already on the offsets partition is INVALID_PRODUCER_EPOCH.

Per version: v1 same as v0, v2 committed_leader_epoch, v3 (KIP-447) generation_id,
member_id and group_instance_id, flexible; v4 TRANSACTION_ABORTABLE (never here); v5 KIP-890.

Not implemented: ACLs.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.TXN_OFFSET_COMMIT


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    image = ctx.broker.service("controller").image
    #: (topic, partition) -> error; partitions of known topics are filled in below
    errors: dict[tuple[str, int], ErrorCode] = {}
    known: list[dict[str, Any]] = []
    for topic in request["topics"]:
        topic_image = image.topics.get(topic["name"])
        valid = []
        for p in topic["partitions"]:
            if topic_image is None or p["partition_index"] not in topic_image.partitions:
                errors[(topic["name"], p["partition_index"])] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            else:
                valid.append(
                    {
                        "partition_index": p["partition_index"],
                        "committed_offset": p["committed_offset"],
                        "committed_leader_epoch": p["committed_leader_epoch"],
                        "committed_metadata": p["committed_metadata"],
                    }
                )
        if valid:
            known.append({"name": topic["name"], "partitions": valid})
    if known:
        transactions = ctx.broker.service("transaction_coordinator")
        async with transactions.transactional_offset_commit(
            request["transactional_id"],
            request["producer_id"],
            request["producer_epoch"],
            request["group_id"],
        ) as error:
            if error == ErrorCode.NO_ERROR:
                result = await ctx.broker.service("group_coordinator").commit_transactional_offsets(
                    {
                        "group_id": request["group_id"],
                        "generation_id_or_member_epoch": request["generation_id"],
                        "member_id": request["member_id"],
                        "group_instance_id": request["group_instance_id"],
                        "topics": known,
                    },
                    request["producer_id"],
                    request["producer_epoch"],
                )
                answered = result["topics"]
            else:
                answered = [
                    {
                        "name": t["name"],
                        "partitions": [
                            {"partition_index": p["partition_index"], "error_code": error}
                            for p in t["partitions"]
                        ],
                    }
                    for t in known
                ]
        for topic in answered:
            for p in topic["partitions"]:
                errors[(topic["name"], p["partition_index"])] = ErrorCode(p["error_code"])
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": errors[(t["name"], p["partition_index"])],
                    }
                    for p in t["partitions"]
                ],
            }
            for t in request["topics"]
        ],
    }
