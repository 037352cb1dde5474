"""InitProducerId (key 22), versions 0-5.

Behaviour: for an idempotent producer (no transactional id) a fresh producer id with epoch 0,
from blocks the controller reserves in the metadata log (never reused, restarts included).
As in Kafka, a v3+ request carrying an existing producer id and epoch (KIP-360) also gets a
fresh id when it has no transactional id. ``transaction_timeout_ms`` above
``transaction.max.timeout.ms`` gets INVALID_TRANSACTION_TIMEOUT.

With a transactional id the transaction coordinator answers (persisting the state in
``__transaction_state``): a new id gets a fresh producer id with epoch 0; a known id gets its
epoch bumped (fencing zombies of the previous epoch; a new producer id once the epoch is
exhausted); an ongoing transaction of the id is aborted (markers written) and the answer is
CONCURRENT_TRANSACTIONS, so the client retries. v3+ (KIP-360) with a producer id/epoch that is
neither current nor the previous epoch gets PRODUCER_FENCED. The aborted transaction's markers
go to the leaders of its partitions on every broker (WriteTxnMarkers), as for EndTxn.
NOT_COORDINATOR when this broker does not lead the id's ``__transaction_state`` partition.

Not implemented: v6 ``enable2_pc``/``keep_prepared_txn`` (KIP-939); ACLs.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.INIT_PRODUCER_ID


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    if request["transactional_id"] is not None:
        expected = None
        if ctx.api_version >= 3 and request["producer_id"] >= 0:
            expected = (request["producer_id"], request["producer_epoch"])
        coordinator = ctx.broker.service("transaction_coordinator")
        result = await coordinator.init_producer_id(
            request["transactional_id"], request["transaction_timeout_ms"], expected
        )
        ok = result.error == ErrorCode.NO_ERROR
        return {
            "throttle_time_ms": 0,
            "error_code": result.error,
            "producer_id": result.producer_id if ok else -1,
            "producer_epoch": result.producer_epoch if ok else -1,
        }
    manager = ctx.broker.service("producer_id_manager")
    producer_id = await manager.generate_producer_id()
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "producer_id": producer_id,
        "producer_epoch": 0,
    }
