"""JoinGroup (key 11), versions 0-9.

Behaviour: the classic group protocol (``GroupCoordinator`` in ``coordinator/group``). A
member joins with its supported protocols; the coordinator moves the group to
PreparingRebalance and answers every member once all known members rejoined or the
rebalance timeout passed (the first rebalance of an empty group waits
``group.initial.rebalance.delay.ms``, extended while members keep arriving, up to the
rebalance timeout). The protocol chosen is the one all members support that most prefer;
the leader (first joiner) gets the members and their metadata and assigns in SyncGroup.
Errors: INVALID_GROUP_ID (empty id), INVALID_SESSION_TIMEOUT (outside
``group.min/max.session.timeout.ms``), UNKNOWN_MEMBER_ID, INCONSISTENT_GROUP_PROTOCOL,
GROUP_MAX_SIZE_REACHED (``group.max.size``), FENCED_INSTANCE_ID, MEMBER_ID_REQUIRED,
COORDINATOR_LOAD_IN_PROGRESS.

Per version: v1 rebalance_timeout_ms (v0 uses the session timeout), v2 throttle time, v3
same, v4 KIP-394 member id required (an empty member id gets MEMBER_ID_REQUIRED and a fresh
id to rejoin with), v5 group_instance_id static membership (KIP-345: a known instance
rejoining with a new id replaces the old member without a rebalance when the selected
protocol does not change), v6 flexible, v7 protocol_type in the response and nullable
protocol_name (KIP-559), v8 reason (KIP-800, logged nowhere), v9 skip_assignment for a
static leader rejoining a stable group (KIP-814).

Not implemented: KIP-848 consumer groups joining through this API (upgrade/downgrade),
ACLs, throttling.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.JOIN_GROUP


def client_host_of(ctx: RequestContext) -> str:
    """The client address as Kafka records it (``InetAddress.toString()``: "/127.0.0.1")."""
    host = ctx.client_host
    return host if host.startswith("/") else f"/{host}"


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    response: dict[str, Any] = await coordinator.join_group(
        request, ctx.api_version, ctx.header.client_id or "", client_host_of(ctx)
    )
    response["throttle_time_ms"] = 0
    return response
