"""ListGroups (key 16), versions 0-5.

Behaviour: every group of this coordinator, classic and consumer (KIP-848): group id,
protocol type ("consumer" for consumer groups and classic consumers, "" for groups that only
hold offsets), state and type ("classic" / "consumer"). Both filters are case-insensitive;
an empty filter matches everything, an unknown state or type matches nothing (as Kafka).
COORDINATOR_LOAD_IN_PROGRESS while ``__consumer_offsets`` is being loaded.

Per version: v1 throttle time, v2 same, v3 flexible, v4 states_filter and group_state
(KIP-518), v5 types_filter and group_type (KIP-848).

Not implemented: ACLs (groups the principal may not describe are listed too), share groups.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.LIST_GROUPS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    version = ctx.api_version
    states = request["states_filter"] if version >= 4 else []
    types = request["types_filter"] if version >= 5 else []
    error, groups = coordinator.list_groups(states, types)
    return {"throttle_time_ms": 0, "error_code": error, "groups": groups}
