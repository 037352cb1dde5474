"""The classic group requests as the pure core takes them, and its response shapes.

``JoinGroupRequest`` / ``SyncGroupRequest`` are version-independent (the driver applies the
per-version rules: v0 rebalance timeout, v4 member id required, v9 skip assignment); the
responses are dicts with the protocol's snake_case field names, shaped like Kafka's
``JoinGroupResponseData`` / ``SyncGroupResponseData`` before the per-version fix-ups. Also
Kafka's mapping of append failures to response errors. Pure data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode

from .member import EMPTY_ASSIGNMENT, Protocol


@dataclass(frozen=True, slots=True)
class JoinGroupRequest:
    """A JoinGroup, version-independent (the driver fills version-dependent defaults)."""

    group_id: str
    member_id: str
    group_instance_id: str | None
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[Protocol]
    client_id: str = ""
    client_host: str = ""
    require_known_member_id: bool = True  # JoinGroup v4+ (KIP-394)
    supports_skip_assignment: bool = True  # JoinGroup v9+ (KIP-814)


@dataclass(frozen=True, slots=True)
class SyncGroupRequest:
    """A SyncGroup; ``assignments`` is only meaningful from the leader."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignments: Sequence[tuple[str, bytes]] = ()


def append_error_to_response_error(error: ErrorCode) -> ErrorCode:
    """Kafka's ``appendGroupMetadataErrorToResponseError``."""
    if error in (
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.REQUEST_TIMED_OUT,
    ):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if error in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR):
        return ErrorCode.NOT_COORDINATOR
    if error in (
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.RECORD_LIST_TOO_LARGE,
        ErrorCode.INVALID_FETCH_SIZE,
    ):
        return ErrorCode.UNKNOWN_SERVER_ERROR
    return error


def join_error(member_id: str, error: ErrorCode) -> dict[str, Any]:
    return {
        "error_code": error,
        "generation_id": -1,
        "protocol_type": None,
        "protocol_name": None,
        "leader": "",
        "skip_assignment": False,
        "member_id": member_id,
        "members": [],
    }


def sync_error(error: ErrorCode) -> dict[str, Any]:
    return {
        "error_code": error,
        "protocol_type": None,
        "protocol_name": None,
        "assignment": EMPTY_ASSIGNMENT,
    }
