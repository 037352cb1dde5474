"""OffsetFetch (key 9), versions 1-9.

Behaviour: the committed offsets of a group for the requested partitions, or for every
partition it committed when ``topics`` is null (v2+). A partition without a committed offset
(or of an unknown topic or group) answers offset -1, leader epoch -1, metadata "" and no
error, as Kafka. Committed metadata strings are returned as committed. Offsets are visible
once their records are written; transactional offsets (TxnOffsetCommit) once their
transaction's COMMIT marker is written to the group's partition. The empty group id is
allowed (as Kafka, for old clients). Lag, as admin clients show it, is the partition's end
offset (ListOffsets) minus this.

Per version: v2 top-level error_code and null topics = all, v3 throttle time, v4 same, v5
committed_leader_epoch (KIP-320), v6 flexible, v7 require_stable (KIP-447: the read waits
for the group's writes queued before it, and a partition with a pending transactional offset
answers UNSTABLE_OFFSET_COMMIT with offset -1, which clients retry), v8 several groups in
``groups`` (KIP-709), v9 member_id / member_epoch (KIP-848): checked for consumer groups
(UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH as the group's error; an epoch of -1 without member id
is the admin client), not for classic groups, as Kafka.

Not implemented: ACLs (GROUP_AUTHORIZATION_FAILED, unauthorized topics filtered), v10 topic
ids (Kafka 4.1 advertises v1-9).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

API_KEY = ApiKey.OFFSET_FETCH


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    coordinator = ctx.broker.service("group_coordinator")
    response: dict[str, Any] = await coordinator.fetch_offsets(request, ctx.api_version)
    response["throttle_time_ms"] = 0
    return response
