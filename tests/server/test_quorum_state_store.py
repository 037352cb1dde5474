"""FileQuorumStateStore: Kafka's quorum-state file, written atomically and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pykbroker.raft import NO_LEADER, ElectionState
from pykbroker.server.quorum_state_store import (
    QUORUM_STATE_FILE,
    FileQuorumStateStore,
    QuorumStateError,
)


def test_nothing_written_reads_as_none(tmp_path: Path) -> None:
    assert FileQuorumStateStore.in_log_dir(tmp_path).read() is None


def test_write_then_read_round_trips_in_the_metadata_partition_dir(tmp_path: Path) -> None:
    store = FileQuorumStateStore.in_log_dir(tmp_path)
    store.write(ElectionState(7, leader_id=2, voted_id=1), voters=[3, 1, 2])
    path = tmp_path / "__cluster_metadata-0" / QUORUM_STATE_FILE
    assert store.path == path
    data = json.loads(path.read_text())
    assert (data["leaderEpoch"], data["leaderId"], data["votedId"]) == (7, 2, 1)
    assert data["currentVoters"] == [{"voterId": 1}, {"voterId": 2}, {"voterId": 3}]
    assert FileQuorumStateStore(path.parent).read() == ElectionState(7, 2, 1)
    assert not list(path.parent.glob("*.tmp"))


def test_a_new_state_replaces_the_old_one(tmp_path: Path) -> None:
    store = FileQuorumStateStore(tmp_path)
    store.write(ElectionState(1, voted_id=3))
    store.write(ElectionState(2))
    assert store.read() == ElectionState(2, NO_LEADER)


def test_reads_a_file_written_by_kafka(tmp_path: Path) -> None:
    (tmp_path / QUORUM_STATE_FILE).write_text(
        '{"clusterId":"","leaderId":1,"leaderEpoch":12,"votedId":-1,"appliedOffset":0,'
        '"currentVoters":[{"voterId":1},{"voterId":2},{"voterId":3}],"data_version":0}'
    )
    assert FileQuorumStateStore(tmp_path).read() == ElectionState(12, leader_id=1)


def test_a_leftover_temporary_file_is_ignored(tmp_path: Path) -> None:
    store = FileQuorumStateStore(tmp_path)
    store.write(ElectionState(4, leader_id=1))
    torn = tmp_path / (QUORUM_STATE_FILE + ".tmp")
    torn.write_text('{"leaderEpoch": 9')  # a crash in the middle of the next write
    assert store.read() == ElectionState(4, leader_id=1)
    assert not torn.exists()


def test_a_corrupt_file_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    (tmp_path / QUORUM_STATE_FILE).write_text('{"leaderEpoch": ')
    with pytest.raises(QuorumStateError):
        FileQuorumStateStore(tmp_path).read()
    (tmp_path / QUORUM_STATE_FILE).write_text("[1, 2]")
    with pytest.raises(QuorumStateError):
        FileQuorumStateStore(tmp_path).read()


def test_clear_removes_the_file(tmp_path: Path) -> None:
    store = FileQuorumStateStore(tmp_path)
    store.write(ElectionState(1))
    store.clear()
    assert store.read() is None
