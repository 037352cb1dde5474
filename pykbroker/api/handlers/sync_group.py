"""SyncGroup (key 14), versions 0-5.

Behaviour: after a JoinGroup round the leader sends the assignment of every member; the
coordinator stores the group (a GroupMetadata record in ``__consumer_offsets``), moves it to
Stable and answers every member with its own assignment. Followers' SyncGroups wait for the
leader's; a member missing from the leader's assignment gets an empty one. In Stable a
SyncGroup returns the member's current assignment. Errors: INVALID_GROUP_ID,
UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS (a new rebalance started),
FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL, COORDINATOR_NOT_AVAILABLE /
NOT_COORDINATOR when the record cannot be written. Members that do not send SyncGroup within
the rebalance timeout are removed and the group rebalances.

Per version: v1 throttle time, v2 same, v3 group_instance_id (KIP-345), v4 flexible, v5
protocol_type and protocol_name, mandatory, checked against the group's (KIP-559).

Not implemented: ACLs, throttling.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.SYNC_GROUP


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    response: dict[str, Any] = await coordinator.sync_group(request, ctx.api_version)
    response["throttle_time_ms"] = 0
    return response
