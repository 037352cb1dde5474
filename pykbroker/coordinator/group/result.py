"""What the pure coordinator core hands back to its driver: response futures and log writes.

Mirrors Kafka's ``CoordinatorResult`` (records to append plus an append future) and the
``CompletableFuture`` a parked JoinGroup/SyncGroup waits on. Pure: a ``ResponseFuture`` is a
plain value holder with callbacks; a ``PendingWrite`` is records for one ``__consumer_offsets``
partition plus what to do once the append succeeded or failed. The driver appends, then calls
``PendingWrite.complete(error, now_ms)``, which may return further writes.

A write may be transactional (TxnOffsetCommit: ``producer_id``/``producer_epoch`` set, the
records are appended as a transactional batch of that producer, as Kafka's
``scheduleTransactionalWriteOperation``) or a transaction marker (``marker`` set, no records:
the COMMIT/ABORT control batch of ``scheduleTransactionCompletion``). A write with neither
records nor marker is a barrier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode

Record = tuple[bytes, bytes | None]
"""One ``__consumer_offsets`` record: key bytes and value bytes (None is a tombstone)."""


class ResponseFuture:
    """A response that may be known now or later (a parked JoinGroup or SyncGroup).

    Invariant: completed at most once; ``complete`` on a done future is ignored and returns
    False, as ``CompletableFuture.complete`` does.
    """

    __slots__ = ("_callbacks", "_done", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: dict[str, Any] = {}
        self._callbacks: list[Callable[[dict[str, Any]], None]] = []

    @property
    def done(self) -> bool:
        return self._done

    def result(self) -> dict[str, Any]:
        if not self._done:
            raise RuntimeError("response not completed yet")
        return self._value

    def complete(self, value: dict[str, Any]) -> bool:
        if self._done:
            return False
        self._done = True
        self._value = value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(value)
        return True

    def add_done_callback(self, callback: Callable[[dict[str, Any]], None]) -> None:
        if self._done:
            callback(self._value)
        else:
            self._callbacks.append(callback)


OnAppended = Callable[[ErrorCode, int], "list[PendingWrite]"]


NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1


@dataclass(frozen=True, slots=True)
class TxnMarker:
    """A transaction marker to write (Kafka's ``EndTransactionMarker``)."""

    commit: bool
    coordinator_epoch: int


@dataclass(slots=True)
class PendingWrite:
    """Records to append to one ``__consumer_offsets`` partition, and the continuation."""

    partition: int
    records: Sequence[Record]
    on_appended: OnAppended | None = field(default=None)
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    marker: TxnMarker | None = None

    @property
    def is_barrier(self) -> bool:
        """Nothing to append: only ordering behind the writes queued before."""
        return not self.records and self.marker is None

    def complete(self, error: ErrorCode, now_ms: int) -> list[PendingWrite]:
        """Report the append's outcome; returns the writes the continuation produced."""
        if self.on_appended is None:
            return []
        return self.on_appended(error, now_ms)
