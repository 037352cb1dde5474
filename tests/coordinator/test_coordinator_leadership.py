"""The group coordinator follows ``__consumer_offsets`` leadership (Kafka's onElection and
onResignation): two coordinators over one shared log, moved between by metadata images."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import trio
import trio.testing

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.coordinator import GroupCoordinator
from pykbroker.coordinator.group.records import OFFSETS_TOPIC, partition_for
from pykbroker.metadata.image import MetadataImage, PartitionRegistration, TopicImage

from .support import MemoryLog
from .test_coordinator import commit_request, join_request

OK = ErrorCode.NO_ERROR
PARTITIONS = 5
GROUP_PARTITION = partition_for("g", PARTITIONS)
TOPIC_ID = uuid.UUID(int=7)


def image(leaders: dict[int, tuple[int, int]]) -> MetadataImage:
    """``__consumer_offsets`` with partition -> (leader, leader epoch); others led by 1 at 0."""
    partitions = {
        p: PartitionRegistration((1, 2), (1, 2), *leaders.get(p, (1, 0)), 0)
        for p in range(PARTITIONS)
    }
    topic = TopicImage(OFFSETS_TOPIC, TOPIC_ID, partitions)
    return MetadataImage(topics={OFFSETS_TOPIC: topic}, topics_by_id={TOPIC_ID: topic})


class Cluster:
    """The images both coordinators see (what the metadata listener delivers)."""

    def __init__(self) -> None:
        self.image = image({})
        self.coordinators: list[GroupCoordinator] = []

    def coordinator(self, log: Any, node_id: int, delay_ms: int = 0) -> GroupCoordinator:
        counter = itertools.count(1)
        coordinator = GroupCoordinator(
            log,
            node_id=node_id,
            offsets_topic_num_partitions=PARTITIONS,
            group_initial_rebalance_delay_ms=delay_ms,
            new_uuid=lambda: f"n{node_id}-u{next(counter)}",
            metadata=lambda: self.image,
        )
        self.coordinators.append(coordinator)
        return coordinator

    def move(self, leader: int, epoch: int) -> None:
        old, self.image = self.image, image({GROUP_PARTITION: (leader, epoch)})
        for coordinator in self.coordinators:
            coordinator.on_metadata_update(old, self.image)


async def fetch(coordinator: GroupCoordinator) -> tuple[ErrorCode, dict[tuple[str, int], int]]:
    response = await coordinator.fetch_offsets({"group_id": "g", "topics": None}, 7)
    offsets = {
        (t["name"], p["partition_index"]): p["committed_offset"]
        for t in response["topics"]
        for p in t["partitions"]
    }
    return ErrorCode(response["error_code"]), offsets


async def commit(coordinator: GroupCoordinator, offset: int) -> ErrorCode:
    response = await coordinator.commit_offsets(commit_request({("t", 0): offset}), 9)
    return ErrorCode(response["topics"][0]["partitions"][0]["error_code"])


async def until_loaded(coordinator: GroupCoordinator) -> None:
    """Poll (bounded) until the group's partition answers something but LOAD_IN_PROGRESS."""
    for _ in range(100):
        error, _ = await fetch(coordinator)
        if error != ErrorCode.COORDINATOR_LOAD_IN_PROGRESS:
            return
        await trio.sleep(0.01)
    raise AssertionError("the partition never finished loading")


async def test_offsets_follow_the_leader_and_never_regress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = MemoryLog()  # one log: the replicated partition both brokers see
    cluster = Cluster()
    a, b = cluster.coordinator(log, 1), cluster.coordinator(log, 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert await commit(a, 5) == OK
        # Node 2 does not lead the group's partition.
        assert (await fetch(b))[0] == ErrorCode.NOT_COORDINATOR
        assert await commit(b, 6) == ErrorCode.NOT_COORDINATOR

        cluster.move(leader=2, epoch=1)
        assert (await fetch(a))[0] == ErrorCode.NOT_COORDINATOR
        assert await commit(a, 99) == ErrorCode.NOT_COORDINATOR
        await until_loaded(b)
        assert await fetch(b) == (OK, {("t", 0): 5})
        assert await commit(b, 7) == OK

        # Back to node 1: it loads again and sees node 2's commit, not its own stale 5.
        cluster.move(leader=1, epoch=2)
        await until_loaded(a)
        assert await fetch(a) == (OK, {("t", 0): 7})
        assert (await fetch(b))[0] == ErrorCode.NOT_COORDINATOR
        nursery.cancel_scope.cancel()


async def test_parked_join_answers_not_coordinator_when_leadership_moves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cluster = Cluster()
    a = cluster.coordinator(MemoryLog(), 1, delay_ms=60_000)  # the first join stays parked
    answers: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)

        async def join() -> None:
            first = await a.join_group(join_request(), 9, "c", "/127.0.0.1")
            assert first["error_code"] == ErrorCode.MEMBER_ID_REQUIRED
            answers.append(await a.join_group(join_request(first["member_id"]), 9, "c", "/h"))

        nursery.start_soon(join)
        await trio.sleep(1)
        assert answers == []
        cluster.move(leader=2, epoch=1)
        await trio.sleep(0.1)
        assert [r["error_code"] for r in answers] == [ErrorCode.NOT_COORDINATOR]
        nursery.cancel_scope.cancel()


class GatedLog(MemoryLog):
    """Appends wait for ``gate``: a write still in flight when leadership changes."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    async def append(self, partition: int, records: Any, **kwargs: Any) -> None:
        await self.gate.wait()
        await super().append(partition, records, **kwargs)


async def test_new_epoch_reloads_after_the_writes_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = GatedLog()
    cluster = Cluster()
    a = cluster.coordinator(log, 1)
    results: list[ErrorCode] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)

        async def commit_in_flight() -> None:
            results.append(await commit(a, 9))

        nursery.start_soon(commit_in_flight)
        await trio.sleep(1)
        # Leader again at a new epoch (another leader may have written meanwhile): reload,
        # but only once the write queued for the partition is done.
        cluster.move(leader=1, epoch=3)
        await trio.sleep(1)
        assert (await fetch(a))[0] == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        log.gate.set()
        await until_loaded(a)
        assert results == [OK]
        assert await fetch(a) == (OK, {("t", 0): 9})
        nursery.cancel_scope.cancel()


async def test_list_groups_lists_only_led_partitions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = MemoryLog()
    cluster = Cluster()
    a, b = cluster.coordinator(log, 1), cluster.coordinator(log, 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert await commit(a, 1) == OK
        assert [g["group_id"] for g in a.list_groups()[1]] == ["g"]
        assert b.list_groups() == (OK, [])
        cluster.move(leader=2, epoch=1)
        await until_loaded(b)
        assert a.list_groups() == (OK, [])
        assert [g["group_id"] for g in b.list_groups()[1]] == ["g"]
        nursery.cancel_scope.cancel()
