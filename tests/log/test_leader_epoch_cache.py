"""LeaderEpochFileCache and its checkpoint file, case by case after Kafka's
``LeaderEpochFileCacheTest`` and ``LeaderEpochCheckpointFileTest``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykbroker.log.leader_epoch_cache import (
    LEADER_EPOCH_CHECKPOINT_FILE,
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    EpochEntry,
    LeaderEpochFileCache,
    read_leader_epoch_checkpoint,
    write_leader_epoch_checkpoint,
)

UNDEFINED = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)


@pytest.fixture
def cache(tmp_path: Path) -> LeaderEpochFileCache:
    return LeaderEpochFileCache(tmp_path / LEADER_EPOCH_CHECKPOINT_FILE)


def filled(cache: LeaderEpochFileCache, *entries: tuple[int, int]) -> LeaderEpochFileCache:
    for epoch, offset in entries:
        cache.assign(epoch, offset)
    return cache


# --- assign -------------------------------------------------------------------------------


def test_should_add_epoch_and_message_offset_to_cache(cache: LeaderEpochFileCache) -> None:
    cache.assign(2, 10)
    assert cache.latest_epoch() == 2
    assert cache.entries == [EpochEntry(2, 10)]
    assert cache.end_offset_for(2, 11) == (2, 11)


def test_should_not_overwrite_offset_for_a_leader_epoch_once_assigned(
    cache: LeaderEpochFileCache,
) -> None:
    assert cache.assign(2, 6)
    assert not cache.assign(2, 7)
    assert cache.entries == [(2, 6)]


def test_should_enforce_monotonically_increasing_start_offsets(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (2, 6))
    cache.assign(3, 5)  # a greater epoch below the previous start replaces it
    assert cache.entries == [(3, 5)]


def test_should_enforce_offsets_increase_monotonically(cache: LeaderEpochFileCache) -> None:
    filled(cache, (1, 5), (2, 100))
    cache.assign(3, 99)
    assert cache.entries == [(1, 5), (3, 99)]


def test_should_truncate_if_matching_epoch_but_earlier_starting_offset(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (5, 11), (6, 12), (7, 13))
    cache.assign(7, 12)  # the same latest epoch, from an earlier offset
    assert cache.entries == [(5, 11), (7, 12)]


def test_a_lower_epoch_replaces_every_entry_it_contradicts(cache: LeaderEpochFileCache) -> None:
    filled(cache, (1, 0), (3, 10), (5, 20))
    cache.assign(2, 15)  # a follower copying a leader whose log diverged at 15
    assert cache.entries == [(1, 0), (2, 15)]


def test_negative_epochs_and_offsets_are_refused(cache: LeaderEpochFileCache) -> None:
    with pytest.raises(ValueError, match="invalid leader epoch entry"):
        cache.assign(-1, 0)
    with pytest.raises(ValueError, match="invalid leader epoch entry"):
        cache.assign(0, -1)
    assert cache.entries == []


def test_should_increase_and_track_epochs_as_leaders_change_many_times(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (0, 0), (1, 7), (2, 8))
    assert cache.latest_epoch() == 2
    assert cache.end_offset_for(0, 0) == (0, 7)
    assert cache.end_offset_for(1, 0) == (1, 8)
    assert cache.end_offset_for(2, 11) == (2, 11)


# --- end_offset_for -----------------------------------------------------------------------


def test_should_return_log_end_offset_if_latest_epoch_requested(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (2, 5), (3, 6), (4, 7))
    assert cache.end_offset_for(4, 11) == (4, 11)


def test_should_return_undefined_offset_if_undefined_epoch_requested(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (2, 5), (3, 6))
    assert cache.end_offset_for(UNDEFINED_EPOCH, 73) == UNDEFINED


def test_should_return_undefined_if_no_epoch_recorded(cache: LeaderEpochFileCache) -> None:
    assert cache.end_offset_for(0, 0) == UNDEFINED
    assert cache.end_offset_for(UNDEFINED_EPOCH, 0) == UNDEFINED
    assert cache.end_offset_for(7, 0) == UNDEFINED


def test_should_return_first_epoch_if_requested_epoch_less_than_first_epoch(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (5, 11), (6, 12), (7, 13))
    assert cache.end_offset_for(4, 0) == (4, 11)


def test_should_get_first_offset_of_subsequent_epoch_when_previous_epoch_requested(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16))
    assert cache.end_offset_for(2, 17) == (2, 15)


def test_should_return_next_available_epoch_if_no_exact_epoch_for_the_one_requested(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (0, 10), (2, 13), (4, 17))
    assert cache.end_offset_for(1, 0) == (0, 13)
    assert cache.end_offset_for(2, 0) == (2, 17)
    assert cache.end_offset_for(3, 0) == (2, 17)


def test_should_return_undefined_if_epoch_requested_is_not_tracked(
    cache: LeaderEpochFileCache,
) -> None:
    filled(cache, (2, 100))
    assert cache.end_offset_for(3, 100) == UNDEFINED


def test_should_support_epochs_that_do_not_start_from_zero(cache: LeaderEpochFileCache) -> None:
    filled(cache, (2, 6))
    assert cache.end_offset_for(2, 7) == (2, 7)


def test_absurd_epochs(cache: LeaderEpochFileCache) -> None:
    filled(cache, (3, 10), (5, 20))
    assert cache.end_offset_for(2**31 - 1, 30) == UNDEFINED
    assert cache.end_offset_for(-(2**31), 30) == (-(2**31), 10)  # Kafka: below the first
    assert cache.end_offset_for(-5, 30) == (-5, 10)


# --- truncation ---------------------------------------------------------------------------

THREE = ((2, 6), (3, 8), (4, 11))


@pytest.mark.parametrize(
    ("end_offset", "expected"),
    [
        (11, [(2, 6), (3, 8)]),  # on an epoch boundary
        (9, [(2, 6), (3, 8)]),  # between boundaries
        (12, [(2, 6), (3, 8), (4, 11)]),  # past every start: nothing
        (UNDEFINED_EPOCH_OFFSET, [(2, 6), (3, 8), (4, 11)]),  # -1: nothing
        (6, []),
        (0, []),
    ],
)
def test_truncate_from_end(
    cache: LeaderEpochFileCache, end_offset: int, expected: list[tuple[int, int]]
) -> None:
    filled(cache, *THREE)
    was_dirty = cache.dirty
    cache.write()
    changed = cache.truncate_from_end(end_offset)
    assert was_dirty
    assert cache.entries == expected
    assert changed == (expected != list(THREE)) == cache.dirty


@pytest.mark.parametrize(
    ("start_offset", "expected"),
    [
        (8, [(3, 8), (4, 11)]),  # preserves the entry at the new start
        (9, [(3, 9), (4, 11)]),  # moves the covering entry up to the new start
        (7, [(2, 7), (3, 8), (4, 11)]),
        (5, [(2, 6), (3, 8), (4, 11)]),  # too early: nothing
        (6, [(2, 6), (3, 8), (4, 11)]),  # the first offset: nothing
        (11, [(4, 11)]),  # retains the latest epoch
        (15, [(4, 15)]),  # ... and moves it
        (-1, [(2, 6), (3, 8), (4, 11)]),
    ],
)
def test_truncate_from_start(
    cache: LeaderEpochFileCache, start_offset: int, expected: list[tuple[int, int]]
) -> None:
    filled(cache, *THREE)
    cache.write()
    changed = cache.truncate_from_start(start_offset)
    assert cache.entries == expected
    assert changed == (expected != list(THREE)) == cache.dirty


def test_truncation_and_clearing_of_an_empty_cache(cache: LeaderEpochFileCache) -> None:
    assert not cache.truncate_from_end(0)
    assert not cache.truncate_from_start(7)
    cache.clear()
    assert cache.entries == []
    assert cache.dirty


def test_clear_then_flush_writes_an_empty_checkpoint(cache: LeaderEpochFileCache) -> None:
    filled(cache, *THREE)
    cache.clear()
    assert cache.flush()
    assert not cache.flush()  # nothing changed since
    assert cache.checkpoint_path.read_text() == "0\n0\n"


# --- lookups ------------------------------------------------------------------------------


def test_epoch_for_offset_previous_and_next_epoch(cache: LeaderEpochFileCache) -> None:
    filled(cache, (2, 6), (3, 8), (5, 11))
    assert [cache.epoch_for_offset(o) for o in (0, 5, 6, 7, 8, 10, 11, 99)] == [
        None,
        None,
        2,
        2,
        3,
        3,
        5,
        5,
    ]
    assert (cache.previous_epoch(5), cache.previous_epoch(4), cache.previous_epoch(2)) == (
        3,
        3,
        None,
    )
    assert (cache.next_epoch(2), cache.next_epoch(4), cache.next_epoch(5)) == (3, 5, None)
    assert cache.earliest_entry() == (2, 6)
    assert cache.latest_entry() == (5, 11)


# --- the checkpoint file ------------------------------------------------------------------


def test_the_checkpoint_is_kafkas_text_format_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / LEADER_EPOCH_CHECKPOINT_FILE
    cache = filled(LeaderEpochFileCache(path), (0, 0), (3, 1234), (17, 2**40))
    cache.flush()
    assert path.read_bytes() == b"0\n3\n0 0\n3 1234\n17 1099511627776\n"
    assert not path.with_name(path.name + ".tmp").exists()
    again, loaded = LeaderEpochFileCache.load(path)
    assert loaded
    assert again.entries == [(0, 0), (3, 1234), (17, 2**40)]
    assert not again.dirty


def test_should_persist_epochs_between_instances(tmp_path: Path) -> None:
    path = tmp_path / LEADER_EPOCH_CHECKPOINT_FILE
    cache = filled(LeaderEpochFileCache(path), (2, 6))
    cache.flush()
    again, _ = LeaderEpochFileCache.load(path)
    assert again.end_offset_for(2, 7) == (2, 7)


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty
        "1\n0\n",  # unknown version
        "0\n2\n1 0\n",  # count mismatch
        "0\n1\n1\n",  # missing field
        "0\n1\none 0\n",  # not a number
        "0\n2\n3 0\n2 5\n",  # epochs out of order
        "0\n2\n2 5\n3 4\n",  # offsets out of order
        "0\n1\n-1 0\n",  # negative
        "\xff\xfe",  # not text
    ],
)
def test_malformed_checkpoints_read_as_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / LEADER_EPOCH_CHECKPOINT_FILE
    path.write_bytes(text.encode("latin-1"))
    assert read_leader_epoch_checkpoint(path) is None
    cache, loaded = LeaderEpochFileCache.load(path)
    assert not loaded
    assert cache.entries == []


def test_a_missing_checkpoint_reads_as_none(tmp_path: Path) -> None:
    assert read_leader_epoch_checkpoint(tmp_path / "nope") is None


def test_the_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / LEADER_EPOCH_CHECKPOINT_FILE
    write_leader_epoch_checkpoint(path, [(1, 0)])
    write_leader_epoch_checkpoint(path, [(1, 0), (2, 9)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEADER_EPOCH_CHECKPOINT_FILE]
    assert read_leader_epoch_checkpoint(path) == [(1, 0), (2, 9)]


def test_a_snapshot_written_elsewhere_marks_the_cache_clean(cache: LeaderEpochFileCache) -> None:
    filled(cache, (1, 0))
    version, entries = cache.checkpoint_snapshot()
    cache.assign(2, 5)  # changes while the worker thread writes
    write_leader_epoch_checkpoint(cache.checkpoint_path, entries)
    cache.mark_written(version)
    assert cache.dirty  # the later change still needs a write
    version, entries = cache.checkpoint_snapshot()
    cache.mark_written(version)
    assert not cache.dirty
