"""LogSegment: append/read by offset, index maintenance, timestamps, recovery, truncation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pykbroker.log.record_batch import assign_offsets, decode_records, iter_batches, parse_header
from pykbroker.log.segment import LogSegment, log_file, offset_index_file, time_index_file

from .support import make_batch


def new_segment(tmp_path: Path, base_offset: int = 0, interval: int = 100) -> LogSegment:
    return LogSegment(
        tmp_path, base_offset, index_interval_bytes=interval, max_index_size=4096, created_ms=0
    )


def fill(segment: LogSegment, batches: int, per_batch: int = 3, timestamp: int = 1_000) -> None:
    """Append ``batches`` batches of ``per_batch`` records; timestamps grow by 10 per batch."""
    offset = segment.next_offset
    for i in range(batches):
        buf = bytearray(make_batch(per_batch, value_size=20, timestamp=timestamp + 10 * i))
        next_offset = assign_offsets(buf, offset, 0)
        header = parse_header(buf)
        segment.append(next_offset - 1, buf, header.max_timestamp, next_offset - 1)
        offset = next_offset


def offsets_of(data: bytes) -> list[int]:
    return [r.offset for _, batch in iter_batches(data) for r in decode_records(batch)]


def test_files_are_named_after_the_base_offset(tmp_path: Path) -> None:
    segment = new_segment(tmp_path, 42)
    assert segment.log_path.name == "00000000000000000042.log"
    assert offset_index_file(tmp_path, 42).exists()
    assert time_index_file(tmp_path, 42).exists()
    assert segment.next_offset == 42


def test_append_indexes_every_interval_and_read_finds_each_offset(tmp_path: Path) -> None:
    segment = new_segment(tmp_path)
    fill(segment, 20)
    assert segment.next_offset == 60
    assert segment.offset_index.entries > 3  # sparse: one entry per ~100 bytes
    assert segment.time_index.entries > 3
    for offset in range(60):
        data = segment.read(offset, 1)
        assert data is not None
        [(header, _)] = list(iter_batches(data))
        assert header.base_offset <= offset <= header.last_offset
    assert segment.read(60, 1000) is None


def test_read_mid_batch_returns_the_containing_batch(tmp_path: Path) -> None:
    segment = new_segment(tmp_path)
    fill(segment, 4)
    data = segment.read(4, 10_000)
    assert data is not None
    assert offsets_of(data)[:3] == [3, 4, 5]
    assert offsets_of(data)[-1] == 11


def test_read_respects_max_size_max_position_and_min_one_message(tmp_path: Path) -> None:
    segment = new_segment(tmp_path)
    fill(segment, 5)
    batch_size = segment.size // 5
    assert offsets_of(segment.read(0, batch_size * 2 + 10) or b"") == list(range(6))
    assert offsets_of(segment.read(0, 1) or b"") == [0, 1, 2]  # one whole batch
    assert segment.read(0, 1, min_one_message=False) == b""
    position_of_offset_6 = 2 * batch_size
    assert offsets_of(segment.read(0, 10_000, position_of_offset_6) or b"") == list(range(6))
    assert segment.read(7, 10_000, position_of_offset_6) == b""


def test_translate_offset_and_next_offset_after_reopen(tmp_path: Path) -> None:
    segment = new_segment(tmp_path, 100)
    fill(segment, 10)
    found = segment.translate_offset(117)
    assert found is not None
    assert (found[1].base_offset, found[1].last_offset) == (115, 117)
    segment.close()
    reopened = new_segment(tmp_path, 100)
    reopened.sanity_check()
    assert reopened.next_offset == 130
    assert reopened.max_timestamp_and_offset_so_far == (1_092, 129)


def test_find_offset_by_timestamp_returns_the_first_record_at_or_after(tmp_path: Path) -> None:
    segment = new_segment(tmp_path)
    fill(segment, 10)  # batch i has timestamps 1000+10i, +1, +2 at offsets 3i..3i+2
    assert segment.find_offset_by_timestamp(0) == (0, 1_000)
    assert segment.find_offset_by_timestamp(1_041) == (13, 1_041)
    assert segment.find_offset_by_timestamp(1_043) == (15, 1_050)
    assert segment.find_offset_by_timestamp(1_093) is None
    assert segment.find_offset_by_timestamp(0, starting_offset=7) == (7, 1_021)


@pytest.mark.parametrize("cut", [1, 30, 61, 62])
def test_recover_drops_a_torn_tail_and_rebuilds_indexes(tmp_path: Path, cut: int) -> None:
    segment = new_segment(tmp_path)
    fill(segment, 10)
    size = segment.size
    entries = segment.offset_index.entries
    segment.close()
    os.truncate(log_file(tmp_path, 0), size - cut)
    offset_index_file(tmp_path, 0).write_bytes(b"")
    recovered = new_segment(tmp_path)
    last_batch = size // 10
    assert recovered.recover(1 << 20) == last_batch - cut
    assert recovered.next_offset == 27
    assert recovered.size == size - last_batch
    assert recovered.offset_index.entries in (entries, entries - 1)
    assert offsets_of(recovered.read(0, 1 << 20) or b"") == list(range(27))
    assert recovered.translate_offset(20) is not None


def test_recover_stops_at_a_corrupt_batch(tmp_path: Path) -> None:
    segment = new_segment(tmp_path)
    fill(segment, 6)
    batch_size = segment.size // 6
    segment.close()
    with open(log_file(tmp_path, 0), "r+b") as f:
        f.seek(3 * batch_size + 70)
        f.write(b"\xff\xfe")
    recovered = new_segment(tmp_path)
    assert recovered.recover(1 << 20) == 3 * batch_size
    assert recovered.next_offset == 9


def test_truncate_to_cuts_the_batch_containing_the_offset(tmp_path: Path) -> None:
    segment = new_segment(tmp_path)
    fill(segment, 10)
    before = segment.size
    assert segment.truncate_to(16) == before - 5 * (before // 10)
    assert segment.next_offset == 15
    assert segment.offset_index.last_offset < 15
    assert segment.time_index.last_entry[1] < 15
    fill(segment, 1, timestamp=5_000)
    assert offsets_of(segment.read(14, 1 << 20) or b"") == [12, 13, 14, 15, 16, 17]
    assert segment.truncate_to(1_000) == 0
    segment.truncate_to(0)
    assert (segment.size, segment.next_offset) == (0, 0)


def test_should_roll_on_size_age_and_offset_overflow(tmp_path: Path) -> None:
    segment = new_segment(tmp_path)
    common = {"segment_ms": 1_000, "max_timestamp_in_messages": 1_000, "now_ms": 0}
    assert not segment.should_roll(
        segment_bytes=100, messages_size=500, max_offset_in_messages=0, **common
    )  # an empty segment takes any batch
    fill(segment, 1)
    size = segment.size
    assert segment.should_roll(
        segment_bytes=size + 10, messages_size=11, max_offset_in_messages=3, **common
    )
    assert not segment.should_roll(
        segment_bytes=size + 10, messages_size=10, max_offset_in_messages=3, **common
    )
    assert segment.should_roll(
        segment_bytes=1 << 30, messages_size=10, max_offset_in_messages=2**32, **common
    )
    assert segment.should_roll(  # first batch stamped 1002: 2003 - 1002 > 1000
        segment_bytes=1 << 30,
        segment_ms=1_000,
        messages_size=10,
        max_timestamp_in_messages=2_003,
        max_offset_in_messages=3,
        now_ms=0,
    )
