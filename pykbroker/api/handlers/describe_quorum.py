"""DescribeQuorum (key 55), versions 0-2.

Behaviour: the state of the KRaft quorum of ``__cluster_metadata-0`` as the Raft leader knows
it: leader id and epoch, high watermark, and for every voter and observer its log end offset
and (v1+) last fetch and last caught-up timestamps. As in Kafka, the leader answers; a broker
that is not the leader forwards the request to the active controller's CONTROLLER listener and
returns its answer (on the CONTROLLER listener a non-leader answers NOT_LEADER_OR_FOLLOWER in
the partition). Requested topics are ignored: the metadata partition is always described.

Per version: v1 adds the fetch timestamps; v2 (KIP-853) adds error messages, replica directory
ids (each voter's ``directory.id`` from the VotersRecord, the zero uuid with static
``controller.quorum.voters``) and ``nodes`` with the voters' CONTROLLER endpoints (static, or
the latest VotersRecord's with ``controller.quorum.bootstrap.servers``).
"""

from __future__ import annotations

from typing import Any

import trio

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import KafkaError
from pykbroker.raft import NotLeaderError, QuorumInfo, wire

API_KEY = ApiKey.DESCRIBE_QUORUM

_FORWARD_TIMEOUT_S = 10.0


def describe_quorum_locally(ctx: RequestContext) -> dict[str, Any]:
    """This node's answer: the quorum if it leads, else NOT_LEADER_OR_FOLLOWER."""
    driver = ctx.broker.service("raft")
    info: QuorumInfo | None
    try:
        info = driver.describe_quorum()
    except NotLeaderError:
        info = None
    response = wire.describe_quorum_response(info, ctx.api_version)
    if ctx.api_version >= 2:
        response["nodes"] = [
            {
                "node_id": voter.node_id,
                "listeners": [
                    {"name": driver.listener_name, "host": voter.host, "port": voter.port}
                ],
            }
            for _, voter in sorted(driver.voters.items())
            if voter.port >= 0
        ]
    return response


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    if controller.is_raft_leader:
        return describe_quorum_locally(ctx)
    channel = ctx.broker.service("controller_channel")
    deadline = trio.current_time() + _FORWARD_TIMEOUT_S
    try:
        forwarded: dict[str, Any] = await channel.send(API_KEY, ctx.api_version, request, deadline)
    except KafkaError as exc:
        return wire.describe_quorum_response(None, ctx.api_version, exc.code)
    return forwarded
