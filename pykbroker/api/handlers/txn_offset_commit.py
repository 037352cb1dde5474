"""TxnOffsetCommit (key 28), versions 0-5.

Behaviour: offsets a transactional producer commits for a consumer group
(``send_offsets_to_transaction``). They are held by the transaction coordinator and become
visible to the group (OffsetFetch) only when the transaction commits; an abort drops them.
The producer id and epoch must be the transaction's (INVALID_PRODUCER_ID_MAPPING,
PRODUCER_FENCED) and the transaction must be ongoing (INVALID_TXN_STATE); unknown topics get
UNKNOWN_TOPIC_OR_PARTITION. The commit itself is an OffsetCommit (v8) with the member id and
generation from the request, so the group validates them then.

Per version: v1 same as v0, v2 committed_leader_epoch, v3 (KIP-447) generation_id,
member_id and group_instance_id, flexible; v4 TRANSACTION_ABORTABLE; v5 KIP-890.

Not implemented: held offsets are in memory (lost if the broker stops mid-transaction);
the generation is checked at commit time rather than at this request; ACLs.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.TXN_OFFSET_COMMIT


def _answer(topics: list[dict[str, Any]], error_for: Any) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {"partition_index": p["partition_index"], "error_code": error_for(t, p)}
                    for p in t["partitions"]
                ],
            }
            for t in topics
        ],
    }


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    image = ctx.broker.service("controller").image
    topics = request["topics"]
    known = [t for t in topics if t["name"] in image.topics]
    offsets_request = {
        "group_id": request["group_id"],
        "generation_id_or_member_epoch": request["generation_id"],
        "member_id": request["member_id"],
        "group_instance_id": request["group_instance_id"],
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "committed_offset": p["committed_offset"],
                        "committed_leader_epoch": p["committed_leader_epoch"],
                        "committed_metadata": p["committed_metadata"],
                    }
                    for p in t["partitions"]
                ],
            }
            for t in known
        ],
    }
    coordinator = ctx.broker.service("transaction_coordinator")
    error = coordinator.hold_offsets(
        request["transactional_id"],
        request["producer_id"],
        request["producer_epoch"],
        offsets_request,
    )
    return _answer(
        topics,
        lambda t, _p: error if t["name"] in image.topics else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    )
