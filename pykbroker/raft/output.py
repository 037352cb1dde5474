"""RaftOutput: what one call into the state machine asks the driver to do, in order.

The analogue of etcd's ``Ready`` for Kafka's ``KafkaRaftClient.poll``. The order is a contract:

1. ``persist_election_state``: write and fsync ``quorum-state`` (if not None);
2. ``flush_log``: fsync the log -- the state machine already appended / truncated / installed a
   snapshot through ``ReplicatedLog``; those changes must be durable before step 3;
3. ``messages``: send (requests and responses; a lost one is fine, Raft retries);
4. ``high_watermark`` / ``snapshot_installed`` / ``leader_change``: only now may the
   application read committed records (offsets below the high watermark), reload from an
   installed snapshot, or react to a new leader.

Invariant: every message in ``messages`` may depend on ``persist_election_state`` and on the
log changes, never the other way round; so a crash anywhere in steps 1-3 is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .messages import LeaderAndEpoch, OffsetAndEpoch, RaftMessage
from .quorum_state import ElectionState


@dataclass(slots=True)
class RaftOutput:
    persist_election_state: ElectionState | None = None
    flush_log: bool = False
    #: Lowest offset the log was truncated to during this call (informational: uncommitted
    #: records at or above it are gone).
    truncated_to: int | None = None
    messages: list[RaftMessage] = field(default_factory=list)
    #: The new high watermark: every record below it is committed. None: unchanged.
    high_watermark: int | None = None
    #: A snapshot was downloaded and the log now starts at its end offset: reload from it.
    snapshot_installed: OffsetAndEpoch | None = None
    #: The leader or epoch changed (Kafka's ``Listener.handleLeaderChange``).
    leader_change: LeaderAndEpoch | None = None
    #: Call ``tick`` at this time at the latest (a timer, backoff or parked fetch ends).
    next_tick_ms: int | None = None

    @property
    def committed_up_to(self) -> int | None:
        """Alias of ``high_watermark``: the exclusive end of the committed prefix."""
        return self.high_watermark

    @property
    def is_empty(self) -> bool:
        return (
            self.persist_election_state is None
            and not self.flush_log
            and not self.messages
            and self.high_watermark is None
            and self.snapshot_installed is None
            and self.leader_change is None
        )
