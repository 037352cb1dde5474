"""EndTxn (key 26), versions 0-5.

Behaviour: commits or aborts the producer's transaction: PrepareCommit/PrepareAbort is
persisted in ``__transaction_state``, a COMMIT/ABORT control batch is appended to every
partition of the transaction, including the ``__consumer_offsets`` partitions of the groups
it sent offsets to (there the group coordinator writes the marker and makes the pending
transactional offsets visible, or drops them): in-process on the partitions this broker
leads, with WriteTxnMarkers to the leaders of the others (retried until acknowledged), then
CompleteCommit/CompleteAbort is persisted. The answer comes after all of it, or after a
bounded wait while a leader is unreachable (the markers keep being retried, the producer's
next transaction waits with CONCURRENT_TRANSACTIONS). A restart after
PrepareCommit/PrepareAbort writes the markers again. NOT_COORDINATOR when this broker does not
lead the transactional id's ``__transaction_state`` partition.
A retry of a completed end answers NO_ERROR; an end of the other kind INVALID_TXN_STATE;
an end while one is completing CONCURRENT_TRANSACTIONS. Errors also
INVALID_PRODUCER_ID_MAPPING and PRODUCER_FENCED.

Per version: v1-2 same as v0, v3 flexible, v4 TRANSACTION_ABORTABLE, v5 (KIP-890 part 2,
transactions V2) answers the producer id and epoch; this broker does not finalize the
``transaction.version`` feature, so clients stay on transactions V1 and the epoch is not bumped
per transaction.

Not implemented: ACLs; transactions V2.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.END_TXN


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("transaction_coordinator")
    error = await coordinator.end_transaction(
        request["transactional_id"],
        request["producer_id"],
        request["producer_epoch"],
        request["committed"],
    )
    return {
        "throttle_time_ms": 0,
        "error_code": error,
        "producer_id": request["producer_id"],
        "producer_epoch": request["producer_epoch"],
    }
