"""The KRaft dataclasses survive the real codec at every version KRaft uses."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.raft import (
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    ElectionState,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    OffsetAndEpoch,
    RaftReplica,
    RaftRequest,
    RaftResponse,
    SnapshotId,
    VoteRequest,
    VoteResponse,
    wire,
)
from pykbroker.raft.memory_log import MemoryLog
from pykbroker.raft.messages import REQUEST_TYPES
from pykbroker.raft.schemas import QUORUM_STATE_DATA

MESSAGES = [
    VoteRequest("cluster", 5, 1, 4, 120, voter_id=2),
    VoteResponse(ErrorCode.NO_ERROR, 3, 5, vote_granted=True),
    VoteResponse(ErrorCode.FENCED_LEADER_EPOCH, 3, 6),
    VoteResponse(ErrorCode.INCONSISTENT_CLUSTER_ID, -1, -1),
    BeginQuorumEpochRequest("cluster", 1, 5, voter_id=2),
    BeginQuorumEpochResponse(ErrorCode.NO_ERROR, 1, 5),
    EndQuorumEpochRequest("cluster", 1, 5, (3, 2)),
    EndQuorumEpochResponse(ErrorCode.NOT_LEADER_OR_FOLLOWER, 2, 6),
    FetchRequest("cluster", 2, 100, 4, 5, max_wait_ms=500, max_bytes=1024, log_start_offset=7),
    FetchResponse(ErrorCode.NO_ERROR, 1, 5, high_watermark=90, log_start_offset=7, records=b"xyz"),
    FetchResponse(ErrorCode.NO_ERROR, 1, 5, 90, 7, diverging_epoch=OffsetAndEpoch(80, 3)),
    FetchResponse(ErrorCode.NO_ERROR, 1, 5, 90, 7, snapshot_id=SnapshotId(60, 2)),
    FetchResponse(ErrorCode.FENCED_LEADER_EPOCH, 1, 6),
    FetchSnapshotRequest("cluster", 2, 5, SnapshotId(60, 2), position=16, max_bytes=64),
    FetchSnapshotResponse(ErrorCode.NO_ERROR, 1, 5, SnapshotId(60, 2), 100, 16, b"chunk"),
    FetchSnapshotResponse(ErrorCode.SNAPSHOT_NOT_FOUND, 1, 5),
]


def _versions(body: RaftRequest | RaftResponse) -> range:
    low, high = wire.version_range(wire.api_key(body))
    return range(low, high + 1)


@pytest.mark.parametrize("body", MESSAGES, ids=lambda b: type(b).__name__)
def test_every_raft_message_round_trips_through_the_codec_at_every_version(
    body: RaftRequest | RaftResponse,
) -> None:
    for version in _versions(body):
        declaration = wire.declaration(body)
        data = codec.decode(
            declaration, version, codec.encode(declaration, version, wire.to_wire(body, version))
        )
        key = wire.api_key(body)
        back: RaftRequest | RaftResponse
        if isinstance(body, REQUEST_TYPES):
            back = wire.request_from_wire(key, version, data)
        else:
            back = wire.response_from_wire(key, version, data)
        if isinstance(body, FetchSnapshotResponse) and body.error_code != ErrorCode.NO_ERROR:
            assert isinstance(back, FetchSnapshotResponse)
            assert back.error_code == body.error_code
            continue
        expected: RaftRequest | RaftResponse = body
        if version == 0 and isinstance(body, VoteRequest | BeginQuorumEpochRequest):
            expected = dataclasses.replace(body, voter_id=-1)  # VoterId is v1+
        assert back == expected, version


def test_fetch_names_the_metadata_topic_by_id_and_the_replica_by_replica_state() -> None:
    request = FetchRequest("cluster", 7, 0, 0, 1)
    data = wire.to_wire(request, 17)
    assert data["topics"][0]["topic_id"] == wire.METADATA_TOPIC_ID
    decoded = codec.decode(
        wire.declaration(request), 17, codec.encode(wire.declaration(request), 17, data)
    )
    assert decoded["replica_state"]["replica_id"] == 7
    assert decoded["replica_id"] == -1  # not in v15+


def test_a_pre_vote_cannot_be_sent_as_vote_v1() -> None:
    with pytest.raises(wire.UnsupportedVersionError):
        wire.to_wire(VoteRequest("c", 1, 1, 0, 0, pre_vote=True), 1)
    with pytest.raises(wire.UnsupportedVersionError):
        wire.to_wire(FetchRequest("c", 1, 0, 0, 0), 12)


def test_describe_quorum_answers_from_the_leader_state() -> None:
    import random

    leader = RaftReplica(1, {1}, MemoryLog(), random=random.Random(0))
    info = leader.describe_quorum()
    data = wire.describe_quorum_response(info, 1)
    encoded = codec.encode(wire.DESCRIBE_QUORUM_RESPONSE, 1, data)
    partition = codec.decode(wire.DESCRIBE_QUORUM_RESPONSE, 1, encoded)["topics"][0]["partitions"][
        0
    ]
    assert (partition["leader_id"], partition["leader_epoch"]) == (1, 1)
    assert partition["current_voters"][0]["log_end_offset"] == 1


def test_election_state_is_kafkas_quorum_state_file() -> None:
    state = ElectionState(epoch=7, leader_id=2, voted_id=3)
    text = state.to_json(voters=[1, 2, 3])
    assert json.loads(text)["leaderEpoch"] == 7
    assert ElectionState.from_json(text) == state
    kafka_v1 = (
        '{"leaderId":-1,"leaderEpoch":4,"votedId":2,'
        '"votedDirectoryId":"AAAAAAAAAAAAAAAAAAAAAA","data_version":1}'
    )
    assert ElectionState.from_json(kafka_v1) == ElectionState(4, -1, 2)
    data = state.to_quorum_state_data([1, 2, 3])
    decoded = codec.decode(QUORUM_STATE_DATA, 0, codec.encode(QUORUM_STATE_DATA, 0, data))
    assert (decoded["leader_epoch"], decoded["leader_id"], decoded["voted_id"]) == (7, 2, 3)
