"""InitProducerId (key 22), versions 0-5.

Behaviour: for an idempotent producer (no transactional id) a fresh producer id with epoch 0,
from blocks the controller reserves in the metadata log (never reused, restarts included).
As in Kafka, a v3+ request carrying an existing producer id and epoch (KIP-360) also gets a
fresh id when it has no transactional id. ``transaction_timeout_ms`` above
``transaction.max.timeout.ms`` gets INVALID_TRANSACTION_TIMEOUT.

Not implemented yet: transactional ids (the transaction coordinator); such requests get
COORDINATOR_NOT_AVAILABLE, as does FindCoordinator for transaction keys.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.INIT_PRODUCER_ID

TRANSACTION_MAX_TIMEOUT_MS = 900_000


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    if request["transactional_id"] is not None:
        if request["transaction_timeout_ms"] > TRANSACTION_MAX_TIMEOUT_MS:
            return {"error_code": ErrorCode.INVALID_TRANSACTION_TIMEOUT, "producer_epoch": -1}
        return {"error_code": ErrorCode.COORDINATOR_NOT_AVAILABLE, "producer_epoch": -1}
    manager = ctx.broker.service("producer_id_manager")
    producer_id = await manager.generate_producer_id()
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "producer_id": producer_id,
        "producer_epoch": 0,
    }
