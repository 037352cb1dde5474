"""Partition reassignment (KIP-455) in an in-process cluster: voters 1-3 and broker-only node 4.

An RF=2 partition on brokers [1, 2] holding data moves to [2, 3] through
AlterPartitionReassignments: ListPartitionReassignments shows it while broker 3 catches up,
broker 3 joins the ISR, the controller completes the reassignment (leadership moves off broker
1 to broker 2), broker 1 deletes its replica and its log directory, the data is readable from
the new leader and new writes reach both replicas; ListPartitionReassignments is empty at the
end. Requests sent to a broker that is not the active controller are forwarded to it. Every
wait is bounded and every broker the test starts is stopped by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.partition_change import partition_change_record
from tests.server.test_raft_driver import Cluster, request, wait_for
from tests.server.test_replication import (
    _create_topic,
    _fetch,
    _partition,
    _pause_fetching,
    _produce,
    _replica_manager,
    _replicated_configs,
    _same_bytes_up_to_hw,
    _start_replicated,
)

TOPIC = "moving"


def test_a_broker_left_out_of_the_replicas_deletes_its_replica(tmp_path: Path) -> None:
    """Kafka's ``ReplicaManager.applyDelta``: a replica no longer assigned here is stopped and
    its log deleted; the other partitions stay."""
    manager = _replica_manager(tmp_path)
    assert manager.get_partition("t", 0) is not None
    log_dir = tmp_path / "t-0"
    assert log_dir.is_dir()
    image = manager.image
    topic_id = image.topics["t"].topic_id
    started = image.apply(
        [
            partition_change_record(
                topic_id, 0, replicas=[2, 3, 4, 1], adding_replicas=[4], removing_replicas=[1]
            )
        ]
    )
    manager.on_metadata_update(image, started)
    assert manager.get_partition("t", 0) is not None  # still a replica while it is removed
    completed = started.apply(
        [
            partition_change_record(
                topic_id,
                0,
                isr=[2, 3, 4],
                leader=2,
                replicas=[2, 3, 4],
                adding_replicas=[],
                removing_replicas=[],
            )
        ]
    )
    manager.on_metadata_update(started, completed)
    assert manager.get_partition("t", 0) is None
    assert not log_dir.exists()
    assert manager.followed_partitions() == {}


async def _reassign(
    cluster: Cluster, node: int, replicas: list[int] | None, partition: int = 0
) -> dict[str, Any]:
    response: dict[str, Any] = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.ALTER_PARTITION_REASSIGNMENTS,
        1,
        {
            "timeout_ms": 10_000,
            "allow_replication_factor_change": True,
            "topics": [
                {
                    "name": TOPIC,
                    "partitions": [{"partition_index": partition, "replicas": replicas}],
                }
            ],
        },
    )
    return response


async def _list(cluster: Cluster, node: int) -> list[dict[str, Any]]:
    response = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.LIST_PARTITION_REASSIGNMENTS,
        0,
        {"timeout_ms": 10_000, "topics": None},
    )
    assert response["error_code"] == ErrorCode.NO_ERROR
    topics: list[dict[str, Any]] = response["topics"]
    return topics


async def test_move_an_rf2_partition_with_data_to_another_broker(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, _replicated_configs(tmp_path))
        try:
            active = await _start_replicated(cluster)
            await _create_topic(cluster, active, TOPIC, [1, 2])
            await wait_for(
                lambda: (p := _partition(cluster, 1, TOPIC)) is not None and p.is_leader,
                15,
                "broker 1 leads the partition",
            )
            for _ in range(3):
                produced = await _produce(cluster, 1, TOPIC, -1)
                assert produced["error_code"] == ErrorCode.NO_ERROR, produced
            assert _same_bytes_up_to_hw(cluster, 1, [2], TOPIC) == 6
            old_dir = cluster.brokers[1].config.log_dirs[0] / f"{TOPIC}-0"
            assert old_dir.is_dir()
            assert _partition(cluster, 3, TOPIC) is None

            # Errors come back per partition and change nothing; a broker that is not the active
            # controller forwards the request.
            other = next(n for n in (1, 2, 3, 4) if n != active)
            bad = await _reassign(cluster, other, [2, 2])
            [bad_part] = bad["responses"][0]["partitions"]
            assert bad_part["error_code"] == ErrorCode.INVALID_REPLICA_ASSIGNMENT
            cancel = await _reassign(cluster, other, None)
            assert (
                cancel["responses"][0]["partitions"][0]["error_code"]
                == ErrorCode.NO_REASSIGNMENT_IN_PROGRESS
            )

            # Hold broker 3 back until the start is visible in ListPartitionReassignments.
            resume = _pause_fetching(cluster, 3)
            started = await _reassign(cluster, active, [2, 3])
            assert started["error_code"] == ErrorCode.NO_ERROR
            assert started["responses"] == [
                {
                    "name": TOPIC,
                    "partitions": [{"partition_index": 0, "error_code": 0, "error_message": None}],
                }
            ]
            assert await _list(cluster, other) == [
                {
                    "name": TOPIC,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "replicas": [2, 3, 1],
                            "adding_replicas": [3],
                            "removing_replicas": [1],
                        }
                    ],
                }
            ]
            await trio.sleep(0.5)
            assert cluster.controller(active).image.topics[TOPIC].partitions[0].is_reassigning
            resume()

            def completed() -> bool:
                for node in cluster.brokers:
                    p = cluster.controller(node).image.topics[TOPIC].partitions[0]
                    if p.replicas != (2, 3) or p.is_reassigning:
                        return False
                return True

            await wait_for(completed, 30, "the reassignment completed everywhere")
            done = cluster.controller(active).image.topics[TOPIC].partitions[0]
            assert done.isr == (2, 3)
            assert done.leader == 2  # moved off the removed replica
            assert await _list(cluster, active) == []
            assert await _list(cluster, other) == []

            # Broker 1 deleted its replica and its log.
            await wait_for(
                lambda: _partition(cluster, 1, TOPIC) is None and not old_dir.exists(),
                15,
                "broker 1 deleted its replica",
            )
            await wait_for(
                lambda: (p := _partition(cluster, 2, TOPIC)) is not None and p.is_leader,
                15,
                "broker 2 leads",
            )

            # The data is readable from the new leader; new writes reach broker 3 too.
            fetched = await _fetch(cluster, 2, TOPIC, 0)
            assert fetched["error_code"] == ErrorCode.NO_ERROR
            assert fetched["high_watermark"] == 6
            assert fetched["records"]
            produced = await _produce(cluster, 2, TOPIC, -1)
            assert produced["error_code"] == ErrorCode.NO_ERROR, produced
            assert produced["base_offset"] == 6
            await wait_for(
                lambda: (
                    (p := _partition(cluster, 2, TOPIC)) is not None and p.log.high_watermark == 8
                ),
                15,
                "the high watermark passes the new batch",
            )
            assert _same_bytes_up_to_hw(cluster, 2, [3], TOPIC) == 8
            stale = await _fetch(cluster, 1, TOPIC, 0)
            assert stale["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
        finally:
            if 4 in cluster.brokers:  # the broker-only node first, while the quorum is whole
                await cluster.stop(4)
            await cluster.stop_all()
