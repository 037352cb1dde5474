"""FindCoordinator (key 10), versions 0-6.

Behaviour: for a group key (key_type 0) the coordinator is the leader of the group's
``__consumer_offsets`` partition, ``abs(hashCode(group_id)) % offsets.topic.num.partitions``
as Kafka computes it; the first lookup creates ``__consumer_offsets`` (compacted) if it is
missing. The answer is that partition leader's advertised endpoint (node id, host, port) from
the metadata image (this broker's own endpoint when it leads it); COORDINATOR_NOT_AVAILABLE
when the partition has no live leader.
An unknown key type fails the request with INVALID_REQUEST (per key from v4 on), as Kafka.

Per version: v1 key_type (KIP-98) and error_message, v2 same as v1, v3 flexible, v4 batched
``coordinator_keys`` -> ``coordinators`` with per-key errors (KIP-699), v5 same as v4 (may
return TRANSACTION_ABORTABLE for transactions), v6 key_type 2 share groups (KIP-932).

For a transactional id (key_type 1) the coordinator is the leader of its
``__transaction_state`` partition (created on the first lookup).

Not implemented: share coordinators (key_type 2) answer COORDINATOR_NOT_AVAILABLE; ACLs
(GROUP_AUTHORIZATION_FAILED / TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pykbroker.api.context import Endpoint, RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode

API_KEY = ApiKey.FIND_COORDINATOR

OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_STATE_TOPIC = "__transaction_state"

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


def _leader_endpoint(
    ctx: RequestContext, topic: str, partition: Callable[[], int]
) -> Endpoint | None:
    """The advertised endpoint of the live leader of ``topic``'s ``partition()``, if any
    (this broker when it leads it, or when the topic is not in the image: a single node)."""
    me = ctx.broker.endpoint()
    image = ctx.broker.service("controller").image
    found = image.topics.get(topic)
    registration = found.partitions.get(partition()) if found is not None else None
    if registration is None or registration.leader == me.node_id:
        return me
    broker = image.brokers.get(registration.leader)
    if broker is None or broker.fenced:
        return None
    return Endpoint(broker.node_id, broker.host, broker.port, broker.rack)


async def _lookup(
    ctx: RequestContext, key_type: int, key: str
) -> tuple[ErrorCode, Endpoint | None]:
    """The error for one key, and the coordinator's endpoint."""
    if key_type == GROUP_KEY_TYPE:
        error, partition = await ctx.broker.service("group_coordinator").find_coordinator(key)
        topic, which = OFFSETS_TOPIC, (lambda: partition)
    elif key_type == TRANSACTION_KEY_TYPE:
        coordinator = ctx.broker.service("transaction_coordinator")
        error = await coordinator.find_coordinator(key)
        topic, which = TRANSACTION_STATE_TOPIC, (lambda: coordinator.partition_for(key))
    else:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
    if error != ErrorCode.NO_ERROR:
        return error, None
    endpoint = _leader_endpoint(ctx, topic, which)
    if endpoint is None:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, None
    return error, endpoint


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    version = ctx.api_version
    key_type = request["key_type"]
    valid_type = key_type in (GROUP_KEY_TYPE, TRANSACTION_KEY_TYPE, SHARE_KEY_TYPE)
    if version < 4:
        if not valid_type:
            error, found = ErrorCode.INVALID_REQUEST, None
        else:
            error, found = await _lookup(ctx, key_type, request["key"])
        return {
            "throttle_time_ms": 0,
            "error_code": error,
            "error_message": _MESSAGES.get(error, error.name),
            "node_id": found.node_id if found else -1,
            "host": found.host if found else "",
            "port": found.port if found else -1,
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
                "node_id": found.node_id if found else -1,
                "host": found.host if found else "",
                "port": found.port if found else -1,
                "error_code": error,
                "error_message": None,
            }
        )
    return {"throttle_time_ms": 0, "coordinators": coordinators}
