"""The output-ordering contract of ``RaftOutput``, as a check shared by the tests.

Every message a replica sends may depend only on what it has asked to make durable by then:
a request or response in epoch E needs ``quorum-state`` at epoch >= E; a granted (standard)
vote needs the vote in ``quorum-state``; a VoteRequest of a candidate needs its own vote; a
BeginQuorumEpoch needs the leadership; and every log change needs ``flush_log``.
"""

from __future__ import annotations

from pykbroker.raft import (
    BeginQuorumEpochRequest,
    ElectionState,
    FetchRequest,
    FetchSnapshotRequest,
    MemoryLog,
    RaftMessage,
    RaftOutput,
    VoteRequest,
    VoteResponse,
)


def _message_epoch(message: RaftMessage) -> int:
    body = message.body
    if isinstance(body, VoteRequest):
        return body.candidate_epoch
    if isinstance(body, FetchRequest | FetchSnapshotRequest):
        return body.current_leader_epoch
    return int(getattr(body, "leader_epoch", -1))


def check_output_contract(
    node_id: int,
    durable: ElectionState | None,
    out: RaftOutput,
    log: MemoryLog,
    trigger: RaftMessage | None = None,
) -> ElectionState | None:
    """Raise ``AssertionError`` if ``out`` breaks the contract; return the durable election
    state once the driver has persisted ``out``."""
    if out.persist_election_state is not None:
        durable = out.persist_election_state
    if log.unflushed and not out.flush_log:
        raise AssertionError(f"node {node_id}: log changed but flush_log is not set")
    epoch = durable.epoch if durable is not None else 0
    for message in out.messages:
        body = message.body
        if _message_epoch(message) > epoch:
            raise AssertionError(f"node {node_id}: sends {body} before persisting its epoch")
        if (
            isinstance(body, VoteRequest)
            and not body.pre_vote
            and (
                durable is None
                or durable.voted_id != node_id
                or durable.epoch != body.candidate_epoch
            )
        ):
            raise AssertionError(f"node {node_id}: asks for votes before voting for itself")
        if isinstance(body, BeginQuorumEpochRequest) and (
            durable is None or durable.leader_id != node_id
        ):
            raise AssertionError(f"node {node_id}: announces leadership before persisting it")
        if (
            isinstance(body, VoteResponse)
            and body.vote_granted
            and trigger is not None
            and isinstance(trigger.body, VoteRequest)
            and not trigger.body.pre_vote
        ):
            request = trigger.body
            if (
                durable is None
                or durable.epoch != request.candidate_epoch
                or durable.voted_id != request.candidate_id
            ):
                raise AssertionError(f"node {node_id}: grants a vote before persisting it")
    return durable
