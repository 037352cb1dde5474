"""UnregisterBroker (key 64), version 0.

Behaviour: removes a broker's registration through the active controller (forwarded when this
broker is not it, as Kafka's brokers forward this API): the broker leaves every ISR it is in
(unless it is the last member) and every partition it led gets a new leader, as when it is
fenced, then an ``UnregisterBrokerRecord`` is written. BROKER_ID_NOT_REGISTERED for an unknown
broker id. A live broker that is unregistered registers again with its next heartbeat. Not
implemented: authorization (ALTER on the cluster).
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError

API_KEY = ApiKey.UNREGISTER_BROKER


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    try:
        await controller.unregister_broker(request["broker_id"])
    except KafkaError as exc:
        return {"throttle_time_ms": 0, "error_code": exc.code, "error_message": exc.message}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NO_ERROR, "error_message": None}
