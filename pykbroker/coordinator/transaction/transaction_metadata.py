"""The transaction coordinator's per-transactional-id state machine (PURE: no I/O, no clock).

Mirrors Kafka's ``TransactionState``, ``TransactionMetadata`` and the decisions of
``TransactionCoordinator`` (``handleInitProducerId``, ``handleAddPartitionsToTransaction``,
``handleEndTransaction``, ``abortTimedOutTransactions``) for transactions version 1:

    Empty -> Ongoing -> PrepareCommit -> CompleteCommit -> (Ongoing | Empty ...)
                     -> PrepareAbort  -> CompleteAbort  -> ...
    Ongoing -> PrepareEpochFence -> PrepareAbort   (InitProducerId fencing a live txn,
                                                    or the coordinator's timeout abort)

Each operation takes the current ``TransactionMetadata`` (None: unknown id) and ``now_ms``
and returns a ``TxnResult``: the error code to answer, and the new metadata to persist as a
``__transaction_state`` record (``transaction_log_record``) before answering, plus whether
markers must be written (PrepareCommit / PrepareAbort). ``complete`` moves a prepared
transaction to its Complete state once its markers are written.

Invariant: a transition is applied only from the states Kafka's ``validPreviousStates``
allow; a returned metadata is a new object, the input is never mutated.

Not implemented yet: transactions version 2 (KIP-890 part 2 epoch bump per transaction),
``transactional.id.expiration.ms`` (Dead state), the driver that appends the records,
sends WriteTxnMarkers and runs the timeout check (this module is its core).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import ErrorCode

from . import schemas

__all__ = [
    "MAX_PRODUCER_EPOCH",
    "TransactionMetadata",
    "TransactionState",
    "TxnResult",
    "abort_timed_out",
    "add_partitions",
    "complete",
    "end_transaction",
    "init_producer_id",
    "read_transaction_log_record",
    "transaction_log_record",
]

MAX_PRODUCER_EPOCH = 32767
TRANSACTION_LOG_KEY_VERSION = 0
_INT16 = struct.Struct(">h")


class TransactionState(IntEnum):
    """Kafka's ``TransactionState`` ids, as stored in ``transaction_status``."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7


_S = TransactionState
VALID_PREVIOUS_STATES: dict[TransactionState, frozenset[TransactionState]] = {
    _S.EMPTY: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.ONGOING: frozenset({_S.ONGOING, _S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_COMMIT: frozenset({_S.ONGOING}),
    _S.PREPARE_ABORT: frozenset({_S.ONGOING, _S.PREPARE_EPOCH_FENCE}),
    _S.COMPLETE_COMMIT: frozenset({_S.PREPARE_COMMIT}),
    _S.COMPLETE_ABORT: frozenset({_S.PREPARE_ABORT}),
    _S.DEAD: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_EPOCH_FENCE: frozenset({_S.ONGOING}),
}


@dataclass(frozen=True, slots=True)
class TransactionMetadata:
    """One transactional id's state, as stored in a ``TransactionLogValue``."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    state: TransactionState = TransactionState.EMPTY
    partitions: frozenset[tuple[str, int]] = field(default_factory=frozenset)
    txn_start_timestamp_ms: int = -1
    txn_last_update_timestamp_ms: int = -1
    last_producer_epoch: int = -1

    def transition_to(
        self, state: TransactionState, now_ms: int, **changes: Any
    ) -> TransactionMetadata:
        if self.state not in VALID_PREVIOUS_STATES[state]:
            raise ValueError(f"illegal transition {self.state.name} -> {state.name}")
        return replace(self, state=state, txn_last_update_timestamp_ms=now_ms, **changes)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """What an operation answers, and what to persist first (None: nothing)."""

    error: ErrorCode
    metadata: TransactionMetadata | None = None
    write_markers: bool = False

    @property
    def producer_id(self) -> int:
        return self.metadata.producer_id if self.metadata else -1

    @property
    def producer_epoch(self) -> int:
        return self.metadata.producer_epoch if self.metadata else -1


def init_producer_id(
    current: TransactionMetadata | None,
    transactional_id: str,
    transaction_timeout_ms: int,
    now_ms: int,
    new_producer_id: int,
    expected: tuple[int, int] | None = None,
) -> TxnResult:
    """InitProducerId with a transactional id. ``new_producer_id`` is used when the id is new
    or its epoch is exhausted; ``expected`` is the v3+ (producer id, epoch) of KIP-360.

    An Ongoing transaction is fenced: the epoch is bumped, the transaction goes to
    PrepareEpochFence then PrepareAbort (markers to write) and the client is answered
    CONCURRENT_TRANSACTIONS so it retries once the abort completes.
    """
    if current is None:
        fresh = TransactionMetadata(
            transactional_id,
            new_producer_id,
            0,
            transaction_timeout_ms,
            txn_last_update_timestamp_ms=now_ms,
        )
        return TxnResult(ErrorCode.NO_ERROR, fresh)
    if expected is not None and not _is_valid_producer_id(current, expected):
        return TxnResult(ErrorCode.PRODUCER_FENCED)
    state = current.state
    if state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT, _S.PREPARE_EPOCH_FENCE, _S.DEAD):
        return TxnResult(ErrorCode.CONCURRENT_TRANSACTIONS)
    if state is _S.ONGOING:
        fenced = _fence_epoch(current, now_ms)
        aborting = fenced.transition_to(_S.PREPARE_ABORT, now_ms)
        return TxnResult(ErrorCode.CONCURRENT_TRANSACTIONS, aborting, write_markers=True)
    if expected is not None and expected != (current.producer_id, current.producer_epoch):
        # A retry of the bump that already happened: answer the current epoch again.
        return TxnResult(ErrorCode.NO_ERROR, current)
    # Empty, CompleteCommit, CompleteAbort: bump the epoch (or a new id when exhausted).
    if current.producer_epoch >= MAX_PRODUCER_EPOCH - 1:
        pid, epoch = new_producer_id, 0
    else:
        pid, epoch = current.producer_id, current.producer_epoch + 1
    bumped = current.transition_to(
        _S.EMPTY,
        now_ms,
        producer_id=pid,
        producer_epoch=epoch,
        last_producer_epoch=current.producer_epoch if pid == current.producer_id else -1,
        transaction_timeout_ms=transaction_timeout_ms,
        partitions=frozenset(),
        txn_start_timestamp_ms=-1,
    )
    return TxnResult(ErrorCode.NO_ERROR, bumped)


def _is_valid_producer_id(current: TransactionMetadata, expected: tuple[int, int]) -> bool:
    """Kafka's ``isValidProducerId``: the current (or, after a bump, previous) id/epoch."""
    pid, epoch = expected
    return (pid, epoch) == (current.producer_id, current.producer_epoch) or (
        pid == current.producer_id and epoch == current.last_producer_epoch
    )


def _fence_epoch(current: TransactionMetadata, now_ms: int) -> TransactionMetadata:
    """Kafka's ``prepareFenceProducerEpoch``: bump the epoch unless it is exhausted."""
    epoch = current.producer_epoch
    bumped = epoch + 1 if epoch < MAX_PRODUCER_EPOCH else epoch
    return current.transition_to(
        _S.PREPARE_EPOCH_FENCE, now_ms, producer_epoch=bumped, last_producer_epoch=epoch
    )


def _check_producer(
    current: TransactionMetadata | None, producer_id: int, producer_epoch: int
) -> ErrorCode | None:
    if current is None or current.producer_id != producer_id:
        return ErrorCode.INVALID_PRODUCER_ID_MAPPING
    if current.producer_epoch != producer_epoch:
        return ErrorCode.PRODUCER_FENCED
    return None


def add_partitions(
    current: TransactionMetadata | None,
    producer_id: int,
    producer_epoch: int,
    partitions: frozenset[tuple[str, int]],
    now_ms: int,
) -> TxnResult:
    """AddPartitionsToTxn (and AddOffsetsToTxn with the offsets partition)."""
    error = _check_producer(current, producer_id, producer_epoch)
    if error is not None:
        return TxnResult(error)
    assert current is not None
    if current.state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT, _S.PREPARE_EPOCH_FENCE):
        return TxnResult(ErrorCode.CONCURRENT_TRANSACTIONS)
    if current.state is _S.DEAD:
        return TxnResult(ErrorCode.INVALID_TXN_STATE)
    if current.state is _S.ONGOING and partitions <= current.partitions:
        return TxnResult(ErrorCode.NO_ERROR)  # nothing new to persist
    start = current.txn_start_timestamp_ms if current.state is _S.ONGOING else now_ms
    ongoing = current.transition_to(
        _S.ONGOING,
        now_ms,
        partitions=current.partitions | partitions,
        txn_start_timestamp_ms=start,
    )
    return TxnResult(ErrorCode.NO_ERROR, ongoing)


def end_transaction(
    current: TransactionMetadata | None,
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    now_ms: int,
) -> TxnResult:
    """EndTxn from the client: PrepareCommit/PrepareAbort (markers to write), or the answer
    Kafka gives a retry (NO_ERROR), a concurrent end (CONCURRENT_TRANSACTIONS) or a
    mismatch (INVALID_TXN_STATE)."""
    error = _check_producer(current, producer_id, producer_epoch)
    if error is not None:
        return TxnResult(error)
    assert current is not None
    state = current.state
    if state is _S.ONGOING:
        prepared = current.transition_to(_S.PREPARE_COMMIT if commit else _S.PREPARE_ABORT, now_ms)
        return TxnResult(ErrorCode.NO_ERROR, prepared, write_markers=True)
    done, preparing = (
        (_S.COMPLETE_COMMIT, _S.PREPARE_COMMIT) if commit else (_S.COMPLETE_ABORT, _S.PREPARE_ABORT)
    )
    if state is done:
        return TxnResult(ErrorCode.NO_ERROR)
    if state is preparing:
        return TxnResult(ErrorCode.CONCURRENT_TRANSACTIONS)
    if state is _S.PREPARE_EPOCH_FENCE:
        return TxnResult(ErrorCode.CONCURRENT_TRANSACTIONS)
    return TxnResult(ErrorCode.INVALID_TXN_STATE)


def complete(current: TransactionMetadata, now_ms: int) -> TransactionMetadata:
    """The markers of a prepared transaction are written: CompleteCommit/CompleteAbort."""
    target = _S.COMPLETE_COMMIT if current.state is _S.PREPARE_COMMIT else _S.COMPLETE_ABORT
    return current.transition_to(target, now_ms, partitions=frozenset())


def abort_timed_out(current: TransactionMetadata, now_ms: int) -> TransactionMetadata | None:
    """Kafka's ``abortTimedOutTransactions`` for one id: an Ongoing transaction older than its
    timeout is fenced (epoch bump) and goes to PrepareAbort; None when it is not due."""
    if current.state is not _S.ONGOING:
        return None
    if current.txn_start_timestamp_ms + current.transaction_timeout_ms > now_ms:
        return None
    return _fence_epoch(current, now_ms).transition_to(_S.PREPARE_ABORT, now_ms)


# -- __transaction_state records -------------------------------------------------------------


def transaction_log_record(metadata: TransactionMetadata) -> tuple[bytes, bytes]:
    """The (key, value) of the ``__transaction_state`` record (TransactionLogKey v0,
    TransactionLogValue v0: the version Kafka writes for transactions version 1)."""
    key = _INT16.pack(TRANSACTION_LOG_KEY_VERSION) + codec.encode(
        schemas.TRANSACTION_LOG_KEY,
        TRANSACTION_LOG_KEY_VERSION,
        {"transactional_id": metadata.transactional_id},
    )
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(metadata.partitions):
        by_topic.setdefault(topic, []).append(partition)
    value = {
        "producer_id": metadata.producer_id,
        "producer_epoch": metadata.producer_epoch,
        "transaction_timeout_ms": metadata.transaction_timeout_ms,
        "transaction_status": int(metadata.state),
        "transaction_partitions": [
            {"topic": t, "partition_ids": ids} for t, ids in by_topic.items()
        ],
        "transaction_last_update_timestamp_ms": metadata.txn_last_update_timestamp_ms,
        "transaction_start_timestamp_ms": metadata.txn_start_timestamp_ms,
    }
    return key, _INT16.pack(0) + codec.encode(schemas.TRANSACTION_LOG_VALUE, 0, value)


def read_transaction_log_record(
    key: bytes, value: bytes | None
) -> tuple[str, TransactionMetadata | None]:
    """The transactional id and its metadata (None for a tombstone) of a record."""
    (key_version,) = _INT16.unpack_from(key, 0)
    if key_version != TRANSACTION_LOG_KEY_VERSION:
        raise ValueError(f"unknown TransactionLogKey version {key_version}")
    transactional_id = codec.decode(schemas.TRANSACTION_LOG_KEY, key_version, key[2:])[
        "transactional_id"
    ]
    if value is None:
        return transactional_id, None
    (version,) = _INT16.unpack_from(value, 0)
    if version not in (0, 1):
        raise ValueError(f"unknown TransactionLogValue version {version}")
    fields = codec.decode(schemas.TRANSACTION_LOG_VALUE, version, value[2:])
    partitions = frozenset(
        (t["topic"], p) for t in fields["transaction_partitions"] or () for p in t["partition_ids"]
    )
    return transactional_id, TransactionMetadata(
        transactional_id,
        fields["producer_id"],
        fields["producer_epoch"],
        fields["transaction_timeout_ms"],
        TransactionState(fields["transaction_status"]),
        partitions,
        fields["transaction_start_timestamp_ms"],
        fields["transaction_last_update_timestamp_ms"],
    )
