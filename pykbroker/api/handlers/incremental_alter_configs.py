"""IncrementalAlterConfigs (key 44), versions 0-1.

Behaviour (Kafka's ``KafkaApis.handleIncrementalAlterConfigsRequest``): per resource, each key's
operation -- SET (0), DELETE (1), APPEND (2) or SUBTRACT (3); the last two only for LIST-type
configs such as ``cleanup.policy``, from the current value or the default, else INVALID_CONFIG
-- becomes ``ConfigRecord``s committed by the active controller (a broker that is not it
forwards the request); a resource's keys change together or not at all. TOPIC and BROKER
resources (BROKER "" is the cluster default, "<id>" must be this broker's id) are checked as
AlterConfigs does (see ``alter_configs``). BROKER_LOGGER "<this node's id>" sets Python logger
levels on this broker only (Kafka's ``RuntimeLoggerManager``: Kafka level names, DELETE resets a
logger to inherit its parent, the root logger's level cannot be deleted, APPEND / SUBTRACT are
INVALID_REQUEST). ``validate_only`` checks without changing anything.

Per version: v1 is flexible; v0-v1 have the same fields.

Missing: GROUP and CLIENT_METRICS resources (INVALID_REQUEST here), AlterConfigPolicy, ACLs;
dynamic broker configs other than the log (topic-default) ones are refused as not dynamic.
"""

from __future__ import annotations

import logging
from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.config_control import AlterConfigsResource, AlterConfigsResult, OpType

from .alter_configs import alter

API_KEY = ApiKey.INCREMENTAL_ALTER_CONFIGS

#: Kafka (log4j) level names -> Python logging levels.
LEVELS = {
    "ALL": 1,
    "TRACE": 5,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "OFF": logging.CRITICAL + 10,
}
ROOT_LOGGER = "root"


def alter_loggers(
    res: AlterConfigsResource, node_id: int, validate_only: bool
) -> AlterConfigsResult:
    """Apply a BROKER_LOGGER resource to this process's loggers (all or nothing)."""

    def fail(code: ErrorCode, message: str) -> AlterConfigsResult:
        return AlterConfigsResult(res.resource_type, res.resource_name, code, message)

    if res.resource_name != str(node_id):
        return fail(
            ErrorCode.INVALID_REQUEST,
            f"Unexpected broker id, expected {node_id}, but received {res.resource_name}",
        )
    changes: list[tuple[str, int]] = []
    for op in res.configs:
        if op.op in (OpType.APPEND, OpType.SUBTRACT):
            return fail(
                ErrorCode.INVALID_REQUEST,
                f"{OpType(op.op).name} operation is not allowed for the BROKER_LOGGER resource",
            )
        if op.op == OpType.DELETE:
            if op.name == ROOT_LOGGER:
                return fail(
                    ErrorCode.INVALID_REQUEST,
                    "Removing the log level of the root logger is not allowed",
                )
            changes.append((op.name, logging.NOTSET))
            continue
        level = LEVELS.get((op.value or "").upper())
        if level is None:
            return fail(
                ErrorCode.INVALID_CONFIG,
                f"Cannot set the log level of {op.name} to {op.value} as it is not a supported "
                f"log level. Valid log4j levels are {', '.join(LEVELS)}",
            )
        changes.append((op.name, level))
    if not validate_only:
        for name, level in changes:
            logging.getLogger(None if name == ROOT_LOGGER else name).setLevel(level)
    return AlterConfigsResult(res.resource_type, res.resource_name)


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    return await alter(ctx, request, incremental=True, local=alter_loggers)


async def handle_forwarded(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    """The CONTROLLER listener: the active controller's own checks only."""
    return await alter(ctx, request, incremental=True, forwarded=True)
