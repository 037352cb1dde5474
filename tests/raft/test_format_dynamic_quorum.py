"""``pykbroker format --standalone / --initial-controllers / --no-initial-controllers`` (KIP-853):
meta.properties with the directory id, and the bootstrap checkpoint that ``KafkaReplicatedLog``,
``RaftReplica`` and the metadata snapshot loader read back."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from pykbroker.cli import main
from pykbroker.metadata.snapshot import load_snapshot
from pykbroker.raft import RaftReplica
from pykbroker.raft.bootstrap import BOOTSTRAP_SNAPSHOT_ID
from pykbroker.raft.control_records import read_v2_control_records
from pykbroker.raft.log import ControlRecordType
from pykbroker.raft.voter_set import Endpoint, ReplicaKey, VoterSet, decode_kraft_version
from pykbroker.server import storage
from pykbroker.server.raft_log import METADATA_PARTITION_DIR, KafkaReplicatedLog

CONTROLLER = [
    "--override",
    "process.roles=broker,controller",
    "--override",
    "node.id=1",
    "--override",
    "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
    "--override",
    "controller.listener.names=CONTROLLER",
    "--override",
    "controller.quorum.bootstrap.servers=127.0.0.1:19093",
]


def fmt(tmp_path: Path, *flags: str) -> int:
    return main(
        [
            "format",
            "--cluster-id",
            "test-cluster",
            "--override",
            f"log.dirs={tmp_path / 'd'}",
            *CONTROLLER,
            *flags,
        ]
    )


def checkpoint(tmp_path: Path) -> Path:
    return tmp_path / "d" / METADATA_PARTITION_DIR / storage.BOOTSTRAP_CHECKPOINT


def voters_in(data: bytes) -> tuple[int, VoterSet]:
    kraft_version, voters = -1, None
    for batch in read_v2_control_records(data):
        for record in batch.control_records:
            if record.control_type == ControlRecordType.KRAFT_VERSION:
                kraft_version = decode_kraft_version(record.value)
            elif record.control_type == ControlRecordType.KRAFT_VOTERS:
                voters = VoterSet.decode(record.value)
    assert voters is not None
    return kraft_version, voters


def test_standalone_writes_kraft_version_1_and_this_controller_as_the_only_voter(
    tmp_path: Path,
) -> None:
    assert fmt(tmp_path, "--standalone") == 0
    meta = storage.read_meta_properties(tmp_path / "d")
    assert meta["version"] == "1"
    directory_id = storage.kafka_uuid(meta["directory.id"])
    kraft_version, voters = voters_in(checkpoint(tmp_path).read_bytes())
    assert kraft_version == 1
    assert voters.voter_keys == (ReplicaKey(1, directory_id),)
    assert voters.endpoints(1) == (Endpoint("CONTROLLER", "127.0.0.1", 19093),)
    assert fmt(tmp_path, "--standalone") == 1  # already formatted


def test_the_checkpoint_is_a_snapshot_the_raft_log_and_the_replica_read(tmp_path: Path) -> None:
    assert fmt(tmp_path, "--standalone") == 0
    log = KafkaReplicatedLog.open(tmp_path / "d" / METADATA_PARTITION_DIR)
    try:
        assert log.latest_snapshot_id == BOOTSTRAP_SNAPSHOT_ID
        assert log.log_start_offset == log.log_end_offset == 0
        data = log.read_snapshot(BOOTSTRAP_SNAPSHOT_ID)
        assert data is not None
        assert load_snapshot(data, 0).brokers == {}  # header/footer: a valid, empty snapshot
        directory_id = storage.kafka_uuid(
            storage.read_meta_properties(tmp_path / "d")["directory.id"]
        )
        replica = RaftReplica(
            1, frozenset(), log, random=random.Random(0), directory_id=directory_id
        )
        replica.take_output()
        assert replica.kraft_version == 1
        assert replica.voter_set.voter_ids == {1}
        assert replica.is_leader  # the only voter elects itself
        # The leader writes the voters into its log (v2 control batches) at epoch start.
        log.flush()
        replica.control.truncate_to(0)
        replica.control.update(log)
        assert replica.control.last_voter_set_offset is not None
        assert replica.control.last_voter_set_offset >= 0
    finally:
        log.close()


def test_initial_controllers_use_the_given_directory_id_for_this_node(tmp_path: Path) -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    flag = (
        f"1@127.0.0.1:19093:{storage.kafka_uuid_string(mine)},"
        f"2@[::1]:29093:{storage.kafka_uuid_string(other)}"
    )
    assert fmt(tmp_path, "--initial-controllers", flag) == 0
    meta = storage.read_meta_properties(tmp_path / "d")
    assert storage.kafka_uuid(meta["directory.id"]) == mine
    kraft_version, voters = voters_in(checkpoint(tmp_path).read_bytes())
    assert kraft_version == 1
    assert voters.voter_keys == (ReplicaKey(1, mine), ReplicaKey(2, other))
    assert voters.endpoints(2) == (Endpoint("CONTROLLER", "::1", 29093),)


def test_no_initial_controllers_writes_no_checkpoint(tmp_path: Path) -> None:
    assert fmt(tmp_path, "--no-initial-controllers") == 0
    assert "directory.id" in storage.read_meta_properties(tmp_path / "d")
    assert not checkpoint(tmp_path).exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--standalone", "--no-initial-controllers"],  # mutually exclusive (argparse: exit 2)
        ["--initial-controllers", "1@host:1:not-a-uuid"],
        ["--initial-controllers", "one@host:1:AAAAAAAAAAAAAAAAAAAAAA"],
        ["--standalone", "--override", "controller.quorum.voters=1@127.0.0.1:19093"],
    ],
)
def test_bad_dynamic_quorum_flags_are_refused_before_anything_is_written(
    tmp_path: Path, flags: list[str]
) -> None:
    try:
        code = fmt(tmp_path, *flags)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    assert code != 0
    assert not (tmp_path / "d" / storage.META_PROPERTIES).exists()
