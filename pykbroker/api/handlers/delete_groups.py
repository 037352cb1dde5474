"""DeleteGroups (key 42), versions 0-2.

Behaviour: deletes each named group that is Empty, with its committed offsets: tombstones
for the offsets and the group's records are written to ``__consumer_offsets`` (so the
deletion survives a restart), then the group is forgotten. Per group: NON_EMPTY_GROUP while
it has members, GROUP_ID_NOT_FOUND for an unknown group, INVALID_GROUP_ID for the empty id,
COORDINATOR_NOT_AVAILABLE / NOT_COORDINATOR when the tombstones cannot be written. Classic
and consumer (KIP-848) groups alike.

Per version: v1 same as v0, v2 flexible.

Not implemented: ACLs (GROUP_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.DELETE_GROUPS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    names: list[str] = list(dict.fromkeys(request["groups_names"]))  # once each, in order
    results = await coordinator.delete_groups(names)
    return {
        "throttle_time_ms": 0,
        "results": [{"group_id": name, "error_code": results[name]} for name in names],
    }
