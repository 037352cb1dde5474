"""A member of a classic consumer group (Kafka's ``ClassicGroupMember``).

A member is identified by ``member_id`` (``{client_id}-{uuid}``, or ``{group_instance_id}-{uuid}``
for a static member, KIP-345), supports a list of protocols in preference order, each with
its metadata bytes, and holds its assignment once SyncGroup completed. While a JoinGroup or a
SyncGroup of the member is parked its future is held here. Invariant: a member is "new" from
its first JoinGroup until that join completes; a new member is removed after
``NEW_MEMBER_JOIN_TIMEOUT_MS`` instead of its session timeout. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .result import ResponseFuture

Protocol = tuple[str, bytes]
"""A supported protocol: its name (the assignor, for consumers) and its metadata bytes."""

EMPTY_ASSIGNMENT = b""


@dataclass(eq=False, slots=True)
class ClassicGroupMember:
    """One member of a classic group."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    supported_protocols: list[Protocol]
    assignment: bytes = EMPTY_ASSIGNMENT
    awaiting_join: ResponseFuture | None = None
    awaiting_sync: ResponseFuture | None = None
    is_new: bool = False

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def is_awaiting_join(self) -> bool:
        return self.awaiting_join is not None

    @property
    def is_awaiting_sync(self) -> bool:
        return self.awaiting_sync is not None

    def has_satisfied_heartbeat(self) -> bool:
        """Whether an expired heartbeat timer may be ignored (Kafka's rule)."""
        if self.is_new:
            # New members can be expired even while awaiting join.
            return False
        # Members that are awaiting a rebalance automatically satisfy expected heartbeats.
        return self.is_awaiting_join or self.is_awaiting_sync

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.supported_protocols]

    def matches(self, protocols: Sequence[Protocol]) -> bool:
        """Same protocols, same order, same metadata bytes."""
        return list(protocols) == self.supported_protocols

    def metadata(self, protocol_name: str) -> bytes:
        for name, metadata in self.supported_protocols:
            if name == protocol_name:
                return metadata
        raise KeyError(f"member {self.member_id} does not support protocol {protocol_name}")

    def vote(self, candidates: Collection[str]) -> str:
        """The member's most preferred protocol among ``candidates``."""
        for name, _ in self.supported_protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} does not support any of {sorted(candidates)}")
