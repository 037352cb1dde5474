"""Controlled shutdown (KIP-631) on the active controller: a broker heartbeating with
``want_shut_down`` loses its leaderships and ISR memberships (a single-replica partition it led
goes offline), is answered ``should_shut_down`` only once every unfenced broker replayed that
change, is never elected or taken back into an ISR meanwhile, and is a normal broker again after
a new registration. Also this broker's own ``controlled_shutdown`` loop."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata import schemas
from pykbroker.metadata.broker_lifecycle import BrokerHeartbeatReply
from pykbroker.metadata.controller import AlterPartitionItem, QuorumController
from pykbroker.metadata.image import MetadataImage, PartitionRegistration
from pykbroker.metadata.leader_election import broker_fenced_changes
from pykbroker.metadata.partition_change import NO_LEADER
from pykbroker.metadata.records import MetadataRecord, record
from tests.metadata.controller_support import broker_record, committing_controller, partition_record

TOPIC_ID = uuid.UUID(int=7)


def epoch_of(broker_id: int) -> int:
    return broker_id * 10  # controller_support.broker_record's broker epoch


broker = broker_record


def partition(index: int, replicas: list[int], isr: list[int], leader: int) -> MetadataRecord:
    return partition_record(TOPIC_ID, index, replicas, isr, leader)


def base_records(*partitions: MetadataRecord) -> list[MetadataRecord]:
    return [
        broker(1),
        broker(2),
        broker(3),
        record(schemas.TOPIC_RECORD, name="t", topic_id=TOPIC_ID),
        *partitions,
    ]


@asynccontextmanager
async def controller_with(
    tmp_path: Path, *partitions: MetadataRecord
) -> AsyncIterator[QuorumController]:
    async with committing_controller(tmp_path, base_records(*partitions)) as (controller, _):
        yield controller


def parts(controller: QuorumController) -> dict[int, PartitionRegistration]:
    return dict(controller.image.topics["t"].partitions)


async def beat(
    controller: QuorumController,
    broker_id: int,
    *,
    shut_down: bool = False,
    offset: int | None = None,
) -> BrokerHeartbeatReply:
    """A heartbeat of ``broker_id``, caught up to the controller's image unless ``offset``."""
    return await controller.handle_broker_heartbeat_request(
        broker_id,
        epoch_of(broker_id),
        current_metadata_offset=controller.applied_offset - 1 if offset is None else offset,
        want_shut_down=shut_down,
    )


async def test_leaderships_move_off_isrs_shrink_and_shutdown_is_granted_after(
    tmp_path: Path,
) -> None:
    async with controller_with(
        tmp_path,
        partition(0, [2, 1, 3], [2, 1, 3], 2),  # led by 2: moves to 1
        partition(1, [1, 2], [1, 2], 1),  # 2 follows: leaves the ISR
        partition(2, [2], [2], 2),  # only 2: offline, ISR kept
        partition(3, [3, 2], [3], 3),  # 2 not in the ISR: untouched
    ) as controller:
        for broker_id in (1, 2, 3):
            assert (await beat(controller, broker_id)).error == ErrorCode.NO_ERROR
        before = controller.applied_offset
        reply = await beat(controller, 2, shut_down=True)
        assert (reply.error, reply.is_fenced, reply.should_shut_down) == (
            ErrorCode.NO_ERROR,
            False,
            False,
        )
        assert reply.in_controlled_shutdown
        assert controller.applied_offset > before  # committed
        reg = controller.image.brokers[2]
        assert (reg.in_controlled_shutdown, reg.fenced, reg.is_active) == (True, False, False)
        after = parts(controller)
        assert (after[0].leader, after[0].isr, after[0].leader_epoch) == (1, (1, 3), 1)
        assert (after[1].leader, after[1].isr, after[1].leader_epoch) == (1, (1,), 0)
        assert (after[2].leader, after[2].isr) == (NO_LEADER, (2,))
        assert after[3].partition_epoch == 0

        # Not yet: brokers 1 and 3 last reported offsets before the change, and 2 itself lags.
        lagging = await beat(controller, 2, shut_down=True, offset=before - 1)
        assert (lagging.should_shut_down, lagging.is_fenced) == (False, False)
        assert not (await beat(controller, 2, shut_down=True)).should_shut_down
        await beat(controller, 1)
        assert not (await beat(controller, 2, shut_down=True)).should_shut_down
        await beat(controller, 3)
        granted = await controller.broker_heartbeat_response(
            {
                "broker_id": 2,
                "broker_epoch": epoch_of(2),
                "current_metadata_offset": controller.applied_offset - 1,
                "want_fence": False,
                "want_shut_down": True,
                "offline_log_dirs": [],
            }
        )
        assert granted["error_code"] == ErrorCode.NO_ERROR
        assert (granted["should_shut_down"], granted["is_fenced"]) == (True, True)
        assert controller.image.brokers[2].fenced
        assert parts(controller) == after  # the fencing had nothing left to change


async def test_a_broker_leading_nothing_is_fenced_and_let_go_at_once(tmp_path: Path) -> None:
    async with controller_with(tmp_path, partition(0, [1, 3], [1, 3], 1)) as controller:
        reply = await beat(controller, 3, shut_down=True)
        assert (reply.should_shut_down, reply.is_fenced, reply.in_controlled_shutdown) == (
            True,
            True,
            False,
        )
        assert controller.image.brokers[3].fenced
        assert parts(controller)[0].isr == (1,)  # acks=all no longer waits for it


async def test_a_broker_in_controlled_shutdown_is_neither_elected_nor_added_to_an_isr(
    tmp_path: Path,
) -> None:
    async with controller_with(
        tmp_path,
        partition(0, [2, 1], [2, 1], 2),
        partition(1, [1, 2], [1, 2], 1),
    ) as controller:
        await beat(controller, 2, shut_down=True)
        assert parts(controller)[0].leader == 1
        # Preferred leader election does not hand partition 0 back to broker 2.
        elected = await controller.elect_leaders(0, {"t": [0]})
        assert [p.error for p in elected[0].partitions] == [
            ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE
        ]
        # The leader of partition 1 cannot take broker 2 back into the ISR.
        p1 = parts(controller)[1]
        controller.broker_epoch = epoch_of(1)  # this node, broker 1, leads partition 1
        results = await controller.alter_partition(
            [
                AlterPartitionItem(
                    TOPIC_ID, 1, p1.leader_epoch, p1.partition_epoch, ((1, 10), (2, 20))
                )
            ]
        )
        assert results[0].error == ErrorCode.INELIGIBLE_REPLICA
        assert parts(controller)[1].isr == (1,)


def test_elections_skip_a_broker_in_controlled_shutdown() -> None:
    # Broker 2 shutting down is still in the ISR (as before its ISR change is written): when
    # leader 1 is fenced, broker 3 is elected, not 2.
    image = MetadataImage().apply(
        [
            *base_records(partition(0, [1, 2, 3], [1, 2, 3], 1)),
            record(
                schemas.BROKER_REGISTRATION_CHANGE_RECORD,
                broker_id=2,
                broker_epoch=epoch_of(2),
                fenced=0,
                in_controlled_shutdown=1,
                log_dirs=[],
            ),
        ]
    )
    assert image.brokers[2].in_controlled_shutdown
    changes = broker_fenced_changes(image, 1)
    after = image.apply(changes).topics["t"].partitions[0]
    assert (after.leader, after.isr) == (3, (2, 3))


async def test_a_new_registration_makes_it_a_normal_broker_again(tmp_path: Path) -> None:
    async with controller_with(tmp_path, partition(0, [2], [2], 2)) as controller:
        await beat(controller, 1)
        await beat(controller, 3)
        assert (await beat(controller, 2, shut_down=True)).in_controlled_shutdown
        assert parts(controller)[0].leader == NO_LEADER
        await beat(controller, 1)
        await beat(controller, 3)
        assert (await beat(controller, 2, shut_down=True)).should_shut_down
        epoch = await controller.handle_broker_registration(2, "", uuid.uuid4(), [], None)
        reg = controller.image.brokers[2]
        assert (reg.epoch, reg.fenced, reg.in_controlled_shutdown) == (epoch, True, False)
        reply = await controller.handle_broker_heartbeat_request(
            2, epoch, current_metadata_offset=controller.applied_offset - 1
        )
        assert (reply.is_fenced, reply.in_controlled_shutdown) == (False, False)
        assert controller.image.brokers[2].is_active
        assert parts(controller)[0].leader == 2  # the offline partition is back


async def test_this_brokers_controlled_shutdown_waits_for_the_controllers_go(
    tmp_path: Path,
) -> None:
    async with controller_with(tmp_path, partition(0, [1, 2], [1, 2], 1)) as controller:
        controller.broker_epoch = epoch_of(1)
        peers_caught_up = trio.Event()

        async def peers() -> None:
            # Brokers 2 and 3 keep heartbeating, 3 only from when it is told to.
            while True:
                await beat(controller, 2)
                if peers_caught_up.is_set():
                    await beat(controller, 3)
                await trio.sleep(0.01)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peers)
                granted: list[bool] = []
                done = trio.Event()

                async def shut_down() -> None:
                    granted.append(await controller.controlled_shutdown(20))
                    done.set()

                nursery.start_soon(shut_down)
                await controller._await_image(
                    lambda image: image.brokers[1].in_controlled_shutdown, trio.current_time() + 5
                )
                assert parts(controller)[0].leader == 2
                await trio.sleep(0.2)
                assert not granted  # broker 3 has not reported the change yet
                peers_caught_up.set()
                await done.wait()  # bounded by fail_after
                nursery.cancel_scope.cancel()
        assert granted == [True]
        assert controller.image.brokers[1].fenced
        assert controller.want_shut_down


async def test_the_last_live_broker_skips_the_controlled_shutdown(tmp_path: Path) -> None:
    async with controller_with(tmp_path, partition(0, [1, 2], [1], 1)) as controller:
        controller.broker_epoch = epoch_of(1)
        controller.image = controller.image.apply(
            [record(schemas.FENCE_BROKER_RECORD, id=b, epoch=epoch_of(b)) for b in (2, 3)]
        )
        before = controller.applied_offset
        with trio.fail_after(5):
            assert not await controller.controlled_shutdown(20)
        assert controller.applied_offset == before  # nothing asked of the controller
        assert parts(controller)[0].leader == 1
