"""Metadata snapshots end to end (KIP-630): KafkaReplicatedLog cleaning and a 3-node cluster.

The log is cleaned before a newer snapshot as Kafka's ``KafkaMetadataLog.maybeClean`` does
(whole segments, oldest snapshot first, never the latest); in a cluster with a small
``metadata.log.max.record.bytes.between.snapshots`` nodes write ``<end>-<epoch>.checkpoint``
snapshots, a node that lagged behind the leader's log start installs the leader's snapshot over
FetchSnapshot and its brokers see the partitions it brings, and a restarted node loads its
image from its own snapshot. Every wait is bounded; every broker started is stopped.
"""

from __future__ import annotations

from pathlib import Path

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.log_config import LogConfig
from pykbroker.metadata.controller import CreateTopicRequest
from pykbroker.metadata.image import MetadataImage
from pykbroker.metadata.snapshot import SnapshotPolicy, write_snapshot
from pykbroker.raft import SnapshotId
from pykbroker.server.raft_driver import MetadataLogRetention
from pykbroker.server.raft_log import METADATA_PARTITION_DIR, KafkaReplicatedLog
from tests.server.test_raft_driver import running_cluster, wait_for

SMALL_SEGMENTS = LogConfig.from_properties(
    {"segment.bytes": "1024", "retention.ms": "-1", "retention.bytes": "-1"}
)


def _filled_log(path: Path, batches: int, clock: list[int]) -> KafkaReplicatedLog:
    raft_log = KafkaReplicatedLog.open(path, config=SMALL_SEGMENTS, clock=lambda: clock[0])
    for i in range(batches):
        raft_log.append_as_leader([b"record-%03d" % i + b"x" * 100], 1)
    raft_log.high_watermark = raft_log.log_end_offset
    return raft_log


def test_the_log_is_cleaned_before_a_newer_snapshot_per_retention(tmp_path: Path) -> None:
    clock = [1_000]
    raft_log = _filled_log(tmp_path / METADATA_PARTITION_DIR, 60, clock)
    try:
        segments = len(raft_log.log.segments)
        assert segments > 3
        # Within retention: nothing goes.
        raft_log.create_snapshot(SnapshotId(20, 1), write_snapshot(MetadataImage(), 1, clock[0]))
        assert not raft_log.maybe_clean(10**9, -1, clock[0])
        assert raft_log.log_start_offset == 0
        # Over metadata.max.retention.bytes: the log before the snapshot goes, whole segments.
        assert raft_log.maybe_clean(1, -1, clock[0])
        assert raft_log.log_start_offset == 20
        assert len(raft_log.log.segments) < segments
        assert raft_log.log.segments[0].base_offset <= 20
        # The latest snapshot is never deleted, and the log never before it.
        assert not raft_log.maybe_clean(1, -1, clock[0])
        assert raft_log.latest_snapshot_id == SnapshotId(20, 1)
        # Over metadata.max.retention.ms (the age of the snapshot header's last record time):
        # the older snapshot and the log up to the newer one go.
        raft_log.create_snapshot(SnapshotId(45, 1), write_snapshot(MetadataImage(), 1, clock[0]))
        assert not raft_log.maybe_clean(-1, 10_000, clock[0] + 5_000)
        assert raft_log.maybe_clean(-1, 10_000, clock[0] + 60_000)
        assert raft_log.log_start_offset == 45
        assert raft_log.earliest_snapshot_id == SnapshotId(45, 1)
        assert not (raft_log.snapshot_path(SnapshotId(20, 1))).exists()
        raft_log.flush()
    finally:
        raft_log.close()
    reopened = KafkaReplicatedLog.open(tmp_path / METADATA_PARTITION_DIR, config=SMALL_SEGMENTS)
    try:
        assert reopened.log_start_offset == 45
        assert reopened.log_end_offset == 60
    finally:
        reopened.close()


async def test_nodes_snapshot_a_lagging_node_installs_one_and_a_restart_loads_its_own(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster:
        leader = await wait_for(cluster.leader, 10, "one active controller")
        await wait_for(
            lambda: all(
                {1, 2, 3} <= set(cluster.controller(n).image.brokers) for n in cluster.brokers
            ),
            10,
            "every broker registered",
        )
        lagging = next(n for n in cluster.brokers if n != leader)
        await cluster.stop(lagging)
        lagging_end = KafkaReplicatedLog.open(tmp_path / f"node-{lagging}" / METADATA_PARTITION_DIR)
        try:
            stopped_at = lagging_end.log_end_offset
        finally:
            lagging_end.close()
        # metadata.log.max.record.bytes.between.snapshots = 1500 and a 1-byte retention.
        for n in cluster.brokers:
            cluster.controller(n).snapshot_policy = SnapshotPolicy(1500, 0)
            cluster.driver(n).retention = MetadataLogRetention(max_bytes=1, max_ms=-1)
        names = [f"snap-{i}" for i in range(12)]
        # The stopped node went through controlled shutdown (fenced), so new replicas are only
        # placed on it by a manual assignment.
        for name in names:
            results = await cluster.controller(leader).create_topics(
                [CreateTopicRequest(name, assignments={0: [leader, lagging], 1: [lagging, leader]})]
            )
            assert results[0].error == ErrorCode.NO_ERROR
        leader_log = cluster.driver(leader).log
        await wait_for(
            lambda: leader_log.log_start_offset > stopped_at,
            10,
            "the leader's log cleaned past the lagging node's log end",
        )
        snapshot = leader_log.latest_snapshot_id
        assert snapshot is not None
        assert leader_log.snapshot_path(snapshot).name == (
            f"{snapshot.offset:020d}-{snapshot.epoch:010d}.checkpoint"
        )

        # The lagging node cannot fetch what is gone: it installs the leader's snapshot.
        await cluster.start(lagging)
        await wait_for(
            lambda: set(names) <= set(cluster.controller(lagging).image.topics),
            15,
            "the lagging node's image has every topic",
        )
        lagging_log = cluster.driver(lagging).log
        installed = lagging_log.earliest_snapshot_id
        assert installed is not None
        assert lagging_log.log_start_offset == installed.offset > stopped_at
        # Its broker side heard old -> new image: it hosts the replicas the snapshot gave it.
        replica_manager = cluster.brokers[lagging].service("replica_manager")
        image = cluster.controller(lagging).image
        hosted = [
            (name, index)
            for name in names
            for index, partition in image.topics[name].partitions.items()
            if lagging in partition.replicas
        ]
        assert hosted
        assert all(replica_manager.get_partition(n, i) is not None for n, i in hosted)
        await wait_for(
            lambda: all(
                set(names) <= set(cluster.controller(n).image.topics) for n in cluster.brokers
            ),
            10,
            "every node's image has every topic",
        )

        # A restart loads the image from the node's own snapshot, then replays the log after.
        restarted = next(n for n in cluster.brokers if n not in (leader, lagging))
        restarted_log = cluster.driver(restarted).log
        await wait_for(
            lambda: restarted_log.log_start_offset > 0,
            10,
            "the other follower cleaned its log before its snapshot",
        )
        await cluster.stop(restarted)
        await cluster.start(restarted)
        controller = cluster.controller(restarted)
        start = cluster.driver(restarted).log.log_start_offset
        assert start > 0
        assert controller.applied_offset >= start  # loaded from the snapshot at the start
        assert set(names) <= set(controller.image.topics)
        results = await controller.create_topics([CreateTopicRequest("after-restart")])
        assert results[0].error == ErrorCode.NO_ERROR
        await wait_for(
            lambda: all(
                "after-restart" in cluster.controller(n).image.topics for n in cluster.brokers
            ),
            10,
            "a topic created after the restart on every node",
        )
