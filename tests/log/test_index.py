"""OffsetIndex and TimeIndex: Kafka's entry layouts, lookups, truncation, trimming."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pykbroker.log.index import CorruptIndexError
from pykbroker.log.offset_index import OffsetIndex
from pykbroker.log.time_index import TimeIndex


def test_offset_index_layout_lookup_and_trim(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000000100.index"
    index = OffsetIndex(path, 100, max_index_size=80)
    assert index.lookup(150) == (100, 0)
    for i in range(1, 6):
        index.append(100 + 10 * i, 1000 * i)
    assert path.stat().st_size == 80  # preallocated to segment.index.bytes
    assert index.lookup(99) == (100, 0)
    assert index.lookup(110) == (110, 1000)
    assert index.lookup(139) == (130, 3000)
    assert index.lookup(10**12) == (150, 5000)
    index.close()
    raw = path.read_bytes()
    assert len(raw) == 40  # trimmed to the valid entries
    assert struct.unpack(">II", raw[:8]) == (10, 1000)  # relative offset, position

    reopened = OffsetIndex(path, 100, max_index_size=80)
    assert reopened.entries == 5
    assert reopened.lookup(145) == (140, 4000)
    reopened.sanity_check(log_size=6000)


def test_offset_index_rejects_non_increasing_offsets_and_fills_up(tmp_path: Path) -> None:
    index = OffsetIndex(tmp_path / "0.index", 0, max_index_size=16)
    index.append(5, 100)
    with pytest.raises(ValueError, match="not larger"):
        index.append(5, 200)
    index.append(6, 200)
    assert index.is_full
    with pytest.raises(ValueError, match="full"):
        index.append(7, 300)


def test_offset_index_truncate_to_removes_entries_at_or_after_the_offset(tmp_path: Path) -> None:
    index = OffsetIndex(tmp_path / "0.index", 0, max_index_size=1024)
    for offset in (10, 20, 30, 40):
        index.append(offset, offset * 10)
    index.truncate_to(30)
    assert index.entries == 2
    assert index.lookup(35) == (20, 200)
    index.truncate_to(11)
    assert index.entries == 1
    index.append(15, 150)  # appends continue after the truncation point
    assert index.lookup(16) == (15, 150)
    index.truncate_to(0)
    assert index.entries == 0


def test_zeroed_offset_index_fails_the_sanity_check(tmp_path: Path) -> None:
    path = tmp_path / "0.index"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptIndexError):
        OffsetIndex(path, 0, max_index_size=1024).sanity_check(log_size=10_000)
    path.write_bytes(b"\x00" * 7)
    with pytest.raises(CorruptIndexError):
        OffsetIndex(path, 0, max_index_size=1024).sanity_check(log_size=10_000)


def test_time_index_keeps_the_growing_maximum(tmp_path: Path) -> None:
    path = tmp_path / "0.timeindex"
    index = TimeIndex(path, 1000, max_index_size=12 * 10)
    assert index.last_entry == (-1, 1000)
    index.maybe_append(500, 1005)
    index.maybe_append(400, 1010)  # not a new maximum: skipped
    index.maybe_append(500, 1012)  # equal: skipped
    index.maybe_append(900, 1020)
    assert index.entries == 2
    assert index.lookup(499) == (-1, 1000)
    assert index.lookup(700) == (500, 1005)
    assert index.lookup(10**15) == (900, 1020)
    with pytest.raises(ValueError, match="smaller"):
        index.maybe_append(1000, 1001)
    index.close()
    raw = path.read_bytes()
    assert struct.unpack(">qI", raw[:12]) == (500, 5)  # timestamp, relative offset
    reopened = TimeIndex(path, 1000, max_index_size=120)
    assert reopened.last_entry == (900, 1020)
    reopened.sanity_check(last_offset=1030)
    with pytest.raises(CorruptIndexError):
        reopened.sanity_check(last_offset=1015)


def test_time_index_reserves_a_slot_for_the_final_entry(tmp_path: Path) -> None:
    index = TimeIndex(tmp_path / "0.timeindex", 0, max_index_size=36)  # three slots
    index.maybe_append(1, 1)
    assert index.entries < index.max_entries - 1  # not full yet
    index.maybe_append(2, 2)
    assert index.is_full
    index.maybe_append(3, 3, skip_full_check=True)
    assert index.entries == 3


def test_time_index_truncate_to(tmp_path: Path) -> None:
    index = TimeIndex(tmp_path / "0.timeindex", 0, max_index_size=1200)
    for i in range(1, 6):
        index.maybe_append(i * 100, i * 10)
    index.truncate_to(30)
    assert index.last_entry == (200, 20)
    index.truncate_to(0)
    assert index.entries == 0


def test_zeroed_time_index_fails_the_sanity_check(tmp_path: Path) -> None:
    path = tmp_path / "0.timeindex"
    path.write_bytes(b"\x00" * 36)
    with pytest.raises(CorruptIndexError):
        TimeIndex(path, 0, max_index_size=1200).sanity_check(last_offset=100)
