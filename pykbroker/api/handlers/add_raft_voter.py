"""AddRaftVoter (key 80), version 0, on a broker listener (KIP-853).

Behaviour: as Kafka 4.1's ``KafkaApis`` (``forwardToController``), a broker forwards the
request to the active controller's CONTROLLER listener (``ControllerChannel``) and returns its
answer; an admin client may send it to any broker (``Admin.addRaftVoter``). The controller
(``controller_apis``) hands it to the Raft leader, which answers once the new VotersRecord is
committed. No controller reachable in time: REQUEST_TIMED_OUT.
"""

from __future__ import annotations

from typing import Any

import trio

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import KafkaError

API_KEY = ApiKey.ADD_RAFT_VOTER

#: Beyond the request's own ``timeout_ms``, time for the forward and the commit.
_FORWARD_MARGIN_S = 5.0


async def forward_to_controller(
    ctx: RequestContext, api_key: int, request: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    """The active controller's answer to ``request``, or an error response."""
    channel = ctx.broker.service("controller_channel")
    deadline = trio.current_time() + timeout_s
    try:
        answer: dict[str, Any] = await channel.send(api_key, ctx.api_version, request, deadline)
    except KafkaError as exc:
        return {"throttle_time_ms": 0, "error_code": int(exc.code), "error_message": str(exc)}
    return answer


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    timeout_s = max(int(request.get("timeout_ms", 0)), 0) / 1000 + _FORWARD_MARGIN_S
    return await forward_to_controller(ctx, API_KEY, request, timeout_s)
