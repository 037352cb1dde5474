"""AddOffsetsToTxn (key 25), versions 0-4.

Behaviour: adds the group's ``__consumer_offsets`` partition to the producer's transaction
(as Kafka): TxnOffsetCommit for the group is then accepted, and the transaction's COMMIT or
ABORT marker is written to that partition too, which makes the group's pending transactional
offsets visible or drops them.
Errors as AddPartitionsToTxn: INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED,
CONCURRENT_TRANSACTIONS, INVALID_TXN_STATE.

Per version: v1-2 same as v0, v3 flexible, v4 may return TRANSACTION_ABORTABLE (never here).

Not implemented: ACLs (GROUP/TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.ADD_OFFSETS_TO_TXN


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("transaction_coordinator")
    error = await coordinator.add_offsets(
        request["transactional_id"],
        request["producer_id"],
        request["producer_epoch"],
        request["group_id"],
    )
    return {"throttle_time_ms": 0, "error_code": error}
