"""Compaction (LogCleaner): latest record per key, offsets kept, dirty ratio, lags,
tombstones, compressed batches, transactions, crash during the swap."""

from __future__ import annotations

import dataclasses
import os
import struct
import tempfile
from pathlib import Path

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from pykbroker.log import TopicPartition
from pykbroker.log.cleaner import CLEANER_OFFSET_CHECKPOINT_FILE, LogCleaner, clean
from pykbroker.log.compression import CompressionType
from pykbroker.log.log import Log
from pykbroker.log.log_tasks import run_cleaner_once
from pykbroker.log.record_batch import (
    AppendOrigin,
    Record,
    build_batch,
    decode_records,
    iter_batches,
    rebuild_batch,
)
from pykbroker.log.segment import CLEANED_FILE_SUFFIX, SWAP_FILE_SUFFIX, log_file

from .support import small_config

TP = TopicPartition("compacted", 0)
NOW = 1_000_000


def compacted_log(path: Path, **overrides: object) -> Log:
    values: dict[str, object] = {
        "cleanup_policy": "compact",
        "segment_bytes": 400,
        "min_cleanable_dirty_ratio": 0.01,
        "message_timestamp_after_max_ms": 2**62,
    }
    values.update(overrides)
    log = Log.open(path, small_config(**values), now_ms=NOW)
    return log


def put(
    log: Log,
    *pairs: tuple[bytes, bytes | None],
    timestamp: int = NOW,
    compression: CompressionType = CompressionType.NONE,
    **batch: object,
) -> None:
    records = [Record(k, v, timestamp=timestamp) for k, v in pairs]
    data = build_batch(records, compression=compression, **batch)  # type: ignore[arg-type]
    log.append_as_leader(data, 0, now_ms=NOW)
    log.high_watermark = log.log_end_offset


def contents(log: Log) -> list[tuple[int, bytes | None, bytes | None]]:
    found: list[tuple[int, bytes | None, bytes | None]] = []
    for segment in log.segments:
        data = log.read(segment.base_offset, 1 << 20) if segment.size else b""
        for header, batch in iter_batches(data):
            if header.base_offset < segment.base_offset:
                continue
            found.extend((r.offset, r.key, r.value) for r in decode_records(batch))
    return sorted(set(found))


def cleaner_for(log: Log) -> LogCleaner:
    return LogCleaner(lambda: {TP: log})


def fill(log: Log, rounds: int, keys: int = 5) -> dict[bytes, tuple[int, bytes]]:
    """``rounds`` updates of ``keys`` keys; returns key -> (last offset, last value)."""
    latest: dict[bytes, tuple[int, bytes]] = {}
    for r in range(rounds):
        for k in range(keys):
            key, value = b"key-%d" % k, b"value-%d-%d" % (k, r)
            latest[key] = (log.log_end_offset, value)
            put(log, (key, value))
    return latest


def test_cleaning_keeps_the_latest_record_per_key_at_its_offset(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0")
    latest = fill(log, rounds=10)
    active_base = log.active_segment.base_offset
    before = contents(log)
    size_before = log.size_in_bytes
    result = cleaner_for(log).clean_now(NOW)
    assert result is not None
    assert result.stats.records_removed > 0
    after = contents(log)
    cleaned_part = [entry for entry in after if entry[0] < active_base]
    for offset, key, value in cleaned_part:  # only the latest of each key survives
        assert key is not None
        assert latest[key][0] >= offset
        if latest[key][0] < active_base:
            assert (offset, value) == latest[key]
    assert [e for e in before if e[0] >= active_base] == [e for e in after if e[0] >= active_base]
    for key, (offset, value) in latest.items():  # every latest value still readable
        assert (offset, key, value) in after
    assert log.size_in_bytes < size_before / 2
    assert log.log_end_offset == 50
    assert (tmp_path / CLEANER_OFFSET_CHECKPOINT_FILE).read_text().splitlines()[2] == (
        f"compacted 0 {active_base}"
    )
    assert cleaner_for(log).clean_now(NOW) is None  # nothing dirty any more
    segments = len(log.segments)
    fill(log, rounds=2)
    assert cleaner_for(log).clean_now(NOW) is not None
    assert len(log.segments) < segments  # small cleaned segments are merged (grouping)
    after = contents(log)
    log.close()
    reopened = Log.open(tmp_path / "compacted-0", log.config, recover=True, now_ms=NOW)
    assert contents(reopened) == after


def test_min_cleanable_dirty_ratio_and_the_cleaner_checkpoint(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0", min_cleanable_dirty_ratio=0.9)
    fill(log, rounds=10)
    cleaner = cleaner_for(log)
    assert cleaner.clean_now(NOW) is not None  # never cleaned: everything is dirty
    fill(log, rounds=1)  # a little dirt on a mostly clean log
    assert cleaner.plan(NOW) is None
    log.update_config(dataclasses.replace(log.config, min_cleanable_dirty_ratio=0.01))
    assert cleaner.plan(NOW) is not None


def test_min_compaction_lag_keeps_young_segments_dirty(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0", min_compaction_lag_ms=10_000)
    for r in range(6):  # old records
        put(log, (b"a", b"old-%d" % r), (b"b", b"old"), timestamp=NOW - 60_000)
    young_start = log.log_end_offset
    log.roll()
    for r in range(6):
        put(log, (b"a", b"young-%d" % r), timestamp=NOW - 1_000)
    put(log, (b"z", b"active"))
    result = cleaner_for(log).clean_now(NOW)
    assert result is not None
    assert result.end_offset == young_start
    values = [(o, v) for o, k, v in contents(log) if k == b"a"]
    assert values[0] == (young_start - 2, b"old-5")  # dirty old part cleaned
    assert [v for o, v in values if o >= young_start] == [b"young-%d" % r for r in range(6)]


def test_tombstones_live_until_delete_retention_ms_after_first_cleaning(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0", delete_retention_ms=5_000)
    for r in range(5):
        put(log, (b"gone", b"v%d" % r), (b"kept", b"v%d" % r))
    put(log, (b"gone", None))
    tombstone = log.log_end_offset - 1
    fill(log, rounds=6, keys=2)  # later segments so the tombstone is cleanable
    cleaner = cleaner_for(log)
    cleaner.clean_now(NOW)
    gone = [(o, v) for o, k, v in contents(log) if k == b"gone"]
    assert gone == [(tombstone, None)]
    header = next(
        h for h, _ in iter_batches(log.read(tombstone, 1 << 20)) if h.last_offset >= tombstone
    )
    assert header.has_delete_horizon_ms
    assert header.base_timestamp == NOW + 5_000
    assert decode_records(log.read(tombstone, 1 << 20))[0].timestamp == NOW  # unchanged
    fill(log, rounds=6, keys=2)
    cleaner.clean_now(NOW + 4_999)
    assert [o for o, k, _ in contents(log) if k == b"gone"] == [tombstone]
    fill(log, rounds=6, keys=2)
    cleaner.clean_now(NOW + 5_000)
    assert [o for o, k, _ in contents(log) if k == b"gone"] == []
    assert any(k == b"kept" for _, k, _ in contents(log))


def test_compressed_batches_are_filtered_and_recompressed_with_their_codec(
    tmp_path: Path,
) -> None:
    log = compacted_log(tmp_path / "compacted-0", segment_bytes=2_000)
    codecs = [CompressionType.GZIP, CompressionType.SNAPPY, CompressionType.LZ4]
    codecs.append(CompressionType.ZSTD)
    for r in range(12):
        codec = codecs[r % len(codecs)]
        put(log, (b"a", b"a%d" % r), (b"b%d" % r, b"unique"), (b"c", b"c%d" % r), compression=codec)
    for _ in range(10):
        put(log, (b"tail", b"x" * 100))
    before = {h.base_offset: h.compression_type for h, _ in iter_batches(log.read(0, 1 << 20))}
    cleaner_for(log).clean_now(NOW)
    data = b"".join(log.read(s.base_offset, 1 << 20) for s in log.segments if s.size)
    for header, batch in iter_batches(data):
        if header.base_offset in before:
            assert header.compression_type is before[header.base_offset]
        assert header.last_offset_delta == 2 or header.base_offset >= 36
        decode_records(batch)  # CRC and framing valid
    survivors = [(o, k) for o, k, _ in contents(log) if o < 36]
    assert (33, b"a") in survivors
    assert (35, b"c") in survivors
    assert sum(1 for _, k in survivors if k == b"a") == 1
    assert sum(1 for _, k in survivors if k is not None and k.startswith(b"b")) == 12


def control_batch(producer_id: int, commit: bool) -> bytes:
    key = struct.pack(">hh", 0, 1 if commit else 0)
    value = struct.pack(">hi", 0, 0)
    return build_batch(
        [Record(key, value, timestamp=NOW)],
        producer_id=producer_id,
        producer_epoch=0,
        is_transactional=True,
        is_control=True,
    )


def txn_put(log: Log, producer_id: int, *pairs: tuple[bytes, bytes]) -> None:
    batch = build_batch(
        [Record(k, v, timestamp=NOW) for k, v in pairs],
        producer_id=producer_id,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    log.append_as_leader(batch, 0, now_ms=NOW)
    log.high_watermark = log.log_end_offset


def marker(log: Log, producer_id: int, commit: bool) -> None:
    log.append_as_leader(
        control_batch(producer_id, commit), 0, now_ms=NOW, origin=AppendOrigin.COORDINATOR
    )
    log.high_watermark = log.log_end_offset


def test_transactions_aborted_data_goes_committed_stays_open_stops(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0")
    put(log, (b"k", b"committed-before"))
    txn_put(log, 10, (b"k", b"aborted"))
    marker(log, 10, commit=False)
    txn_put(log, 11, (b"j", b"committed"))
    marker(log, 11, commit=True)
    fill(log, rounds=4, keys=2)
    open_start = log.log_end_offset
    txn_put(log, 12, (b"k", b"open"))
    fill(log, rounds=4, keys=2)
    result = cleaner_for(log).clean_now(NOW)
    assert result is not None
    assert result.end_offset <= open_start
    kept = contents(log)
    assert (0, b"k", b"committed-before") in kept  # the aborted write did not shadow it
    assert not any(v == b"aborted" for _, _, v in kept)
    assert (3, b"j", b"committed") in kept
    assert (open_start, b"k", b"open") in kept
    controls = [h for h, _ in iter_batches(log.read(0, 1 << 20)) if h.is_control]
    assert len(controls) == 2  # markers are kept


def test_a_producers_last_batch_is_kept_empty(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0")
    put(log, (b"k", b"1"), producer_id=5, producer_epoch=1, base_sequence=0)
    put(log, (b"k", b"2"), producer_id=6, producer_epoch=1, base_sequence=0)
    put(log, (b"k", b"3"), producer_id=6, producer_epoch=1, base_sequence=1)
    for r in range(20):
        put(log, (b"k", b"later-%d" % r))
    cleaner_for(log).clean_now(NOW)
    headers = [h for h, _ in iter_batches(log.read(0, 1 << 20))]
    by_producer = {h.producer_id: h for h in headers if h.producer_id >= 0}
    assert by_producer[5].records_count == 0  # producer 5's only batch: kept, empty
    assert (by_producer[6].base_offset, by_producer[6].records_count) == (2, 0)
    assert (by_producer[6].base_sequence, by_producer[6].last_offset_delta) == (1, 0)
    assert [h.base_offset for h in headers][:2] == [0, 2]


def test_a_log_changed_during_cleaning_drops_the_round(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0")
    fill(log, rounds=10)
    before = contents(log)
    cleaner = cleaner_for(log)
    plan = cleaner.plan(NOW)
    assert plan is not None
    result = clean(plan)
    plan.close()
    log.truncate_to(1)  # a follower truncation meanwhile, into the first group
    assert cleaner.install(plan, result) == []
    assert not list((tmp_path / "compacted-0").glob("*" + CLEANED_FILE_SUFFIX))
    assert contents(log) == [e for e in before if e[0] < log.log_end_offset]


def test_crash_during_the_swap_is_finished_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "compacted-0"
    log = compacted_log(path)
    latest = fill(log, rounds=10)
    plan = cleaner_for(log).plan(NOW)
    assert plan is not None
    result = clean(plan)
    plan.close()
    views, cleaned = result.groups[0]
    # The crash: the cleaned segment became a swap file, the old ones are still live.
    cleaned.change_file_suffixes(CLEANED_FILE_SUFFIX, SWAP_FILE_SUFFIX)
    cleaned.close()
    for _, other in result.groups[1:]:
        other.close()  # still *.cleaned: startup removes them
    config = log.config
    log.close()
    assert log_file(path, views[0].base_offset).exists()
    reopened = Log.open(path, config, recover=True, now_ms=NOW)
    assert not list(path.glob("*" + SWAP_FILE_SUFFIX))
    assert not list(path.glob("*" + CLEANED_FILE_SUFFIX))
    survivors = contents(reopened)
    assert reopened.log_end_offset == 50
    for key, (offset, value) in latest.items():
        assert (offset, key, value) in survivors
    first_group_end = views[-1].upper_bound
    keys = [k for o, k, _ in survivors if o < first_group_end]
    assert len(keys) == len(set(keys))  # the swapped-in part is compacted


def test_compact_and_delete_policies_combine(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0", cleanup_policy="compact,delete", retention_ms=1)
    for r in range(8):
        put(log, (b"k", b"%d" % r), timestamp=NOW - 100_000)
    put(log, (b"k", b"new"))
    cleaner_for(log).clean_now(NOW)
    assert log.delete_old_segments(NOW) >= 1
    assert contents(log)[-1] == (8, b"k", b"new")


async def test_run_cleaner_once_cleans_off_the_event_loop(tmp_path: Path) -> None:
    log = compacted_log(tmp_path / "compacted-0")
    latest = fill(log, rounds=8)
    cleaner = cleaner_for(log)
    assert await run_cleaner_once(cleaner, NOW)
    assert not await run_cleaner_once(cleaner, NOW)
    survivors = contents(log)
    for key, (offset, value) in latest.items():
        assert (offset, key, value) in survivors
    assert not [p for p in os.listdir(tmp_path / "compacted-0") if p.endswith(".deleted")]
    await trio.lowlevel.checkpoint()


def test_rebuild_batch_keeps_the_batch_shape() -> None:
    original = build_batch(
        [Record(b"a", b"1", timestamp=10), Record(b"b", None, timestamp=12)],
        base_offset=100,
        producer_id=3,
        producer_epoch=4,
        base_sequence=5,
        compression=CompressionType.LZ4,
    )
    header = next(iter(iter_batches(original)))[0]
    only_b = [r for r in decode_records(original) if r.key == b"b"]
    rebuilt = rebuild_batch(header, only_b, delete_horizon_ms=99)
    new_header = next(iter(iter_batches(rebuilt)))[0]
    assert (new_header.base_offset, new_header.last_offset_delta) == (100, 1)
    assert (new_header.producer_id, new_header.producer_epoch, new_header.base_sequence) == (
        3,
        4,
        5,
    )
    assert new_header.compression_type is CompressionType.LZ4
    assert new_header.has_delete_horizon_ms
    assert new_header.base_timestamp == 99
    assert [(r.offset, r.key, r.value, r.timestamp) for r in decode_records(rebuilt)] == [
        (101, b"b", None, 12)
    ]


@settings(max_examples=25, deadline=None)
@given(
    operations=st.lists(
        st.one_of(
            st.tuples(
                st.just("put"),
                st.lists(
                    st.tuples(st.sampled_from([b"a", b"b", b"c", b"d"]), st.booleans()),
                    min_size=1,
                    max_size=4,
                ),
                st.sampled_from([CompressionType.NONE, CompressionType.ZSTD]),
            ),
            st.tuples(st.just("clean"), st.just([]), st.just(CompressionType.NONE)),
        ),
        max_size=40,
    )
)
def test_compaction_matches_a_last_value_model(
    operations: list[tuple[str, list[tuple[bytes, bool]], CompressionType]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = compacted_log(Path(tmp) / "compacted-0", segment_bytes=300)
        cleaner = cleaner_for(log)
        written: dict[int, tuple[bytes, bytes | None]] = {}
        counter = 0
        for op, pairs, codec in operations:
            if op == "clean":
                cleaner.clean_now(NOW)
                continue
            batch_pairs: list[tuple[bytes, bytes | None]] = []
            for key, tombstone in pairs:
                counter += 1
                batch_pairs.append((key, None if tombstone else b"%d" % counter))
            first = log.log_end_offset
            put(log, *batch_pairs, compression=codec)
            for i, pair in enumerate(batch_pairs):
                written[first + i] = pair
        cleaner.clean_now(NOW)
        survivors = contents(log)
        for o, k, v in survivors:
            assert written[o] == (k, v)
        latest = {k: o for o, (k, _) in sorted(written.items())}
        for k, o in latest.items():
            assert (o, k, written[o][1]) in survivors
        clean_end = cleaner.first_dirty_offset(TP, log)
        clean_keys = [k for o, k, _ in survivors if o < clean_end]
        assert len(clean_keys) == len(set(clean_keys))
        log.close()
