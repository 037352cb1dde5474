"""DescribeConfigs (key 32), versions 1-4.

Behaviour (Kafka's ``ConfigHelper.describeConfigs``), from this broker's metadata image:

- TOPIC: every topic config Kafka 4.1 lists with its effective value: a topic override
  (source DYNAMIC_TOPIC_CONFIG 1), else this broker's dynamic config (DYNAMIC_BROKER_CONFIG 2),
  the cluster-default dynamic config (DYNAMIC_DEFAULT_BROKER_CONFIG 3), ``server.properties``
  (STATIC_BROKER_CONFIG 4) or Kafka's default (DEFAULT_CONFIG 5) of its broker synonym (e.g.
  ``log.retention.ms`` for ``retention.ms``). ``read_only`` false. A missing topic is
  UNKNOWN_TOPIC_OR_PARTITION, an illegal name INVALID_TOPIC_EXCEPTION.
- BROKER "": the cluster-default dynamic configs only; BROKER "<this node's id>": every broker
  config (``BrokerConfig``'s keys and the dynamic log configs), ``read_only`` unless dynamically
  updatable; another node's id (or not a number) is INVALID_REQUEST, as Kafka answers.
- BROKER_LOGGER "<this node's id>": the Python loggers (root and ``pykbroker.*``) with Kafka's
  level names, source DYNAMIC_BROKER_LOGGER_CONFIG 6.
- Other resource types: INVALID_REQUEST. ``configuration_keys`` filters the entries;
  ``include_synonyms`` lists every source of a value, highest precedence first.

Per version: v1 adds synonyms and config_source; v3 adds config_type and documentation (given
only with ``include_documentation``); v4 is flexible.

Missing: Kafka's full documentation texts (pykbroker gives a short one for topic configs and the
dynamic broker configs); static broker values are those that differ from Kafka's defaults (a key
set to its default value reads as DEFAULT_CONFIG).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.config import BrokerConfig, Listener, QuorumVoter
from pykbroker.metadata.config_control import (
    BROKER_LOGGER_RESOURCE,
    BROKER_RESOURCE,
    DYNAMIC_LOG_CONFIGS,
    TOPIC_CONFIGS,
    TOPIC_RESOURCE,
    ConfigType,
    broker_config_keys,
)
from pykbroker.metadata.image import MetadataImage
from pykbroker.metadata.topic_control import validate_topic_name

API_KEY = ApiKey.DESCRIBE_CONFIGS

DYNAMIC_TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5
DYNAMIC_BROKER_LOGGER_CONFIG = 6

#: Kafka's ``DynamicBrokerConfig.brokerConfigSynonyms``: the keys that set the same value.
_BROKER_SYNONYMS: dict[str, tuple[str, ...]] = {}
for _group in (
    ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
    ("log.roll.ms", "log.roll.hours"),
    ("log.roll.jitter.ms", "log.roll.jitter.hours"),
):
    for _key in _group:
        _BROKER_SYNONYMS[_key] = _group
_BROKER_SYNONYMS["log.flush.interval.ms"] = (
    "log.flush.interval.ms",
    "log.flush.scheduler.interval.ms",
)

#: Kafka's broker defaults that BrokerConfig has no field for (keys whose default is null in
#: Kafka -- log.retention.ms, log.roll.ms, log.flush.interval.ms, ... -- have none).
_EXTRA_DEFAULTS = {
    "log.retention.hours": "168",
    "log.roll.hours": "168",
    "log.roll.jitter.hours": "0",
    "log.segment.delete.delay.ms": "60000",
    "log.preallocate": "false",
    "compression.gzip.level": "-1",
    "compression.lz4.level": "9",
    "compression.zstd.level": "3",
    "log.local.retention.ms": "-2",
    "log.local.retention.bytes": "-2",
}
_NULL_DEFAULTS = frozenset(
    {"log.retention.ms", "log.retention.minutes", "log.roll.ms", "log.flush.interval.ms"}
)
_KAFKA_LEVELS = {5: "TRACE", 10: "DEBUG", 20: "INFO", 30: "WARN", 40: "ERROR", 50: "FATAL"}


def format_value(value: Any) -> str | None:
    """A BrokerConfig value as Kafka's ``ConfigDef.convertToString`` writes it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, tuple):
        return ",".join(
            f"{v.node_id}@{v.host}:{v.port}" if isinstance(v, QuorumVoter) else str(v)
            for v in value
        )
    if isinstance(value, Listener | Path):
        return str(value)
    return str(value)


def _field_values(config: BrokerConfig) -> dict[str, Any]:
    return {
        f.name.replace("_", "."): getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name != "extra"
    }


_DEFAULT_VALUES = _field_values(BrokerConfig())


def default_broker_configs() -> dict[str, str]:
    """Kafka's default value of every broker config that has one (``staticDefaultConfigs``)."""
    values = {k: format_value(v) for k, v in _DEFAULT_VALUES.items() if k not in _NULL_DEFAULTS}
    values.update(_EXTRA_DEFAULTS)
    return {k: v for k, v in values.items() if v is not None}


def static_broker_configs(config: BrokerConfig) -> dict[str, str]:
    """The broker configs set in ``server.properties`` (those that differ from the defaults)."""
    values = {
        k: format_value(v)
        for k, v in _field_values(config).items()
        if v != _DEFAULT_VALUES.get(k) and k != "node.id"
    }
    values["node.id"] = str(config.node_id)
    values.update(config.extra)
    return {k: v for k, v in values.items() if v is not None}


class _Sources:
    """Where a broker config's value may come from, highest precedence first."""

    def __init__(self, config: BrokerConfig, image: MetadataImage, node_id: int) -> None:
        self.levels: list[tuple[int, Mapping[str, str]]] = [
            (DYNAMIC_BROKER_CONFIG, image.configs.get((BROKER_RESOURCE, str(node_id)), {})),
            (DYNAMIC_DEFAULT_BROKER_CONFIG, image.configs.get((BROKER_RESOURCE, ""), {})),
            (STATIC_BROKER_CONFIG, static_broker_configs(config)),
            (DEFAULT_CONFIG, default_broker_configs()),
        ]

    def synonyms(self, name: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        """Kafka's ``configSynonyms``: each source's values of ``keys``, dropping any before the
        first entry for ``name``."""
        found = [
            {"name": key, "value": values[key], "source": source}
            for source, values in self.levels
            for key in keys
            if key in values
        ]
        while found and found[0]["name"] != name:
            found.pop(0)
        return found


def _topic_value(synonym: dict[str, Any], factor: int) -> str:
    value: str = synonym["value"]
    if factor == 1:
        return value
    number = int(value)
    return str(number * factor) if number >= 0 else "-1"


def _describe_topic(
    name: str, image: MetadataImage, sources: _Sources, docs: bool
) -> list[dict[str, Any]]:
    overrides = image.topic_config(name)
    entries = []
    for d in TOPIC_CONFIGS.values():
        synonyms: list[dict[str, Any]] = []
        if d.synonyms:
            first = d.synonyms[0][0]
            synonyms = sources.synonyms(first, tuple(key for key, _ in d.synonyms))
        if d.name in overrides:
            value: str | None = overrides[d.name]
            synonyms.insert(0, {"name": d.name, "value": value, "source": DYNAMIC_TOPIC_CONFIG})
        elif synonyms:
            factor = dict(d.synonyms)[synonyms[0]["name"]]
            value = _topic_value(synonyms[0], factor)
        else:
            value = d.default
        entries.append(
            {
                "name": d.name,
                "value": value,
                "read_only": False,
                "config_source": synonyms[0]["source"] if synonyms else DEFAULT_CONFIG,
                "is_default": not synonyms or synonyms[0]["source"] == DEFAULT_CONFIG,
                "is_sensitive": False,
                "synonyms": synonyms,
                "config_type": d.type,
                "documentation": d.doc if docs else None,
            }
        )
    return entries


def _broker_type(name: str) -> ConfigType:
    topic_key = DYNAMIC_LOG_CONFIGS.get(name)
    if topic_key is not None:
        return TOPIC_CONFIGS[topic_key].type
    value = _DEFAULT_VALUES.get(name)
    if isinstance(value, bool):
        return ConfigType.BOOLEAN
    if isinstance(value, int):
        return ConfigType.LONG if name.endswith(".ms") or value > 2**31 - 1 else ConfigType.INT
    if isinstance(value, float):
        return ConfigType.DOUBLE
    if isinstance(value, tuple | Mapping):
        return ConfigType.LIST
    return ConfigType.STRING if value is not None or name in _EXTRA_DEFAULTS else ConfigType.UNKNOWN


def _describe_broker(
    names: set[str], sources: _Sources, per_broker: bool, docs: bool
) -> list[dict[str, Any]]:
    entries = []
    for name in sorted(names):
        synonyms = sources.synonyms(name, _BROKER_SYNONYMS.get(name, (name,)))
        if not per_broker:
            synonyms = [s for s in synonyms if s["source"] == DYNAMIC_DEFAULT_BROKER_CONFIG]
        topic_key = DYNAMIC_LOG_CONFIGS.get(name)
        entries.append(
            {
                "name": name,
                "value": synonyms[0]["value"] if synonyms else None,
                "read_only": topic_key is None,
                "config_source": synonyms[0]["source"] if synonyms else DEFAULT_CONFIG,
                "is_default": not synonyms or synonyms[0]["source"] == DEFAULT_CONFIG,
                "is_sensitive": False,
                "synonyms": synonyms,
                "config_type": _broker_type(name),
                "documentation": (
                    TOPIC_CONFIGS[topic_key].doc if docs and topic_key is not None else None
                ),
            }
        )
    return entries


def _describe_loggers() -> list[dict[str, Any]]:
    loggers: dict[str, logging.Logger] = {"root": logging.getLogger()}
    loggers.update(
        (name, item)
        for name, item in sorted(logging.Logger.manager.loggerDict.items())
        if isinstance(item, logging.Logger) and name.split(".")[0] == "pykbroker"
    )
    return [
        {
            "name": name,
            "value": _KAFKA_LEVELS.get(logger.getEffectiveLevel(), "OFF"),
            "read_only": False,
            "config_source": DYNAMIC_BROKER_LOGGER_CONFIG,
            "is_default": False,
            "is_sensitive": False,
            "synonyms": [],
            "config_type": ConfigType.UNKNOWN,
            "documentation": None,
        }
        for name, logger in loggers.items()
    ]


class _InvalidRequest(Exception):
    pass


def _local_id(name: str, node_id: int, expected: str) -> None:
    """Kafka's ``resourceNameToBrokerId`` and its check against this broker's id."""
    try:
        broker_id = int(name)
    except ValueError:
        raise _InvalidRequest(f"Broker id must be an integer, but it is: {name}") from None
    if broker_id != node_id:
        raise _InvalidRequest(f"Unexpected broker id, expected {expected}, but received {name}")


def _describe(
    resource: dict[str, Any], image: MetadataImage, config: BrokerConfig, docs: bool
) -> list[dict[str, Any]]:
    kind, name = resource["resource_type"], resource["resource_name"]
    sources = _Sources(config, image, config.node_id)
    if kind == TOPIC_RESOURCE:
        return _describe_topic(name, image, sources, docs)
    if kind == BROKER_RESOURCE:
        if not name:
            defaults = image.configs.get((BROKER_RESOURCE, ""), {})
            return _describe_broker(set(defaults), sources, False, docs)
        _local_id(name, config.node_id, f"{config.node_id} or empty string")
        names = set(broker_config_keys()) | set(DYNAMIC_LOG_CONFIGS)
        for level in sources.levels[:2]:
            names |= set(level[1])
        names -= {"log.dir"}
        return _describe_broker(names, sources, True, docs)
    if kind == BROKER_LOGGER_RESOURCE:
        if not name:
            raise _InvalidRequest("Broker id must not be empty")
        _local_id(name, config.node_id, str(config.node_id))
        return _describe_loggers()
    raise _InvalidRequest(f"Unsupported resource type: {kind}")


async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    image: MetadataImage = ctx.broker.service("controller").image
    docs = bool(request.get("include_documentation"))
    synonyms = bool(request.get("include_synonyms"))
    results = []
    for resource in request["resources"]:
        result: dict[str, Any] = {
            "error_code": ErrorCode.NO_ERROR,
            "error_message": None,
            "resource_type": resource["resource_type"],
            "resource_name": resource["resource_name"],
            "configs": [],
        }
        results.append(result)
        name = resource["resource_name"]
        if resource["resource_type"] == TOPIC_RESOURCE:
            problem = validate_topic_name(name)
            if problem:
                result["error_code"], result["error_message"] = (
                    ErrorCode.INVALID_TOPIC_EXCEPTION,
                    problem,
                )
                continue
            if name not in image.topics:
                result["error_code"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
        try:
            entries = _describe(resource, image, ctx.broker.config, docs)
        except _InvalidRequest as exc:
            result["error_code"], result["error_message"] = ErrorCode.INVALID_REQUEST, str(exc)
            continue
        keys = resource.get("configuration_keys")
        if keys:
            entries = [e for e in entries if e["name"] in keys]
        if not synonyms:
            for entry in entries:
                entry["synonyms"] = []
        result["configs"] = entries
    return {"throttle_time_ms": 0, "results": results}
