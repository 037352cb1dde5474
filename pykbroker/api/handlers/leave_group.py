"""LeaveGroup (key 13), versions 0-5.

Behaviour: removes members from a group, which then rebalances (or becomes Empty). A member
may be named by member id, or, for static members, by group_instance_id alone with an empty
member id (administrative removal, KIP-345). A pending member (KIP-394, not yet rejoined)
may leave too. Errors per member: UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID; for the request:
INVALID_GROUP_ID, COORDINATOR_NOT_AVAILABLE.

Per version: v1 throttle time, v2 same, v3 batch ``members`` with per-member errors
(KIP-345; v0-2 name one member and get its error at the top level), v4 flexible, v5 reason
(KIP-800).

Not implemented: ACLs, throttling.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.LEAVE_GROUP


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    response: dict[str, Any] = await coordinator.leave_group(request, ctx.api_version)
    response["throttle_time_ms"] = 0
    return response
