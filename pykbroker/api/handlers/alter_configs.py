"""AlterConfigs (key 33), versions 0-2: the legacy, replace-everything config update.

Behaviour (Kafka's ``KafkaApis.handleAlterConfigsRequest`` + ``ConfigAdminManager.preprocess``,
then the controller's ``legacyAlterConfigs``): each resource's config set is replaced by the one
given -- keys not named are deleted -- through ``ConfigRecord``s committed by the active
controller (a broker that is not it forwards the request). Per-resource errors: a resource named
twice, duplicate keys, null values, BROKER_LOGGER or unknown resource types, and a BROKER
resource naming another node are INVALID_REQUEST (checked here before forwarding); unknown topic
configs and invalid values INVALID_CONFIG; a missing topic UNKNOWN_TOPIC_OR_PARTITION; broker
configs that cannot change at runtime INVALID_REQUEST. ``validate_only`` checks without writing.

Per version: v2 is flexible; v0-v2 have the same fields.

Missing: GROUP and CLIENT_METRICS resources (INVALID_REQUEST here), AlterConfigPolicy, ACLs.

``alter`` is shared with IncrementalAlterConfigs; ``handle_forwarded`` serves the CONTROLLER
listener (requests other brokers forwarded: no check against this node's id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.metadata.config_control import (
    BROKER_LOGGER_RESOURCE,
    BROKER_RESOURCE,
    AlterConfigOp,
    AlterConfigsResource,
    AlterConfigsResult,
    OpType,
    preprocess,
)

API_KEY = ApiKey.ALTER_CONFIGS

LocalHandler = Callable[[AlterConfigsResource, int, bool], AlterConfigsResult]


def resources_of(request: dict[str, Any]) -> list[AlterConfigsResource]:
    """The request's resources (legacy configs are SET operations)."""
    return [
        AlterConfigsResource(
            r["resource_type"],
            r["resource_name"],
            [
                AlterConfigOp(c["name"], c["value"], c.get("config_operation", OpType.SET))
                for c in r["configs"]
            ],
        )
        for r in request["resources"]
    ]


def response_of(results: list[AlterConfigsResult]) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "responses": [
            {
                "error_code": r.error,
                "error_message": r.message,
                "resource_type": r.resource_type,
                "resource_name": r.resource_name,
            }
            for r in results
        ],
    }


def _check_node_id(res: AlterConfigsResource, node_id: int) -> AlterConfigsResult | None:
    """Kafka's ``validateResourceNameIsCurrentNodeId`` for a named BROKER resource."""
    try:
        named = int(res.resource_name)
    except ValueError:
        message = f"Node id must be an integer, but it is: {res.resource_name}"
    else:
        if named == node_id:
            return None
        message = f"Unexpected broker id, expected {node_id}, but received {res.resource_name}"
    return AlterConfigsResult(
        res.resource_type, res.resource_name, ErrorCode.INVALID_REQUEST, message
    )


async def alter(
    ctx: RequestContext,
    request: dict[str, Any],
    *,
    incremental: bool,
    local: LocalHandler | None = None,
    forwarded: bool = False,
) -> dict[str, Any]:
    """Preprocess on this broker, hand the rest to the controller, answer in request order."""
    resources = resources_of(request)
    validate_only = bool(request["validate_only"])
    node_id = ctx.broker.config.node_id
    done: dict[int, AlterConfigsResult] = {}
    if not forwarded:
        done = preprocess(resources, incremental=incremental)
        for index, res in enumerate(resources):
            if index in done:
                continue
            if res.resource_type == BROKER_RESOURCE and res.resource_name:
                problem = _check_node_id(res, node_id)
                if problem is not None:
                    done[index] = problem
            elif res.resource_type == BROKER_LOGGER_RESOURCE and local is not None:
                done[index] = local(res, node_id, validate_only)
    remaining = [res for index, res in enumerate(resources) if index not in done]
    controller = ctx.broker.service("controller")
    answered: list[AlterConfigsResult] = []
    if remaining:
        call = (
            controller.incremental_alter_configs if incremental else controller.legacy_alter_configs
        )
        try:
            answered = await call(remaining, validate_only)
        except KafkaError as exc:
            answered = [
                AlterConfigsResult(r.resource_type, r.resource_name, exc.code, exc.message)
                for r in remaining
            ]
    answers = iter(answered)
    results = [done[index] if index in done else next(answers) for index in range(len(resources))]
    return response_of(results)


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    return await alter(ctx, request, incremental=False)


async def handle_forwarded(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    """The CONTROLLER listener: the active controller's own checks only."""
    return await alter(ctx, request, incremental=False, forwarded=True)
