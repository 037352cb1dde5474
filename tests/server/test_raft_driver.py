"""The trio Raft driver with the controller on top: in-process nodes on real 127.0.0.1 sockets.

A single node is a one-voter quorum whose metadata goes through Raft (and still loads data
directories written before Raft); three nodes with CONTROLLER listeners elect one leader, forward
controller requests to it, replicate and replay the same metadata, fence a silent broker, elect
a new leader when the old one stops, and let a restarted node catch up. Every wait is bounded.
"""

from __future__ import annotations

import functools
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.api.protocol.header import (
    decode_request_header,
    encode_response_header,
    response_header_version,
)
from pykbroker.api.protocol.messages import vote
from pykbroker.api.protocol.registry import request_message, response_message
from pykbroker.config import BrokerConfig
from pykbroker.log.log import Log
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.metadata import schemas
from pykbroker.metadata.controller import (
    CreatePartitionsRequest,
    CreateTopicRequest,
    QuorumController,
)
from pykbroker.metadata.records import record, serialize
from pykbroker.raft import (
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    LeaderAndEpoch,
    QuorumConfig,
    VoteRequest,
    VoteResponse,
    wire,
)
from pykbroker.server.broker import BrokerServer
from pykbroker.server.controller_apis import CONTROLLER_SUPPORTED
from pykbroker.server.quorum_state_store import FileQuorumStateStore
from pykbroker.server.raft_driver import (
    OUTBOUND_VERSIONS,
    RaftDriver,
    VoterEndpoint,
    network_error_response,
)
from pykbroker.server.raft_log import METADATA_PARTITION_DIR, RAFT_LOG_CONFIG, KafkaReplicatedLog
from pykbroker.server.storage import ensure_formatted
from pykbroker.testing import serve
from tests.wire import WireClient

FAST_QUORUM = {
    "controller.quorum.election.timeout.ms": "300",
    "controller.quorum.fetch.timeout.ms": "600",
    "controller.quorum.request.timeout.ms": "600",
    "controller.quorum.election.backoff.max.ms": "300",
    "broker.heartbeat.interval.ms": "200",
    "broker.session.timeout.ms": "1500",
    "group.initial.rebalance.delay.ms": "0",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cluster_configs(
    root: Path, nodes: int = 3, roles: dict[int, str] | None = None
) -> list[BrokerConfig]:
    """Node ids 1..nodes; every node is broker and controller unless ``roles`` says; the
    voters are the nodes with the controller role."""
    roles = roles or {}
    ports = [(free_port(), free_port()) for _ in range(nodes)]
    role_of = {i + 1: roles.get(i + 1, "broker,controller") for i in range(nodes)}
    voters = ",".join(
        f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports) if "controller" in role_of[i + 1]
    )
    cluster_id = "raft-driver-test-cluster"
    configs = []
    for index, (broker_port, controller_port) in enumerate(ports):
        node_id = index + 1
        data = root / f"node-{node_id}"
        ensure_formatted((data,), node_id, cluster_id)
        listeners = []
        if "broker" in role_of[node_id]:
            listeners.append(f"PLAINTEXT://127.0.0.1:{broker_port}")
        if "controller" in role_of[node_id]:
            listeners.append(f"CONTROLLER://127.0.0.1:{controller_port}")
        config, unknown = BrokerConfig.from_properties(
            {
                "process.roles": role_of[node_id],
                "node.id": str(node_id),
                "controller.quorum.voters": voters,
                "listeners": ",".join(listeners),
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "log.dirs": str(data),
                **FAST_QUORUM,
            }
        )
        assert not unknown
        configs.append(config)
    return configs


async def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``condition`` until truthy or fail after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while True:  # bounded by the cancel scope
            value = condition()
            if value:
                return value
            await trio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Cluster:
    """In-process BrokerServers in one trio run."""

    def __init__(
        self,
        nursery: trio.Nursery,
        configs: list[BrokerConfig],
        broker_class: type[BrokerServer] = BrokerServer,
    ) -> None:
        self.nursery = nursery
        self.configs = {c.node_id: c for c in configs}
        self.brokers: dict[int, BrokerServer] = {}
        self.broker_class = broker_class

    async def start(self, *node_ids: int) -> None:
        async def start_one(node_id: int) -> None:
            broker = self.broker_class(self.configs[node_id])
            self.brokers[node_id] = broker
            await self.nursery.start(broker.run)

        with trio.fail_after(30):
            async with trio.open_nursery() as starting:
                for node_id in node_ids:
                    starting.start_soon(start_one, node_id)

    async def stop(self, node_id: int) -> None:
        broker = self.brokers.pop(node_id)
        broker.request_shutdown()
        with trio.fail_after(30):
            await broker.stopped.wait()

    async def stop_all(self) -> None:
        for node_id in list(self.brokers):
            await self.stop(node_id)

    def controller(self, node_id: int) -> QuorumController:
        controller: QuorumController = self.brokers[node_id].service("controller")
        return controller

    def driver(self, node_id: int) -> RaftDriver:
        driver: RaftDriver = self.brokers[node_id].service("raft")
        return driver

    def leader(self) -> int | None:
        """The single active controller every running node agrees on, if any."""
        leaders = {n for n in self.brokers if self.controller(n).is_active}
        seen = {self.controller(n).controller_id for n in self.brokers}
        if len(leaders) == 1 and seen == leaders:
            return next(iter(leaders))
        return None


@asynccontextmanager
async def running_cluster(
    root: Path,
    nodes: int = 3,
    roles: dict[int, str] | None = None,
    broker_class: type[BrokerServer] = BrokerServer,
) -> AsyncIterator[Cluster]:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, cluster_configs(root, nodes, roles), broker_class)
        try:
            await cluster.start(*cluster.configs)
            yield cluster
        finally:
            await cluster.stop_all()


async def request(bootstrap: str, api_key: int, version: int, body: dict[str, Any]) -> Any:
    client = await WireClient.connect(bootstrap)
    try:
        with trio.fail_after(10):
            return await client.request(api_key, version, body)
    finally:
        await client.aclose()


# --- a single node: a one-voter quorum ----------------------------------------------------


async def test_single_node_commits_through_raft_and_reloads(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path) as broker:
        controller: QuorumController = broker.service("controller")
        driver: RaftDriver = broker.service("raft")
        assert controller.is_active
        assert driver.is_leader
        assert controller.controller_id == 1
        results = await controller.create_topics([CreateTopicRequest("t", num_partitions=2)])
        assert results[0].error == ErrorCode.NO_ERROR
        assert "t" in controller.image.topics  # committed (flushed) before the answer
        assert driver.high_watermark == controller.applied_offset
        epoch = driver.leader_and_epoch.epoch
        topic_id = controller.image.topics["t"].topic_id
    state = FileQuorumStateStore.in_log_dir(tmp_path).read()
    assert state is not None
    assert state.epoch == epoch
    async with serve(log_dirs=tmp_path) as broker:
        controller = broker.service("controller")
        assert controller.image.topics["t"].topic_id == topic_id
        assert broker.service("raft").leader_and_epoch.epoch == epoch + 1


async def test_create_partitions_grows_a_topic(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path) as broker:
        controller: QuorumController = broker.service("controller")
        await controller.create_topics([CreateTopicRequest("grow", num_partitions=2)])

        def body(count: int, validate_only: bool = False) -> dict[str, Any]:
            return {
                "topics": [
                    {"name": "grow", "count": count, "assignments": None},
                    {"name": "nope", "count": 3, "assignments": None},
                ],
                "timeout_ms": 5000,
                "validate_only": validate_only,
            }

        answer = await request(broker.bootstrap_servers, ApiKey.CREATE_PARTITIONS, 3, body(4, True))
        assert [r["error_code"] for r in answer["results"]] == [0, 3]
        assert len(controller.image.topics["grow"].partitions) == 2
        answer = await request(broker.bootstrap_servers, ApiKey.CREATE_PARTITIONS, 3, body(4))
        assert answer["results"][0]["error_code"] == 0
        assert len(controller.image.topics["grow"].partitions) == 4
        assert broker.service("replica_manager").get_partition("grow", 3) is not None
        answer = await request(broker.bootstrap_servers, ApiKey.CREATE_PARTITIONS, 3, body(4))
        assert answer["results"][0]["error_code"] == ErrorCode.INVALID_PARTITIONS
        assert answer["results"][0]["error_message"] == "Topic already has 4 partitions."


async def test_a_metadata_log_written_before_raft_still_loads(tmp_path: Path) -> None:
    topic_id = uuid.uuid4()
    records = [
        record(schemas.TOPIC_RECORD, name="old", topic_id=topic_id),
        record(
            schemas.PARTITION_RECORD,
            partition_id=0,
            topic_id=topic_id,
            replicas=[1],
            isr=[1],
            removing_replicas=[],
            adding_replicas=[],
            leader=1,
            leader_epoch=0,
            partition_epoch=0,
            directories=[],
        ),
    ]
    ensure_formatted((tmp_path,), 1)
    old = Log.open(tmp_path / METADATA_PARTITION_DIR, RAFT_LOG_CONFIG, now_ms=0)
    batch = build_batch([Record(key=None, value=serialize(r), timestamp=0) for r in records])
    old.append_as_leader(batch, 0, 0)  # what the pre-Raft MetadataLog wrote: epoch 0 batches
    old.flush()
    old.close()
    async with serve(log_dirs=tmp_path) as broker:
        controller: QuorumController = broker.service("controller")
        assert controller.image.topics["old"].topic_id == topic_id
        assert broker.service("raft").leader_and_epoch.epoch == 1


# --- three nodes ------------------------------------------------------------------------


async def test_three_nodes_elect_one_leader_and_share_metadata(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        leader = await wait_for(cluster.leader, 10, "one active controller")
        follower = next(n for n in cluster.brokers if n != leader)
        await wait_for(
            lambda: all(
                {1, 2, 3} <= set(cluster.controller(n).image.brokers) for n in cluster.brokers
            ),
            10,
            "every node sees 3 registered brokers",
        )
        # A follower forwards CreateTopics to the active controller and answers once its own
        # image has the topic.
        results = await cluster.controller(follower).create_topics(
            [CreateTopicRequest("spread", num_partitions=3)]
        )
        assert results[0].error == ErrorCode.NO_ERROR
        assert "spread" in cluster.controller(follower).image.topics
        leaders = {
            p.leader
            for p in cluster.controller(follower).image.topics["spread"].partitions.values()
        }
        assert leaders == {1, 2, 3}
        await wait_for(
            lambda: all("spread" in cluster.controller(n).image.topics for n in cluster.brokers),
            10,
            "the topic on every node",
        )
        # CreatePartitions on a follower is forwarded too.
        grown = await cluster.controller(follower).create_partitions(
            [CreatePartitionsRequest("spread", 5), CreatePartitionsRequest("missing", 2)]
        )
        assert [r.error for r in grown] == [
            ErrorCode.NO_ERROR,
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ]
        assert len(cluster.controller(follower).image.topics["spread"].partitions) == 5

        # Producer id blocks come from the active controller, forwarded or not: never shared.
        blocks = [
            await cluster.controller(n).allocate_producer_ids(1000) for n in (follower, leader)
        ]
        assert abs(blocks[0] - blocks[1]) >= 1000
        offsets = {cluster.driver(n).high_watermark for n in cluster.brokers}
        assert len(offsets) <= 2  # followers may be one fetch behind

        # DescribeQuorum on a follower's broker listener is forwarded to the leader.
        bootstrap = cluster.brokers[follower].bootstrap_servers
        quorum = await request(
            bootstrap,
            ApiKey.DESCRIBE_QUORUM,
            2,
            {
                "topics": [
                    {"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}
                ]
            },
        )
        partition = quorum["topics"][0]["partitions"][0]
        assert partition["error_code"] == 0
        assert partition["leader_id"] == leader
        assert sorted(v["replica_id"] for v in partition["current_voters"]) == [1, 2, 3]
        assert sorted(n["node_id"] for n in quorum["nodes"]) == [1, 2, 3]

        cluster_info = await request(
            bootstrap,
            ApiKey.DESCRIBE_CLUSTER,
            1,
            {"include_cluster_authorized_operations": False, "endpoint_type": 1},
        )
        assert cluster_info["controller_id"] == leader
        assert sorted(b["broker_id"] for b in cluster_info["brokers"]) == [1, 2, 3]

        metadata = await request(
            bootstrap,
            ApiKey.METADATA,
            12,
            {
                "topics": None,
                "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False,
            },
        )
        assert metadata["controller_id"] == leader
        assert sorted(b["node_id"] for b in metadata["brokers"]) == [1, 2, 3]

        # A broker answers NOT_LEADER_OR_FOLLOWER for a partition another broker leads.
        partitions = cluster.controller(follower).image.topics["spread"].partitions
        elsewhere = next(i for i, p in partitions.items() if p.leader != follower)
        batch = build_batch([Record(key=None, value=b"v", timestamp=0)])
        produced = await request(
            bootstrap,
            ApiKey.PRODUCE,
            9,
            {
                "transactional_id": None,
                "acks": -1,
                "timeout_ms": 5000,
                "topic_data": [
                    {
                        "name": "spread",
                        "partition_data": [{"index": elsewhere, "records": batch}],
                    }
                ],
            },
        )
        answer_partition = produced["responses"][0]["partition_responses"][0]
        assert answer_partition["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER

        # The CONTROLLER listener of a non-leader answers controller RPCs with NOT_CONTROLLER.
        other = next(n for n in cluster.brokers if n not in (leader,))
        controller_port = next(
            b.port for b in cluster.brokers[other].bound if b.name == "CONTROLLER"
        )
        answer = await request(
            f"127.0.0.1:{controller_port}",
            ApiKey.CREATE_TOPICS,
            7,
            {
                "topics": [
                    {
                        "name": "nope",
                        "num_partitions": 1,
                        "replication_factor": 1,
                        "assignments": [],
                        "configs": [],
                    }
                ],
                "timeout_ms": 1000,
                "validate_only": False,
            },
        )
        assert answer["topics"][0]["error_code"] == ErrorCode.NOT_CONTROLLER


async def test_controller_only_and_broker_only_nodes(tmp_path: Path) -> None:
    """Voters 1-3 (3 is only a controller) and node 4, a broker-only observer."""
    roles = {3: "controller", 4: "broker"}
    async with running_cluster(tmp_path, 4, roles) as cluster:
        await wait_for(cluster.leader, 10, "one active controller")
        assert cluster.driver(4).voters.keys() == {1, 2, 3}
        assert not cluster.driver(4).replica.quorum.is_voter
        await wait_for(
            lambda: set(cluster.controller(3).image.brokers) == {1, 2, 4},
            10,
            "brokers 1, 2 and 4 registered (not the controller-only node)",
        )
        assert all(b.name == "CONTROLLER" for b in cluster.brokers[3].bound)
        # Clients are given a broker as controller id, even when node 3 leads the quorum.
        assert cluster.controller(4).client_controller_id in {1, 2, 4}
        results = await cluster.controller(4).create_topics([CreateTopicRequest("obs", 3)])
        assert results[0].error == ErrorCode.NO_ERROR
        placed = {p.leader for p in cluster.controller(4).image.topics["obs"].partitions.values()}
        assert placed == {1, 2, 4}
        await wait_for(
            lambda: all("obs" in cluster.controller(n).image.topics for n in cluster.brokers),
            10,
            "the topic on every node, observer and controller-only included",
        )


async def test_a_new_leader_takes_over_and_a_restarted_node_catches_up(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        first = await wait_for(cluster.leader, 10, "one active controller")
        survivor = next(n for n in cluster.brokers if n != first)
        await cluster.controller(survivor).create_topics([CreateTopicRequest("before")])
        stopped_at = time.monotonic()
        await cluster.stop(first)
        second = await wait_for(cluster.leader, 10, "a new active controller")
        elapsed_ms = (time.monotonic() - stopped_at) * 1000
        print(f"new leader {second} after {elapsed_ms:.0f} ms (graceful resign)")
        assert second != first
        assert cluster.driver(second).leader_and_epoch.epoch > 1
        results = await cluster.controller(survivor).create_topics([CreateTopicRequest("after")])
        assert results[0].error == ErrorCode.NO_ERROR
        await cluster.start(first)
        await wait_for(
            lambda: {"before", "after"} <= set(cluster.controller(first).image.topics),
            10,
            "the restarted node to catch up",
        )
        assert cluster.controller(first).controller_id == second


async def test_a_broker_that_stops_heartbeating_is_fenced(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        leader = await wait_for(cluster.leader, 10, "one active controller")
        silent = next(n for n in cluster.brokers if n != leader)
        await cluster.controller(leader).create_topics([CreateTopicRequest("owned", 3)])
        owned = {
            i
            for i, p in cluster.controller(leader).image.topics["owned"].partitions.items()
            if p.leader == silent
        }
        assert len(owned) == 1
        await cluster.stop(silent)
        await wait_for(
            lambda: cluster.controller(leader).image.brokers[silent].fenced,
            10,
            "the silent broker to be fenced",
        )
        # Its partition is offline (no other replica holds its data).
        partitions = cluster.controller(leader).image.topics["owned"].partitions
        assert {i for i, p in partitions.items() if p.leader == -1} == owned
        live = {b for b, reg in cluster.controller(leader).image.brokers.items() if not reg.fenced}
        assert silent not in live
        # Topics are placed on unfenced brokers only.
        await cluster.controller(leader).create_topics([CreateTopicRequest("x", num_partitions=4)])
        placed = {
            p.leader for p in cluster.controller(leader).image.topics["x"].partitions.values()
        }
        assert silent not in placed
        # Back again: registered anew and unfenced.
        await cluster.start(silent)
        await wait_for(
            lambda: not cluster.controller(leader).image.brokers[silent].fenced,
            10,
            "the broker to be unfenced",
        )
        partitions = cluster.controller(leader).image.topics["owned"].partitions
        assert {i for i, p in partitions.items() if p.leader == silent} == owned
        assert all(p.leader >= 0 for p in partitions.values())


# --- the driver's effect order ------------------------------------------------------------


async def test_the_driver_persists_and_flushes_before_sending_and_applying(
    tmp_path: Path,
) -> None:
    """A 3-voter node times out and becomes a candidate: the vote it persists and the log flush
    happen before any Vote request leaves and before the listener hears anything."""
    events: list[str] = []

    class SpyStore(FileQuorumStateStore):
        def write(self, state: Any, voters: Any = ()) -> None:
            events.append(f"persist epoch={state.epoch} voted={state.voted_id}")
            super().write(state, voters)

    class SpyLog(KafkaReplicatedLog):
        def flush(self) -> None:
            events.append("flush")
            super().flush()

    class SpyListener:
        def handle_commit(self, high_watermark: int) -> None:
            events.append(f"commit {high_watermark}")

        def handle_leader_change(self, leader: LeaderAndEpoch) -> None:
            events.append(f"leader {leader.leader_id}@{leader.epoch}")

    dead = {n: VoterEndpoint(n, "127.0.0.1", free_port()) for n in (2, 3)}  # nobody listens
    raft_log = SpyLog.open(tmp_path / METADATA_PARTITION_DIR)
    driver = RaftDriver(
        node_id=1,
        voters={1: VoterEndpoint(1, "127.0.0.1", free_port()), **dead},
        log=raft_log,
        store=SpyStore.in_log_dir(tmp_path),
        cluster_id="c",
        config=QuorumConfig(
            controller_quorum_election_timeout_ms=50,
            controller_quorum_fetch_timeout_ms=100,
            controller_quorum_request_timeout_ms=200,
            fetch_max_wait_ms=50,
            pre_vote_enabled=False,
        ),
    )
    driver.add_listener(SpyListener())
    sent: list[str] = []

    async def exchange(destination: int, body: Any) -> Any:
        sent.append(f"{type(body).__name__} to {destination} after {list(events)}")
        return network_error_response(body)

    driver._exchange = exchange  # type: ignore[method-assign]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await wait_for(lambda: sent, 5, "a vote request")
            nursery.cancel_scope.cancel()
    finally:
        raft_log.close()
    persisted = [e for e in events if e.startswith("persist") and "voted=1" in e]
    assert persisted, events
    first_vote = sent[0]
    assert first_vote.startswith("VoteRequest")
    assert persisted[0] in first_vote  # the vote for itself was durable before it asked
    assert driver.leader_and_epoch.leader_id == -1  # no quorum: no leader


# --- pre-vote (KIP-996) on the wire -------------------------------------------------------


def test_vote_v2_carries_the_pre_vote_and_the_controller_listener_serves_it() -> None:
    pre_vote = VoteRequest("c", 4, 2, 3, 100, pre_vote=True, voter_id=1)
    data = codec.decode(vote.REQUEST, 2, codec.encode(vote.REQUEST, 2, wire.to_wire(pre_vote, 2)))
    assert wire.request_from_wire(ApiKey.VOTE, 2, data) == pre_vote
    assert CONTROLLER_SUPPORTED[ApiKey.VOTE] == (0, 2)  # Kafka 4.1's controller range
    assert OUTBOUND_VERSIONS[ApiKey.VOTE] == 2


async def test_three_voters_elect_with_pre_vote_and_an_isolated_voter_rejoins_in_the_same_epoch(
    tmp_path: Path,
) -> None:
    """Over real sockets with pre-vote on: one leader; a voter cut off from everyone (its
    outbound requests fail, so it neither fetches nor gets pre-votes) keeps timing out for many
    election timeouts but never bumps the epoch, and when the network heals it follows the
    same leader in the same epoch -- without pre-vote it would come back with a higher epoch
    and force an election."""
    async with running_cluster(tmp_path) as cluster:
        leader = await wait_for(cluster.leader, 10, "one active controller")
        # Brokers run KIP-996 pre-votes, as Kafka 4.x always does.
        assert all(cluster.driver(n).config.pre_vote_enabled for n in cluster.brokers)
        epoch = cluster.driver(leader).leader_and_epoch.epoch
        isolated = next(n for n in cluster.brokers if n != leader)
        driver = cluster.driver(isolated)
        prospective_seen: list[int] = []

        async def unreachable(destination: int, body: Any) -> Any:
            if isinstance(body, VoteRequest):
                assert body.pre_vote  # it only ever asks for pre-votes
                assert body.candidate_epoch == epoch
                prospective_seen.append(body.candidate_epoch)
            await trio.sleep(0.01)
            return network_error_response(body)

        driver._exchange = unreachable  # type: ignore[method-assign]
        await wait_for(lambda: len(prospective_seen) >= 4, 10, "repeated pre-vote attempts")
        await trio.sleep(1.0)  # several more election timeouts (300 ms) cut off
        assert driver.replica.quorum.epoch == epoch
        del driver._exchange  # the network heals
        await wait_for(
            lambda: driver.leader_and_epoch == LeaderAndEpoch(leader, epoch),
            10,
            "the isolated voter following the same leader in the same epoch",
        )
        assert cluster.leader() == leader
        assert {cluster.driver(n).leader_and_epoch.epoch for n in cluster.brokers} == {epoch}
        results = await cluster.controller(isolated).create_topics([CreateTopicRequest("healed")])
        assert results[0].error == ErrorCode.NO_ERROR


class _VoteV1Voter:
    """A voter on a real socket that only knows Vote v0-1 (a pre-KIP-996 controller): it
    answers ApiVersions, grants every standard vote and acknowledges BeginQuorumEpoch."""

    def __init__(self) -> None:
        self.votes: list[tuple[int, dict[str, Any]]] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            while True:  # until the driver closes the connection
                while len(buffer) < 4 or len(buffer) < 4 + struct.unpack_from(">i", buffer)[0]:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                size = struct.unpack_from(">i", buffer)[0]
                frame, buffer = bytes(buffer[4 : 4 + size]), buffer[4 + size :]
                header, offset = decode_request_header(frame)
                key, version = header.request_api_key, header.request_api_version
                body = codec.decode(request_message(key), version, frame[offset:])
                answer = self._answer(key, version, body)
                payload = encode_response_header(
                    header.correlation_id, response_header_version(key, version)
                ) + codec.encode(response_message(key), version, answer)
                await stream.send_all(struct.pack(">i", len(payload)) + payload)

    def _answer(self, key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        if key == ApiKey.API_VERSIONS:
            ranges = {ApiKey.VOTE: (0, 1), ApiKey.BEGIN_QUORUM_EPOCH: (0, 1)}
            return {
                "error_code": 0,
                "api_keys": [
                    {"api_key": k, "min_version": low, "max_version": high}
                    for k, (low, high) in ranges.items()
                ],
            }
        if key == ApiKey.VOTE:
            self.votes.append((version, body))
            request = wire.request_from_wire(key, version, body)
            assert isinstance(request, VoteRequest)
            response = VoteResponse(ErrorCode.NO_ERROR, -1, request.candidate_epoch, True)
            return wire.to_wire(response, version)
        request_ = wire.request_from_wire(key, version, body)
        assert isinstance(request_, BeginQuorumEpochRequest)
        return wire.to_wire(
            BeginQuorumEpochResponse(ErrorCode.NO_ERROR, request_.leader_id, request_.leader_epoch),
            version,
        )


async def test_a_pre_vote_to_a_voter_without_vote_v2_falls_back_to_a_standard_election(
    tmp_path: Path,
) -> None:
    """KIP-996 compatibility as Kafka's KafkaRaftClient: the peer's ApiVersions says Vote v0-1,
    so the pre-vote cannot be sent (answered locally with UNSUPPORTED_VERSION) and the
    Prospective node becomes a Candidate at once; its standard vote goes out as Vote v1."""
    peer = _VoteV1Voter()
    raft_log = KafkaReplicatedLog.open(tmp_path / METADATA_PARTITION_DIR)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, peer.serve, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        driver = RaftDriver(
            node_id=1,
            voters={
                1: VoterEndpoint(1, "127.0.0.1", free_port()),
                2: VoterEndpoint(2, "127.0.0.1", port),
            },
            log=raft_log,
            store=FileQuorumStateStore.in_log_dir(tmp_path),
            cluster_id="c",
            config=QuorumConfig(
                controller_quorum_election_timeout_ms=100,
                controller_quorum_fetch_timeout_ms=200,
                controller_quorum_request_timeout_ms=500,
                fetch_max_wait_ms=100,
            ),
        )
        assert driver.config.pre_vote_enabled
        try:
            await nursery.start(driver.run)
            await wait_for(lambda: driver.is_leader, 10, "node 1 elected with node 2's vote")
        finally:
            nursery.cancel_scope.cancel()
    raft_log.close()
    assert peer.votes, "the standard vote reached the v1-only voter"
    assert all(version == 1 for version, _ in peer.votes)
    assert driver.leader_and_epoch == LeaderAndEpoch(1, 1)
