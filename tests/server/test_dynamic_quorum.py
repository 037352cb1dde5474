"""KIP-853 dynamic quorums end to end, with in-process nodes on real 127.0.0.1 sockets.

Three controllers formatted as ``pykbroker format --initial-controllers`` does (meta.properties
with their directory ids, the bootstrap checkpoint) and configured with
``controller.quorum.bootstrap.servers`` elect a leader and create a topic; DescribeQuorum v2
lists the voters with their directory ids and endpoints; a broker-only node joins as an observer
through the bootstrap servers (after the leader cleaned its log, so it installs a snapshot and
keeps the dynamic voter set); AddRaftVoter promotes a caught-up controller that was formatted
with ``--no-initial-controllers``; RemoveRaftVoter removes voters, the leader included (it
resigns). Every wait is bounded; every node started is stopped.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.config import BrokerConfig, ConfigError
from pykbroker.metadata.controller import CreateTopicRequest
from pykbroker.metadata.snapshot import SnapshotPolicy
from pykbroker.raft.voter_set import Endpoint, ReplicaKey, VoterNode, VoterSet
from pykbroker.server.raft_driver import MetadataLogRetention
from pykbroker.server.storage import ensure_formatted, kafka_uuid_string, write_bootstrap_checkpoint
from tests.server.test_raft_driver import FAST_QUORUM, Cluster, free_port, wait_for
from tests.wire import WireClient

CLUSTER_ID = "dynamic-quorum-test-cluster"


class DynamicCluster(Cluster):
    """A Cluster whose first ``voters`` nodes are the initial voters of a dynamic quorum."""

    directory_ids: dict[int, uuid.UUID]
    controller_ports: dict[int, int]

    def voter_ids(self, node_id: int) -> set[int]:
        return set(self.driver(node_id).replica.voter_set.voter_ids)

    def quorum_leader(self) -> int | None:
        """The raft leader every running node agrees on."""
        seen = {self.driver(n).leader_and_epoch.leader_id for n in self.brokers}
        if len(seen) == 1:
            leader = next(iter(seen))
            if leader in self.brokers and self.driver(leader).is_leader:
                return leader
        return None


def dynamic_configs(
    root: Path,
    roles: dict[int, str],
    initial_voters: tuple[int, ...],
    stale_ports: dict[int, int] | None = None,
) -> tuple[list[BrokerConfig], dict[int, uuid.UUID], dict[int, int]]:
    """Format node ids ``roles`` names; the ``initial_voters`` get the bootstrap checkpoint
    (``--initial-controllers``), the other controllers none (``--no-initial-controllers``).
    ``stale_ports``: the CONTROLLER port the checkpoint gives a voter instead of its own."""
    ports = {n: (free_port(), free_port()) for n in roles}
    stale_ports = stale_ports or {}
    directory_ids = {n: uuid.uuid4() for n in roles}
    voters = VoterSet.of(
        VoterNode(
            ReplicaKey(n, directory_ids[n]),
            (Endpoint("CONTROLLER", "127.0.0.1", stale_ports.get(n, ports[n][1])),),
        )
        for n in initial_voters
    )
    bootstrap = ",".join(f"127.0.0.1:{ports[n][1]}" for n in initial_voters if n not in stale_ports)
    configs = []
    for node_id, role in roles.items():
        data = root / f"node-{node_id}"
        ensure_formatted(
            (data,),
            node_id,
            CLUSTER_ID,
            metadata_directory_id=kafka_uuid_string(directory_ids[node_id]),
        )
        if node_id in initial_voters:
            write_bootstrap_checkpoint(data, voters, 0)
        broker_port, controller_port = ports[node_id]
        listeners = []
        if "broker" in role:
            listeners.append(f"PLAINTEXT://127.0.0.1:{broker_port}")
        if "controller" in role:
            listeners.append(f"CONTROLLER://127.0.0.1:{controller_port}")
        config, unknown = BrokerConfig.from_properties(
            {
                "process.roles": role,
                "node.id": str(node_id),
                "controller.quorum.bootstrap.servers": bootstrap,
                "listeners": ",".join(listeners),
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "log.dirs": str(data),
                **FAST_QUORUM,
            }
        )
        assert not unknown
        configs.append(config)
    return configs, directory_ids, {n: p[1] for n, p in ports.items()}


@asynccontextmanager
async def dynamic_cluster(
    root: Path,
    roles: dict[int, str],
    initial_voters: tuple[int, ...] = (1, 2, 3),
    stale_ports: dict[int, int] | None = None,
) -> AsyncIterator[DynamicCluster]:
    configs, directory_ids, controller_ports = dynamic_configs(
        root, roles, initial_voters, stale_ports
    )
    async with trio.open_nursery() as nursery:
        cluster = DynamicCluster(nursery, configs)
        cluster.directory_ids = directory_ids
        cluster.controller_ports = controller_ports
        try:
            await cluster.start(*initial_voters)
            yield cluster
        finally:
            await cluster.stop_all()


async def controller_request(
    cluster: DynamicCluster, node_id: int, api_key: int, version: int, body: dict[str, Any]
) -> dict[str, Any]:
    client = await WireClient.connect(f"127.0.0.1:{cluster.controller_ports[node_id]}")
    try:
        with trio.fail_after(20):
            return await client.request(api_key, version, body)
    finally:
        await client.aclose()


async def broker_request(
    cluster: DynamicCluster, node_id: int, api_key: int, version: int, body: dict[str, Any]
) -> dict[str, Any]:
    client = await WireClient.connect(cluster.brokers[node_id].bootstrap_servers)
    try:
        with trio.fail_after(20):
            return await client.request(api_key, version, body)
    finally:
        await client.aclose()


def add_voter_body(cluster: DynamicCluster, node_id: int) -> dict[str, Any]:
    return {
        "cluster_id": CLUSTER_ID,
        "timeout_ms": 10_000,
        "voter_id": node_id,
        "voter_directory_id": cluster.directory_ids[node_id],
        "listeners": [
            {"name": "CONTROLLER", "host": "127.0.0.1", "port": cluster.controller_ports[node_id]}
        ],
    }


async def add_voter(cluster: DynamicCluster, leader: int, node_id: int) -> dict[str, Any]:
    return await controller_request(cluster, leader, 80, 0, add_voter_body(cluster, node_id))


async def remove_voter(cluster: DynamicCluster, leader: int, node_id: int) -> dict[str, Any]:
    return await controller_request(
        cluster,
        leader,
        81,
        0,
        {
            "cluster_id": CLUSTER_ID,
            "voter_id": node_id,
            "voter_directory_id": cluster.directory_ids[node_id],
        },
    )


async def test_bootstrap_servers_quorum_elects_serves_and_an_observer_installs_a_snapshot(
    tmp_path: Path,
) -> None:
    roles = {1: "broker,controller", 2: "broker,controller", 3: "broker,controller", 5: "broker"}
    async with dynamic_cluster(tmp_path, roles) as cluster:
        leader = await wait_for(cluster.quorum_leader, 15, "one raft leader")
        assert all(cluster.voter_ids(n) == {1, 2, 3} for n in cluster.brokers)
        assert all(set(cluster.driver(n).voters) == {1, 2, 3} for n in cluster.brokers)
        await wait_for(
            lambda: all(
                {1, 2, 3} <= set(cluster.controller(n).image.brokers) for n in cluster.brokers
            ),
            10,
            "every broker registered",
        )
        results = await cluster.controller(leader).create_topics(
            [CreateTopicRequest("dynamic", num_partitions=3)]
        )
        assert results[0].error == ErrorCode.NO_ERROR

        # DescribeQuorum v2 on the leader's CONTROLLER listener: directory ids and endpoints.
        described = await controller_request(cluster, leader, 55, 2, {"topics": []})
        partition = described["topics"][0]["partitions"][0]
        assert partition["leader_id"] == leader
        voters = {v["replica_id"]: v["replica_directory_id"] for v in partition["current_voters"]}
        assert voters == {n: cluster.directory_ids[n] for n in (1, 2, 3)}
        nodes = {n["node_id"]: n["listeners"][0]["port"] for n in described["nodes"]}
        assert nodes == {n: cluster.controller_ports[n] for n in (1, 2, 3)}

        # Snapshots with a 1-byte retention: the leader's log start moves past 0.
        for n in cluster.brokers:
            cluster.controller(n).snapshot_policy = SnapshotPolicy(1500, 0)
            cluster.driver(n).retention = MetadataLogRetention(max_bytes=1, max_ms=-1)
        for i in range(12):
            results = await cluster.controller(leader).create_topics(
                [CreateTopicRequest(f"snap-{i}", num_partitions=2)]
            )
            assert results[0].error == ErrorCode.NO_ERROR
        leader_log = cluster.driver(leader).log
        await wait_for(lambda: leader_log.log_start_offset > 0, 10, "the leader's log cleaned")

        # A broker-only node knows only the bootstrap servers: it installs the leader's
        # snapshot, which carries the dynamic voter set, and registers.
        await cluster.start(5)
        observer = cluster.driver(5)
        await wait_for(
            lambda: (
                observer.log.earliest_snapshot_id is not None
                and observer.log.earliest_snapshot_id.offset > 0
            ),
            15,
            "the observer installed a snapshot",
        )
        assert cluster.voter_ids(5) == {1, 2, 3}
        assert (
            cluster.driver(5).replica.voter_set.voters[1].key.directory_id
            == (cluster.directory_ids[1])
        )
        assert not observer.replica.quorum.is_voter
        await wait_for(
            lambda: (
                "snap-11" in cluster.controller(5).image.topics
                and 5 in cluster.controller(leader).image.brokers
            ),
            15,
            "the observer caught up and registered",
        )


async def test_add_and_remove_voters_including_the_leader(tmp_path: Path) -> None:
    roles = dict.fromkeys((1, 2, 3, 4), "broker,controller")
    async with dynamic_cluster(tmp_path, roles) as cluster:
        leader = await wait_for(cluster.quorum_leader, 15, "one raft leader")
        # Node 4 (--no-initial-controllers) starts as an observer and learns the voters.
        await cluster.start(4)
        await wait_for(
            lambda: (
                cluster.voter_ids(4) == {1, 2, 3}
                and cluster.driver(4).high_watermark >= cluster.driver(leader).high_watermark > 0
            ),
            15,
            "node 4 caught up as an observer",
        )
        assert not cluster.driver(4).replica.quorum.is_voter

        # A voter that already votes: DUPLICATE_VOTER; a follower: NOT_LEADER_OR_FOLLOWER.
        duplicate = await add_voter(cluster, leader, 1 if leader != 1 else 2)
        assert duplicate["error_code"] == ErrorCode.DUPLICATE_VOTER
        follower = next(n for n in (1, 2, 3) if n != leader)
        not_leader = await add_voter(cluster, follower, 4)
        assert not_leader["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER

        # Sent to a follower's broker listener, it is forwarded to the active controller (as
        # Kafka's KafkaApis forwardToController).
        added = await wait_for_success(
            lambda: broker_request(cluster, follower, 80, 0, add_voter_body(cluster, 4)),
            "AddRaftVoter through a broker",
        )
        assert added["error_code"] == ErrorCode.NO_ERROR
        await wait_for(
            lambda: all(cluster.voter_ids(n) == {1, 2, 3, 4} for n in cluster.brokers),
            10,
            "every node sees 4 voters",
        )
        assert cluster.driver(4).replica.quorum.is_voter
        assert set(cluster.driver(1).voters) == {1, 2, 3, 4}
        described = await controller_request(cluster, leader, 55, 2, {"topics": []})
        partition = described["topics"][0]["partitions"][0]
        assert {v["replica_id"] for v in partition["current_voters"]} == {1, 2, 3, 4}

        # Remove a follower, then the leader itself: it resigns and another voter leads.
        removed = await wait_for_success(
            lambda: remove_voter(cluster, leader, follower), "RemoveRaftVoter"
        )
        assert removed["error_code"] == ErrorCode.NO_ERROR
        remaining = {1, 2, 3, 4} - {follower}
        await wait_for(
            lambda: all(cluster.voter_ids(n) == remaining for n in cluster.brokers),
            10,
            "every node sees the follower removed",
        )
        removed = await wait_for_success(
            lambda: remove_voter(cluster, leader, leader), "RemoveRaftVoter of the leader"
        )
        assert removed["error_code"] == ErrorCode.NO_ERROR
        new_leader = await wait_for(
            lambda: (n := cluster.quorum_leader()) is not None and n != leader and n,
            15,
            "a new leader among the remaining voters",
        )
        assert new_leader in remaining - {leader}
        assert not cluster.driver(leader).replica.quorum.is_voter
        results = await cluster.controller(new_leader).create_topics(
            [CreateTopicRequest("after-removal")]
        )
        assert results[0].error == ErrorCode.NO_ERROR
        await wait_for(
            lambda: all(
                "after-removal" in cluster.controller(n).image.topics for n in cluster.brokers
            ),
            10,
            "the removed nodes still replicate as observers",
        )


async def wait_for_success(send: Any, what: str) -> dict[str, Any]:
    """Retry ``send`` while the leader answers REQUEST_TIMED_OUT (its epoch's first commit, or
    the previous change, is not committed yet), as Kafka's admin client retries."""
    with trio.move_on_after(20):
        while True:  # bounded by the cancel scope
            answer: dict[str, Any] = await send()
            if answer["error_code"] != ErrorCode.REQUEST_TIMED_OUT:
                return answer
            await trio.sleep(0.1)
    raise AssertionError(f"{what} kept timing out")


async def test_a_voter_whose_endpoint_changed_sends_update_raft_voter(tmp_path: Path) -> None:
    roles = dict.fromkeys((1, 2, 3), "broker,controller")
    # The bootstrap checkpoint names a port node 3 does not listen on (its listener moved).
    async with dynamic_cluster(tmp_path, roles, stale_ports={3: free_port()}) as cluster:
        await wait_for(cluster.quorum_leader, 15, "one raft leader")
        wanted = (Endpoint("CONTROLLER", "127.0.0.1", cluster.controller_ports[3]),)
        await wait_for(
            lambda: all(
                cluster.driver(n).replica.voter_set.endpoints(3) == wanted for n in cluster.brokers
            ),
            15,
            "every node has node 3's new endpoint",
        )
        assert all(cluster.voter_ids(n) == {1, 2, 3} for n in cluster.brokers)
        assert cluster.driver(1).voters[3].port == cluster.controller_ports[3]


def test_bootstrap_servers_config_is_checked_as_kafka_does(tmp_path: Path) -> None:
    base = {
        "node.id": "5",
        "listeners": "PLAINTEXT://127.0.0.1:0",
        "log.dirs": str(tmp_path / "data"),
    }
    observer, _ = BrokerConfig.from_properties(
        {
            **base,
            "process.roles": "broker",
            "controller.quorum.bootstrap.servers": "127.0.0.1:9093, [::1]:9095",
        }
    )
    assert observer.quorum_bootstrap_addresses == (("127.0.0.1", 9093), ("::1", 9095))
    assert observer.is_multi_node
    # Kafka's KafkaConfig: a broker needs controller.quorum.voters or bootstrap servers.
    with pytest.raises(ConfigError, match=r"controller\.quorum\.bootstrap\.servers must"):
        BrokerConfig.from_properties({**base, "process.roles": "broker"})
    with pytest.raises(ConfigError, match="not of the form host:port"):
        BrokerConfig.from_properties(
            {**base, "process.roles": "broker", "controller.quorum.bootstrap.servers": "1@h:9"}
        )
    result = subprocess.run(
        [sys.executable, "-m", "pykbroker", "serve"]
        + [f"--override={k}={v}" for k, v in {**base, "process.roles": "broker"}.items()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "controller.quorum.bootstrap.servers" in result.stderr
