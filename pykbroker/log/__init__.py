"""Storage engine: record batches, segments, indexes, logs and the log manager.

Mirrors Kafka's ``storage`` module (``org.apache.kafka.storage.internals.log``) and
``kafka.log``. Modules: ``compression`` and ``record_batch`` (pure byte layouts),
``index`` / ``offset_index`` / ``time_index`` (mmapped sparse indexes),
``transaction_index`` (``TransactionIndex``: the ``.txnindex`` of aborted transactions),
``producer_state`` (``ProducerStateManager``), ``segment``
(``LogSegment``), ``log`` (``Log``, the ``UnifiedLog`` analogue), ``log_validator``
(``LogValidator``'s topic rules), ``log_flush`` (fsync off the event loop),
``log_loader`` (``LogLoader``), ``log_config`` (``LogConfig``), ``checkpoint``
(``OffsetCheckpointFile``), ``log_manager`` (``LogManager``), ``cleaner``
(``LogCleaner``: compaction) and ``log_tasks`` (the trio background tasks and the
group-commit ``FlushCoordinator``).

Invariant: record batches stay bytes on produce and fetch.
"""

from typing import NamedTuple

__all__ = ["TopicPartition"]


class TopicPartition(NamedTuple):
    """Kafka's ``TopicPartition``; equal to and hashed as the plain ``(topic, partition)``."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"
