"""Group coordinator settings, Kafka's property names with dots turned into underscores.

Mirrors Kafka's ``GroupCoordinatorConfig``: the classic-group settings, the KIP-848
consumer-group settings (``group.consumer.*``) and offset retention. Pure data;
``settings_from_properties`` reads the Kafka property names from a ``server.properties``
mapping (the keys the broker config does not know itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Kafka's ``classicGroupNewMemberJoinTimeoutMs``: a new member that has not completed its
#: first JoinGroup within this time is removed (its session timeout does not apply yet).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000

UNIFORM_ASSIGNOR = "uniform"
RANGE_ASSIGNOR = "range"
#: The server-side assignors this coordinator has, by name (Kafka's built-in ones).
BUILTIN_ASSIGNORS = (UNIFORM_ASSIGNOR, RANGE_ASSIGNOR)
_ASSIGNOR_CLASSES = {
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": UNIFORM_ASSIGNOR,
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": RANGE_ASSIGNOR,
    "org.apache.kafka.coordinator.group.api.assignor.UniformAssignor": UNIFORM_ASSIGNOR,
    "org.apache.kafka.coordinator.group.api.assignor.RangeAssignor": RANGE_ASSIGNOR,
}


@dataclass(frozen=True, slots=True)
class GroupCoordinatorConfig:
    """The settings the group coordinator reads (Kafka's defaults)."""

    offsets_topic_num_partitions: int = 50
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_max_size: int = 2**31 - 1
    offset_metadata_max_bytes: int = 4096
    new_member_join_timeout_ms: int = NEW_MEMBER_JOIN_TIMEOUT_MS
    offsets_retention_minutes: int = 7 * 24 * 60
    offsets_retention_check_interval_ms: int = 600_000
    group_consumer_session_timeout_ms: int = 45_000
    group_consumer_heartbeat_interval_ms: int = 5_000
    group_consumer_max_size: int = 2**31 - 1
    group_consumer_assignors: tuple[str, ...] = BUILTIN_ASSIGNORS

    def __post_init__(self) -> None:
        if self.offsets_topic_num_partitions < 1:
            raise ValueError("offsets.topic.num.partitions must be at least 1")
        if self.group_max_size < 1:
            raise ValueError("group.max.size must be at least 1")
        if self.group_consumer_max_size < 1:
            raise ValueError("group.consumer.max.size must be at least 1")
        if self.offsets_retention_minutes < 1:
            raise ValueError("offsets.retention.minutes must be at least 1")
        if self.offsets_retention_check_interval_ms < 1:
            raise ValueError("offsets.retention.check.interval.ms must be at least 1")
        if self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms:
            # Kafka's GroupCoordinatorConfig requires the same.
            raise ValueError(
                "group.consumer.heartbeat.interval.ms must be less than "
                "group.consumer.session.timeout.ms"
            )
        if not self.group_consumer_assignors:
            raise ValueError("group.consumer.assignors must name at least one assignor")
        unknown = [a for a in self.group_consumer_assignors if a not in BUILTIN_ASSIGNORS]
        if unknown:
            raise ValueError(f"group.consumer.assignors: unknown assignors {unknown}")

    @property
    def offsets_retention_ms(self) -> int:
        return self.offsets_retention_minutes * 60_000

    @property
    def default_consumer_assignor(self) -> str:
        """The first configured assignor is the default (as Kafka)."""
        return self.group_consumer_assignors[0]


def assignor_name(value: str) -> str:
    """``uniform`` / ``range``, or Kafka's class name of either, as the assignor's name."""
    value = value.strip()
    return _ASSIGNOR_CLASSES.get(value, value)


def _int(key: str, text: str, low: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{key}: not an integer: {text!r}") from None
    if value < low:
        raise ValueError(f"{key}: must be at least {low}, got {value}")
    return value


#: Kafka property -> (GroupCoordinator keyword, minimum), for the integer settings read here.
_INT_SETTINGS = {
    "offsets.retention.minutes": ("offsets_retention_minutes", 1),
    "offsets.retention.check.interval.ms": ("offsets_retention_check_interval_ms", 1),
    "group.consumer.session.timeout.ms": ("group_consumer_session_timeout_ms", 1),
    "group.consumer.heartbeat.interval.ms": ("group_consumer_heartbeat_interval_ms", 1),
    "group.consumer.max.size": ("group_consumer_max_size", 1),
}

#: The Kafka property names ``settings_from_properties`` understands.
PROPERTY_NAMES = frozenset({*_INT_SETTINGS, "group.consumer.assignors"})


def settings_from_properties(properties: Mapping[str, str]) -> dict[str, Any]:
    """Keyword settings for ``GroupCoordinatorConfig`` from Kafka property names.

    Reads ``offsets.retention.minutes``, ``offsets.retention.check.interval.ms``,
    ``group.consumer.session.timeout.ms``, ``group.consumer.heartbeat.interval.ms``,
    ``group.consumer.max.size`` and ``group.consumer.assignors`` (a comma-separated list of
    ``uniform``/``range`` or Kafka's assignor class names); other keys are ignored. Raises
    ``ValueError`` for a malformed value.
    """
    settings: dict[str, Any] = {}
    for key, (name, low) in _INT_SETTINGS.items():
        if key in properties:
            settings[name] = _int(key, properties[key], low)
    if "group.consumer.assignors" in properties:
        names = [
            assignor_name(a) for a in properties["group.consumer.assignors"].split(",") if a.strip()
        ]
        settings["group_consumer_assignors"] = tuple(names)
    return settings
