"""QuorumController on a hand-driven Raft: records reach the image only when committed, the
leader validates against its own uncommitted appends, a commit that does not come in time is
REQUEST_TIMED_OUT, a leadership change before the commit is NOT_CONTROLLER, and a node that does
not lead forwards to the active controller (retrying on NOT_CONTROLLER)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import trio
import trio.testing

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.metadata.controller import CreateTopicRequest, QuorumController
from pykbroker.metadata.image import BrokerRegistration, MetadataImage
from pykbroker.metadata.metadata_log import MetadataLog
from pykbroker.raft import LeaderAndEpoch, NotLeaderError
from pykbroker.server.raft_log import METADATA_PARTITION_DIR, KafkaReplicatedLog


class HandRaft:
    """A Raft leader whose commits the test decides."""

    def __init__(self, log: KafkaReplicatedLog, leader: int = 1, epoch: int = 1) -> None:
        self.log = log
        self.leader_and_epoch = LeaderAndEpoch(leader, epoch)

    def append(self, records: Sequence[bytes]) -> int:
        if self.leader_and_epoch.leader_id != 1:
            raise NotLeaderError(self.leader_and_epoch)
        return self.log.append_as_leader(list(records), self.leader_and_epoch.epoch).last_offset


class FakeChannel:
    """Answers forwarded requests from a script; records what was sent."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.sent: list[tuple[int, dict[str, Any]]] = []

    async def send(
        self, api_key: int, version: int, body: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        self.sent.append((api_key, body))
        return self.answers.pop(0)


@asynccontextmanager
async def controller_on(
    tmp_path: Path, *, leader: int = 1, channel: FakeChannel | None = None, timeout_ms: int = 5000
) -> AsyncIterator[tuple[QuorumController, HandRaft]]:
    log = KafkaReplicatedLog.open(tmp_path / METADATA_PARTITION_DIR)
    raft = HandRaft(log, leader)
    controller = QuorumController(
        MetadataLog(log.log),
        raft,
        node_id=1,
        default_num_partitions=1,
        default_replication_factor=1,
        clock=lambda: 0,
        channel=channel,
        commit_timeout_ms=timeout_ms,
    )
    # One live broker, so topics can be placed.
    controller.image = MetadataImage(
        brokers=MappingProxyType({1: BrokerRegistration(1, "127.0.0.1", 9092, None, False, 0)})
    )
    if leader == 1:
        controller.handle_leader_change(raft.leader_and_epoch)
    assert controller.is_active == (leader == 1)
    try:
        yield controller, raft
    finally:
        log.close()


async def test_records_reach_the_image_only_when_committed(tmp_path: Path) -> None:
    async with controller_on(tmp_path) as (controller, raft), trio.open_nursery() as nursery:
        results: list[Any] = []

        async def create(name: str) -> None:
            results.append(await controller.create_topics([CreateTopicRequest(name)]))

        async def validate(name: str) -> None:
            checked.append(
                await controller.create_topics([CreateTopicRequest(name)], validate_only=True)
            )

        checked: list[Any] = []
        nursery.start_soon(create, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert "a" not in controller.image.topics  # appended, not committed
        # The leader validates against its own uncommitted append: "a" already exists, and
        # that answer too waits until the topic is in the image.
        nursery.start_soon(validate, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert not results
        assert not checked
        controller.handle_commit(raft.log.log_end_offset)
        await trio.testing.wait_all_tasks_blocked()
        assert results[0][0].error == ErrorCode.NO_ERROR
        assert checked[0][0].error == ErrorCode.TOPIC_ALREADY_EXISTS
        assert "a" in controller.image.topics


async def test_a_commit_that_does_not_come_in_time_is_request_timed_out(tmp_path: Path) -> None:
    async with controller_on(tmp_path, timeout_ms=100) as (controller, _):
        with pytest.raises(KafkaError) as caught:
            await controller.create_topics([CreateTopicRequest("slow")])
        assert caught.value.code == ErrorCode.REQUEST_TIMED_OUT
        assert "slow" not in controller.image.topics


async def test_leadership_moving_before_the_commit_is_not_controller(tmp_path: Path) -> None:
    async with controller_on(tmp_path) as (controller, raft), trio.open_nursery() as nursery:
        errors: list[ErrorCode] = []

        async def create() -> None:
            try:
                await controller.create_topics([CreateTopicRequest("moved")])
            except KafkaError as exc:
                errors.append(exc.code)

        nursery.start_soon(create)
        await trio.testing.wait_all_tasks_blocked()
        raft.leader_and_epoch = LeaderAndEpoch(2, 2)
        controller.handle_leader_change(raft.leader_and_epoch)
        await trio.testing.wait_all_tasks_blocked()
        assert errors == [ErrorCode.NOT_CONTROLLER]
        assert not controller.is_active


def created(name: str, code: ErrorCode) -> dict[str, Any]:
    return {
        "topics": [
            {
                "name": name,
                "topic_id": uuid.UUID(int=0),
                "error_code": code,
                "error_message": None,
                "num_partitions": 1,
                "replication_factor": 1,
                "configs": [],
            }
        ]
    }


async def test_a_follower_forwards_and_retries_on_not_controller(tmp_path: Path) -> None:
    channel = FakeChannel(
        [
            created("f", ErrorCode.NOT_CONTROLLER),  # an old leader answered
            created("f", ErrorCode.INVALID_PARTITIONS),
        ]
    )
    async with controller_on(tmp_path, leader=2, channel=channel) as (controller, raft):
        results = await controller.create_topics([CreateTopicRequest("f", num_partitions=0)])
        assert [r.error for r in results] == [ErrorCode.INVALID_PARTITIONS]
        assert [api for api, _ in channel.sent] == [ApiKey.CREATE_TOPICS] * 2
        assert channel.sent[0][1]["topics"][0]["num_partitions"] == 0
        assert raft.log.log_end_offset == 0  # nothing written locally
