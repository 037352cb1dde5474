"""The controller side of partition replication on in-process nodes (127.0.0.1): RF=3 topics
placed on every broker, failover to an ISR member with a higher leader epoch when the leader's
broker is fenced, AlterPartition (on the CONTROLLER listener and forwarded from any broker)
with Kafka's validations, ElectLeaders and the automatic preferred leader rebalance, internal
topics with a replication factor. Every wait is bounded; every broker started is stopped."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata.controller import (
    AlterPartitionItem,
    AlterPartitionResult,
    CreateTopicRequest,
)
from pykbroker.metadata.image import PartitionRegistration
from pykbroker.metadata.partition_change import NO_LEADER
from pykbroker.testing import serve
from tests.server.test_raft_driver import Cluster, cluster_configs, request, wait_for

SESSION_TIMEOUT_S = 1.5  # FAST_QUORUM's broker.session.timeout.ms


@asynccontextmanager
async def replicated_cluster(root: Path, **overrides: Any) -> AsyncIterator[Cluster]:
    configs = [c.with_overrides(**overrides) for c in cluster_configs(root)]
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, configs)
        try:
            await cluster.start(*cluster.configs)
            await wait_for(cluster.leader, 10, "one active controller")
            await wait_for(
                lambda: all(
                    len([b for b in cluster.controller(n).image.brokers.values() if not b.fenced])
                    == 3
                    for n in cluster.brokers
                ),
                10,
                "3 unfenced brokers on every node",
            )
            yield cluster
        finally:
            await cluster.stop_all()


def partition(cluster: Cluster, node: int, topic: str, index: int) -> PartitionRegistration:
    return cluster.controller(node).image.topics[topic].partitions[index]


def controller_address(cluster: Cluster, node: int) -> str:
    port = next(b.port for b in cluster.brokers[node].bound if b.name == "CONTROLLER")
    return f"127.0.0.1:{port}"


async def alter_isr(
    cluster: Cluster, topic: str, index: int, members: Callable[[PartitionRegistration], list[int]]
) -> AlterPartitionResult:
    """As the partition's leader would: ask (through its own controller, which forwards unless
    it is the active one) for the ISR ``members(current)``, retrying while the partition
    moves under us (the brokers' own replication sends AlterPartitions too)."""
    with trio.fail_after(15):
        while True:  # bounded by the cancel scope
            active = await wait_for(cluster.leader, 10, "one active controller")
            image = cluster.controller(active).image
            current = image.topics[topic].partitions[index]
            isr = members(current)
            results = await cluster.controller(current.leader).alter_partition(
                [
                    AlterPartitionItem(
                        image.topics[topic].topic_id,
                        index,
                        current.leader_epoch,
                        current.partition_epoch,
                        tuple((b, image.brokers[b].epoch) for b in isr),
                    )
                ]
            )
            if results[0].error == ErrorCode.NO_ERROR:
                return results[0]
            await trio.sleep(0.1)


def alter_body(
    broker_id: int,
    broker_epoch: int,
    topic_id: uuid.UUID,
    index: int,
    reg: PartitionRegistration,
    isr: Sequence[int],
    *,
    leader_epoch: int | None = None,
    partition_epoch: int | None = None,
    member_epoch: dict[int, int] | None = None,
) -> dict[str, Any]:
    member_epoch = member_epoch or {}
    return {
        "broker_id": broker_id,
        "broker_epoch": broker_epoch,
        "topics": [
            {
                "topic_id": topic_id,
                "partitions": [
                    {
                        "partition_index": index,
                        "leader_epoch": reg.leader_epoch if leader_epoch is None else leader_epoch,
                        "new_isr_with_epochs": [
                            {"broker_id": b, "broker_epoch": member_epoch.get(b, -1)} for b in isr
                        ],
                        "leader_recovery_state": 0,
                        "partition_epoch": (
                            reg.partition_epoch if partition_epoch is None else partition_epoch
                        ),
                    }
                ],
            }
        ],
    }


async def create_rf3(cluster: Cluster, name: str, partitions: int) -> dict[str, Any]:
    node = next(iter(cluster.brokers))
    answer: dict[str, Any] = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.CREATE_TOPICS,
        7,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": 3,
                    "assignments": [],
                    "configs": [{"name": "min.insync.replicas", "value": "2"}],
                },
                {
                    "name": f"{name}-too-wide",
                    "num_partitions": 1,
                    "replication_factor": 4,
                    "assignments": [],
                    "configs": [],
                },
            ],
            "timeout_ms": 10_000,
            "validate_only": False,
        },
    )
    return answer


async def metadata(cluster: Cluster, node: int, topic: str) -> dict[str, Any]:
    answer: dict[str, Any] = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.METADATA,
        12,
        {
            "topics": [{"topic_id": uuid.UUID(int=0), "name": topic}],
            "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False,
        },
    )
    return answer


async def test_rf3_topic_failover_alter_partition_and_elections(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path, leader_imbalance_check_interval_seconds=1) as cluster:
        created = await create_rf3(cluster, "r3", 3)
        assert [t["error_code"] for t in created["topics"]] == [
            ErrorCode.NO_ERROR,
            ErrorCode.INVALID_REPLICATION_FACTOR,
        ]
        assert "only 3 broker(s)" in created["topics"][1]["error_message"]
        await wait_for(
            lambda: all("r3" in cluster.controller(n).image.topics for n in cluster.brokers),
            10,
            "the topic on every node",
        )
        # Every node's Metadata: 3 replicas, ISR = replicas, leader the first replica, epoch 0,
        # leaders striped over the brokers.
        leaders = set()
        for node in cluster.brokers:
            answer = await metadata(cluster, node, "r3")
            parts = answer["topics"][0]["partitions"]
            assert len(parts) == 3
            for p in parts:
                assert sorted(p["replica_nodes"]) == [1, 2, 3]
                assert p["isr_nodes"] == p["replica_nodes"]
                assert p["leader_id"] == p["replica_nodes"][0]
                assert p["leader_epoch"] == 0
                leaders.add(p["leader_id"])
        assert leaders == {1, 2, 3}

        active = await wait_for(cluster.leader, 10, "one active controller")
        topic_id = cluster.controller(active).image.topics["r3"].topic_id
        epochs = {b: r.epoch for b, r in cluster.controller(active).image.brokers.items()}
        # Partition 0's leader L; AlterPartition validations on the CONTROLLER listener.
        reg = partition(cluster, active, "r3", 0)
        leader = reg.leader
        other = [b for b in reg.replicas if b != leader]
        address = controller_address(cluster, active)

        async def alter(body: dict[str, Any], at: str = address) -> dict[str, Any]:
            answer: dict[str, Any] = await request(at, ApiKey.ALTER_PARTITION, 3, body)
            return answer

        def code(answer: dict[str, Any]) -> int:
            return int(answer["topics"][0]["partitions"][0]["error_code"])

        shrink = [leader, other[0]]
        bad = await alter(
            alter_body(leader, epochs[leader], topic_id, 0, reg, shrink, leader_epoch=-1)
        )
        assert code(bad) == ErrorCode.FENCED_LEADER_EPOCH
        bad = await alter(alter_body(other[0], epochs[other[0]], topic_id, 0, reg, shrink))
        assert code(bad) == ErrorCode.INVALID_REQUEST  # not the leader
        bad = await alter(alter_body(leader, epochs[leader], topic_id, 0, reg, [other[0]]))
        assert code(bad) == ErrorCode.INVALID_REQUEST  # the ISR must hold the leader
        bad = await alter(
            alter_body(
                leader, epochs[leader], topic_id, 0, reg, shrink, member_epoch={other[0]: 999_999}
            )
        )
        assert code(bad) == ErrorCode.INELIGIBLE_REPLICA  # another incarnation's epoch
        bad = await alter(alter_body(leader, epochs[leader], uuid.uuid4(), 0, reg, shrink))
        assert code(bad) == ErrorCode.UNKNOWN_TOPIC_ID
        bad = await alter(
            alter_body(leader, epochs[leader], topic_id, 0, reg, shrink, leader_epoch=5)
        )
        assert code(bad) == ErrorCode.NOT_CONTROLLER  # the sender knows more than this controller
        bad = await alter(alter_body(leader, epochs[leader] + 1, topic_id, 0, reg, shrink))
        assert bad["error_code"] == ErrorCode.STALE_BROKER_EPOCH
        follower_controller = next(n for n in cluster.brokers if n != active)
        bad = await alter(
            alter_body(leader, epochs[leader], topic_id, 0, reg, shrink),
            controller_address(cluster, follower_controller),
        )
        assert bad["error_code"] == ErrorCode.NOT_CONTROLLER
        # A valid shrink: the ISR changes, the partition epoch moves, the leader epoch does not.
        good = await alter(alter_body(leader, epochs[leader], topic_id, 0, reg, shrink))
        answered = good["topics"][0]["partitions"][0]
        assert answered["error_code"] == ErrorCode.NO_ERROR
        assert answered["isr"] == shrink
        assert (answered["leader_id"], answered["leader_epoch"]) == (leader, 0)
        assert answered["partition_epoch"] == 1
        stale = await alter(alter_body(leader, epochs[leader], topic_id, 0, reg, reg.isr))
        assert code(stale) == ErrorCode.INVALID_UPDATE_VERSION

        # The broker-side interface: the leader's own controller (forwarding if not active).
        result = await alter_isr(cluster, "r3", 0, lambda current: list(reg.replicas))
        assert sorted(result.isr) == sorted(reg.replicas)
        assert result.partition_epoch >= 2
        assert result.leader_epoch == 0
        # read-your-writes on the sender
        assert partition(cluster, leader, "r3", 0).partition_epoch >= result.partition_epoch

        # Fence a partition leader that is not the active controller: its partitions get a new
        # leader from the ISR with a higher leader epoch, and it leaves the ISRs.
        active = await wait_for(cluster.leader, 10, "one active controller")
        before = cluster.controller(active).image.topics["r3"].partitions
        victim = next(p.leader for p in before.values() if p.leader != active)
        led = {i: p for i, p in before.items() if p.leader == victim}
        stopped_at = time.monotonic()
        await cluster.stop(victim)

        def failed_over() -> bool:
            parts = cluster.controller(active).image.topics["r3"].partitions
            return all(parts[i].leader not in (victim, -1) for i in led)

        await wait_for(failed_over, 10, "new leaders for the victim's partitions")
        elapsed = time.monotonic() - stopped_at
        print(f"failover after {elapsed * 1000:.0f} ms")
        assert elapsed < SESSION_TIMEOUT_S + 3
        after = cluster.controller(active).image.topics["r3"].partitions
        for i, old in led.items():
            assert after[i].leader in old.isr
            assert after[i].leader_epoch == old.leader_epoch + 1
            assert after[i].partition_epoch > old.partition_epoch
        assert all(victim not in p.isr for p in after.values())
        assert all(victim in p.replicas for p in after.values())
        survivor = next(n for n in cluster.brokers)
        await wait_for(
            lambda: all(
                partition(cluster, survivor, "r3", i).leader == after[i].leader for i in led
            ),
            10,
            "the other node to replay the failover",
        )

        # While it is down its preferred partitions cannot move back.
        preferred = sorted(i for i, p in after.items() if p.replicas[0] == victim)
        assert preferred
        bootstrap = cluster.brokers[survivor].bootstrap_servers

        async def elect(indexes: list[int], election_type: int = 0) -> list[int]:
            answer = await request(
                bootstrap,
                ApiKey.ELECT_LEADERS,
                2,
                {
                    "election_type": election_type,
                    "topic_partitions": [{"topic": "r3", "partitions": indexes}],
                    "timeout_ms": 10_000,
                },
            )
            assert answer["error_code"] == 0
            return [
                p["error_code"] for p in answer["replica_election_results"][0]["partition_result"]
            ]

        first = preferred[0]
        assert await elect([first]) == [ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE]
        assert await elect([first], 1) == [ErrorCode.ELECTION_NOT_NEEDED]  # it has a leader
        assert await elect([99]) == [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]

        # Back again: unfenced; once in the ISR it can lead again.
        await cluster.start(victim)
        await wait_for(
            lambda: not cluster.controller(active).image.brokers[victim].fenced,
            10,
            "the victim unfenced",
        )
        # The current leader takes the victim back into the ISR (what its replica fetcher
        # does once it caught up), then a preferred election moves leadership back.
        await alter_isr(cluster, "r3", first, lambda current: sorted({*current.isr, victim}))
        # (the automatic rebalance, every second here, may beat the explicit election)
        assert await elect([first]) in ([ErrorCode.NO_ERROR], [ErrorCode.ELECTION_NOT_NEEDED])
        await wait_for(
            lambda: partition(cluster, survivor, "r3", first).leader == victim,
            10,
            "the preferred leader back",
        )
        assert (
            partition(cluster, survivor, "r3", first).leader_epoch == after[first].leader_epoch + 1
        )
        assert await elect([first]) == [ErrorCode.ELECTION_NOT_NEEDED]
        answer = await metadata(cluster, survivor, "r3")
        by_index = {p["partition_index"]: p for p in answer["topics"][0]["partitions"]}
        assert by_index[first]["leader_id"] == victim


async def test_auto_leader_rebalance_moves_leadership_back(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path, leader_imbalance_check_interval_seconds=1) as cluster:
        active = await wait_for(cluster.leader, 10, "one active controller")
        results = await cluster.controller(active).create_topics(
            [CreateTopicRequest("auto", num_partitions=3, replication_factor=3)]
        )
        assert results[0].error == ErrorCode.NO_ERROR
        parts = cluster.controller(active).image.topics["auto"].partitions
        index, reg = next((i, p) for i, p in parts.items() if p.leader != active)
        victim = reg.leader
        await cluster.stop(victim)
        await wait_for(
            lambda: partition(cluster, active, "auto", index).leader not in (victim, -1),
            10,
            "a new leader",
        )
        await cluster.start(victim)
        await wait_for(
            lambda: not cluster.controller(active).image.brokers[victim].fenced,
            10,
            "the victim unfenced",
        )
        await alter_isr(cluster, "auto", index, lambda current: sorted({*current.isr, victim}))
        await wait_for(
            lambda: partition(cluster, active, "auto", index).leader == victim,
            10,
            "the rebalance to move leadership back",
        )


async def test_internal_topics_are_replicated(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path, offsets_topic_replication_factor=3) as cluster:
        node = next(iter(cluster.brokers))
        answer = await request(
            cluster.brokers[node].bootstrap_servers,
            ApiKey.FIND_COORDINATOR,
            4,
            {"key_type": 0, "coordinator_keys": ["g"]},
        )
        assert answer["coordinators"][0]["error_code"] == ErrorCode.NO_ERROR
        offsets = cluster.controller(node).image.topics["__consumer_offsets"]
        assert all(len(p.replicas) == 3 for p in offsets.partitions.values())
        assert {p.leader for p in offsets.partitions.values()} == {1, 2, 3}


async def test_an_internal_topic_wider_than_the_cluster_is_unavailable(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path, offsets_topic_replication_factor=3) as broker:
        answer = await request(
            broker.bootstrap_servers,
            ApiKey.FIND_COORDINATOR,
            4,
            {"key_type": 0, "coordinator_keys": ["g"]},
        )
        assert answer["coordinators"][0]["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
        assert "__consumer_offsets" not in broker.service("controller").image.topics


async def test_unregistering_a_broker_moves_its_partitions(tmp_path: Path) -> None:
    async with replicated_cluster(tmp_path) as cluster:
        active = await wait_for(cluster.leader, 10, "one active controller")
        created = await cluster.controller(active).create_topics(
            [CreateTopicRequest("unreg", num_partitions=3, replication_factor=2)]
        )
        assert created[0].error == ErrorCode.NO_ERROR
        parts = cluster.controller(active).image.topics["unreg"].partitions
        victim = next(p.leader for p in parts.values() if p.leader != active)
        led = {i: p for i, p in parts.items() if p.leader == victim}
        await cluster.stop(victim)  # so it does not register again
        bootstrap = cluster.brokers[next(iter(cluster.brokers))].bootstrap_servers
        answer = await request(bootstrap, ApiKey.UNREGISTER_BROKER, 0, {"broker_id": victim})
        assert answer["error_code"] == ErrorCode.NO_ERROR
        image = cluster.controller(active).image
        assert victim not in image.brokers
        after = image.topics["unreg"].partitions
        for i, old in led.items():
            assert after[i].leader not in (victim, NO_LEADER)
            assert after[i].leader_epoch == old.leader_epoch + 1
            assert victim not in after[i].isr
        again = await request(bootstrap, ApiKey.UNREGISTER_BROKER, 0, {"broker_id": victim})
        assert again["error_code"] == ErrorCode.BROKER_ID_NOT_REGISTERED

        # AlterPartition v2 (an ISR without broker epochs) on the active controller.
        index, reg = next((i, p) for i, p in after.items() if len(p.isr) == 2)
        epochs = {b: r.epoch for b, r in image.brokers.items()}
        body = alter_body(
            reg.leader, epochs[reg.leader], image.topics["unreg"].topic_id, index, reg, [reg.leader]
        )
        partitions = body["topics"][0]["partitions"]
        partitions[0]["new_isr"] = [
            b["broker_id"] for b in partitions[0].pop("new_isr_with_epochs")
        ]
        active = await wait_for(cluster.leader, 10, "one active controller")
        answer = await request(controller_address(cluster, active), ApiKey.ALTER_PARTITION, 2, body)
        answered = answer["topics"][0]["partitions"][0]
        assert (answered["error_code"], answered["isr"]) == (ErrorCode.NO_ERROR, [reg.leader])
