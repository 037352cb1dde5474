"""Pieces of the raft simulation: its timeouts, statistics, node record and the application
state (committed values) it snapshots. See ``simulation.py``."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from pykbroker.raft import ElectionState, MemoryLog, QuorumConfig, RaftReplica
from pykbroker.raft.memory_log import decode_batches
from pykbroker.raft.voter_set import Endpoint, ReplicaKey, VoterNode

SIM_CONFIG = QuorumConfig(
    controller_quorum_election_timeout_ms=100,
    controller_quorum_fetch_timeout_ms=200,
    controller_quorum_election_backoff_max_ms=100,
    controller_quorum_request_timeout_ms=150,
    controller_quorum_retry_backoff_ms=10,
    fetch_max_wait_ms=50,
    fetch_max_bytes=400,
    fetch_snapshot_max_bytes=96,
)


def election_bound_ms(config: QuorumConfig) -> int:
    """After the heal, a leader must have committed in its epoch within this many ms (and
    every node caught up within as many more): five rounds of fetch timeout, election
    timeout with jitter and election backoff."""
    return 5 * (
        config.controller_quorum_fetch_timeout_ms
        + 2 * config.controller_quorum_election_timeout_ms
        + config.controller_quorum_election_backoff_max_ms
    )


_SIZE = struct.Struct(">I")


class SimulationFailure(AssertionError):
    """An invariant broke; the message says how to replay the schedule."""


@dataclass
class SimulationStats:
    schedules: int = 0
    events: int = 0
    simulated_ms: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    messages_duplicated: int = 0
    crashes: int = 0
    crashes_mid_output: int = 0
    partitions: int = 0
    resignations: int = 0
    snapshots_created: int = 0
    snapshots_installed: int = 0
    appends: int = 0
    acknowledged: int = 0
    leaders_elected: int = 0
    #: Simulated ms without any leader, per interval (start-up and fault phases included).
    leaderless_ms: list[int] = field(default_factory=list)
    #: Simulated ms from the heal to a leader that committed in its epoch.
    heal_election_ms: list[int] = field(default_factory=list)
    #: Simulated ms from killing the leader of a healed cluster to a new committed leader.
    failover_ms: list[int] = field(default_factory=list)
    max_epoch: int = 0
    #: KIP-853 schedules: AddRaftVoter/RemoveRaftVoter sent, answered NO_ERROR, answered with
    #: an error (REQUEST_TIMED_OUT, DUPLICATE_VOTER, ...).
    voter_changes_requested: int = 0
    voter_changes_committed: int = 0
    voter_changes_refused: int = 0
    #: Leaders that resigned because they removed themselves.
    removed_leaders: int = 0

    def merge(self, other: SimulationStats) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, list):
                mine.extend(value)
            elif name == "max_epoch":
                self.max_epoch = max(mine, value)
            else:
                setattr(self, name, mine + value)


@dataclass
class SimNode:
    node_id: int
    voter: bool
    log: MemoryLog = field(default_factory=MemoryLog)
    durable_election: ElectionState | None = None
    replica: RaftReplica | None = None
    incarnation: int = 0
    tick_at: int | None = None
    #: The application state: the value of every committed record, by offset.
    applied: list[bytes] = field(default_factory=list)
    last_high_watermark: int = 0
    max_epoch: int = 0
    crash_mid_output: int | None = None  # crash point for the next output, if set


def encode_state(values: list[bytes]) -> bytes:
    return b"".join(_SIZE.pack(len(v)) + v for v in values)


def directory_id(node_id: int) -> uuid.UUID:
    """The simulated node's metadata ``directory.id``."""
    return uuid.UUID(int=(node_id << 64) | 0xD1)


def voter_node(node_id: int) -> VoterNode:
    return VoterNode(
        ReplicaKey(node_id, directory_id(node_id)),
        (Endpoint("CONTROLLER", f"node{node_id}", 9093),),
    )


def decode_memory_snapshot(data: bytes) -> list[bytes]:
    """The values of a ``memory_snapshot`` (its data batches; control batches skipped)."""
    return [v for b in decode_batches(data) if not b.is_control for v in b.records]


def decode_state(data: bytes) -> list[bytes]:
    values, position = [], 0
    while position < len(data):
        (size,) = _SIZE.unpack_from(data, position)
        position += _SIZE.size
        values.append(data[position : position + size])
        position += size
    return values
