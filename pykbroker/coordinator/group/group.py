"""A classic consumer group and its state (Kafka's ``ClassicGroup`` and ``ClassicGroupState``).

States and the transitions Kafka allows::

    EMPTY ──join──▶ PREPARING_REBALANCE ──all joined──▶ COMPLETING_REBALANCE ──leader sync──▶ STABLE
      ▲                 ▲     │                              │                                │
      └── last member ──┘     └──────────── member change / rejoin ◀─────────────────────────┘
    any state ──delete──▶ DEAD

Invariants: ``num_members_awaiting_join`` counts the members whose JoinGroup is parked;
``supported_protocols`` counts, per protocol name, the members that support it; the leader
is a member (or None when the group has no member); a static member's instance id maps to
exactly one member id. Pure: no clock (timestamps come in), no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from enum import Enum
from typing import Any

from pykbroker.api.protocol.codec import CodecError, decode
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.api.protocol.messages.consumer_protocol import CONSUMER_PROTOCOL_SUBSCRIPTION

from .member import ClassicGroupMember, Protocol
from .result import ResponseFuture

CONSUMER_PROTOCOL_TYPE = "consumer"


def decode_subscription(metadata: bytes) -> list[str]:
    """The topics of a ``ConsumerProtocolSubscription`` (int16 version, then the struct).

    Versions newer than the declaration are read as its newest (fields are only appended).
    Raises ``CodecError`` for bytes that do not decode.
    """
    if len(metadata) < 2:
        raise CodecError("subscription shorter than its version")
    version = int.from_bytes(metadata[:2], "big", signed=True)
    if version < 0:
        raise CodecError(f"bad subscription version {version}")
    version = min(version, CONSUMER_PROTOCOL_SUBSCRIPTION.valid.high)
    return list(decode(CONSUMER_PROTOCOL_SUBSCRIPTION, version, metadata[2:])["topics"])


class ClassicGroupState(Enum):
    """Kafka's classic group states; the values are Kafka's display names (ListGroups)."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


EMPTY = ClassicGroupState.EMPTY
PREPARING_REBALANCE = ClassicGroupState.PREPARING_REBALANCE
COMPLETING_REBALANCE = ClassicGroupState.COMPLETING_REBALANCE
STABLE = ClassicGroupState.STABLE
DEAD = ClassicGroupState.DEAD

_VALID_PREVIOUS: dict[ClassicGroupState, frozenset[ClassicGroupState]] = {
    EMPTY: frozenset({PREPARING_REBALANCE}),
    PREPARING_REBALANCE: frozenset({STABLE, COMPLETING_REBALANCE, EMPTY}),
    COMPLETING_REBALANCE: frozenset({PREPARING_REBALANCE}),
    STABLE: frozenset({COMPLETING_REBALANCE}),
    DEAD: frozenset({STABLE, PREPARING_REBALANCE, COMPLETING_REBALANCE, EMPTY, DEAD}),
}


class GroupError(Exception):
    """A member validation failure, carrying the Kafka error code to answer with."""

    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code


class ClassicGroup:
    """A classic (JoinGroup/SyncGroup) group."""

    def __init__(
        self,
        group_id: str,
        *,
        state: ClassicGroupState = EMPTY,
        now_ms: int = -1,
        generation_id: int = 0,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
        leader_id: str | None = None,
    ) -> None:
        self.group_id = group_id
        self.state = state
        self.previous_state = state
        self.state_timestamp_ms = now_ms
        self.generation_id = generation_id
        self.protocol_type = protocol_type
        self.protocol_name = protocol_name
        self.leader_id = leader_id
        self.members: dict[str, ClassicGroupMember] = {}
        self.static_members: dict[str, str] = {}
        self.pending_join_members: set[str] = set()
        self.pending_sync_members: set[str] = set()
        self.num_members_awaiting_join = 0
        self.supported_protocols: Counter[str] = Counter()
        self.new_member_added = False

    def __repr__(self) -> str:
        return (
            f"ClassicGroup({self.group_id!r}, {self.state.value}, generation={self.generation_id}, "
            f"members={list(self.members)})"
        )

    # -- state -------------------------------------------------------------------------

    def is_in_state(self, state: ClassicGroupState) -> bool:
        return self.state is state

    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[PREPARING_REBALANCE]

    def transition_to(self, state: ClassicGroupState, now_ms: int) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise AssertionError(
                f"group {self.group_id}: illegal transition {self.state.value} -> {state.value}"
            )
        self.previous_state = self.state
        self.state = state
        self.state_timestamp_ms = now_ms

    # -- members -----------------------------------------------------------------------

    def has_member(self, member_id: str) -> bool:
        return member_id in self.members

    def member(self, member_id: str) -> ClassicGroupMember:
        return self.members[member_id]

    def size(self) -> int:
        return len(self.members)

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def static_member_id(self, group_instance_id: str | None) -> str | None:
        if group_instance_id is None:
            return None
        return self.static_members.get(group_instance_id)

    def has_static_member(self, group_instance_id: str | None) -> bool:
        return group_instance_id is not None and group_instance_id in self.static_members

    def generate_member_id(
        self, client_id: str, group_instance_id: str | None, new_uuid: Callable[[], Any]
    ) -> str:
        """``{group_instance_id}-{uuid}`` for a static member, else ``{client_id}-{uuid}``."""
        prefix = group_instance_id if group_instance_id is not None else client_id
        return f"{prefix}-{new_uuid()}"

    def add(self, member: ClassicGroupMember, future: ResponseFuture | None = None) -> None:
        if member.group_instance_id is not None:
            if member.group_instance_id in self.static_members:
                raise AssertionError(f"static member {member.group_instance_id} already present")
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        self.supported_protocols.update(member.protocol_names())
        member.awaiting_join = future
        if future is not None:
            self.num_members_awaiting_join += 1
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.pending_join_members.discard(member.member_id)

    def remove(self, member_id: str) -> None:
        removed = self.members.pop(member_id, None)
        if removed is not None:
            self.supported_protocols.subtract(removed.protocol_names())
            self.supported_protocols += Counter()  # drop zero counts
            if removed.is_awaiting_join:
                self.num_members_awaiting_join -= 1
            if removed.group_instance_id is not None:
                self.static_members.pop(removed.group_instance_id, None)
        if self.is_leader(member_id):
            self.leader_id = next(iter(self.members), None)
        self.pending_join_members.discard(member_id)
        self.pending_sync_members.discard(member_id)

    def update_member(
        self,
        member: ClassicGroupMember,
        protocols: list[Protocol],
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        future: ResponseFuture | None,
    ) -> None:
        self.supported_protocols.subtract(member.protocol_names())
        member.supported_protocols = list(protocols)
        self.supported_protocols.update(member.protocol_names())
        self.supported_protocols += Counter()
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        if future is not None and not member.is_awaiting_join:
            self.num_members_awaiting_join += 1
        elif future is None and member.is_awaiting_join:
            self.num_members_awaiting_join -= 1
        elif future is not None and member.awaiting_join is not None:
            # A second JoinGroup while one is parked: answer the first so it is not left hanging
            # (Kafka silently drops it); the client treats this as "rejoin".
            member.awaiting_join.complete(
                {"error_code": ErrorCode.REBALANCE_IN_PROGRESS, "member_id": member.member_id}
            )
        member.awaiting_join = future

    def replace_static_member(
        self, group_instance_id: str, old_member_id: str, new_member_id: str
    ) -> ClassicGroupMember:
        member = self.members.pop(old_member_id)
        # Fence a potential duplicate member at once if it awaits a join or sync response.
        self.complete_join_future(
            member, {"error_code": ErrorCode.FENCED_INSTANCE_ID, "member_id": old_member_id}
        )
        self.complete_sync_future(member, {"error_code": ErrorCode.FENCED_INSTANCE_ID})
        member.member_id = new_member_id
        self.members[new_member_id] = member
        if self.is_leader(old_member_id):
            self.leader_id = new_member_id
        self.static_members[group_instance_id] = new_member_id
        if old_member_id in self.pending_sync_members:
            self.pending_sync_members.discard(old_member_id)
            self.pending_sync_members.add(new_member_id)
        return member

    def add_pending_member(self, member_id: str) -> None:
        self.pending_join_members.add(member_id)

    def is_pending_member(self, member_id: str) -> bool:
        return member_id in self.pending_join_members

    def all_members(self) -> list[ClassicGroupMember]:
        return list(self.members.values())

    def not_yet_rejoined_members(self) -> list[ClassicGroupMember]:
        return [m for m in self.members.values() if not m.is_awaiting_join]

    def has_all_members_joined(self) -> bool:
        return len(self.members) == self.num_members_awaiting_join and not self.pending_join_members

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def maybe_elect_new_joined_leader(self) -> bool:
        """Make a member that rejoined the leader if the leader did not rejoin."""
        if self.leader_id is None:
            return False
        leader = self.members.get(self.leader_id)
        if leader is not None and leader.is_awaiting_join:
            return True
        for member in self.members.values():
            if member.is_awaiting_join:
                self.leader_id = member.member_id
                return True
        return False

    def complete_join_future(self, member: ClassicGroupMember, response: dict[str, Any]) -> bool:
        if member.awaiting_join is None:
            return False
        future, member.awaiting_join = member.awaiting_join, None
        self.num_members_awaiting_join -= 1
        return future.complete(response)

    def complete_sync_future(self, member: ClassicGroupMember, response: dict[str, Any]) -> bool:
        if member.awaiting_sync is None:
            return False
        future, member.awaiting_sync = member.awaiting_sync, None
        return future.complete(response)

    # -- protocols ---------------------------------------------------------------------

    def supports_protocols(self, protocol_type: str, protocol_names: Collection[str]) -> bool:
        if self.is_in_state(EMPTY):
            return bool(protocol_type) and bool(protocol_names)
        return self.protocol_type == protocol_type and any(
            self.supported_protocols[name] == len(self.members) for name in protocol_names
        )

    def candidate_protocols(self) -> set[str]:
        size = len(self.members)
        return {name for name, count in self.supported_protocols.items() if count == size}

    def select_protocol(self) -> str:
        """The protocol every member supports that most members prefer.

        Kafka counts one vote per member in a HashMap and takes a maximum; ties are broken
        here by the order in which the votes were first cast (the members' join order).
        """
        if not self.members:
            raise AssertionError("cannot select a protocol for an empty group")
        candidates = self.candidate_protocols()
        votes: Counter[str] = Counter(m.vote(candidates) for m in self.members.values())
        return max(votes, key=lambda name: votes[name])  # first maximal in insertion order

    def init_next_generation(self, now_ms: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.transition_to(COMPLETING_REBALANCE, now_ms)
        else:
            self.protocol_name = None
            self.transition_to(EMPTY, now_ms)
        self.pending_sync_members.clear()

    def current_members_for_leader(self) -> list[dict[str, Any]]:
        """The JoinGroup response's ``members``: each member's metadata for the protocol."""
        assert self.protocol_name is not None
        return [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": m.metadata(self.protocol_name),
            }
            for m in self.members.values()
        ]

    def group_assignment(self) -> dict[str, bytes]:
        return {m.member_id: m.assignment for m in self.members.values()}

    def uses_consumer_protocol(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    def subscribed_topics(self) -> frozenset[str] | None:
        """The topics the members subscribe to, or None when unknown (Kafka's
        ``computeSubscribedTopics``): only for protocol type "consumer", decoded from each
        member's ``ConsumerProtocolSubscription`` for the selected protocol."""
        if not self.uses_consumer_protocol():
            return None
        if not self.members:
            return frozenset()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        try:
            for member in self.members.values():
                topics.update(decode_subscription(member.metadata(self.protocol_name)))
        except (KeyError, CodecError):
            return None
        return frozenset(topics)

    def is_subscribed_to_topic(self, topic: str) -> bool:
        subscribed = self.subscribed_topics()
        return subscribed is not None and topic in subscribed

    # -- validation --------------------------------------------------------------------

    def validate_member(self, member_id: str, group_instance_id: str | None) -> None:
        """The member id (and, if given, its instance id) belong to this group.

        Raises GroupError(UNKNOWN_MEMBER_ID) or GroupError(FENCED_INSTANCE_ID).
        """
        if group_instance_id is not None:
            existing = self.static_members.get(group_instance_id)
            if existing is None:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
            if existing != member_id:
                raise GroupError(ErrorCode.FENCED_INSTANCE_ID)
        elif member_id not in self.members:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)

    def validate_offset_commit(
        self,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        *,
        is_transactional: bool = False,
    ) -> None:
        """Kafka's ``ClassicGroup.validateOffsetCommit``; a transactional commit
        (TxnOffsetCommit) needs no member id and generation, and may come mid-rebalance."""
        if self.is_in_state(DEAD):
            raise GroupError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if generation_id < 0 and self.is_in_state(EMPTY):
            # A simple consumer (or the admin client): allowed while the group is empty.
            return
        if generation_id >= 0 or member_id or group_instance_id is not None:
            self.validate_member(member_id, group_instance_id)
            if generation_id != self.generation_id:
                raise GroupError(ErrorCode.ILLEGAL_GENERATION)
        elif not is_transactional and not self.is_in_state(EMPTY):
            # No member id and no generation: commits are only accepted from an empty group.
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
        if not is_transactional and self.is_in_state(COMPLETING_REBALANCE):
            # The member has the new generation but not its assignment yet.
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS)
