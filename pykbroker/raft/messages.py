"""The KRaft RPCs as plain dataclasses, and the envelope the state machine sends them in.

Mirrors the request/response data classes Kafka's ``KafkaRaftClient`` builds through
``RaftUtil`` (``singletonVoteRequest``, ``singletonFetchResponse``, ...): one partition
(``__cluster_metadata-0``) per message, so the dataclasses flatten Kafka's topics/partitions
nesting. ``wire.py`` converts them to and from the codec's dicts.

Invariant: a message is immutable and carries everything the receiver needs to decide; the
state machine never keeps references into a message it received (``records`` are bytes).
"Raft paper: term" is ``epoch`` here, as in KRaft.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import total_ordering

from pykbroker.api.protocol.errors import ErrorCode

from .voter_set import Endpoint, ReplicaKey

NO_LEADER = -1
NO_EPOCH = -1


@total_ordering
@dataclass(frozen=True, slots=True)
class OffsetAndEpoch:
    """Kafka's ``OffsetAndEpoch``: ordered by epoch first, then offset (as KRaft compares logs).

    Also a snapshot id: ``offset`` is then the snapshot's end offset (exclusive) and ``epoch``
    the epoch of the last record it contains.
    """

    offset: int
    epoch: int

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OffsetAndEpoch):
            return NotImplemented
        return (self.epoch, self.offset) < (other.epoch, other.offset)

    def __str__(self) -> str:
        return f"(offset={self.offset}, epoch={self.epoch})"


#: A snapshot is named by the offset and epoch it ends at (KIP-630).
SnapshotId = OffsetAndEpoch


@dataclass(frozen=True, slots=True)
class LeaderAndEpoch:
    """Kafka's ``LeaderAndEpoch``: who leads (``NO_LEADER`` when unknown) in which epoch."""

    leader_id: int
    epoch: int

    @property
    def has_leader(self) -> bool:
        return self.leader_id != NO_LEADER


# --- Vote (API 52) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """Ask for a vote in ``candidate_epoch``. With ``pre_vote`` (KIP-996) the sender is only a
    prospective candidate: ``candidate_epoch`` is its current epoch and no receiver changes state
    to grant it."""

    cluster_id: str | None
    candidate_epoch: int
    candidate_id: int
    last_offset_epoch: int
    last_offset: int
    pre_vote: bool = False
    voter_id: int = -1


@dataclass(frozen=True, slots=True)
class VoteResponse:
    error_code: ErrorCode
    leader_id: int
    leader_epoch: int
    vote_granted: bool = False


# --- BeginQuorumEpoch (API 53) / EndQuorumEpoch (API 54) --------------------------------------


@dataclass(frozen=True, slots=True)
class BeginQuorumEpochRequest:
    """Sent by a new leader to every voter: "I lead ``leader_epoch``"."""

    cluster_id: str | None
    leader_id: int
    leader_epoch: int
    voter_id: int = -1


@dataclass(frozen=True, slots=True)
class BeginQuorumEpochResponse:
    error_code: ErrorCode
    leader_id: int
    leader_epoch: int


@dataclass(frozen=True, slots=True)
class EndQuorumEpochRequest:
    """Sent by a resigning leader; ``preferred_successors`` are voters by descending fetch
    offset, the first of which should start an election at once."""

    cluster_id: str | None
    leader_id: int
    leader_epoch: int
    preferred_successors: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class EndQuorumEpochResponse:
    error_code: ErrorCode
    leader_id: int
    leader_epoch: int


# --- Fetch (API 1) / FetchSnapshot (API 59) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """A follower or observer pulls from ``fetch_offset``; ``last_fetched_epoch`` is the epoch of
    the record before it, which the leader checks against its own log (divergence)."""

    cluster_id: str | None
    replica_id: int
    fetch_offset: int
    last_fetched_epoch: int
    current_leader_epoch: int
    max_wait_ms: int = 0
    max_bytes: int = 8 * 1024 * 1024
    log_start_offset: int = -1
    #: KIP-853 (Fetch v17+): the fetching replica's metadata ``directory.id``.
    replica_directory_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """Records from ``fetch_offset``, or (instead) a ``diverging_epoch`` to truncate to, or a
    ``snapshot_id`` to download; ``high_watermark`` is -1 while the leader does not know it."""

    error_code: ErrorCode
    leader_id: int
    leader_epoch: int
    high_watermark: int = -1
    log_start_offset: int = -1
    records: bytes = b""
    diverging_epoch: OffsetAndEpoch | None = None
    snapshot_id: SnapshotId | None = None


@dataclass(frozen=True, slots=True)
class FetchSnapshotRequest:
    cluster_id: str | None
    replica_id: int
    current_leader_epoch: int
    snapshot_id: SnapshotId
    position: int
    max_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FetchSnapshotResponse:
    error_code: ErrorCode
    leader_id: int
    leader_epoch: int
    snapshot_id: SnapshotId = field(default_factory=lambda: SnapshotId(-1, -1))
    size: int = -1
    position: int = -1
    unaligned_records: bytes = b""


# --- AddRaftVoter (API 80) / RemoveRaftVoter (API 81) / UpdateRaftVoter (API 82), KIP-853 ------


@dataclass(frozen=True, slots=True)
class AddRaftVoterRequest:
    """Make the observer ``voter`` a voter; answered once the new VotersRecord commits."""

    cluster_id: str | None
    timeout_ms: int
    voter: ReplicaKey
    listeners: tuple[Endpoint, ...]

    @property
    def replica_id(self) -> int:
        """The sender: an admin client, not a replica (-1, Kafka's "no replica")."""
        return NO_LEADER


@dataclass(frozen=True, slots=True)
class AddRaftVoterResponse:
    error_code: ErrorCode
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class RemoveRaftVoterRequest:
    """Remove ``voter``; answered once the new VotersRecord commits."""

    cluster_id: str | None
    voter: ReplicaKey

    @property
    def replica_id(self) -> int:
        """The sender: an admin client, not a replica (-1, Kafka's "no replica")."""
        return NO_LEADER


@dataclass(frozen=True, slots=True)
class RemoveRaftVoterResponse:
    error_code: ErrorCode
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateRaftVoterRequest:
    """A voter tells the leader its listeners and supported kraft.version range."""

    cluster_id: str | None
    current_leader_epoch: int
    voter: ReplicaKey
    listeners: tuple[Endpoint, ...]
    min_supported_version: int = 0
    max_supported_version: int = 1

    @property
    def replica_id(self) -> int:
        """The sender: the voter itself."""
        return self.voter.id


@dataclass(frozen=True, slots=True)
class UpdateRaftVoterResponse:
    error_code: ErrorCode
    leader_id: int = NO_LEADER
    leader_epoch: int = NO_EPOCH


#: The KIP-853 RPCs a leader handles (AddRaftVoter/RemoveRaftVoter from an admin client,
#: UpdateRaftVoter from a voter).
VoterChangeRequest = AddRaftVoterRequest | RemoveRaftVoterRequest | UpdateRaftVoterRequest
VoterChangeResponse = AddRaftVoterResponse | RemoveRaftVoterResponse | UpdateRaftVoterResponse

RaftRequest = (
    VoteRequest
    | BeginQuorumEpochRequest
    | EndQuorumEpochRequest
    | FetchRequest
    | FetchSnapshotRequest
    | AddRaftVoterRequest
    | RemoveRaftVoterRequest
    | UpdateRaftVoterRequest
)
RaftResponse = (
    VoteResponse
    | BeginQuorumEpochResponse
    | EndQuorumEpochResponse
    | FetchResponse
    | FetchSnapshotResponse
    | AddRaftVoterResponse
    | RemoveRaftVoterResponse
    | UpdateRaftVoterResponse
)
REQUEST_TYPES = (
    VoteRequest,
    BeginQuorumEpochRequest,
    EndQuorumEpochRequest,
    FetchRequest,
    FetchSnapshotRequest,
    AddRaftVoterRequest,
    RemoveRaftVoterRequest,
    UpdateRaftVoterRequest,
)


@dataclass(frozen=True, slots=True)
class RaftMessage:
    """One request or response between two nodes.

    A request's ``correlation_id`` is chosen by its sender; the response to it carries the same
    id back (``destination`` = the requester). The driver maps these ids onto the connection's
    own correlation ids; a response the state machine no longer expects is ignored. Ids restart
    with each ``RaftReplica``, so a response must travel back on the connection its request
    came from and never reach a restarted requester (TCP gives that for free).
    """

    source: int
    destination: int
    correlation_id: int
    body: RaftRequest | RaftResponse

    @property
    def is_request(self) -> bool:
        return isinstance(self.body, REQUEST_TYPES)
