"""Group coordinator settings, Kafka's property names with dots turned into underscores.

Mirrors the classic-group part of Kafka's ``GroupCoordinatorConfig``. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Kafka's ``classicGroupNewMemberJoinTimeoutMs``: a new member that has not completed its
#: first JoinGroup within this time is removed (its session timeout does not apply yet).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class GroupCoordinatorConfig:
    """The settings the classic group coordinator reads."""

    offsets_topic_num_partitions: int = 50
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_max_size: int = 2**31 - 1
    offset_metadata_max_bytes: int = 4096
    new_member_join_timeout_ms: int = NEW_MEMBER_JOIN_TIMEOUT_MS

    def __post_init__(self) -> None:
        if self.offsets_topic_num_partitions < 1:
            raise ValueError("offsets.topic.num.partitions must be at least 1")
        if self.group_max_size < 1:
            raise ValueError("group.max.size must be at least 1")
