"""DescribeTransactions (key 65), version 0.

Behaviour: for each transactional id (in request order, duplicates included) its state at
the transaction coordinator, as Kafka's ``handleDescribeTransactions``: the state name
(Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort,
PrepareEpochFence), the transaction timeout, the start time of the current transaction
(-1 when none was started), the producer id and epoch, and the partitions of the
transaction (empty once it is complete). This broker coordinates every transactional id.

Errors, per id: an empty id INVALID_REQUEST; an unknown (or expired) id
TRANSACTIONAL_ID_NOT_FOUND; COORDINATOR_LOAD_IN_PROGRESS while ``__transaction_state`` is
being loaded. The other fields of an error entry are zero/empty, as Kafka's.

Not implemented: ACLs (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.DESCRIBE_TRANSACTIONS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("transaction_coordinator")
    states = [coordinator.describe_transaction(tid) for tid in request["transactional_ids"]]
    return {"throttle_time_ms": 0, "transaction_states": states}
