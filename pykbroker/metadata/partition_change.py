"""PartitionChangeBuilder: the one place a partition's leader and ISR change (Kafka's
``PartitionChangeBuilder``, metadata.version 4.1 without ELR).

Given a partition's current ``PartitionRegistration``, a target ISR and an election kind, it
elects a leader and returns the ``PartitionChangeRecord`` to write, or None when nothing would
change:

- ONLINE (Kafka's ``Election.ONLINE``): keep the current leader if it is still acceptable and
  in the target ISR, else the first replica (replica order) that is in the target ISR and
  acceptable; NO_LEADER (-1) if none.
- PREFERRED: the first replica when it is in the target ISR and acceptable, else as ONLINE.
- UNCLEAN: as ONLINE, and when that finds no leader, the first acceptable replica outside the
  ISR; the ISR becomes just that replica and the leader recovery state RECOVERING (data may be
  lost; the leader reports RECOVERED through AlterPartition).

"Acceptable" is the caller's predicate (an active broker: registered, unfenced, not in
controlled shutdown; adjusted for a broker being fenced or unfenced in the same change). The
ISR never becomes empty: a target ISR that is empty leaves the ISR as it was (Kafka without ELR
keeps the last member). Naming a leader in the record -- even the same one -- bumps the leader
epoch when replayed; every record bumps the partition epoch.

Reassignments (KIP-455): the builder also carries target replicas / removing / adding lists.
Before electing, a reassignment in progress is completed when the target ISR without the
removing replicas is not empty and holds every replica that stays (Kafka's
``PartitionReassignmentReplicas.maybeCompleteReassignment``): replicas and ISR lose the removing
replicas and adding / removing are cleared. Leaders are then elected in target replica order,
and a change that drops a replica from the replica list names the leader even when it stays, so
the removed replica sees a new leader epoch (``triggerLeaderEpochBumpForReplicaReassignment``).
Not implemented: eligible leader replicas (KIP-966), directory assignment. Pure: no I/O, no
clock.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence

from . import schemas
from .image import PartitionRegistration
from .records import MetadataRecord, record

NO_LEADER = -1
NO_LEADER_CHANGE = -2
RECOVERED = 0
RECOVERING = 1
NO_RECOVERY_STATE_CHANGE = -1


class Election(enum.Enum):
    """How a leader is chosen (Kafka's ``PartitionChangeBuilder.Election``)."""

    PREFERRED = "preferred"
    ONLINE = "online"
    UNCLEAN = "unclean"


def partition_change_record(
    topic_id: uuid.UUID,
    partition_id: int,
    *,
    isr: Sequence[int] | None = None,
    leader: int = NO_LEADER_CHANGE,
    leader_recovery_state: int = NO_RECOVERY_STATE_CHANGE,
    replicas: Sequence[int] | None = None,
    removing_replicas: Sequence[int] | None = None,
    adding_replicas: Sequence[int] | None = None,
) -> MetadataRecord:
    """A PartitionChangeRecord changing only the given fields."""
    return record(
        schemas.PARTITION_CHANGE_RECORD,
        partition_id=partition_id,
        topic_id=topic_id,
        isr=None if isr is None else list(isr),
        leader=leader,
        replicas=None if replicas is None else list(replicas),
        removing_replicas=None if removing_replicas is None else list(removing_replicas),
        adding_replicas=None if adding_replicas is None else list(adding_replicas),
        leader_recovery_state=leader_recovery_state,
        directories=None,
        eligible_leader_replicas=None,
        last_known_elr=None,
    )


class PartitionChangeBuilder:
    """Builds the change of one partition; see the module docstring for the rules."""

    def __init__(
        self,
        partition: PartitionRegistration,
        topic_id: uuid.UUID,
        partition_id: int,
        is_acceptable_leader: Callable[[int], bool],
    ) -> None:
        self.partition = partition
        self.topic_id = topic_id
        self.partition_id = partition_id
        self.is_acceptable_leader = is_acceptable_leader
        self.election = Election.ONLINE
        self.target_isr: tuple[int, ...] = partition.isr
        self.target_replicas: tuple[int, ...] = partition.replicas
        self.target_removing: tuple[int, ...] = partition.removing_replicas
        self.target_adding: tuple[int, ...] = partition.adding_replicas
        self.target_leader_recovery_state = partition.leader_recovery_state

    def set_election(self, election: Election) -> PartitionChangeBuilder:
        self.election = election
        return self

    def set_target_isr(self, isr: Sequence[int]) -> PartitionChangeBuilder:
        self.target_isr = tuple(isr)
        return self

    def set_target_leader_recovery_state(self, state: int) -> PartitionChangeBuilder:
        self.target_leader_recovery_state = state
        return self

    def set_target_replicas(self, replicas: Sequence[int]) -> PartitionChangeBuilder:
        self.target_replicas = tuple(replicas)
        return self

    def set_target_removing(self, removing: Sequence[int]) -> PartitionChangeBuilder:
        self.target_removing = tuple(removing)
        return self

    def set_target_adding(self, adding: Sequence[int]) -> PartitionChangeBuilder:
        self.target_adding = tuple(adding)
        return self

    def _complete_reassignment_if_needed(self) -> None:
        """Kafka's ``completeReassignmentIfNeeded``: see the module docstring."""
        removing = self.target_removing
        if not removing and not self.target_adding:
            return
        isr = self.target_isr
        replicas = self.target_replicas
        if removing:
            isr = tuple(r for r in isr if r not in removing)
            replicas = tuple(r for r in replicas if r not in removing)
            if not isr or not replicas:
                return
        if not set(replicas) <= set(isr):
            return
        self.target_isr = isr
        self.target_replicas = replicas
        self.target_removing = ()
        self.target_adding = ()

    def _is_valid_new_leader(self, replica: int) -> bool:
        return replica in self.target_isr and self.is_acceptable_leader(replica)

    def elect_leader(self) -> tuple[int, bool]:
        """(the leader, whether the election was unclean)."""
        replicas = self.target_replicas
        if (
            self.election is Election.PREFERRED
            and replicas
            and self._is_valid_new_leader(replicas[0])
        ):
            return replicas[0], False
        if self._is_valid_new_leader(self.partition.leader):
            return self.partition.leader, False
        for replica in replicas:
            if self._is_valid_new_leader(replica):
                return replica, False
        if self.election is Election.UNCLEAN:
            for replica in replicas:
                if self.is_acceptable_leader(replica):
                    return replica, True
        return NO_LEADER, False

    def build(self) -> MetadataRecord | None:
        """The PartitionChangeRecord to write, or None if the partition would not change."""
        partition = self.partition
        self._complete_reassignment_if_needed()
        isr: tuple[int, ...] | None = None
        leader = NO_LEADER_CHANGE
        recovery = NO_RECOVERY_STATE_CHANGE
        elected, unclean = self.elect_leader()
        if elected != partition.leader:
            leader = elected
            if unclean:
                isr = (elected,)
                if partition.leader_recovery_state != RECOVERING:
                    recovery = RECOVERING
        elif not set(partition.replicas) <= set(self.target_replicas):
            leader = partition.leader  # a removed replica must see a new leader epoch
        if isr is None and self.target_isr and self.target_isr != partition.isr:
            isr = self.target_isr
        if recovery == NO_RECOVERY_STATE_CHANGE and (
            self.target_leader_recovery_state != partition.leader_recovery_state and not unclean
        ):
            recovery = self.target_leader_recovery_state
        replicas = (
            self.target_replicas
            if self.target_replicas and self.target_replicas != partition.replicas
            else None
        )
        removing = (
            self.target_removing if self.target_removing != partition.removing_replicas else None
        )
        adding = self.target_adding if self.target_adding != partition.adding_replicas else None
        if (
            isr is None
            and leader == NO_LEADER_CHANGE
            and recovery == NO_RECOVERY_STATE_CHANGE
            and replicas is None
            and removing is None
            and adding is None
        ):
            return None
        return partition_change_record(
            self.topic_id,
            self.partition_id,
            isr=isr,
            leader=leader,
            leader_recovery_state=recovery,
            replicas=replicas,
            removing_replicas=removing,
            adding_replicas=adding,
        )
