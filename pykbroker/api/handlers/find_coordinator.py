"""FindCoordinator (key 10), versions 0-6.

Behaviour: for a group key (key_type 0) the coordinator is the leader of the group's
``__consumer_offsets`` partition, ``abs(hashCode(group_id)) % offsets.topic.num.partitions``
as Kafka computes it; the first lookup creates ``__consumer_offsets`` (compacted) if it is
missing. This broker answers with its own advertised endpoint (node id, host, port).
An unknown key type fails the request with INVALID_REQUEST (per key from v4 on), as Kafka.

Per version: v1 key_type (KIP-98) and error_message, v2 same as v1, v3 flexible, v4 batched
``coordinator_keys`` -> ``coordinators`` with per-key errors (KIP-699), v5 same as v4 (may
return TRANSACTION_ABORTABLE for transactions), v6 key_type 2 share groups (KIP-932).

For a transactional id (key_type 1) the coordinator is the leader of its
``__transaction_state`` partition (created on the first lookup), i.e. this broker.

Not implemented: share coordinators (key_type 2) answer COORDINATOR_NOT_AVAILABLE; ACLs
(GROUP_AUTHORIZATION_FAILED / TRANSACTIONAL_ID_AUTHORIZATION_FAILED); in a multi-broker
cluster this still names the
broker that was asked rather than the partition leader.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.FIND_COORDINATOR

GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1
SHARE_KEY_TYPE = 2

#: Kafka's ``Errors.message()`` texts for the errors answered here.
_MESSAGES = {
    ErrorCode.NO_ERROR: "NONE",
    ErrorCode.COORDINATOR_NOT_AVAILABLE: "The coordinator is not available.",
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS: (
        "The coordinator is loading and hence can't process requests."
    ),
    ErrorCode.INVALID_REQUEST: (
        "This most likely occurs because of a request being malformed by the client library "
        "or the message was sent to an incompatible broker. See the broker logs for more "
        "details."
    ),
}


async def _lookup(ctx: RequestContext, key_type: int, key: str) -> tuple[ErrorCode, bool]:
    """The error for one key, and whether this broker's endpoint is the answer."""
    if key_type == GROUP_KEY_TYPE:
        error, _partition = await ctx.broker.service("group_coordinator").find_coordinator(key)
        return error, error == ErrorCode.NO_ERROR
    if key_type == TRANSACTION_KEY_TYPE:
        error = await ctx.broker.service("transaction_coordinator").find_coordinator(key)
        return error, error == ErrorCode.NO_ERROR
    return ErrorCode.COORDINATOR_NOT_AVAILABLE, False


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    version = ctx.api_version
    key_type = request["key_type"]
    endpoint = ctx.broker.endpoint()
    valid_type = key_type in (GROUP_KEY_TYPE, TRANSACTION_KEY_TYPE, SHARE_KEY_TYPE)
    if version < 4:
        if not valid_type:
            error, found = ErrorCode.INVALID_REQUEST, False
        else:
            error, found = await _lookup(ctx, key_type, request["key"])
        return {
            "throttle_time_ms": 0,
            "error_code": error,
            "error_message": _MESSAGES.get(error, error.name),
            "node_id": endpoint.node_id if found else -1,
            "host": endpoint.host if found else "",
            "port": endpoint.port if found else -1,
        }
    coordinators = []
    for key in request["coordinator_keys"]:
        if not valid_type:
            coordinators.append(
                {
                    "key": key,
                    "node_id": -1,
                    "host": "",
                    "port": -1,
                    "error_code": ErrorCode.INVALID_REQUEST,
                    "error_message": _MESSAGES[ErrorCode.INVALID_REQUEST],
                }
            )
            continue
        error, found = await _lookup(ctx, key_type, key)
        coordinators.append(
            {
                "key": key,
                "node_id": endpoint.node_id if found else -1,
                "host": endpoint.host if found else "",
                "port": endpoint.port if found else -1,
                "error_code": error,
                "error_message": None,
            }
        )
    return {"throttle_time_ms": 0, "coordinators": coordinators}
