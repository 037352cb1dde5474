"""A coordinator's storage: the partitions of an internal, compacted topic on this broker.

Kafka's group and transaction coordinators keep their state as keyed records in
``__consumer_offsets`` and ``__transaction_state``. ``InternalTopicLog`` is that storage for
both: the topic is created (compacted, a fixed number of partitions) the first time a
coordinator is looked up, as Kafka does; appends go through the partition leader like a produce
with acks=all; loading reads every keyed record of a partition back, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.log.log import Log
from pykbroker.log.log_reader import iter_records
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.metadata.controller import CreateTopicRequest, QuorumController
from pykbroker.replication.replica_manager import ReplicaManager

_LEADERSHIP_ERRORS = (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_LEADER_OR_FOLLOWER)


def read_keyed_records(log: Log) -> Iterator[tuple[bytes, bytes | None]]:
    """Every keyed record of a coordinator partition's log, oldest first."""
    for record in iter_records(log):
        if record.key is not None:
            yield record.key, record.value


class InternalTopicLog:
    """Append and load coordinator records in one internal topic's partitions."""

    def __init__(
        self,
        controller: QuorumController,
        replica_manager: ReplicaManager,
        *,
        topic: str,
        num_partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
    ) -> None:
        self.controller = controller
        self.replica_manager = replica_manager
        self.topic = topic
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        self.configs = dict(configs)

    async def ensure_topic(self) -> None:
        """Create the topic if it does not exist yet (COORDINATOR_NOT_AVAILABLE if that fails)."""
        if self.topic in self.controller.image.topics:
            return
        results = await self.controller.create_topics(
            [
                CreateTopicRequest(
                    self.topic,
                    num_partitions=self.num_partitions,
                    replication_factor=self.replication_factor,
                    configs=dict(self.configs),
                )
            ]
        )
        error = results[0].error
        if error not in (ErrorCode.NO_ERROR, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, results[0].message)

    async def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Write ``records`` as one batch; NOT_COORDINATOR when this broker does not lead it."""
        now = wall_clock_ms()
        batch = build_batch([Record(key=k, value=v, timestamp=now) for k, v in records])
        tp = (self.topic, partition)
        outcome = self.replica_manager.append_records({tp: batch}, -1)[tp]
        if outcome.error != ErrorCode.NO_ERROR:
            code = (
                ErrorCode.NOT_COORDINATOR
                if outcome.error in _LEADERSHIP_ERRORS
                else ErrorCode.UNKNOWN_SERVER_ERROR
            )
            raise KafkaError(code, outcome.error_message or outcome.error.name)

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]:
        found = self.replica_manager.get_partition(self.topic, partition)
        if found is None:
            return []
        return read_keyed_records(found.log)
