"""KRaft: a pure, sans-I/O Raft state machine for the ``__cluster_metadata`` log.

``RaftReplica`` (Kafka's ``KafkaRaftClient``) takes messages (``step``), clock ticks (``tick``)
and appends (``append``) and returns ``RaftOutput``s a driver acts on in order: persist
``quorum-state``, flush the log, send messages, then apply what is committed. The log is any
``ReplicatedLog`` (``MemoryLog`` for tests). No trio, sockets, files, clock or global random
here; ``tests/raft/test_purity.py`` checks it.
"""

from .config import QuorumConfig
from .core import NotLeaderError, RaftStateError
from .log import ControlRecordType, LogAppendError, LogAppendInfo, ReplicatedLog
from .memory_log import MemoryLog
from .messages import (
    NO_LEADER,
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
    SnapshotId,
    VoteRequest,
    VoteResponse,
)
from .output import RaftOutput
from .quorum_state import ElectionState, RandomSource
from .replica import QuorumInfo, RaftReplica

__all__ = [
    "NO_LEADER",
    "BeginQuorumEpochRequest",
    "BeginQuorumEpochResponse",
    "ControlRecordType",
    "ElectionState",
    "EndQuorumEpochRequest",
    "EndQuorumEpochResponse",
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
    "ReplicatedLog",
    "SnapshotId",
    "VoteRequest",
    "VoteResponse",
]
