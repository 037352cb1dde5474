"""RaftReplica over the on-disk KafkaReplicatedLog and FileQuorumStateStore: a 3-voter quorum
with instant delivery, driven as the trio driver must (persist quorum-state, flush the log,
then send), elects, replicates, snapshots, and survives a full restart from its files."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from pykbroker.log.record_batch import decode_records, iter_batches
from pykbroker.raft import QuorumConfig, RaftMessage, RaftOutput, RaftReplica
from pykbroker.server.quorum_state_store import FileQuorumStateStore
from pykbroker.server.raft_log import METADATA_PARTITION_DIR, KafkaReplicatedLog

CONFIG = QuorumConfig(
    controller_quorum_election_timeout_ms=100,
    controller_quorum_fetch_timeout_ms=200,
    controller_quorum_election_backoff_max_ms=100,
    controller_quorum_request_timeout_ms=150,
    controller_quorum_retry_backoff_ms=10,
    fetch_max_wait_ms=50,
)
VOTERS = frozenset({1, 2, 3})


class FileCluster:
    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.now = 0
        self.logs: dict[int, KafkaReplicatedLog] = {}
        self.stores: dict[int, FileQuorumStateStore] = {}
        self.replicas: dict[int, RaftReplica] = {}
        self.in_flight: list[RaftMessage] = []
        self.isolated: set[int] = set()
        for node_id in sorted(VOTERS):
            self.start(node_id)

    def start(self, node_id: int) -> None:
        log_dir = self.root / f"node{node_id}"
        log = KafkaReplicatedLog.open(log_dir / METADATA_PARTITION_DIR, clock=lambda: self.now)
        store = FileQuorumStateStore.in_log_dir(log_dir)
        self.logs[node_id], self.stores[node_id] = log, store
        replica = RaftReplica(
            node_id,
            VOTERS,
            log,
            random=random.Random(self.rng.getrandbits(32)),
            config=CONFIG,
            cluster_id="test-cluster",
            election_state=store.read(),
            now_ms=self.now,
        )
        self.replicas[node_id] = replica
        self.handle(node_id, replica.take_output())

    def stop_all(self) -> None:
        for log in self.logs.values():
            log.close()
        self.replicas.clear()
        self.in_flight.clear()

    def handle(self, node_id: int, out: RaftOutput) -> None:
        if out.persist_election_state is not None:
            self.stores[node_id].write(out.persist_election_state, VOTERS)
        if out.flush_log:
            self.logs[node_id].flush()
        if out.high_watermark is not None:
            self.logs[node_id].high_watermark = out.high_watermark
        for message in out.messages:
            if not {message.source, message.destination} & self.isolated:
                self.in_flight.append(message)

    def deliver(self) -> None:
        while self.in_flight:
            message = self.in_flight.pop(0)
            replica = self.replicas.get(message.destination)
            if replica is not None and message.destination not in self.isolated:
                self.handle(message.destination, replica.step(message, self.now))

    def run_until(self, condition: Callable[[], bool], max_ms: int = 5_000) -> None:
        end = self.now + max_ms
        self.deliver()
        while not condition():
            assert self.now < end, "condition not met"
            self.now += 5
            for node_id, replica in list(self.replicas.items()):
                self.handle(node_id, replica.tick(self.now))
            self.deliver()

    def leader(self) -> int | None:
        leaders = [i for i, r in self.replicas.items() if r.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    def caught_up(self, offset: int, nodes: set[int] | None = None) -> bool:
        ids = VOTERS if nodes is None else nodes
        return all(self.replicas[i].high_watermark >= offset for i in ids)


def data_values(log: KafkaReplicatedLog) -> list[bytes]:
    """Values of the non-control records from the log start."""
    out: list[bytes] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        for header, view in iter_batches(log.read(offset, 1 << 20)):
            if not header.is_control:
                out.extend(r.value or b"" for r in decode_records(view))
            offset = header.next_offset
    return out


def test_a_file_backed_quorum_replicates_and_survives_a_full_restart(tmp_path: Path) -> None:
    cluster = FileCluster(tmp_path)
    cluster.run_until(lambda: cluster.leader() is not None)
    leader = cluster.leader()
    assert leader is not None
    first_epoch = cluster.replicas[leader].epoch
    last = 0
    for i in range(5):
        last = cluster.replicas[leader].append([f"r{i}".encode()], cluster.now)
    cluster.run_until(lambda: cluster.caught_up(last + 1))
    expected = [f"r{i}".encode() for i in range(5)]
    for node_id in VOTERS:
        log = cluster.logs[node_id]
        assert data_values(log) == expected
        assert log.epoch_entries() == [(first_epoch, 0)]
        assert cluster.stores[node_id].read() is not None

    cluster.stop_all()
    for node_id in sorted(VOTERS):
        cluster.start(node_id)
    cluster.run_until(lambda: cluster.leader() is not None)
    leader = cluster.leader()
    assert leader is not None
    assert cluster.replicas[leader].epoch > first_epoch
    last = cluster.replicas[leader].append([b"after"], cluster.now)
    cluster.run_until(lambda: cluster.caught_up(last + 1))
    for node_id in VOTERS:
        log = cluster.logs[node_id]
        assert data_values(log) == [*expected, b"after"]
        assert [epoch for epoch, _ in log.epoch_entries()] == [
            first_epoch,
            cluster.replicas[leader].epoch,
        ]
    cluster.stop_all()


def test_a_lagging_follower_catches_up_from_a_snapshot_file(tmp_path: Path) -> None:
    cluster = FileCluster(tmp_path, seed=3)
    cluster.run_until(lambda: cluster.leader() is not None)
    leader = cluster.leader()
    assert leader is not None
    lagging = min(VOTERS - {leader})
    cluster.isolated.add(lagging)
    last = 0
    for i in range(4):
        last = cluster.replicas[leader].append([f"r{i}".encode()], cluster.now)
    others = set(VOTERS - {lagging})
    cluster.run_until(lambda: cluster.caught_up(last + 1, others))
    snapshot_id = cluster.replicas[leader].create_snapshot(last + 1, b"image")
    cluster.handle(leader, cluster.replicas[leader].take_output())
    assert cluster.logs[leader].log_start_offset == last + 1
    cluster.isolated.clear()
    cluster.run_until(lambda: cluster.caught_up(last + 1))
    follower_log = cluster.logs[lagging]
    assert follower_log.latest_snapshot_id == snapshot_id
    assert follower_log.read_snapshot(snapshot_id) == b"image"
    assert follower_log.log_start_offset == snapshot_id.offset
    cluster.stop_all()
    reopened = KafkaReplicatedLog.open(tmp_path / f"node{lagging}" / METADATA_PARTITION_DIR)
    assert reopened.earliest_snapshot_id == snapshot_id
    assert reopened.log_end_offset >= snapshot_id.offset
    reopened.close()
