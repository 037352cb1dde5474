"""Per-log (topic-level) storage settings, after Kafka's ``LogConfig``.

Mirrors ``org.apache.kafka.storage.internals.log.LogConfig``: the topic configs that
shape a partition's log (``segment.bytes``, ``retention.ms``, ``max.message.bytes``,
``cleanup.policy``, ``min.cleanable.dirty.ratio``, ``compression.type``,
``message.timestamp.after.max.ms``, ``flush.messages``, ...), with Kafka 4's defaults,
and their broker-level defaults (``log.segment.bytes``, ``log.retention.hours``,
``message.max.bytes``, ``log.cleaner.delete.retention.ms``, ...).

Invariant: a ``LogConfig`` is immutable and every field has passed Kafka's range
check; a bad value is ``KafkaError(INVALID_CONFIG)`` (what CreateTopics and
AlterConfigs answer). Unknown keys are ignored: they belong to other components.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.compression import CompressionType

__all__ = ["LogConfig"]

MAX_LONG = 2**63 - 1
MAX_INT = 2**31 - 1

CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"

# topic key -> field name
_TOPIC_KEYS = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "segment.index.bytes": "segment_index_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_message_bytes",
    "message.timestamp.type": "message_timestamp_type",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "cleanup.policy": "cleanup_policy",
    "flush.messages": "flush_messages",
    "flush.ms": "flush_ms",
    "compression.type": "compression_type",
    "min.cleanable.dirty.ratio": "min_cleanable_dirty_ratio",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
    "max.compaction.lag.ms": "max_compaction_lag_ms",
    "delete.retention.ms": "delete_retention_ms",
    "message.timestamp.before.max.ms": "message_timestamp_before_max_ms",
    "message.timestamp.after.max.ms": "message_timestamp_after_max_ms",
}

# broker key -> (field name, multiplier to the field's unit); later keys win, as in
# Kafka where log.retention.ms beats log.retention.minutes beats log.retention.hours.
_BROKER_KEYS: list[tuple[str, str, int]] = [
    ("log.segment.bytes", "segment_bytes", 1),
    ("log.roll.hours", "segment_ms", 3_600_000),
    ("log.roll.ms", "segment_ms", 1),
    ("log.index.size.max.bytes", "segment_index_bytes", 1),
    ("log.index.interval.bytes", "index_interval_bytes", 1),
    ("message.max.bytes", "max_message_bytes", 1),
    ("log.message.timestamp.type", "message_timestamp_type", 0),
    ("log.retention.hours", "retention_ms", 3_600_000),
    ("log.retention.minutes", "retention_ms", 60_000),
    ("log.retention.ms", "retention_ms", 1),
    ("log.retention.bytes", "retention_bytes", 1),
    ("log.cleanup.policy", "cleanup_policy", 0),
    ("log.flush.interval.messages", "flush_messages", 1),
    ("log.flush.interval.ms", "flush_ms", 1),
    ("compression.type", "compression_type", 0),
    ("log.cleaner.min.cleanable.ratio", "min_cleanable_dirty_ratio", 0),
    ("log.cleaner.min.compaction.lag.ms", "min_compaction_lag_ms", 1),
    ("log.cleaner.max.compaction.lag.ms", "max_compaction_lag_ms", 1),
    ("log.cleaner.delete.retention.ms", "delete_retention_ms", 1),
    ("log.message.timestamp.before.max.ms", "message_timestamp_before_max_ms", 1),
    ("log.message.timestamp.after.max.ms", "message_timestamp_after_max_ms", 1),
]

#: ``compression.type`` values: a codec name, or ``producer`` (keep the client's codec).
COMPRESSION_TYPES = ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")
_STRING_FIELDS = ("message_timestamp_type", "cleanup_policy", "compression_type")


def _at_least(minimum: int, maximum: int = MAX_LONG) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and minimum <= value <= maximum


def _valid_policy(value: Any) -> bool:
    parts = [p.strip() for p in str(value).split(",")]
    return bool(parts) and all(p in ("delete", "compact") for p in parts)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "segment_bytes": _at_least(14, MAX_INT),
    "segment_ms": _at_least(1),
    "segment_index_bytes": _at_least(4, MAX_INT),
    "index_interval_bytes": _at_least(0, MAX_INT),
    "max_message_bytes": _at_least(0, MAX_INT),
    "message_timestamp_type": lambda v: v in (CREATE_TIME, LOG_APPEND_TIME),
    "retention_ms": _at_least(-1),
    "retention_bytes": _at_least(-(2**63)),
    "cleanup_policy": _valid_policy,
    "flush_messages": _at_least(1),
    "flush_ms": _at_least(0),
    "compression_type": lambda v: v in COMPRESSION_TYPES,
    "min_cleanable_dirty_ratio": lambda v: isinstance(v, int | float) and 0 <= v <= 1,
    "min_compaction_lag_ms": _at_least(0),
    "max_compaction_lag_ms": _at_least(1),
    "delete_retention_ms": _at_least(0),
    "message_timestamp_before_max_ms": _at_least(0),
    "message_timestamp_after_max_ms": _at_least(0),
}


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Kafka's topic-level log settings with Kafka's defaults."""

    segment_bytes: int = 1073741824
    segment_ms: int = 604800000
    segment_index_bytes: int = 10485760
    index_interval_bytes: int = 4096
    max_message_bytes: int = 1048588
    message_timestamp_type: str = CREATE_TIME
    retention_ms: int = 604800000
    retention_bytes: int = -1
    cleanup_policy: str = "delete"
    flush_messages: int = MAX_LONG
    flush_ms: int = MAX_LONG
    compression_type: str = "producer"
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = MAX_LONG
    delete_retention_ms: int = 86_400_000
    message_timestamp_before_max_ms: int = MAX_LONG
    message_timestamp_after_max_ms: int = 3_600_000  # Kafka 4.0's default (KIP-1030)
    # derived once (the append path reads them for every batch)
    _policies: frozenset[str] = field(init=False, repr=False, compare=False)
    _target: CompressionType | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not _CHECKS[f.name](value):
                key = next(k for k, v in _TOPIC_KEYS.items() if v == f.name)
                raise KafkaError(ErrorCode.INVALID_CONFIG, f"invalid value {value!r} for {key}")
        policies = frozenset(p.strip() for p in self.cleanup_policy.split(","))
        object.__setattr__(self, "_policies", policies)
        target = None
        if self.compression_type == "uncompressed":
            target = CompressionType.NONE
        elif self.compression_type != "producer":
            target = CompressionType[self.compression_type.upper()]
        object.__setattr__(self, "_target", target)

    @property
    def is_log_append_time(self) -> bool:
        return self.message_timestamp_type == LOG_APPEND_TIME

    @property
    def delete_enabled(self) -> bool:
        return "delete" in self._policies

    @property
    def compact_enabled(self) -> bool:
        return "compact" in self._policies

    @property
    def target_compression(self) -> CompressionType | None:
        """The codec batches are stored with, or None to keep the producer's."""
        return self._target

    @classmethod
    def from_properties(
        cls, properties: Mapping[str, str], defaults: LogConfig | None = None
    ) -> LogConfig:
        """Topic-level keys (``segment.bytes``, ``retention.ms``, ...) over ``defaults``."""
        changes: dict[str, Any] = {}
        for key, name in _TOPIC_KEYS.items():
            if key in properties:
                changes[name] = _parse(key, name, properties[key], 1)
        return replace(defaults if defaults is not None else cls(), **changes)

    @classmethod
    def from_broker_properties(cls, properties: Mapping[str, str]) -> LogConfig:
        """Broker defaults from ``server.properties`` keys (``log.segment.bytes``, ...)."""
        changes: dict[str, Any] = {}
        for key, name, unit in _BROKER_KEYS:
            if key in properties:
                changes[name] = _parse(key, name, properties[key], unit)
        return cls(**changes)

    def to_properties(self) -> dict[str, str]:
        """The topic-level keys and values (DescribeConfigs)."""
        return {key: str(getattr(self, name)) for key, name in _TOPIC_KEYS.items()}


def _parse(key: str, name: str, raw: str, unit: int) -> int | float | str:
    raw = str(raw).strip()
    if name in _STRING_FIELDS:
        return raw.lower() if name == "compression_type" else raw
    try:
        if name == "min_cleanable_dirty_ratio":
            return float(raw)
        value = int(raw)
    except ValueError:
        raise KafkaError(ErrorCode.INVALID_CONFIG, f"invalid value {raw!r} for {key}") from None
    if name == "retention_ms" and (value == -1 or (value < 0 and key.startswith("log."))):
        return -1  # broker keys: any negative retention is unlimited, as Kafka
    return min(value * unit, MAX_LONG) if value > 0 else value * unit
