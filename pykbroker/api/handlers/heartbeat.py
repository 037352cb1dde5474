"""Heartbeat (key 12), versions 0-4.

Behaviour: keeps a member's session alive (``session.timeout.ms``; a member whose session
expires is removed and the group rebalances). Answers REBALANCE_IN_PROGRESS while the group
is PreparingRebalance (the member must rejoin), UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION,
FENCED_INSTANCE_ID, INVALID_GROUP_ID, and NONE in CompletingRebalance and Stable.

Per version: v1 throttle time, v2 same, v3 group_instance_id (KIP-345), v4 flexible.

Not implemented: ACLs, throttling.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.HEARTBEAT


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    response: dict[str, Any] = await coordinator.heartbeat(request, ctx.api_version)
    response["throttle_time_ms"] = 0
    return response
