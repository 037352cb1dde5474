"""The ``.txnindex`` of a segment: Kafka's byte layout, appends on ABORT markers, reads for
read_committed fetches, and its life with the segment (recovery, truncation, retention,
cleaning)."""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykbroker.log import TopicPartition
from pykbroker.log.cleaner import LogCleaner, clean
from pykbroker.log.index import CorruptIndexError
from pykbroker.log.log import Log
from pykbroker.log.producer_state import ProducerStateManager
from pykbroker.log.record_batch import (
    AppendOrigin,
    EndTxnMarker,
    Record,
    build_batch,
    unpack_header,
)
from pykbroker.log.segment import (
    CLEANED_FILE_SUFFIX,
    DELETED_FILE_SUFFIX,
    SWAP_FILE_SUFFIX,
    log_file,
    txn_index_file,
)
from pykbroker.log.transaction_index import (
    ABORTED_TXN_SIZE,
    AbortedTxn,
    TransactionIndex,
)

from .support import make_batch, small_config

NOW = 1_000_000


class Producers:
    """Transactional producers writing to one log, with their sequences."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.sequences: dict[int, int] = {}

    def send(self, producer_id: int, count: int = 1, key: bytes = b"k") -> int:
        """A transactional batch of ``count`` records; returns its base offset."""
        sequence = self.sequences.get(producer_id, 0)
        batch = build_batch(
            [Record(key, b"v%d" % (sequence + i), timestamp=NOW) for i in range(count)],
            producer_id=producer_id,
            producer_epoch=0,
            base_sequence=sequence,
            is_transactional=True,
        )
        self.sequences[producer_id] = sequence + count
        info = self.log.append_as_leader(batch, 0, NOW)
        self.log.high_watermark = self.log.log_end_offset
        return info.first_offset

    def end(self, producer_id: int, *, commit: bool) -> int:
        """The coordinator's marker; returns its offset."""
        info = self.log.append_as_leader(
            marker_batch(producer_id, commit), 0, NOW, origin=AppendOrigin.COORDINATOR
        )
        self.log.high_watermark = self.log.log_end_offset
        return info.first_offset


def marker_batch(producer_id: int, commit: bool, base_offset: int = 0) -> bytes:
    marker = EndTxnMarker.COMMIT if commit else EndTxnMarker.ABORT
    return build_batch(
        [Record(struct.pack(">hh", 0, marker), struct.pack(">hi", 0, 0), timestamp=NOW)],
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=0,
        is_transactional=True,
        is_control=True,
    )


def open_log(path: Path, *, recover: bool = False, **overrides: object) -> Log:
    return Log.open(path, small_config(**overrides), recover=recover, now_ms=NOW)


def all_entries(log: Log) -> list[AbortedTxn]:
    return [t for s in log.segments for t in s.txn_index.all_aborted_txns()]


# -- the file format ---------------------------------------------------------------------


def test_an_entry_is_kafkas_34_byte_aborted_txn() -> None:
    txn = AbortedTxn(
        producer_id=0x0102030405060708,
        first_offset=5,
        last_offset=0x1_0000_0009,
        last_stable_offset=-1,
    )
    raw = txn.encode()
    assert ABORTED_TXN_SIZE == 34
    assert raw == bytes.fromhex(
        "0000"  # version int16 = 0
        "0102030405060708"  # producerId int64
        "0000000000000005"  # firstOffset int64
        "0000000100000009"  # lastOffset int64
        "ffffffffffffffff"  # lastStableOffset int64
    )
    assert AbortedTxn.decode(raw) == txn
    with pytest.raises(CorruptIndexError):
        AbortedTxn.decode(b"\x00\x01" + raw[2:])  # only version 0 exists


def test_round_trip_through_the_file_created_on_first_append(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000000100.txnindex"
    index = TransactionIndex(path, 100)
    assert index.all_aborted_txns() == []
    assert not path.exists()  # lazily created, as Kafka's
    entries = [
        AbortedTxn(7, 90, 100, 95),  # producer 8's transaction was open since 95
        AbortedTxn(8, 95, 110, 111),
        AbortedTxn(7, 120, 130, 131),
    ]
    for txn in entries:
        index.append(txn)
    with pytest.raises(ValueError, match="must increase"):
        index.append(AbortedTxn(9, 1, 130, 131))  # last offsets must increase
    index.close()
    assert path.read_bytes() == b"".join(t.encode() for t in entries)
    reread = TransactionIndex(path, 100)
    assert reread.all_aborted_txns() == entries
    reread.sanity_check(next_offset=131)
    with pytest.raises(CorruptIndexError):
        reread.sanity_check(next_offset=130)  # an entry past the segment's end
    with pytest.raises(CorruptIndexError):
        TransactionIndex(path, 105).sanity_check()  # an entry before the segment

    # Kafka's collectAbortedTxns: overlap with [fetch, upper), complete once LSO >= upper
    result = reread.collect_aborted_txns(96, 101)
    assert result.aborted_transactions == entries[:2]
    assert result.is_complete  # entry 1's LSO is 111: nothing later starts below it
    result = reread.collect_aborted_txns(105, 200)
    assert result.aborted_transactions == entries[1:]
    assert not result.is_complete  # a later segment may still hold an overlapping one

    reread.truncate_to(110)
    assert reread.all_aborted_txns() == entries[:1]
    assert path.stat().st_size == ABORTED_TXN_SIZE
    reread.reset()
    assert path.stat().st_size == 0


def test_a_torn_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000000000.txnindex"
    path.write_bytes(AbortedTxn(1, 0, 1, 2).encode()[:-3])
    with pytest.raises(CorruptIndexError):
        TransactionIndex(path, 0).sanity_check()


# -- the log writes it -------------------------------------------------------------------


def test_an_abort_marker_appends_an_entry_a_commit_does_not(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=1 << 20)
    p = Producers(log)
    p.send(10, 2)  # 0-1
    p.send(11)  # 2: producer 11 opens a transaction before 10 ends its own
    p.send(10)  # 3
    abort_at = p.end(10, commit=False)  # 4
    assert txn_index_file(path, 0).stat().st_size == ABORTED_TXN_SIZE
    p.end(11, commit=True)  # 5
    p.send(12)  # 6
    second_abort = p.end(12, commit=False)  # 7
    assert all_entries(log) == [
        AbortedTxn(10, 0, abort_at, 2),  # LSO: producer 11's open transaction at 2
        AbortedTxn(12, 6, second_abort, second_abort + 1),  # nothing else open
    ]
    assert txn_index_file(path, 0).read_bytes() == b"".join(t.encode() for t in all_entries(log))
    assert [t.producer_id for t in log.collect_aborted_transactions(0, 8)] == [10, 12]
    assert [t.producer_id for t in log.collect_aborted_transactions(5, 8)] == [12]
    assert [t.producer_id for t in log.collect_aborted_transactions(2, 3)] == [10]
    assert log.collect_aborted_transactions(5, 6) == []


def test_commits_only_create_no_file(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = open_log(path)
    p = Producers(log)
    p.send(1)
    p.end(1, commit=True)
    log.close()
    assert not list(path.glob("*.txnindex"))


def test_a_marker_without_data_here_is_indexed_at_its_own_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append_as_leader(make_batch(1), 0, NOW)
    offset = Producers(log).end(5, commit=False)
    assert all_entries(log) == [AbortedTxn(5, offset, offset, offset + 1)]  # Kafka's rule


def test_entries_live_in_the_markers_segment_and_fetches_find_them(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = open_log(path)  # 1 KiB segments
    p = Producers(log)
    first = p.send(3)
    for _ in range(12):
        log.append_as_leader(make_batch(2, value_size=60), 0, NOW)
    abort_at = p.end(3, commit=False)
    segments = log.segments
    assert len(segments) > 2
    holder = next(s for s in reversed(segments) if s.base_offset <= abort_at)
    assert holder.base_offset > first
    assert holder.txn_index.all_aborted_txns() == [AbortedTxn(3, first, abort_at, abort_at + 1)]
    assert txn_index_file(path, holder.base_offset).exists()
    assert [p.name for p in path.glob("*.txnindex")] == [f"{holder.base_offset:020d}.txnindex"]
    # a fetch from the transaction's first segment reaches the later segment's entry
    assert log.collect_aborted_transactions(first, first + 1) == [
        AbortedTxn(3, first, abort_at, abort_at + 1)
    ]


def test_a_follower_indexes_replicated_markers(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "leader-0", segment_bytes=1 << 20)
    p = Producers(leader)
    p.send(4, 2)
    p.send(5)
    p.end(4, commit=False)
    p.end(5, commit=False)
    follower = open_log(tmp_path / "follower-0", segment_bytes=1 << 20)
    follower.append_as_follower(leader.read(0, 1 << 20), NOW)  # one chunk: data and markers
    assert (
        all_entries(follower)
        == all_entries(leader)
        == [
            AbortedTxn(4, 0, 3, 2),
            AbortedTxn(5, 2, 4, 5),
        ]
    )


# -- recovery and truncation -------------------------------------------------------------


def build_with_aborts(path: Path) -> tuple[Log, list[AbortedTxn]]:
    """A log whose aborted transactions start in one segment and end in another."""
    log = open_log(path)
    p = Producers(log)
    for round_no in range(4):
        p.send(20 + round_no, 2)
        for _ in range(6):
            log.append_as_leader(make_batch(2, value_size=60), 0, NOW)
        p.end(20 + round_no, commit=round_no == 2)
    return log, all_entries(log)


def test_unclean_restart_rebuilds_a_lost_txnindex(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log, entries = build_with_aborts(path)
    assert len(entries) == 3
    bases = [s.base_offset for s in log.segments]
    holders = sorted(p.name for p in path.glob("*.txnindex"))
    config = log.config
    log.close()
    for txn_path in path.glob("*.txnindex"):
        os.truncate(txn_path, 0)  # lost, as after a crash before the page cache was written
    reopened = Log.open(path, config, recover=True, recovery_point=0, now_ms=NOW)
    assert [s.base_offset for s in reopened.segments] == bases
    assert all_entries(reopened) == entries
    assert sorted(p.name for p in path.glob("*.txnindex") if p.stat().st_size) == holders


@pytest.mark.parametrize("drop_snapshots", [False, True])
def test_a_torn_txnindex_of_a_flushed_segment_is_rebuilt(
    tmp_path: Path, drop_snapshots: bool
) -> None:
    path = tmp_path / "t-0"
    log, entries = build_with_aborts(path)
    config = log.config
    log.close()
    if drop_snapshots:  # the producer state at the segment then comes from the log itself
        for snapshot in path.glob("*.snapshot"):
            snapshot.unlink()
    txn_path = next(iter(sorted(path.glob("*.txnindex"))))
    os.truncate(txn_path, txn_path.stat().st_size - 5)  # a torn entry: fails the sanity check
    reopened = Log.open(path, config, recover=False, now_ms=NOW)
    assert all_entries(reopened) == entries
    assert txn_path.stat().st_size % ABORTED_TXN_SIZE == 0


def test_a_torn_log_tail_drops_the_entry_of_the_lost_marker(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = open_log(path, segment_bytes=1 << 20)
    p = Producers(log)
    p.send(1)
    p.end(1, commit=False)
    p.send(2)
    abort_at = p.end(2, commit=False)
    assert len(all_entries(log)) == 2
    config = log.config
    log.close()
    os.truncate(log_file(path, 0), log_file(path, 0).stat().st_size - 7)  # the marker torn
    reopened = Log.open(path, config, recover=True, now_ms=NOW)
    assert reopened.log_end_offset == abort_at
    assert all_entries(reopened) == [AbortedTxn(1, 0, 1, 2)]
    assert txn_index_file(path, 0).stat().st_size == ABORTED_TXN_SIZE
    # the log cut without a crash flag: the entry past the end fails the sanity check
    reopened.append_as_leader(
        marker_batch(3, commit=False), 0, NOW, origin=AppendOrigin.COORDINATOR
    )
    reopened.close()
    os.truncate(log_file(path, 0), log_file(path, 0).stat().st_size - 7)
    again = Log.open(path, config, recover=False, now_ms=NOW)
    assert all_entries(again) == [AbortedTxn(1, 0, 1, 2)]


def test_truncation_drops_entries_at_and_after_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log, entries = build_with_aborts(path)
    cut = entries[1].last_offset
    log.truncate_to(cut)
    assert all_entries(log) == entries[:1]
    assert sum(p.stat().st_size for p in path.glob("*.txnindex")) == ABORTED_TXN_SIZE
    log.truncate_to(entries[0].last_offset)
    assert all_entries(log) == []


# -- retention and cleaning --------------------------------------------------------------


def test_retention_deletes_the_txnindex_with_its_segment(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log, _ = build_with_aborts(path)
    holder = min(p.name for p in path.glob("*.txnindex"))
    base = int(holder.partition(".")[0])
    removed = log.remove_old_segments(NOW)
    assert removed == []  # retention.ms not reached
    log.config = small_config(retention_ms=1)
    removed = log.remove_old_segments(NOW + 10**9)
    assert base in [s.base_offset for s in removed]
    assert not (path / holder).exists()
    assert (path / (holder + DELETED_FILE_SUFFIX)).exists()
    for segment in removed:
        segment.delete()
    assert not list(path.glob("*.txnindex*"))
    assert all_entries(log) == []
    assert log.collect_aborted_transactions(log.log_start_offset, log.log_end_offset) == []


def test_the_cleaned_segment_keeps_its_aborted_txn_entries(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = open_log(path, cleanup_policy="compact", min_cleanable_dirty_ratio=0.01)
    p = Producers(log)
    for round_no in range(6):
        p.send(30 + round_no, 2, key=b"txn")
        for i in range(3):
            put = build_batch([Record(b"k%d" % i, b"x" * 60, timestamp=NOW)])
            log.append_as_leader(put, 0, NOW)
        p.end(30 + round_no, commit=round_no % 2 == 0)
    log.high_watermark = log.log_end_offset
    before = all_entries(log)
    assert len(before) == 3
    log.roll(NOW)
    cleaner = LogCleaner(lambda: {TopicPartition("t", 0): log})
    result = cleaner.clean_now(NOW)
    assert result is not None
    assert result.groups == []  # installed
    assert all_entries(log) == before
    assert not list(path.glob("*.cleaned"))
    assert not list(path.glob("*.swap"))
    config = log.config
    log.close()
    reopened = Log.open(path, config, recover=False, now_ms=NOW)
    assert all_entries(reopened) == before
    fetched = reopened.collect_aborted_transactions(0, reopened.log_end_offset)
    assert fetched == before


def test_a_swap_finished_at_startup_keeps_the_cleaned_txnindex(tmp_path: Path) -> None:
    path = tmp_path / "t-0"
    log = open_log(path, cleanup_policy="compact", min_cleanable_dirty_ratio=0.01)
    p = Producers(log)
    for round_no in range(6):
        p.send(40 + round_no, 2, key=b"txn")
        for i in range(3):
            log.append_as_leader(
                build_batch([Record(b"k%d" % i, b"y" * 60, timestamp=NOW)]), 0, NOW
            )
        p.end(40 + round_no, commit=False)
    log.roll(NOW)
    log.high_watermark = log.log_end_offset
    before = all_entries(log)
    cleaner = LogCleaner(lambda: {TopicPartition("t", 0): log})
    plan = cleaner.plan(NOW)
    assert plan is not None
    result = clean(plan)
    plan.close()
    for _, cleaned in result.groups:
        assert cleaned.txn_index.path.name.endswith(".txnindex" + CLEANED_FILE_SUFFIX)
        # the crash: each cleaned segment became a swap file, the old ones are still live
        cleaned.change_file_suffixes(CLEANED_FILE_SUFFIX, SWAP_FILE_SUFFIX)
        cleaned.close()
    config = log.config
    log.close()
    for txn_path in path.glob("*.txnindex"):
        txn_path.unlink()  # only the swapped-in copies can bring the entries back
    reopened = Log.open(path, config, recover=True, now_ms=NOW)
    assert not list(path.glob("*" + SWAP_FILE_SUFFIX))
    assert all_entries(reopened) == before


# -- every path builds the same index --------------------------------------------------------

OPS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from(["data", "data", "commit", "abort"])),
    min_size=1,
    max_size=40,
)


def expected_entries(ops: list[tuple[int, str]]) -> list[AbortedTxn]:
    """Kafka's rules, by brute force: an ABORT's entry spans from its producer's first open
    offset (the marker itself if none) to the marker; the last stable offset is the oldest
    first offset of another producer's open transaction, else the marker + 1."""
    open_first: dict[int, int] = {}
    entries = []
    for offset, (producer, action) in enumerate(ops):
        if action == "data":
            open_first.setdefault(producer, offset)
            continue
        first = open_first.pop(producer, offset)
        if action == "abort":
            others = [f for p, f in open_first.items() if p != producer]
            entries.append(AbortedTxn(producer, first, offset, min(others, default=offset + 1)))
    return entries


def op_batches(ops: list[tuple[int, str]]) -> list[bytes]:
    batches = []
    for offset, (producer, action) in enumerate(ops):
        if action == "data":
            batch = build_batch(
                [Record(b"k", b"v", timestamp=NOW)],
                base_offset=offset,
                producer_id=producer,
                producer_epoch=0,
                base_sequence=offset,
                is_transactional=True,
            )
        else:
            batch = marker_batch(producer, action == "commit", base_offset=offset)
        batches.append(batch)
    return batches


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_leader_follower_multi_batch_and_recovery_agree_with_kafkas_rules(
    ops: list[tuple[int, str]],
) -> None:
    expected = expected_entries(ops)
    batches = op_batches(ops)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # the leader, one append per batch (the coordinator writes markers one by one)
        leader = open_log(root / "leader-0", segment_bytes=1 << 20)
        for batch in batches:
            leader.append_as_leader(batch, 0, NOW, origin=AppendOrigin.COORDINATOR)
        assert all_entries(leader) == expected
        # a follower, everything in one append
        follower = open_log(root / "follower-0", segment_bytes=1 << 20)
        follower.append_as_follower(b"".join(batches), NOW)
        assert all_entries(follower) == expected
        # a leader append holding every batch (ProducerStateManager.completed_txns)
        state = ProducerStateManager(root)
        headers = [unpack_header(b) for b in batches]
        completed = state.completed_txns(state.prepare_update(headers, 0, AppendOrigin.REPLICATION))
        aborts = {o for o, (_, action) in enumerate(ops) if action == "abort"}
        assert [
            AbortedTxn(t.producer_id, t.first_offset, t.last_offset, t.last_stable_offset)
            for t in completed
            if t.last_offset in aborts
        ] == expected
        # recovery after a crash that lost the index
        config = follower.config
        follower.close()
        txn_index_file(root / "follower-0", 0).unlink(missing_ok=True)
        recovered = Log.open(root / "follower-0", config, recover=True, now_ms=NOW)
        assert all_entries(recovered) == expected
        leader.close()
        recovered.close()
