"""The transaction coordinator state machine: transitions, fencing, timeouts, records."""

from __future__ import annotations

import pytest

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.transaction.transaction_metadata import (
    MAX_PRODUCER_EPOCH,
    TransactionMetadata,
    TransactionState,
    abort_timed_out,
    add_partitions,
    complete,
    end_transaction,
    init_producer_id,
    read_transaction_log_record,
    transaction_log_record,
)

S = TransactionState
TP = frozenset({("orders", 0), ("orders", 1)})


def initialized(now: int = 0) -> TransactionMetadata:
    result = init_producer_id(None, "tx", 60_000, now, new_producer_id=4000)
    assert result.error == ErrorCode.NO_ERROR
    assert result.metadata is not None
    return result.metadata


def ongoing(now: int = 10) -> TransactionMetadata:
    meta = initialized()
    result = add_partitions(meta, 4000, 0, TP, now)
    assert result.metadata is not None
    return result.metadata


def test_new_transactional_id_gets_a_producer_id_and_epoch_zero() -> None:
    meta = initialized()
    assert (meta.producer_id, meta.producer_epoch, meta.state) == (4000, 0, S.EMPTY)


def test_commit_cycle_empty_ongoing_prepare_complete() -> None:
    meta = ongoing(now=10)
    assert (meta.state, meta.partitions, meta.txn_start_timestamp_ms) == (S.ONGOING, TP, 10)
    again = add_partitions(meta, 4000, 0, frozenset({("orders", 0)}), 20)
    assert (again.error, again.metadata) == (ErrorCode.NO_ERROR, None)  # nothing new
    prepared = end_transaction(meta, 4000, 0, True, 30)
    assert prepared.write_markers
    assert prepared.metadata is not None
    assert prepared.metadata.state is S.PREPARE_COMMIT
    concurrent = end_transaction(prepared.metadata, 4000, 0, True, 31)
    assert concurrent.error == ErrorCode.CONCURRENT_TRANSACTIONS
    assert end_transaction(prepared.metadata, 4000, 0, False, 31).error == (
        ErrorCode.INVALID_TXN_STATE
    )
    done = complete(prepared.metadata, 40)
    assert (done.state, done.partitions) == (S.COMPLETE_COMMIT, frozenset())
    assert end_transaction(done, 4000, 0, True, 50).error == ErrorCode.NO_ERROR  # a retry
    assert end_transaction(done, 4000, 0, False, 50).error == ErrorCode.INVALID_TXN_STATE
    nxt = add_partitions(done, 4000, 0, TP, 60).metadata
    assert nxt is not None
    assert (nxt.state, nxt.txn_start_timestamp_ms) == (S.ONGOING, 60)


def test_abort_cycle() -> None:
    prepared = end_transaction(ongoing(), 4000, 0, False, 30).metadata
    assert prepared is not None
    assert prepared.state is S.PREPARE_ABORT
    assert complete(prepared, 40).state is S.COMPLETE_ABORT


def test_end_without_a_transaction_is_invalid_txn_state() -> None:
    assert end_transaction(initialized(), 4000, 0, True, 5).error == ErrorCode.INVALID_TXN_STATE


def test_wrong_producer_id_or_epoch() -> None:
    meta = ongoing()
    assert add_partitions(meta, 9, 0, TP, 1).error == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert add_partitions(None, 9, 0, TP, 1).error == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert add_partitions(meta, 4000, 1, TP, 1).error == ErrorCode.PRODUCER_FENCED
    assert end_transaction(meta, 4000, 7, True, 1).error == ErrorCode.PRODUCER_FENCED


def test_init_producer_id_bumps_the_epoch_and_fences_the_old_producer() -> None:
    prepared = end_transaction(ongoing(), 4000, 0, True, 30).metadata
    assert prepared is not None
    done = complete(prepared, 40)
    bumped = init_producer_id(done, "tx", 30_000, 50, new_producer_id=5000).metadata
    assert bumped is not None
    assert (bumped.producer_id, bumped.producer_epoch, bumped.state) == (4000, 1, S.EMPTY)
    assert bumped.transaction_timeout_ms == 30_000
    assert add_partitions(bumped, 4000, 0, TP, 60).error == ErrorCode.PRODUCER_FENCED
    # KIP-360: the previous epoch may ask again; anything else is fenced
    again = init_producer_id(bumped, "tx", 30_000, 70, new_producer_id=5000, expected=(4000, 0))
    assert (again.error, again.producer_epoch) == (ErrorCode.NO_ERROR, 1)  # no second bump
    current = init_producer_id(bumped, "tx", 30_000, 70, new_producer_id=5000, expected=(4000, 1))
    assert current.producer_epoch == 2
    stale = init_producer_id(bumped, "tx", 30_000, 70, new_producer_id=5000, expected=(4000, 9))
    assert stale.error == ErrorCode.PRODUCER_FENCED


def test_init_producer_id_during_a_transaction_aborts_it_with_a_bumped_epoch() -> None:
    result = init_producer_id(ongoing(), "tx", 60_000, 50, new_producer_id=5000)
    assert result.error == ErrorCode.CONCURRENT_TRANSACTIONS
    assert result.write_markers
    assert result.metadata is not None
    assert (result.metadata.state, result.metadata.producer_epoch) == (S.PREPARE_ABORT, 1)
    assert end_transaction(result.metadata, 4000, 0, True, 51).error == ErrorCode.PRODUCER_FENCED
    aborted = complete(result.metadata, 60)
    retried = init_producer_id(aborted, "tx", 60_000, 70, new_producer_id=5000).metadata
    assert retried is not None
    assert (retried.producer_epoch, retried.state) == (2, S.EMPTY)


def test_exhausted_epoch_gets_a_new_producer_id() -> None:
    meta = TransactionMetadata("tx", 4000, MAX_PRODUCER_EPOCH - 1, 60_000)
    bumped = init_producer_id(meta, "tx", 60_000, 1, new_producer_id=5000).metadata
    assert bumped is not None
    assert (bumped.producer_id, bumped.producer_epoch) == (5000, 0)


def test_timed_out_transaction_is_aborted_with_a_bumped_epoch() -> None:
    meta = ongoing(now=1_000)
    assert abort_timed_out(meta, 60_999) is None
    aborted = abort_timed_out(meta, 61_000)
    assert aborted is not None
    assert (aborted.state, aborted.producer_epoch) == (S.PREPARE_ABORT, 1)
    assert abort_timed_out(initialized(), 10**9) is None


def test_illegal_transition_raises() -> None:
    with pytest.raises(ValueError, match="illegal transition"):
        initialized().transition_to(S.PREPARE_COMMIT, 1)


def test_transaction_log_record_round_trips() -> None:
    meta = ongoing(now=10)
    key, value = transaction_log_record(meta)
    assert key[:2] == b"\x00\x00"
    assert value[:2] == b"\x00\x00"
    transactional_id, decoded = read_transaction_log_record(key, value)
    assert transactional_id == "tx"
    assert decoded is not None
    assert (decoded.producer_id, decoded.producer_epoch, decoded.state) == (4000, 0, S.ONGOING)
    assert decoded.partitions == TP
    assert decoded.txn_start_timestamp_ms == 10
    assert read_transaction_log_record(key, None) == ("tx", None)
