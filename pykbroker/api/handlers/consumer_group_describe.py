"""ConsumerGroupDescribe (key 69), versions 0-1.

Behaviour: describes consumer (KIP-848) groups: state (Empty, Assigning, Reconciling,
Stable), group epoch, target assignment epoch, the assignor in use, and each member: member
and instance ids, rack, member epoch, client id and host, subscribed topic names and regex,
its current assignment and its target assignment (topic ids and names; partitions of deleted
topics are left out). A classic or unknown group answers GROUP_ID_NOT_FOUND with a message,
the empty id INVALID_GROUP_ID. With ``include_authorized_operations`` the group operations
are all granted (no authorizer): READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.

Per version: v0 as above; v1 (KIP-1099) adds ``member_type`` (1: consumer protocol), which
this module fills in.

v1 is declared from Kafka's change (KAFKA-17750) since the shared JSON predates it: see
``LATER_VERSIONS`` in tools/gen_messages.py.

Not implemented: ACLs (GROUP/TOPIC_AUTHORIZATION_FAILED), classic members in consumer groups
(member_type 0).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.CONSUMER_GROUP_DESCRIBE


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    image = ctx.broker.service("controller").image
    groups = await coordinator.consumer_group_describe(
        request["group_ids"], bool(request["include_authorized_operations"]), image
    )
    return {"throttle_time_ms": 0, "groups": groups}
