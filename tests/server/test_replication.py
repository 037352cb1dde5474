"""Partition replication (broker side).

Unit level: the leader's high watermark / ISR rules of ``Partition`` (maximal ISR while a change
is pending, expansion and shrink proposals, stale answers), the follower's KIP-101/KIP-279
truncation against another log, and the ``ReplicaManager``'s acks=all purgatory with
``min.insync.replicas`` (NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
REQUEST_TIMED_OUT) and follower reads up to the log end offset.

In-process clusters on 127.0.0.1: an RF=3 topic where acks=all needs the whole ISR and every
replica holds the leader's bytes up to the high watermark; stopped followers leave the ISR after
``replica.lag.time.max.ms`` (AlterPartition, visible in Metadata) until acks=all is refused,
then come back, catch up and rejoin; a full restart; a leader failover, a preferred election
while the old leader runs; and an old leader truncating records the new leader never had.
Every wait is bounded and every broker a test starts is stopped by it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log import Log, LogConfig
from pykbroker.log.log_manager import LogManager
from pykbroker.log.record_batch import Record, build_batch, iter_batch_headers
from pykbroker.metadata import schemas
from pykbroker.metadata.image import MetadataImage, PartitionRegistration
from pykbroker.metadata.records import record
from pykbroker.replication.partition import Partition, PendingIsr
from pykbroker.replication.replica_manager import (
    FetchPartitionRequest,
    ProducePartitionResult,
    ReplicaManager,
)
from pykbroker.server.replica_fetcher import ReplicaFetcherManager, truncate_to_epoch_end_offset
from tests.server.test_raft_driver import Cluster, cluster_configs, request, wait_for

LAG_MS = 3000


def _log(path: Path) -> Log:
    return Log.open(path, LogConfig(), now_ms=0)


def _batch(count: int = 2, value: bytes = b"v") -> bytes:
    return build_batch([Record(None, value + b"%d" % i, timestamp=1) for i in range(count)])


def _registration(
    isr: tuple[int, ...], *, leader: int = 1, leader_epoch: int = 0, partition_epoch: int = 0
) -> PartitionRegistration:
    return PartitionRegistration((1, 2, 3), isr, leader, leader_epoch, partition_epoch)


def _pending(partition: Partition) -> PendingIsr | None:
    """Read afresh (mypy would keep a narrowed attribute across the calls that change it)."""
    return partition.pending_isr


def _leads(partition: Partition) -> bool:
    return partition.is_leader


def _leader(tmp_path: Path, isr: tuple[int, ...] = (1, 2, 3)) -> Partition:
    partition = Partition(("t", 0), uuid.uuid4(), _log(tmp_path / "t-0"))
    partition.update(_registration(isr), 1, LogConfig(), now_ms=0)
    return partition


# --- the leader's rules (unit) --------------------------------------------------------------


def test_high_watermark_is_the_minimum_log_end_offset_over_the_isr(tmp_path: Path) -> None:
    partition = _leader(tmp_path)
    partition.append_as_leader(_batch(3), 0)
    assert partition.log.log_end_offset == 3
    assert partition.log.high_watermark == 0  # the followers' ends are unknown yet
    partition.update_follower_fetch_state(2, 3, 10, 3)
    assert not partition.maybe_increment_high_watermark()
    partition.update_follower_fetch_state(3, 2, 10, 3)
    assert partition.maybe_increment_high_watermark()
    assert partition.log.high_watermark == 2
    partition.update_follower_fetch_state(3, 3, 11, 3)
    partition.maybe_increment_high_watermark()
    assert partition.log.high_watermark == 3
    # A fetch from a broker that is no replica is refused.
    with pytest.raises(KafkaError) as caught:
        partition.update_follower_fetch_state(7, 3, 11, 3)
    assert caught.value.code == ErrorCode.NOT_LEADER_OR_FOLLOWER


def test_a_single_replica_isr_moves_the_high_watermark_on_append(tmp_path: Path) -> None:
    partition = Partition(("t", 0), uuid.uuid4(), _log(tmp_path / "t-0"))
    partition.update(PartitionRegistration((1,), (1,), 1, 0, 0), 1, LogConfig())
    partition.append_as_leader(_batch(4), 0)
    assert partition.log.high_watermark == 4


def test_isr_shrink_is_pending_until_committed_and_hw_uses_the_maximal_isr(
    tmp_path: Path,
) -> None:
    partition = _leader(tmp_path)
    partition.append_as_leader(_batch(2), 0)
    partition.update_follower_fetch_state(2, 2, 1000, 2)
    # Follower 3 never fetched: out of sync once the lag passed (its caught-up time is 0).
    assert partition.out_of_sync_replicas(500, 1000) == ()
    assert partition.out_of_sync_replicas(1001, 1000) == (3,)
    proposal = partition.maybe_shrink_isr(1001, 1000)
    assert proposal == PendingIsr((1, 2), 0, 0)
    assert partition.maybe_shrink_isr(1001, 1000) is None  # one change in flight at a time
    # While pending, replica 3 still holds the high watermark back (Kafka's maximal ISR) and
    # min.insync.replicas still counts the committed ISR.
    assert not partition.maybe_increment_high_watermark()
    assert partition.in_sync_count() == 3
    assert partition.alter_partition_completed(proposal, 0, (1, 2), 1)
    assert partition.isr == (1, 2)
    assert partition.partition_epoch == 1
    assert partition.pending_isr is None
    assert partition.log.high_watermark == 2
    assert partition.in_sync_count() == 2


def test_isr_expansion_needs_the_high_watermark_and_the_epoch_start(tmp_path: Path) -> None:
    partition = _leader(tmp_path, isr=(1, 2))
    partition.append_as_leader(_batch(4), 0)
    partition.update_follower_fetch_state(2, 4, 10, 4)
    partition.maybe_increment_high_watermark()
    assert partition.log.high_watermark == 4
    partition.update_follower_fetch_state(3, 2, 10, 4)
    assert partition.maybe_expand_isr(3, lambda _: True) is None  # below the high watermark
    partition.update_follower_fetch_state(3, 4, 11, 4)
    assert partition.maybe_expand_isr(3, lambda _: False) is None  # fenced: not eligible
    proposal = partition.maybe_expand_isr(3, lambda _: True)
    assert proposal is not None
    assert proposal.isr == (1, 2, 3)
    assert partition.in_sync_count() == 2  # an expansion counts once committed
    assert partition.maximal_isr == (1, 2, 3)
    # FENCED_LEADER_EPOCH / INVALID_UPDATE_VERSION keep it pending until the next image ...
    partition.alter_partition_failed(proposal, reset=False)
    assert partition.pending_isr is proposal
    # ... which resets it; OPERATION_NOT_ATTEMPTED resets at once.
    partition.update(_registration((1, 2), partition_epoch=1), 1, LogConfig(), now_ms=20)
    assert _pending(partition) is None
    again = partition.maybe_expand_isr(3, lambda _: True)
    assert again is not None
    assert again.partition_epoch == 1
    partition.alter_partition_failed(again, reset=True)
    assert _pending(partition) is None
    # A stale answer (older partition epoch) is not applied.
    third = partition.maybe_expand_isr(3, lambda _: True)
    assert third is not None
    assert not partition.alter_partition_completed(third, 0, (1, 2, 3), 0)
    assert partition.isr == (1, 2)


def test_a_new_leader_epoch_records_its_start_and_resets_follower_states(tmp_path: Path) -> None:
    partition = Partition(("t", 0), uuid.uuid4(), _log(tmp_path / "t-0"))
    partition.update(_registration((1, 2, 3), leader=2), 1, LogConfig(), now_ms=0)
    assert not _leads(partition)
    partition.log.append_as_follower(
        build_batch([Record(None, b"a", timestamp=1)] * 3, partition_leader_epoch=0), 0
    )
    partition.update_follower_high_watermark(2)
    assert partition.log.high_watermark == 2
    partition.update(
        _registration((1, 3), leader=1, leader_epoch=1, partition_epoch=1), 1, LogConfig(), 50
    )
    assert partition.is_leader
    assert partition.leader_epoch_start_offset == 3
    assert partition.log.end_offset_for_epoch(0) == (0, 3)
    assert partition.remote_replicas[3].last_caught_up_time_ms == 50  # in the ISR
    assert partition.remote_replicas[2].last_caught_up_time_ms == 0
    # The new leader does not move the high watermark before the ISR fetched.
    assert partition.log.high_watermark == 2
    partition.update_follower_fetch_state(3, 3, 60, 3)
    partition.maybe_increment_high_watermark()
    assert partition.log.high_watermark == 3


# --- follower truncation (KIP-101 / KIP-279), unit-level with two logs ---------------------------


def _append_epochs(plog: Log, epochs: list[tuple[int, int]]) -> None:
    for epoch, count in epochs:
        plog.append_as_leader(_batch(count, b"e%d-" % epoch), epoch, 0)


def _all_bytes(plog: Log, end: int) -> bytes:
    out = bytearray()
    offset = plog.log_start_offset
    for _ in range(end + 1):  # at least one batch per round
        if offset >= end:
            break
        data = plog.read(offset, 1 << 30, max_offset=end)
        if not data:
            break
        out += data
        for _, header in iter_batch_headers(data):
            offset = header.next_offset
    return bytes(out)


def _follower(path: Path) -> Partition:
    partition = Partition(("t", 0), uuid.uuid4(), _log(path))
    partition.update(_registration((1, 2, 3), leader=2, leader_epoch=5), 1, LogConfig())
    return partition


def _offset_for_leader_epoch(leader: Log, epoch: int) -> tuple[int, int]:
    return leader.end_offset_for_epoch(epoch)


def test_follower_truncates_to_the_divergence_point_then_copies_the_leader(tmp_path: Path) -> None:
    leader = _log(tmp_path / "leader")
    _append_epochs(leader, [(0, 3), (2, 5), (4, 2)])  # epochs 0:[0,3) 2:[3,8) 4:[8,10)
    follower = _follower(tmp_path / "follower")
    _append_epochs(follower.log, [(0, 3), (1, 3), (3, 3)])  # 0:[0,3) 1:[3,6) 3:[6,9)
    follower.log.high_watermark = 3
    rounds = 0
    for _ in range(10):  # bounded: each round steps back at least one epoch
        rounds += 1
        cache = follower.log.leader_epoch_cache
        assert cache is not None
        latest = cache.latest_epoch()
        assert latest is not None
        leader_epoch, end_offset = _offset_for_leader_epoch(leader, latest)
        if truncate_to_epoch_end_offset(follower, latest, leader_epoch, end_offset):
            break
    assert rounds == 2  # asked for 3 (leader: epoch 2 ends at 8), then for 1 (epoch 0 ends at 3)
    assert follower.log.log_end_offset == 3
    follower.append_as_follower(leader.read(3, 1 << 30), leader.high_watermark, 0)
    assert follower.log.log_end_offset == leader.log_end_offset == 10
    assert _all_bytes(follower.log, 10) == _all_bytes(leader, 10)
    cache, leader_cache = follower.log.leader_epoch_cache, leader.leader_epoch_cache
    assert cache is not None
    assert leader_cache is not None
    assert list(cache.entries) == list(leader_cache.entries)


def test_follower_with_the_same_latest_epoch_keeps_its_prefix(tmp_path: Path) -> None:
    leader = _log(tmp_path / "leader")
    _append_epochs(leader, [(0, 3), (1, 2)])  # the leader has fewer records of epoch 1
    follower = _follower(tmp_path / "follower")
    _append_epochs(follower.log, [(0, 3), (1, 2), (1, 2)])  # one batch more of epoch 1
    leader_epoch, end_offset = _offset_for_leader_epoch(leader, 1)
    assert truncate_to_epoch_end_offset(follower, 1, leader_epoch, end_offset)
    assert follower.log.log_end_offset == 5
    # A follower that is behind truncates nothing.
    behind = _follower(tmp_path / "behind")
    _append_epochs(behind.log, [(0, 2)])
    leader_epoch, end_offset = _offset_for_leader_epoch(leader, 0)
    assert truncate_to_epoch_end_offset(behind, 0, leader_epoch, end_offset)
    assert behind.log.log_end_offset == 2


# --- three replicas in a cluster -------------------------------------------------------------


def _produce_body(topic: str, acks: int, batch: bytes, timeout_ms: int = 5000) -> dict[str, Any]:
    return {
        "transactional_id": None,
        "acks": acks,
        "timeout_ms": timeout_ms,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
    }


async def _produce(cluster: Cluster, node: int, topic: str, acks: int) -> dict[str, Any]:
    response = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.PRODUCE,
        9,
        _produce_body(topic, acks, _batch(2)),
    )
    part: dict[str, Any] = response["responses"][0]["partition_responses"][0]
    return part


async def _fetch(cluster: Cluster, node: int, topic: str, offset: int) -> dict[str, Any]:
    response = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.FETCH,
        12,
        {
            "replica_id": -1,
            "max_wait_ms": 0,
            "min_bytes": 0,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                    ],
                }
            ],
        },
    )
    part: dict[str, Any] = response["responses"][0]["partitions"][0]
    return part


async def _metadata_isr(cluster: Cluster, node: int, topic: str) -> list[int]:
    response = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.METADATA,
        12,
        {
            "topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}],
            "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False,
        },
    )
    return sorted(response["topics"][0]["partitions"][0]["isr_nodes"])


def _partition(cluster: Cluster, node: int, topic: str) -> Partition | None:
    found: Partition | None = (
        cluster.brokers[node].service("replica_manager").get_partition(topic, 0)
    )
    return found


def _replicated_configs(root: Path) -> list[Any]:
    configs = cluster_configs(root, 4, {4: "broker"})
    return [
        c.with_overrides(
            replica_lag_time_max_ms=LAG_MS,
            replica_fetch_wait_max_ms=200,
            replica_fetch_backoff_ms=100,
            # Long enough that the controller never fences a stopped broker during the test:
            # the ISR shrinks only because its leader saw it lag (AlterPartition).
            broker_session_timeout_ms=120_000,
        )
        for c in configs
    ]


async def _create_topic(cluster: Cluster, node: int, topic: str, replicas: list[int]) -> None:
    response = await request(
        cluster.brokers[node].bootstrap_servers,
        ApiKey.CREATE_TOPICS,
        7,
        {
            "topics": [
                {
                    "name": topic,
                    "num_partitions": -1,
                    "replication_factor": -1,
                    "assignments": [{"partition_index": 0, "broker_ids": replicas}],
                    "configs": [{"name": "min.insync.replicas", "value": "2"}],
                }
            ],
            "timeout_ms": 10000,
            "validate_only": False,
        },
    )
    assert response["topics"][0]["error_code"] == ErrorCode.NO_ERROR, response


def _same_bytes_up_to_hw(cluster: Cluster, leader: int, followers: list[int], topic: str) -> int:
    """Every follower holds the leader's bytes up to the leader's high watermark."""
    lead = _partition(cluster, leader, topic)
    assert lead is not None
    hw = lead.log.high_watermark
    expected = _all_bytes(lead.log, hw)
    for node in followers:
        follower = _partition(cluster, node, topic)
        assert follower is not None
        assert follower.log.log_end_offset >= hw
        assert _all_bytes(follower.log, hw) == expected, f"node {node} diverged"
        assert follower.log.high_watermark <= hw
    return hw


async def _start_replicated(cluster: Cluster) -> int:
    """Start every node of ``_replicated_configs``; the active controller once all 4 brokers
    are unfenced in every node's image."""
    await cluster.start(*cluster.configs)
    active: int = await wait_for(cluster.leader, 15, "one active controller")
    await wait_for(
        lambda: all(
            len([b for b in cluster.controller(n).image.brokers.values() if not b.fenced]) == 4
            for n in cluster.brokers
        ),
        15,
        "4 unfenced brokers everywhere",
    )
    return active


async def test_rf3_replication_isr_shrink_expand_and_min_insync_replicas(tmp_path: Path) -> None:
    """Voters 1-3 and broker-only node 4; the partition lives on the active controller (leader),
    node 4 and one other voter, so both followers can stop with the quorum still alive."""
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, _replicated_configs(tmp_path))
        try:
            controller = await _start_replicated(cluster)
            voter = next(n for n in (1, 2, 3) if n != controller)
            leader, followers = controller, [4, voter]
            await _create_topic(cluster, leader, "rep", [leader, *followers])
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "rep")) is not None and p.leader_id == leader
                    for n in (leader, *followers)
                ),
                15,
                "the partition on its 3 replicas",
            )

            # acks=all answers once the ISR has the batch; the followers hold the same bytes.
            for i in range(5):
                answer = await _produce(cluster, leader, "rep", -1)
                assert answer["error_code"] == ErrorCode.NO_ERROR, answer
                assert answer["base_offset"] == 2 * i
            lead = _partition(cluster, leader, "rep")
            assert lead is not None
            assert lead.log.high_watermark == lead.log.log_end_offset == 10
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "rep")) is not None and p.log.log_end_offset == 10
                    for n in followers
                ),
                10,
                "followers at the leader's end",
            )
            assert _same_bytes_up_to_hw(cluster, leader, followers, "rep") == 10
            # Followers answer consumers and producers NOT_LEADER_OR_FOLLOWER.
            assert (await _fetch(cluster, 4, "rep", 0))["error_code"] == (
                ErrorCode.NOT_LEADER_OR_FOLLOWER
            )
            assert (await _produce(cluster, 4, "rep", 1))["error_code"] == (
                ErrorCode.NOT_LEADER_OR_FOLLOWER
            )

            # Node 4 stops gracefully: controlled shutdown (KIP-631) takes it out of the ISR
            # before it stops, so the high watermark does not wait for it; consumers never
            # see past the high watermark.
            await cluster.stop(4)
            await wait_for(lambda: 4 not in lead.isr, 20, "the ISR without node 4")
            assert await _metadata_isr(cluster, leader, "rep") == sorted([leader, voter])
            answer = await _produce(cluster, leader, "rep", 1)
            assert answer["error_code"] == ErrorCode.NO_ERROR
            assert lead.log.log_end_offset == 12
            part = await _fetch(cluster, leader, "rep", 0)
            fetched = [h.next_offset for _, h in iter_batch_headers(part["records"])]
            assert max(fetched) <= part["high_watermark"]
            await wait_for(lambda: lead.log.high_watermark == 12, 10, "the high watermark moves")
            answer = await _produce(cluster, leader, "rep", -1)
            assert answer["error_code"] == ErrorCode.NO_ERROR  # 2 in sync >= min.insync 2

            # The second follower stops too (controlled shutdown again): acks=all is refused,
            # acks=1 still works.
            await cluster.stop(voter)
            answer = await _produce(cluster, leader, "rep", 1)
            assert answer["error_code"] == ErrorCode.NO_ERROR
            await wait_for(lambda: lead.isr == (leader,), 20, "the ISR down to the leader")
            assert await _metadata_isr(cluster, leader, "rep") == [leader]
            answer = await _produce(cluster, leader, "rep", -1)
            assert answer["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS
            end = lead.log.log_end_offset
            await wait_for(lambda: lead.log.high_watermark == end, 10, "HW at the leader's end")

            # Both come back, catch up and rejoin the ISR.
            await cluster.start(4, voter)
            await wait_for(
                lambda: sorted(lead.isr) == sorted([leader, *followers]),
                30,
                "both followers back in the ISR",
            )
            assert await _metadata_isr(cluster, leader, "rep") == sorted([leader, *followers])
            answer = await _produce(cluster, leader, "rep", -1)
            assert answer["error_code"] == ErrorCode.NO_ERROR
            assert answer["base_offset"] == end
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "rep")) is not None
                    and p.log.log_end_offset == lead.log.log_end_offset
                    for n in followers
                ),
                10,
                "followers caught up",
            )
            assert _same_bytes_up_to_hw(cluster, leader, followers, "rep") == end + 2

            # The whole cluster restarts: the replicas agree again and acks=all works.
            await cluster.stop_all()
            await cluster.start(*cluster.configs)

            def settled() -> int | None:
                ours = [_partition(cluster, n, "rep") for n in (leader, *followers)]
                leads = [p for p in ours if p is not None and p.is_leader]
                if len(leads) != 1 or sorted(leads[0].isr) != sorted([leader, *followers]):
                    return None
                return leads[0].node_id

            now_leader = await wait_for(settled, 60, "a leader with the full ISR after a restart")
            answer = await _produce(cluster, now_leader, "rep", -1)
            assert answer["error_code"] == ErrorCode.NO_ERROR, answer
            assert answer["base_offset"] == end + 2
            others = [n for n in (leader, *followers) if n != now_leader]
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "rep")) is not None
                    and p.log.log_end_offset == end + 4
                    for n in others
                ),
                10,
                "followers caught up after the restart",
            )
            assert _same_bytes_up_to_hw(cluster, now_leader, others, "rep") == end + 4
        finally:
            await cluster.stop_all()


async def test_leader_failover_moves_fetching_to_the_new_leader(tmp_path: Path) -> None:
    """Three voters; the partition's leader (not the active controller) stops, the controller
    elects a new leader from the ISR, the other follower truncates and fetches from it, acks=all
    keeps working, and the old leader comes back as a follower of the new epoch."""
    configs = [
        c.with_overrides(broker_session_timeout_ms=1500) for c in _replicated_configs(tmp_path)
    ]
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, configs[:3])
        try:
            await cluster.start(*cluster.configs)
            controller = await wait_for(cluster.leader, 15, "one active controller")
            await wait_for(
                lambda: all(
                    len([b for b in cluster.controller(n).image.brokers.values() if not b.fenced])
                    == 3
                    for n in cluster.brokers
                ),
                15,
                "3 unfenced brokers everywhere",
            )
            old_leader = next(n for n in (1, 2, 3) if n != controller)
            replicas = [old_leader, *(n for n in (1, 2, 3) if n != old_leader)]
            await _create_topic(cluster, controller, "fail", replicas)
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "fail")) is not None and p.leader_id == old_leader
                    for n in replicas
                ),
                15,
                "the partition on its 3 replicas",
            )
            for _ in range(3):
                answer = await _produce(cluster, old_leader, "fail", -1)
                assert answer["error_code"] == ErrorCode.NO_ERROR, answer
            old = _partition(cluster, old_leader, "fail")
            assert old is not None
            epoch = old.leader_epoch
            await cluster.stop(old_leader)

            def new_leader() -> int | None:
                p = _partition(cluster, controller, "fail")
                if p is None or p.leader_epoch <= epoch or p.leader_id < 0:
                    return None
                return p.leader_id

            leader = await wait_for(new_leader, 20, "a new leader elected from the ISR")
            assert leader != old_leader
            lead = _partition(cluster, leader, "fail")
            assert lead is not None
            await wait_for(lambda: lead.is_leader, 10, "the new leader knows it")
            assert lead.log.end_offset_for_epoch(epoch) == (epoch, 6)  # the old epoch's end
            answer = await _produce(cluster, leader, "fail", -1)
            assert answer["error_code"] == ErrorCode.NO_ERROR, answer
            assert answer["base_offset"] == 6

            await cluster.start(old_leader)
            await wait_for(
                lambda: sorted(lead.isr) == [1, 2, 3], 30, "the old leader back in the ISR"
            )
            back = _partition(cluster, old_leader, "fail")
            assert back is not None
            assert not back.is_leader
            assert back.leader_id == leader
            answer = await _produce(cluster, leader, "fail", -1)
            assert answer["error_code"] == ErrorCode.NO_ERROR
            followers = [n for n in (1, 2, 3) if n != leader]
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "fail")) is not None
                    and p.log.log_end_offset == lead.log.log_end_offset
                    for n in followers
                ),
                10,
                "followers caught up",
            )
            assert _same_bytes_up_to_hw(cluster, leader, followers, "fail") == 10

            # A preferred election moves leadership back to the first replica while the
            # current leader runs: it becomes a follower of the new epoch and fetches.
            epoch_before = lead.leader_epoch
            elected = await request(
                cluster.brokers[leader].bootstrap_servers,
                ApiKey.ELECT_LEADERS,
                2,
                {
                    "election_type": 0,
                    "topic_partitions": [{"topic": "fail", "partitions": [0]}],
                    "timeout_ms": 10000,
                },
            )
            result = elected["replica_election_results"][0]["partition_result"][0]
            assert result["error_code"] == ErrorCode.NO_ERROR, elected
            await wait_for(lambda: back.is_leader, 10, "the preferred replica leads again")
            assert back.leader_epoch > epoch_before
            await wait_for(lambda: not lead.is_leader, 10, "the former leader follows")
            answer = await _produce(cluster, old_leader, "fail", -1)
            assert answer["error_code"] == ErrorCode.NO_ERROR, answer
            assert answer["base_offset"] == 10
            stale = await _produce(cluster, leader, "fail", -1)
            assert stale["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
            others = [n for n in (1, 2, 3) if n != old_leader]
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "fail")) is not None
                    and p.log.log_end_offset == back.log.log_end_offset
                    for n in others
                ),
                10,
                "followers of the new epoch caught up",
            )
            assert _same_bytes_up_to_hw(cluster, old_leader, others, "fail") == 12
        finally:
            await cluster.stop_all()


# --- the replica manager: follower fetches, acks=all and min.insync.replicas ----------------------


def _image_with_partition(isr: list[int], partition_epoch: int = 0) -> MetadataImage:
    topic_id = uuid.UUID(int=7)
    records = [
        record(schemas.TOPIC_RECORD, name="t", topic_id=topic_id),
        record(
            schemas.PARTITION_RECORD,
            partition_id=0,
            topic_id=topic_id,
            replicas=[1, 2, 3],
            isr=isr,
            removing_replicas=[],
            adding_replicas=[],
            leader=1,
            leader_epoch=0,
            partition_epoch=partition_epoch,
            directories=[],
        ),
    ]
    return MetadataImage().apply(records, 1)


def _error(result: ProducePartitionResult) -> ErrorCode:
    return result.error


def _replica_manager(tmp_path: Path, min_isr: int = 2) -> ReplicaManager:
    manager = LogManager([tmp_path], LogConfig())
    manager.startup(0)
    now = [0]
    replicas = ReplicaManager(
        manager,
        node_id=1,
        log_config_for=lambda _: LogConfig(),
        clock=lambda: now[0],
        min_insync_replicas=min_isr,
    )
    replicas.on_metadata_update(MetadataImage(), _image_with_partition([1, 2, 3]))
    return replicas


def _read(
    replicas: ReplicaManager, offset: int, replica_id: int = -1
) -> tuple[int, int, ErrorCode]:
    results, _ = replicas.read_partitions(
        [FetchPartitionRequest("t", 0, offset, 1 << 20)],
        1 << 20,
        0,
        replica_id=replica_id,
        update_fetch_state=True,
    )
    result = results[("t", 0)]
    last = max((h.next_offset for _, h in iter_batch_headers(result.records)), default=offset)
    return result.high_watermark, last, result.error


async def test_acks_all_waits_for_the_isr_and_reports_a_shrink(tmp_path: Path) -> None:
    replicas = _replica_manager(tmp_path)
    results = replicas.append_records({("t", 0): _batch(2)}, -1)
    assert results[("t", 0)].last_offset == 1
    # Consumers see nothing past the high watermark; followers read to the log end offset.
    assert _read(replicas, 0) == (0, 0, ErrorCode.NO_ERROR)
    assert _read(replicas, 0, replica_id=2) == (0, 2, ErrorCode.NO_ERROR)
    assert _read(replicas, 0, replica_id=9)[2] == ErrorCode.NOT_LEADER_OR_FOLLOWER
    # Times out while one ISR member lags.
    assert results[("t", 0)].error == ErrorCode.NO_ERROR  # appended
    await replicas.wait_for_acks(results, 50)
    assert _error(results[("t", 0)]) == ErrorCode.REQUEST_TIMED_OUT

    results = replicas.append_records({("t", 0): _batch(2)}, -1)
    outcome: list[ErrorCode] = []

    async def produce_wait() -> None:
        await replicas.wait_for_acks(results, 5000)
        outcome.append(results[("t", 0)].error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce_wait)
        await trio.sleep(0.01)
        _read(replicas, 4, replica_id=2)
        await trio.sleep(0.01)
        assert not outcome  # replica 3 has not fetched
        # The ISR shrinks to the leader alone (committed in the image): the high watermark
        # passes the batch, but the ISR is below min.insync.replicas=2.
        replicas.on_metadata_update(replicas.image, _image_with_partition([1], 1))
    assert outcome == [ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND]
    partition = replicas.get_partition("t", 0)
    assert partition is not None
    assert partition.log.high_watermark == 4
    # Now acks=all is refused before appending; acks=1 is not.
    refused = replicas.append_records({("t", 0): _batch(1)}, -1)[("t", 0)]
    assert refused.error == ErrorCode.NOT_ENOUGH_REPLICAS
    assert partition.log.log_end_offset == 4
    assert replicas.append_records({("t", 0): _batch(1)}, 1)[("t", 0)].error == ErrorCode.NO_ERROR
    replicas.log_manager.shutdown()


async def test_acks_all_answers_once_every_isr_member_fetched_past_the_batch(
    tmp_path: Path,
) -> None:
    replicas = _replica_manager(tmp_path)
    results = replicas.append_records({("t", 0): _batch(3)}, -1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replicas.wait_for_acks, results, 5000)
        await trio.sleep(0.01)
        _read(replicas, 3, replica_id=2)
        _read(replicas, 3, replica_id=3)
    assert results[("t", 0)].error == ErrorCode.NO_ERROR
    assert _read(replicas, 0) == (3, 3, ErrorCode.NO_ERROR)
    # A follower's ISR shrink is proposed after replica.lag.time.max.ms without catching up.
    partition = replicas.get_partition("t", 0)
    assert partition is not None
    replicas.append_records({("t", 0): _batch(1)}, 1)
    assert replicas.maybe_shrink_isrs() == 0
    partition.remote_replicas[3].last_caught_up_time_ms = -replicas.replica_lag_time_max_ms - 1
    assert replicas.maybe_shrink_isrs() == 1
    assert partition.pending_isr is not None
    assert partition.pending_isr.isr == (1, 2)
    body = replicas.alter_partition_request({("t", 0): partition.pending_isr})
    sent = body["topics"][0]["partitions"][0]
    assert sent["new_isr"] == [1, 2]
    assert sent["partition_epoch"] == 0
    assert [m["broker_id"] for m in sent["new_isr_with_epochs"]] == [1, 2]
    replicas.log_manager.shutdown()


def _pause_fetching(cluster: Cluster, node: int) -> Callable[[], None]:
    """Stop ``node``'s replica fetchers and ignore metadata updates until the returned
    function resumes them (reaches into the manager: Kafka has no such switch)."""
    manager: ReplicaFetcherManager = cluster.brokers[node].service("replica_fetcher_manager")
    nursery = manager._nursery
    manager.update_followers({})
    manager._nursery = None

    def resume() -> None:
        manager._nursery = nursery
        manager.update_followers(manager.replica_manager.followed_partitions())

    return resume


async def test_an_old_leader_truncates_records_the_new_leader_never_had(tmp_path: Path) -> None:
    """KIP-101 in a cluster: the followers stop fetching, the leader appends 4 records with
    acks=1 and stops; a follower is elected and takes 4 other records at the same offsets; the
    old leader comes back, truncates its 4 to the new leader's epoch start (OffsetForLeaderEpoch)
    and copies the new leader: every replica holds the same bytes."""
    configs = [
        c.with_overrides(broker_session_timeout_ms=1500) for c in _replicated_configs(tmp_path)
    ]
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, configs[:3])
        try:
            await cluster.start(*cluster.configs)
            controller = await wait_for(cluster.leader, 15, "one active controller")
            await wait_for(
                lambda: all(
                    len([b for b in cluster.controller(n).image.brokers.values() if not b.fenced])
                    == 3
                    for n in cluster.brokers
                ),
                15,
                "3 unfenced brokers everywhere",
            )
            old_leader = next(n for n in (1, 2, 3) if n != controller)
            others = [n for n in (1, 2, 3) if n != old_leader]
            await _create_topic(cluster, controller, "div", [old_leader, *others])
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "div")) is not None and p.leader_id == old_leader
                    for n in (1, 2, 3)
                ),
                15,
                "the partition on its 3 replicas",
            )
            for _ in range(3):
                assert (await _produce(cluster, old_leader, "div", -1))["error_code"] == 0
            await wait_for(
                lambda: all(
                    (p := _partition(cluster, n, "div")) is not None and p.log.log_end_offset == 6
                    for n in others
                ),
                10,
                "followers at 6",
            )
            resumes = [_pause_fetching(cluster, n) for n in others]
            for _ in range(2):  # only the leader gets these
                assert (await _produce(cluster, old_leader, "div", 1))["error_code"] == 0
            old = _partition(cluster, old_leader, "div")
            assert old is not None
            assert old.log.log_end_offset == 10
            assert old.log.high_watermark == 6
            epoch = old.leader_epoch
            await cluster.stop(old_leader)

            def new_leader() -> int | None:
                p = _partition(cluster, controller, "div")
                if p is None or p.leader_epoch <= epoch or p.leader_id not in others:
                    return None
                return p.leader_id

            leader = await wait_for(new_leader, 20, "a new leader elected from the ISR")
            for resume in resumes:
                resume()
            lead = _partition(cluster, leader, "div")
            assert lead is not None
            await wait_for(lambda: lead.is_leader, 10, "the new leader knows it")
            for i in range(2):  # 4 other records at offsets 6-9
                answer = await _produce(cluster, leader, "div", -1)
                assert answer["error_code"] == ErrorCode.NO_ERROR, answer
                assert answer["base_offset"] == 6 + 2 * i

            await cluster.start(old_leader)
            await wait_for(lambda: sorted(lead.isr) == [1, 2, 3], 30, "the old leader in the ISR")
            back = _partition(cluster, old_leader, "div")
            assert back is not None
            await wait_for(
                lambda: back.log.log_end_offset == lead.log.log_end_offset == 10,
                10,
                "the old leader caught up",
            )
            followers = [n for n in (1, 2, 3) if n != leader]
            assert _same_bytes_up_to_hw(cluster, leader, followers, "div") == 10
            cache = back.log.leader_epoch_cache
            assert cache is not None
            assert cache.latest_epoch() == lead.leader_epoch
        finally:
            await cluster.stop_all()
