"""DescribeCluster (key 60), versions 0-2.

Behaviour: the cluster id, the controller id (the Raft leader when it is a live broker, else a
live broker that forwards to it, as Kafka's KRaft brokers answer; -1 while none) and
the registered brokers that are not fenced, each with its advertised endpoint, from this node's
metadata image. No authorizer: the cluster authorized operations are all of them when asked.

Per version: v1 (KIP-919) adds ``endpoint_type``: brokers (1) are served; asking a broker for
controllers (2) gets UNSUPPORTED_ENDPOINT_TYPE, as in Kafka; v2 adds
``include_fenced_brokers`` and ``is_fenced``.
"""

from __future__ import annotations

from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.handlers.metadata import AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.image import MetadataImage

API_KEY = ApiKey.DESCRIBE_CLUSTER

ENDPOINT_TYPE_BROKER = 1


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    image: MetadataImage = controller.image
    version = ctx.api_version
    endpoint_type = request["endpoint_type"] if version >= 1 else ENDPOINT_TYPE_BROKER
    response: dict[str, Any] = {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "error_message": None,
        "endpoint_type": endpoint_type,
        "cluster_id": ctx.broker.cluster_id,
        "controller_id": controller.client_controller_id,
        "brokers": [],
        "cluster_authorized_operations": (
            CLUSTER_OPERATIONS
            if request["include_cluster_authorized_operations"]
            else AUTHORIZED_OPERATIONS_OMITTED
        ),
    }
    if endpoint_type != ENDPOINT_TYPE_BROKER:
        response["error_code"] = ErrorCode.UNSUPPORTED_ENDPOINT_TYPE
        response["error_message"] = "The request was sent to an endpoint of type BROKER"
        return response
    include_fenced = version >= 2 and request["include_fenced_brokers"]
    response["brokers"] = [
        {
            "broker_id": reg.node_id,
            "host": reg.host,
            "port": reg.port,
            "rack": reg.rack,
            "is_fenced": reg.fenced,
        }
        for _, reg in sorted(image.brokers.items())
        if include_fenced or not reg.fenced
    ]
    return response
