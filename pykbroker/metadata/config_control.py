"""Dynamic configs on the controller (Kafka's ``ConfigurationControlManager``).

IncrementalAlterConfigs and the legacy AlterConfigs become ``ConfigRecord``s (a null value
deletes a key) for TOPIC (resource type 2) and BROKER (4; name "" is the cluster default, a
node id one broker) resources, committed through Raft and replayed by every node into its
``MetadataImage``. Incremental operations are SET, DELETE, APPEND and SUBTRACT (the last two
only for LIST-type configs, from the current value or the config's default); the legacy API
replaces the resource's whole set. Checks, per resource: a resource named twice, duplicate keys,
null values and unknown resource types are INVALID_REQUEST (Kafka's ``ConfigAdminManager``
preprocessing); topic configs must be known with valid values (INVALID_CONFIG), the topic must
exist (UNKNOWN_TOPIC_OR_PARTITION); broker configs must be dynamically updatable with valid
values (INVALID_REQUEST, as Kafka's ``DynamicBrokerConfig.validate`` answers, KAFKA-13609).
A node that is not the active controller forwards the request (IncrementalAlterConfigs v1,
AlterConfigs v2) and answers once its own image shows the change.

Also here, shared by the broker side: the topic config schema (type, default, broker synonyms,
as Kafka's ``LogConfig`` / ``ServerTopicConfigSynonyms``) and ``dynamic_topic_defaults``, the
topic-level values the dynamic broker configs (Kafka's ``DynamicLogConfig``) give topics without
an override.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.config import BrokerConfig
from pykbroker.log.log_config import LogConfig

from . import schemas
from .controller_base import ControllerBase
from .image import BROKER_RESOURCE, TOPIC_RESOURCE, MetadataImage
from .records import MetadataRecord, record
from .topic_control import TOPIC_CONFIG_KEYS, check_replication_configs, validate_topic_name

__all__ = [
    "BROKER_LOGGER_RESOURCE",
    "BROKER_RESOURCE",
    "DYNAMIC_LOG_CONFIGS",
    "TOPIC_CONFIGS",
    "TOPIC_RESOURCE",
    "AlterConfigOp",
    "AlterConfigsResource",
    "AlterConfigsResult",
    "ConfigControl",
    "ConfigType",
    "OpType",
    "TopicConfigDef",
    "dynamic_topic_defaults",
]

BROKER_LOGGER_RESOURCE = 8
MAX_LONG = str(2**63 - 1)


class OpType(enum.IntEnum):
    """``AlterConfigOp.OpType``."""

    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


class ConfigType(enum.IntEnum):
    """``DescribeConfigsResponse.ConfigType`` (DescribeConfigs v3+ ``config_type``)."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    """One topic config: its type, Kafka's default, and its broker synonyms (highest precedence
    first, each with the factor that turns its unit into the topic config's)."""

    name: str
    type: ConfigType
    default: str
    synonyms: tuple[tuple[str, int], ...] = ()
    doc: str = ""


def _d(
    name: str, kind: ConfigType, default: str, *synonyms: str | tuple[str, int], doc: str = ""
) -> TopicConfigDef:
    pairs = tuple((s, 1) if isinstance(s, str) else s for s in synonyms)
    return TopicConfigDef(name, kind, default, pairs, doc)


_HOUR, _MINUTE = 3_600_000, 60_000
_T = ConfigType

#: The topic configs DescribeConfigs lists (Kafka 4.1's LogConfig), sorted by name.
TOPIC_CONFIGS: Mapping[str, TopicConfigDef] = MappingProxyType(
    {
        d.name: d
        for d in (
            _d("cleanup.policy", _T.LIST, "delete", "log.cleanup.policy",
               doc="The retention policy of old log segments: delete and/or compact."),
            _d("compression.gzip.level", _T.INT, "-1", "compression.gzip.level",
               doc="The compression level to use if compression.type is gzip."),
            _d("compression.lz4.level", _T.INT, "9", "compression.lz4.level",
               doc="The compression level to use if compression.type is lz4."),
            _d("compression.type", _T.STRING, "producer", "compression.type",
               doc="The final compression type of the topic's batches, or producer."),
            _d("compression.zstd.level", _T.INT, "3", "compression.zstd.level",
               doc="The compression level to use if compression.type is zstd."),
            _d("delete.retention.ms", _T.LONG, "86400000", "log.cleaner.delete.retention.ms",
               doc="How long delete tombstones are kept for compacted topics."),
            _d("file.delete.delay.ms", _T.LONG, "60000", "log.segment.delete.delay.ms",
               doc="The time to wait before deleting a file from the filesystem."),
            _d("flush.messages", _T.LONG, MAX_LONG, "log.flush.interval.messages",
               doc="The number of messages after which the log is fsynced."),
            _d("flush.ms", _T.LONG, MAX_LONG, "log.flush.interval.ms",
               "log.flush.scheduler.interval.ms",
               doc="The time after which the log is fsynced."),
            _d("follower.replication.throttled.replicas", _T.LIST, "",
               doc="Replicas whose log replication is throttled on the follower side."),
            _d("index.interval.bytes", _T.INT, "4096", "log.index.interval.bytes",
               doc="How often an offset index entry is added."),
            _d("leader.replication.throttled.replicas", _T.LIST, "",
               doc="Replicas whose log replication is throttled on the leader side."),
            _d("local.retention.bytes", _T.LONG, "-2", "log.local.retention.bytes",
               doc="The maximum local size of a partition before old segments are deleted."),
            _d("local.retention.ms", _T.LONG, "-2", "log.local.retention.ms",
               doc="How long a local log segment is kept before it is deleted."),
            _d("max.compaction.lag.ms", _T.LONG, MAX_LONG, "log.cleaner.max.compaction.lag.ms",
               doc="The maximum time a message stays uncompacted."),
            _d("max.message.bytes", _T.INT, "1048588", "message.max.bytes",
               doc="The largest record batch size allowed."),
            _d("message.timestamp.after.max.ms", _T.LONG, "3600000",
               "log.message.timestamp.after.max.ms",
               doc="How far a message timestamp may be ahead of the broker's time."),
            _d("message.timestamp.before.max.ms", _T.LONG, MAX_LONG,
               "log.message.timestamp.before.max.ms",
               doc="How far a message timestamp may be behind the broker's time."),
            _d("message.timestamp.type", _T.STRING, "CreateTime", "log.message.timestamp.type",
               doc="CreateTime or LogAppendTime."),
            _d("min.cleanable.dirty.ratio", _T.DOUBLE, "0.5", "log.cleaner.min.cleanable.ratio",
               doc="The dirty ratio above which the log is compacted."),
            _d("min.compaction.lag.ms", _T.LONG, "0", "log.cleaner.min.compaction.lag.ms",
               doc="The minimum time a message stays uncompacted."),
            _d("min.insync.replicas", _T.INT, "1", "min.insync.replicas",
               doc="The minimum ISR size for a produce with acks=all to succeed."),
            _d("preallocate", _T.BOOLEAN, "false", "log.preallocate",
               doc="Preallocate the file on disk when creating a new log segment."),
            _d("remote.storage.enable", _T.BOOLEAN, "false",
               doc="Enable tiered storage for the topic."),
            _d("retention.bytes", _T.LONG, "-1", "log.retention.bytes",
               doc="The maximum size of a partition before old segments are deleted."),
            _d("retention.ms", _T.LONG, "604800000", "log.retention.ms",
               ("log.retention.minutes", _MINUTE), ("log.retention.hours", _HOUR),
               doc="How long a log segment is kept before it is deleted."),
            _d("segment.bytes", _T.INT, "1073741824", "log.segment.bytes",
               doc="The segment file size of the log."),
            _d("segment.index.bytes", _T.INT, "10485760", "log.index.size.max.bytes",
               doc="The size of the index that maps offsets to file positions."),
            _d("segment.jitter.ms", _T.LONG, "0", "log.roll.jitter.ms",
               ("log.roll.jitter.hours", _HOUR),
               doc="The maximum random jitter subtracted from segment.ms."),
            _d("segment.ms", _T.LONG, "604800000", "log.roll.ms", ("log.roll.hours", _HOUR),
               doc="The time after which a new segment is rolled."),
            _d("unclean.leader.election.enable", _T.BOOLEAN, "false",
               "unclean.leader.election.enable",
               doc="Allow replicas not in the ISR to be elected leader as a last resort."),
        )
    }
)  # fmt: skip

#: Dynamic broker configs that are topic defaults (Kafka's ``DynamicLogConfig``): the first
#: broker synonym of each topic config -> the topic config.
DYNAMIC_LOG_CONFIGS: Mapping[str, str] = MappingProxyType(
    {d.synonyms[0][0]: d.name for d in TOPIC_CONFIGS.values() if d.synonyms}
)

#: Broker configs whose type is LIST (APPEND / SUBTRACT apply to them).
_BROKER_LIST_CONFIGS = frozenset({"log.cleanup.policy", "log.dirs", "listeners"})
#: Broker keys pykbroker knows that BrokerConfig has no field for (non-dynamic in Kafka).
_EXTRA_STATIC_KEYS = frozenset(
    {"log.retention.hours", "log.retention.minutes", "log.roll.hours", "log.dir"}
)


@functools.cache
def broker_config_keys() -> frozenset[str]:
    """The broker config names pykbroker knows (``BrokerConfig``'s fields, Kafka-named)."""
    return (
        frozenset(
            f.name.replace("_", ".") for f in dataclasses.fields(BrokerConfig) if f.name != "extra"
        )
        | _EXTRA_STATIC_KEYS
    )


def dynamic_topic_defaults(image: MetadataImage, node_id: int) -> dict[str, str]:
    """The topic-level values the dynamic broker configs give: the cluster default (BROKER "")
    under this node's own (BROKER "<id>"), as Kafka's DYNAMIC_BROKER_CONFIG beats
    DYNAMIC_DEFAULT_BROKER_CONFIG."""
    values: dict[str, str] = {}
    for name in ("", str(node_id)):
        for key, value in image.configs.get((BROKER_RESOURCE, name), {}).items():
            topic_key = DYNAMIC_LOG_CONFIGS.get(key)
            if topic_key is not None:
                values[topic_key] = value
    return values


@dataclass(frozen=True, slots=True)
class AlterConfigOp:
    """One key of an alter request: the operation (legacy AlterConfigs: SET) and value."""

    name: str
    value: str | None
    op: int = OpType.SET


@dataclass(slots=True)
class AlterConfigsResource:
    resource_type: int
    resource_name: str
    configs: list[AlterConfigOp] = field(default_factory=list)


@dataclass(slots=True)
class AlterConfigsResult:
    resource_type: int
    resource_name: str
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


class _Invalid(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _parts(value: str | None) -> list[str]:
    return [p for p in (value or "").split(",") if p]


def _is_list(resource_type: int, key: str) -> bool:
    if resource_type == TOPIC_RESOURCE:
        d = TOPIC_CONFIGS.get(key)
        return d is not None and d.type == ConfigType.LIST
    return key in _BROKER_LIST_CONFIGS


def _default(resource_type: int, key: str) -> str | None:
    if resource_type == TOPIC_RESOURCE:
        d = TOPIC_CONFIGS.get(key)
        return d.default if d is not None else None
    topic_key = DYNAMIC_LOG_CONFIGS.get(key)
    return TOPIC_CONFIGS[topic_key].default if topic_key is not None else None


def preprocess(
    resources: Sequence[AlterConfigsResource], *, incremental: bool
) -> dict[int, AlterConfigsResult]:
    """Kafka's ``ConfigAdminManager.preprocess``: the request-shape errors (a resource named
    twice, duplicate keys, null values, unknown operations or resource types), by index."""
    errors: dict[int, AlterConfigsResult] = {}
    seen: dict[tuple[int, str], int] = {}
    for index, res in enumerate(resources):
        key = (res.resource_type, res.resource_name)
        if key in seen:
            for i in (seen[key], index):
                errors[i] = AlterConfigsResult(
                    res.resource_type,
                    res.resource_name,
                    ErrorCode.INVALID_REQUEST,
                    "Each resource must appear at most once.",
                )
        seen.setdefault(key, index)
    for index, res in enumerate(resources):
        if index in errors:
            continue
        problem: str | None = None
        names = [c.name for c in res.configs]
        nulls = [c.name for c in res.configs if c.value is None and c.op != OpType.DELETE]
        if len(set(names)) != len(names):
            problem = "Error due to duplicate config keys"
        elif nulls:
            problem = "Null value not supported for : " + ", ".join(nulls)
        elif any(c.op not in OpType.__members__.values() for c in res.configs):
            bad = next(c.op for c in res.configs if c.op not in OpType.__members__.values())
            problem = f"Unknown operations type {bad}"
        elif res.resource_type not in (TOPIC_RESOURCE, BROKER_RESOURCE) and not (
            incremental and res.resource_type == BROKER_LOGGER_RESOURCE
        ):
            problem = f"Unknown resource type {res.resource_type}"
        if problem is not None:
            errors[index] = AlterConfigsResult(
                res.resource_type, res.resource_name, ErrorCode.INVALID_REQUEST, problem
            )
    return errors


def check_topic_configs(topic: str, configs: Mapping[str, str]) -> None:
    """Kafka's ``ControllerConfigurationValidator`` for a TOPIC: a valid name, known keys,
    valid values (``_Invalid`` otherwise)."""
    if not topic:
        raise _Invalid(ErrorCode.INVALID_REQUEST, "Default topic resources are not allowed.")
    problem = validate_topic_name(topic)
    if problem:
        raise _Invalid(ErrorCode.INVALID_TOPIC_EXCEPTION, problem)
    for key in configs:
        if key not in TOPIC_CONFIG_KEYS:
            raise _Invalid(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {key}")
    _check_values(configs, ErrorCode.INVALID_CONFIG)


def _check_values(topic_configs: Mapping[str, str], code: ErrorCode) -> None:
    problem = check_replication_configs(topic_configs)
    if problem:
        raise _Invalid(code, problem)
    for key, value in topic_configs.items():
        d = TOPIC_CONFIGS.get(key)
        if d is None:
            continue
        text = value.strip()
        if d.type == ConfigType.BOOLEAN and text.lower() not in ("true", "false"):
            raise _Invalid(
                code,
                f"Invalid value {value} for configuration {key}: Expected value to be "
                "either true or false",
            )
        if d.type in (ConfigType.INT, ConfigType.LONG):
            try:
                int(text)
            except ValueError:
                raise _Invalid(
                    code,
                    f"Invalid value {value} for configuration {key}: Not a number of type "
                    f"{d.type.name}",
                ) from None
    try:
        LogConfig.from_properties(topic_configs)
    except KafkaError as exc:
        raise _Invalid(code, exc.message or f"invalid config {topic_configs}") from None


def check_broker_configs(name: str, configs: Mapping[str, str]) -> None:
    """Kafka's broker name check and ``DynamicBrokerConfig.validate``: configs pykbroker knows
    but cannot change at runtime, and invalid values, are INVALID_REQUEST (KAFKA-13609);
    unknown (custom) keys are accepted, as Kafka does."""
    if name:
        try:
            broker_id = int(name)
        except ValueError:
            raise _Invalid(
                ErrorCode.INVALID_REQUEST, "Unable to parse broker name as a base 10 number."
            ) from None
        if broker_id < 0:
            raise _Invalid(ErrorCode.INVALID_REQUEST, "Invalid negative broker ID.")
    static = sorted(
        k for k in configs if k in broker_config_keys() and k not in DYNAMIC_LOG_CONFIGS
    )
    if static:
        raise _Invalid(
            ErrorCode.INVALID_REQUEST,
            "Cannot update these configs dynamically: Set(" + ", ".join(static) + ")",
        )
    _check_values(
        {DYNAMIC_LOG_CONFIGS[k]: v for k, v in configs.items() if k in DYNAMIC_LOG_CONFIGS},
        ErrorCode.INVALID_REQUEST,
    )


class ConfigControl(ControllerBase):
    """IncrementalAlterConfigs and AlterConfigs on the controller."""

    async def incremental_alter_configs(
        self, resources: Sequence[AlterConfigsResource], validate_only: bool = False
    ) -> list[AlterConfigsResult]:
        """Apply SET / DELETE / APPEND / SUBTRACT per resource; one result per resource."""
        return await self._alter_configs(resources, validate_only, incremental=True)

    async def legacy_alter_configs(
        self, resources: Sequence[AlterConfigsResource], validate_only: bool = False
    ) -> list[AlterConfigsResult]:
        """Replace each resource's whole config set (AlterConfigs); one result per resource."""
        return await self._alter_configs(resources, validate_only, incremental=False)

    async def _alter_configs(
        self, resources: Sequence[AlterConfigsResource], validate_only: bool, *, incremental: bool
    ) -> list[AlterConfigsResult]:
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return await self._forward_alter_configs(
                resources, validate_only, incremental, deadline
            )
        errors = preprocess(resources, incremental=incremental)
        image = self._validation_image()
        results: list[AlterConfigsResult] = []
        records: list[MetadataRecord] = []
        for index, res in enumerate(resources):
            result = errors.get(index) or AlterConfigsResult(res.resource_type, res.resource_name)
            results.append(result)
            if result.error != ErrorCode.NO_ERROR:
                continue
            if res.resource_type == BROKER_LOGGER_RESOURCE:
                result.error = ErrorCode.INVALID_REQUEST
                result.message = "BROKER_LOGGER resources are handled by each broker"
                continue
            try:
                new_records = self._resource_records(res, image, incremental)
            except _Invalid as exc:
                result.error, result.message = exc.code, exc.message
                continue
            if not validate_only:
                records.extend(new_records)
        if records:
            await self._commit(records, deadline)
        return results

    def _resource_records(
        self, res: AlterConfigsResource, image: MetadataImage, incremental: bool
    ) -> list[MetadataRecord]:
        kind, name = res.resource_type, res.resource_name
        current = dict(image.configs.get((kind, name), {}))
        new = dict(current)
        if not incremental:
            new = {c.name: c.value for c in res.configs if c.value is not None}
        for op in res.configs if incremental else ():
            if op.op == OpType.SET:
                assert op.value is not None
                new[op.name] = op.value
            elif op.op == OpType.DELETE:
                new.pop(op.name, None)
            else:
                if not _is_list(kind, op.name):
                    raise _Invalid(
                        ErrorCode.INVALID_CONFIG,
                        f"Can't {OpType(op.op).name} to key {op.name} because its type is not "
                        "LIST.",
                    )
                values = _parts(new.get(op.name, _default(kind, op.name)))
                for part in (op.value or "").split(","):
                    if op.op == OpType.APPEND and part not in values:
                        values.append(part)
                    elif op.op == OpType.SUBTRACT and part in values:
                        values.remove(part)
                new[op.name] = ",".join(values)
        if kind == TOPIC_RESOURCE:
            check_topic_configs(name, new)
            if name not in image.topics:
                raise _Invalid(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist."
                )
        else:
            check_broker_configs(name, new)
        touched = {c.name for c in res.configs} | set(current)
        records = []
        for key in sorted(touched):
            value = new.get(key)
            # Kafka writes broker records even when unchanged, to make brokers reload (KAFKA-14136).
            if value != current.get(key) or (kind == BROKER_RESOURCE and key in new):
                records.append(
                    record(
                        schemas.CONFIG_RECORD,
                        resource_type=kind,
                        resource_name=name,
                        name=key,
                        value=value,
                    )
                )
        return records

    async def _forward_alter_configs(
        self,
        resources: Sequence[AlterConfigsResource],
        validate_only: bool,
        incremental: bool,
        deadline: float,
    ) -> list[AlterConfigsResult]:
        api_key, version = (
            (ApiKey.INCREMENTAL_ALTER_CONFIGS, 1) if incremental else (ApiKey.ALTER_CONFIGS, 2)
        )
        body = {
            "resources": [
                {
                    "resource_type": res.resource_type,
                    "resource_name": res.resource_name,
                    "configs": [
                        {"name": c.name, "value": c.value, "config_operation": c.op}
                        if incremental
                        else {"name": c.name, "value": c.value}
                        for c in res.configs
                    ],
                }
                for res in resources
            ],
            "validate_only": validate_only,
        }
        response = await self._forward(
            api_key, version, body, deadline, lambda r: [x["error_code"] for x in r["responses"]]
        )
        results = [
            AlterConfigsResult(
                r["resource_type"],
                r["resource_name"],
                ErrorCode(r["error_code"]),
                r["error_message"],
            )
            for r in response["responses"]
        ]
        if not validate_only:
            done = [
                res
                for res, result in zip(resources, results, strict=False)
                if result.error == ErrorCode.NO_ERROR
            ]
            # Read-your-writes: answer once this node's image shows every change.
            await self._await_image(
                lambda image: all(_shows(image, res, incremental) for res in done), deadline
            )
        return results


def _shows(image: MetadataImage, res: AlterConfigsResource, incremental: bool) -> bool:
    """Whether ``image`` reflects the (successful) alteration ``res``."""
    configs = image.configs.get((res.resource_type, res.resource_name), {})
    if not incremental:
        return dict(configs) == {c.name: c.value for c in res.configs if c.value is not None}
    checks: dict[int, Callable[[AlterConfigOp], bool]] = {
        OpType.SET: lambda c: configs.get(c.name) == c.value,
        OpType.DELETE: lambda c: c.name not in configs,
        OpType.APPEND: lambda c: set(_parts(c.value)) <= set(_parts(configs.get(c.name))),
        OpType.SUBTRACT: lambda c: not set(_parts(c.value)) & set(_parts(configs.get(c.name))),
    }
    return all(checks[c.op](c) for c in res.configs)
