"""DescribeGroups (key 15), versions 0-6.

Behaviour: for each classic group: its state (Empty, PreparingRebalance,
CompletingRebalance, Stable), protocol type, and members (member id, group instance id,
client id, client host). The selected protocol (``protocol_data``, the assignor for
consumers) and each member's metadata and assignment bytes are only given once the group is
Stable, as Kafka does. Consumer (KIP-848) groups are described by ConsumerGroupDescribe:
here they are not found, as in Kafka. With ``include_authorized_operations`` (v3+) the group
operations are all granted (no authorizer): READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS,
ALTER_CONFIGS (bitfield 3400).

Per version: v1 throttle time, v2 same, v3 include_authorized_operations / authorized
operations (KIP-430), v4 group_instance_id (KIP-345), v5 flexible, v6 an unknown (or not
classic) group answers GROUP_ID_NOT_FOUND with a message (KIP-1043); before v6 it is
described as an empty group in state Dead with no error.

Not implemented: ACLs (GROUP_AUTHORIZATION_FAILED, real authorized operations).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.DESCRIBE_GROUPS


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    version = ctx.api_version
    groups = coordinator.describe_groups(
        request["groups"],
        version,
        bool(request["include_authorized_operations"]) if version >= 3 else False,
    )
    return {"throttle_time_ms": 0, "groups": groups}
