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

Expiration (``transactional.id.expiration.ms``, Kafka's ``removeExpiredTransactionalIds``):
``expired`` picks the ids in Empty/CompleteCommit/CompleteAbort not updated for that long and
``prepare_dead`` moves one to Dead (its ``__transaction_state`` record is then a tombstone).
The admin views are here too: ``TransactionState.kafka_name`` (the names DescribeTransactions
and ListTransactions answer) and ``list_filter`` (ListTransactions' state, producer id,
duration and transactional id pattern filters, as Kafka's ``listTransactionStates``).

Not implemented yet: transactions version 2 (KIP-890 part 2 epoch bump per transaction).
The driver (records, markers, timers) is ``coordinator.py``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import ErrorCode

from . import schemas

__all__ = [
    "MAX_PRODUCER_EPOCH",
    "InvalidPattern",
    "TransactionMetadata",
    "TransactionState",
    "TxnResult",
    "abort_timed_out",
    "add_partitions",
    "complete",
    "end_transaction",
    "expired",
    "init_producer_id",
    "list_filter",
    "prepare_dead",
    "read_transaction_log_record",
    "transaction_log_key",
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

    @property
    def kafka_name(self) -> str:
        """The name Kafka's admin APIs use (``TransactionState.name``), e.g. PrepareCommit."""
        return _KAFKA_NAMES[self]

    @classmethod
    def from_name(cls, name: str) -> TransactionState | None:
        """The state Kafka calls ``name`` (case-sensitive, as Kafka), None if there is none."""
        return _BY_KAFKA_NAME.get(name)

    @property
    def is_expiration_allowed(self) -> bool:
        """Kafka's ``isExpirationAllowed``: no transaction in flight."""
        return self in (TransactionState.EMPTY, *_COMPLETE)


_KAFKA_NAMES = {
    TransactionState.EMPTY: "Empty",
    TransactionState.ONGOING: "Ongoing",
    TransactionState.PREPARE_COMMIT: "PrepareCommit",
    TransactionState.PREPARE_ABORT: "PrepareAbort",
    TransactionState.COMPLETE_COMMIT: "CompleteCommit",
    TransactionState.COMPLETE_ABORT: "CompleteAbort",
    TransactionState.DEAD: "Dead",
    TransactionState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}
_BY_KAFKA_NAME = {name: state for state, name in _KAFKA_NAMES.items()}
_COMPLETE = (TransactionState.COMPLETE_COMMIT, TransactionState.COMPLETE_ABORT)


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


def expired(
    transactions: Iterable[TransactionMetadata], now_ms: int, expiration_ms: int
) -> list[TransactionMetadata]:
    """Kafka's ``shouldExpire``: the ids with no transaction in flight whose last update is at
    least ``transactional.id.expiration.ms`` old."""
    return [
        t
        for t in transactions
        if t.state.is_expiration_allowed
        and t.txn_last_update_timestamp_ms <= now_ms - expiration_ms
    ]


def prepare_dead(current: TransactionMetadata, now_ms: int) -> TransactionMetadata:
    """Kafka's ``prepareDead``: the id is being expired (its record becomes a tombstone)."""
    return current.transition_to(_S.DEAD, now_ms, partitions=frozenset())


class InvalidPattern(ValueError):
    """A ListTransactions ``transactional_id_pattern`` that is not a regular expression."""


def list_filter(
    state_names: Collection[str],
    producer_ids: Collection[int],
    duration_ms: int,
    transactional_id_pattern: str | None,
    now_ms: int,
) -> tuple[Callable[[TransactionMetadata], bool], list[str]]:
    """ListTransactions' filters as Kafka's ``listTransactionStates``: the predicate and the
    state filters Kafka does not know (``unknown_state_filters``).

    Dead ids are never listed; an empty state or producer id filter lets everything through;
    a duration filter >= 0 keeps transactions started more than ``duration_ms`` ago; a
    non-empty pattern must match the whole transactional id (Java's ``Matcher.matches``).
    Raises ``InvalidPattern`` for a pattern that does not compile.
    """
    states: set[TransactionState] = set()
    unknown: list[str] = []
    for name in dict.fromkeys(state_names):  # a set in Kafka: each unknown name once
        state = TransactionState.from_name(name)
        if state is None:
            unknown.append(name)
        else:
            states.add(state)
    pattern: re.Pattern[str] | None = None
    if transactional_id_pattern:
        try:
            pattern = re.compile(transactional_id_pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise InvalidPattern(str(exc)) from None
    pids = frozenset(producer_ids)
    filter_states = bool(state_names)

    def include(metadata: TransactionMetadata) -> bool:
        if metadata.state is _S.DEAD:
            return False
        if pids and metadata.producer_id not in pids:
            return False
        if filter_states and metadata.state not in states:
            return False
        if duration_ms >= 0 and now_ms - metadata.txn_start_timestamp_ms <= duration_ms:
            return False
        return pattern is None or pattern.fullmatch(metadata.transactional_id) is not None

    return include, unknown


# -- __transaction_state records -------------------------------------------------------------


def transaction_log_key(transactional_id: str) -> bytes:
    """The key of a ``__transaction_state`` record (TransactionLogKey v0); with a null value
    it is the tombstone of an expired id."""
    return _INT16.pack(TRANSACTION_LOG_KEY_VERSION) + codec.encode(
        schemas.TRANSACTION_LOG_KEY,
        TRANSACTION_LOG_KEY_VERSION,
        {"transactional_id": transactional_id},
    )


def transaction_log_record(metadata: TransactionMetadata) -> tuple[bytes, bytes]:
    """The (key, value) of the ``__transaction_state`` record (TransactionLogKey v0,
    TransactionLogValue v0: the version Kafka writes for transactions version 1)."""
    key = transaction_log_key(metadata.transactional_id)
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
