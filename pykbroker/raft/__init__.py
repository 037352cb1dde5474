"""KRaft: a pure, sans-I/O Raft state machine for the ``__cluster_metadata`` log.

``RaftReplica`` (Kafka's ``KafkaRaftClient``) takes messages (``step``), clock ticks (``tick``)
and appends (``append``) and returns ``RaftOutput``s a driver acts on in order: persist
``quorum-state``, flush the log, send messages, then apply what is committed. The log is any
``ReplicatedLog`` (``MemoryLog`` for tests). No trio, sockets, files, clock or global random
here; ``tests/raft/test_purity.py`` checks it.

KIP-853 dynamic quorums: ``VoterSet`` (voter_set.py), the voter set as of every offset
(kraft_control.py), the leader's AddRaftVoter / RemoveRaftVoter / UpdateRaftVoter handling
(reconfiguration.py) and the bootstrap checkpoint's records (bootstrap.py).
"""

from .config import QuorumConfig
from .core import NotLeaderError, RaftStateError
from .log import ControlRecordType, LogAppendError, LogAppendInfo, ReplicatedLog
from .memory_log import MemoryLog
from .messages import (
    NO_LEADER,
    AddRaftVoterRequest,
    AddRaftVoterResponse,
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    LeaderAndEpoch,
    OffsetAndEpoch,
    RaftMessage,
    RaftRequest,
    RaftResponse,
    RemoveRaftVoterRequest,
    RemoveRaftVoterResponse,
    SnapshotId,
    UpdateRaftVoterRequest,
    UpdateRaftVoterResponse,
    VoteRequest,
    VoteResponse,
)
from .output import RaftOutput
from .quorum_state import ElectionState, RandomSource
from .replica import QuorumInfo, RaftReplica
from .voter_set import Endpoint, ReplicaKey, VoterNode, VoterSet

__all__ = [
    "NO_LEADER",
    "AddRaftVoterRequest",
    "AddRaftVoterResponse",
    "BeginQuorumEpochRequest",
    "BeginQuorumEpochResponse",
    "ControlRecordType",
    "ElectionState",
    "EndQuorumEpochRequest",
    "EndQuorumEpochResponse",
    "Endpoint",
    "FetchRequest",
    "FetchResponse",
    "FetchSnapshotRequest",
    "FetchSnapshotResponse",
    "LeaderAndEpoch",
    "LogAppendError",
    "LogAppendInfo",
    "MemoryLog",
    "NotLeaderError",
    "OffsetAndEpoch",
    "QuorumConfig",
    "QuorumInfo",
    "RaftMessage",
    "RaftOutput",
    "RaftReplica",
    "RaftRequest",
    "RaftResponse",
    "RaftStateError",
    "RandomSource",
    "RemoveRaftVoterRequest",
    "RemoveRaftVoterResponse",
    "ReplicaKey",
    "ReplicatedLog",
    "SnapshotId",
    "UpdateRaftVoterRequest",
    "UpdateRaftVoterResponse",
    "VoteRequest",
    "VoteResponse",
    "VoterNode",
    "VoterSet",
]
