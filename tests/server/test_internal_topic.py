"""InternalTopicLog appends like a produce with acks=all: acknowledged once the ISR has the
batch, and an ISR that cannot take it is COORDINATOR_NOT_AVAILABLE (which clients retry), as
Kafka's GroupMetadataManager maps it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.replication.replica_manager import ProducePartitionResult
from pykbroker.server.internal_topic import COMMIT_TIMEOUT_MS, InternalTopicLog

TopicPartition = tuple[str, int]


class FakeReplicaManager:
    """Appends succeed; the acks=all wait ends with ``ack_error``."""

    def __init__(self, ack_error: ErrorCode) -> None:
        self.ack_error = ack_error
        self.waits: list[tuple[list[TopicPartition], int]] = []

    def append_records(
        self, batches: Mapping[TopicPartition, bytes], acks: int, **_: Any
    ) -> dict[TopicPartition, ProducePartitionResult]:
        assert acks == -1
        return {
            tp: ProducePartitionResult(base_offset=7, last_offset=7, log_start_offset=0)
            for tp in batches
        }

    async def wait_for_acks(
        self, results: Mapping[TopicPartition, ProducePartitionResult], timeout_ms: int
    ) -> None:
        self.waits.append((list(results), timeout_ms))
        for result in results.values():
            result.error = self.ack_error


def topic_log(replica_manager: FakeReplicaManager) -> InternalTopicLog:
    return InternalTopicLog(
        None,  # type: ignore[arg-type]  # the controller is not used by append
        replica_manager,  # type: ignore[arg-type]
        topic="__consumer_offsets",
        num_partitions=50,
        replication_factor=3,
        configs={},
    )


async def test_an_append_is_acknowledged_after_the_isr_has_it() -> None:
    replica_manager = FakeReplicaManager(ErrorCode.NO_ERROR)
    await topic_log(replica_manager).append(3, [(b"k", b"v")])
    assert replica_manager.waits == [([("__consumer_offsets", 3)], COMMIT_TIMEOUT_MS)]


@pytest.mark.parametrize(
    "ack_error",
    [
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NOT_ENOUGH_REPLICAS,
    ],
)
async def test_an_append_the_isr_did_not_take_is_coordinator_not_available(
    ack_error: ErrorCode,
) -> None:
    with pytest.raises(KafkaError) as caught:
        await topic_log(FakeReplicaManager(ack_error)).append(3, [(b"k", b"v")])
    assert caught.value.code == ErrorCode.COORDINATOR_NOT_AVAILABLE


async def test_losing_leadership_while_waiting_is_not_coordinator() -> None:
    with pytest.raises(KafkaError) as caught:
        await topic_log(FakeReplicaManager(ErrorCode.NOT_LEADER_OR_FOLLOWER)).append(
            3, [(b"k", None)]
        )
    assert caught.value.code == ErrorCode.NOT_COORDINATOR
