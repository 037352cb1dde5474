"""ConsumerGroupHeartbeat as the pure core takes it: the request, its validation, its errors.

``ConsumerGroupHeartbeatRequest`` is version-independent (``api_version`` carries the v1
rule that the client names its member id, KIP-1082); ``validate_heartbeat`` is Kafka's
``throwIfConsumerGroupHeartbeatRequestIsInvalid`` and ``check_member_epoch`` its
``throwIfMemberEpochIsInvalid``. Failures are ``ApiError``s carrying Kafka's code and message.
Pure data and functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode

from .consumer_group import (
    JOIN_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
    Assignment,
    ConsumerGroupMember,
)
from .current_assignment import OwnedPartitions


class ApiError(Exception):
    """A request-level failure: the error code (and message) to answer with."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ConsumerGroupHeartbeatRequest:
    """A ConsumerGroupHeartbeat, version-independent (``api_version`` for the v1 rules)."""

    group_id: str
    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: Sequence[str] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    topic_partitions: OwnedPartitions | None = None
    client_id: str = ""
    client_host: str = ""
    api_version: int = 1


def heartbeat_error(code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {
        "error_code": code,
        "error_message": message,
        "member_id": None,
        "member_epoch": 0,
        "heartbeat_interval_ms": 0,
        "assignment": None,
    }


def response_assignment(assignment: Assignment) -> dict[str, Any]:
    return {
        "topic_partitions": [
            {"topic_id": topic_id, "partitions": sorted(partitions)}
            for topic_id, partitions in sorted(assignment.items(), key=lambda kv: str(kv[0]))
        ]
    }


def _blank(value: str | None) -> bool:
    return value is not None and not value.strip()


def _is_subset(owned: OwnedPartitions | None, assigned: Assignment) -> bool:
    if owned is None:
        return False
    for topic_id, partitions in owned:
        have = assigned.get(topic_id, frozenset())
        if any(p not in have for p in partitions):
            return False
    return True


def validate_heartbeat(request: ConsumerGroupHeartbeatRequest, assignors: Sequence[str]) -> None:
    """Kafka's ``throwIfConsumerGroupHeartbeatRequestIsInvalid``."""
    epoch = request.member_epoch
    if (request.api_version >= 1 or epoch > 0 or epoch == LEAVE_GROUP_MEMBER_EPOCH) and (
        not request.member_id.strip()
    ):
        raise ApiError(ErrorCode.INVALID_REQUEST, "MemberId can't be empty.")
    if not request.group_id.strip():
        raise ApiError(ErrorCode.INVALID_REQUEST, "GroupId can't be empty.")
    if _blank(request.instance_id):
        raise ApiError(ErrorCode.INVALID_REQUEST, "InstanceId can't be empty.")
    if _blank(request.rack_id):
        raise ApiError(ErrorCode.INVALID_REQUEST, "RackId can't be empty.")
    if epoch == JOIN_GROUP_MEMBER_EPOCH:
        if request.rebalance_timeout_ms == -1:
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                "RebalanceTimeoutMs must be provided in first request.",
            )
        if request.topic_partitions is None or request.topic_partitions:
            raise ApiError(
                ErrorCode.INVALID_REQUEST, "TopicPartitions must be empty when (re-)joining."
            )
        if request.subscribed_topic_names is None and request.subscribed_topic_regex is None:
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when "
                "(re-)joining.",
            )
    elif epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
        if request.instance_id is None:
            raise ApiError(ErrorCode.INVALID_REQUEST, "InstanceId can't be null.")
    elif epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH:
        raise ApiError(ErrorCode.INVALID_REQUEST, "MemberEpoch is invalid.")
    if request.subscribed_topic_regex:
        try:
            re.compile(request.subscribed_topic_regex)
        except re.error as exc:
            # Kafka answers INVALID_REGULAR_EXPRESSION, which this broker's codes lack.
            raise ApiError(
                ErrorCode.INVALID_REQUEST,
                f"SubscribedTopicRegex `{request.subscribed_topic_regex}` is not a valid "
                f"regular expression: {exc}.",
            ) from None
    assignor = request.server_assignor
    if assignor is not None and assignor not in assignors:
        raise ApiError(
            ErrorCode.UNSUPPORTED_ASSIGNOR,
            f"ServerAssignor {assignor} is not supported. Supported assignors: "
            f"{', '.join(assignors)}.",
        )


def check_member_epoch(
    member: ConsumerGroupMember, received: int, owned: OwnedPartitions | None
) -> None:
    """Kafka's ``throwIfMemberEpochIsInvalid``."""
    if received > member.member_epoch:
        raise ApiError(
            ErrorCode.FENCED_MEMBER_EPOCH,
            f"The consumer group member has a greater member epoch ({received}) than the "
            f"one known by the group coordinator ({member.member_epoch}). The member must "
            "abandon all its partitions and rejoin.",
        )
    if received < member.member_epoch and (
        received != member.previous_member_epoch
        or not _is_subset(owned, member.assigned_partitions)
    ):
        # The previous epoch with a subset of the assignment is fine: the response that
        # bumped the epoch may have been lost.
        raise ApiError(
            ErrorCode.FENCED_MEMBER_EPOCH,
            f"The consumer group member has a smaller member epoch ({received}) than the "
            f"one known by the group coordinator ({member.member_epoch}). The member must "
            "abandon all its partitions and rejoin.",
        )
