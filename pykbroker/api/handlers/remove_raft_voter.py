"""RemoveRaftVoter (key 81), version 0, on a broker listener (KIP-853).

Behaviour: as Kafka 4.1's ``KafkaApis`` (``forwardToController``), a broker forwards the
request to the active controller's CONTROLLER listener and returns its answer (the Raft leader
answers once the new VotersRecord is committed; a removed leader then resigns).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey

from .add_raft_voter import forward_to_controller

API_KEY = ApiKey.REMOVE_RAFT_VOTER

_FORWARD_TIMEOUT_S = 30.0


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = await forward_to_controller(ctx, API_KEY, request, _FORWARD_TIMEOUT_S)
    return answer
