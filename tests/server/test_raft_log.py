"""KafkaReplicatedLog: the ReplicatedLog contract shared with MemoryLog (the same cases as
tests/raft/test_memory_log.py, run over both), plus what only the on-disk log has: v2 batches,
the leader-epoch-checkpoint file, snapshot files, reopening and torn-tail recovery."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pykbroker.log.record_batch import decode_records, iter_batch_headers, iter_batches
from pykbroker.raft import (
    ControlRecordType,
    LogAppendError,
    MemoryLog,
    OffsetAndEpoch,
    ReplicatedLog,
    SnapshotId,
)
from pykbroker.raft.log import (
    ValidationKind,
    control_record_key,
    truncation_offset,
    validate_offset_and_epoch,
)
from pykbroker.server.raft_log import (
    LEADER_EPOCH_CHECKPOINT_FILE,
    InconsistentSnapshotStateError,
    KafkaReplicatedLog,
    read_leader_epoch_checkpoint,
    snapshot_file_name,
)

Factory = Callable[[], ReplicatedLog]


@pytest.fixture(params=["memory", "file"])
def new_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory of empty logs of one implementation (each file log in its own directory)."""
    opened: list[KafkaReplicatedLog] = []
    counter = itertools.count()

    def make() -> ReplicatedLog:
        if request.param == "memory":
            return MemoryLog()
        log = KafkaReplicatedLog.open(
            tmp_path / f"d{next(counter)}" / "__cluster_metadata-0", clock=lambda: 1000
        )
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


def log_with(new_log: Factory, *epochs: int) -> ReplicatedLog:
    """One single-record batch per epoch given."""
    log = new_log()
    for epoch in epochs:
        log.append_as_leader([f"e{epoch}".encode()], epoch)
    return log


def values(log: ReplicatedLog, start: int = -1) -> list[bytes]:
    """Every record value from ``start`` (default: the log start), via ``read``."""
    offset = log.log_start_offset if start < 0 else start
    out: list[bytes] = []
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        if isinstance(log, MemoryLog):
            from pykbroker.raft.memory_log import decode_batches

            for batch in decode_batches(data):
                out.extend(batch.records)
                offset = batch.next_offset
        else:
            for header, view in iter_batches(data):
                out.extend(r.value or b"" for r in decode_records(view))
                offset = header.next_offset
    return out


# --- the shared contract -------------------------------------------------------------------


def test_offsets_are_contiguous_and_batches_take_one_offset_per_record(new_log: Factory) -> None:
    log = new_log()
    assert log.append_as_leader([b"a", b"b", b"c"], 1).last_offset == 2
    info = log.append_as_leader([b"d"], 1, ControlRecordType.LEADER_CHANGE)
    assert (info.first_offset, info.last_offset, log.log_end_offset) == (3, 3, 4)
    assert values(log) == [b"a", b"b", b"c", b"d"]


def test_end_offset_for_epoch_answers_like_the_leader_epoch_cache(new_log: Factory) -> None:
    log = log_with(new_log, 1, 1, 3, 3, 5)
    assert log.end_offset_for_epoch(1) == OffsetAndEpoch(2, 1)
    assert log.end_offset_for_epoch(2) == OffsetAndEpoch(2, 1)
    assert log.end_offset_for_epoch(3) == OffsetAndEpoch(4, 3)
    assert log.end_offset_for_epoch(5) == OffsetAndEpoch(5, 5)
    assert log.end_offset_for_epoch(9) == OffsetAndEpoch(5, 5)
    assert log.end_offset_for_epoch(0) == OffsetAndEpoch(0, 0)
    assert log.last_fetched_epoch == 5
    assert new_log().end_offset_for_epoch(3) == OffsetAndEpoch(0, 0)


def test_appends_below_the_last_epoch_or_empty_are_refused(new_log: Factory) -> None:
    log = log_with(new_log, 2)
    with pytest.raises(LogAppendError):
        log.append_as_leader([b"x"], 1)
    with pytest.raises(LogAppendError):
        log.append_as_leader([], 2)


def test_truncation_drops_records_and_their_epochs(new_log: Factory) -> None:
    log = log_with(new_log, 1, 2, 2, 3)
    log.truncate_to(2)
    assert (log.log_end_offset, log.last_fetched_epoch) == (2, 2)
    assert log.end_offset_for_epoch(3) == OffsetAndEpoch(2, 2)
    two_records = new_log()
    two_records.append_as_leader([b"a", b"b"], 1)
    with pytest.raises(ValueError, match="batch boundary"):
        two_records.truncate_to(1)


def test_follower_appends_must_start_at_the_log_end_and_respect_the_epoch(
    new_log: Factory,
) -> None:
    leader = log_with(new_log, 1, 2)
    follower = new_log()
    follower.append_as_follower(leader.read(0, 1 << 20), epoch=2)
    assert values(follower) == values(leader)
    assert follower.end_offset_for_epoch(1) == OffsetAndEpoch(1, 1)
    with pytest.raises(LogAppendError):
        follower.append_as_follower(leader.read(0, 1 << 20), epoch=2)  # gap / overlap
    with pytest.raises(LogAppendError):
        new_log().append_as_follower(leader.read(0, 1 << 20), epoch=1)  # epoch 2 > 1


def test_follower_appends_refuse_torn_bytes(new_log: Factory) -> None:
    leader = log_with(new_log, 1, 1)
    data = leader.read(0, 1 << 20)
    follower = new_log()
    with pytest.raises(LogAppendError):
        follower.append_as_follower(data[:-3], epoch=1)
    assert follower.log_end_offset == 0


def test_read_returns_at_least_one_batch_and_stops_at_max_bytes(new_log: Factory) -> None:
    log = log_with(new_log, 1, 1, 1)
    one = log.read(0, 1)
    assert one
    assert len(one) < len(log.read(0, 1 << 20))
    assert log.read(3, 100) == b""


def test_validation_sends_a_diverging_epoch_or_a_snapshot(new_log: Factory) -> None:
    log = log_with(new_log, 1, 1, 3, 3)
    assert validate_offset_and_epoch(log, 0, 0).kind is ValidationKind.VALID
    assert validate_offset_and_epoch(log, 4, 3).kind is ValidationKind.VALID
    diverging = validate_offset_and_epoch(log, 3, 2)
    assert diverging.kind is ValidationKind.DIVERGING
    assert diverging.offset_and_epoch == OffsetAndEpoch(2, 1)
    assert validate_offset_and_epoch(log, 6, 3).kind is ValidationKind.DIVERGING
    log.create_snapshot(SnapshotId(2, 1), b"s")
    log.delete_before_snapshot(SnapshotId(2, 1))
    assert validate_offset_and_epoch(log, 1, 1).kind is ValidationKind.SNAPSHOT
    assert validate_offset_and_epoch(log, 2, 0).kind is ValidationKind.SNAPSHOT
    assert validate_offset_and_epoch(log, 2, 1).kind is ValidationKind.VALID


def test_a_follower_truncates_to_the_divergence_point(new_log: Factory) -> None:
    follower = log_with(new_log, 1, 2, 2)
    assert truncation_offset(follower, OffsetAndEpoch(1, 1)) == 1
    follower = log_with(new_log, 1, 1, 1)
    assert truncation_offset(follower, OffsetAndEpoch(2, 1)) == 2


def test_snapshots_move_the_log_start_and_keep_the_epoch_cache(new_log: Factory) -> None:
    log = log_with(new_log, 1, 1, 2, 2)
    snapshot_id = SnapshotId(3, 2)
    log.create_snapshot(snapshot_id, b"state")
    log.delete_before_snapshot(snapshot_id)
    assert (log.log_start_offset, log.log_end_offset) == (3, 4)
    assert log.earliest_snapshot_id == snapshot_id == log.latest_snapshot_id
    assert log.read_snapshot(snapshot_id) == b"state"
    assert log.end_offset_for_epoch(2) == OffsetAndEpoch(4, 2)
    assert log.last_fetched_epoch == 2
    with pytest.raises(ValueError, match="epoch"):
        log.create_snapshot(SnapshotId(4, 1), b"wrong epoch")
    with pytest.raises(ValueError, match="outside"):
        log.create_snapshot(SnapshotId(9, 2), b"past the end")


def test_a_snapshot_at_the_log_end_empties_the_log(new_log: Factory) -> None:
    log = log_with(new_log, 1, 2)
    log.create_snapshot(SnapshotId(2, 2), b"all")
    log.delete_before_snapshot(SnapshotId(2, 2))
    assert (log.log_start_offset, log.log_end_offset, log.last_fetched_epoch) == (2, 2, 2)
    assert log.end_offset_for_epoch(7) == OffsetAndEpoch(2, 2)
    assert log.read(2, 100) == b""
    log.append_as_leader([b"x"], 3)
    assert log.end_offset_for_epoch(2) == OffsetAndEpoch(2, 2)


def test_installing_a_snapshot_truncates_the_whole_log(new_log: Factory) -> None:
    log = log_with(new_log, 1, 1)
    log.create_snapshot(SnapshotId(1, 1), b"old")
    log.install_snapshot(SnapshotId(10, 4), b"downloaded")
    assert (log.log_start_offset, log.log_end_offset, log.last_fetched_epoch) == (10, 10, 4)
    assert log.end_offset_for_epoch(4) == OffsetAndEpoch(10, 4)
    assert log.read_snapshot(SnapshotId(1, 1)) is None
    log.append_as_leader([b"x"], 5)
    assert log.end_offset_for_epoch(4) == OffsetAndEpoch(10, 4)
    assert values(log) == [b"x"]


# --- the on-disk log only ------------------------------------------------------------------


def open_log(path: Path) -> KafkaReplicatedLog:
    return KafkaReplicatedLog.open(path, clock=lambda: 1000)


@pytest.fixture
def part(tmp_path: Path) -> Path:
    return tmp_path / "__cluster_metadata-0"


def test_batches_are_v2_with_the_raft_epoch_and_control_keys(part: Path) -> None:
    log = open_log(part)
    log.append_as_leader([b"a", b"b"], 3)
    log.append_as_leader([b"leader-change"], 3, ControlRecordType.LEADER_CHANGE)
    headers = [h for _, h in iter_batch_headers(log.read(0, 1 << 20))]
    assert [(h.base_offset, h.partition_leader_epoch, h.is_control) for h in headers] == [
        (0, 3, False),
        (2, 3, True),
    ]
    control = log.read(2, 1 << 20)
    (record,) = decode_records(control)
    assert record.key == control_record_key(ControlRecordType.LEADER_CHANGE)
    assert record.value == b"leader-change"
    log.close()


def test_the_epoch_checkpoint_is_kafkas_text_format(part: Path) -> None:
    log = open_log(part)
    for epoch in (1, 1, 4, 6):
        log.append_as_leader([b"r"], epoch)
    log.flush()
    text = (part / LEADER_EPOCH_CHECKPOINT_FILE).read_text()
    assert text == "0\n3\n1 0\n4 2\n6 3\n"
    log.truncate_to(3)  # written at once: a truncated tail is never left in the file
    assert read_leader_epoch_checkpoint(part / LEADER_EPOCH_CHECKPOINT_FILE) == [(1, 0), (4, 2)]
    log.close()


def test_reopen_keeps_records_epochs_and_snapshots(part: Path) -> None:
    log = open_log(part)
    for epoch in (1, 1, 2, 2, 3):
        log.append_as_leader([f"e{epoch}".encode()], epoch)
    log.create_snapshot(SnapshotId(3, 2), b"snap")
    log.delete_before_snapshot(SnapshotId(3, 2))
    log.close()
    assert (part / snapshot_file_name(SnapshotId(3, 2))).name == (
        "00000000000000000003-0000000002.checkpoint"
    )
    again = open_log(part)
    assert (again.log_start_offset, again.log_end_offset) == (3, 5)
    assert again.earliest_snapshot_id == SnapshotId(3, 2)
    assert again.read_snapshot(SnapshotId(3, 2)) == b"snap"
    assert again.epoch_entries() == [(2, 3), (3, 4)]
    assert again.end_offset_for_epoch(2) == OffsetAndEpoch(4, 2)
    assert again.end_offset_for_epoch(1) == SnapshotId(3, 2)
    assert values(again) == [b"e2", b"e3"]
    again.close()


def test_a_missing_epoch_checkpoint_is_rebuilt_from_batch_headers(part: Path) -> None:
    log = open_log(part)
    for epoch in (1, 3, 3, 7):
        log.append_as_leader([b"r"], epoch)
    log.close()
    (part / LEADER_EPOCH_CHECKPOINT_FILE).unlink()
    again = open_log(part)
    assert again.epoch_entries() == [(1, 0), (3, 1), (7, 3)]
    assert read_leader_epoch_checkpoint(part / LEADER_EPOCH_CHECKPOINT_FILE) == [
        (1, 0),
        (3, 1),
        (7, 3),
    ]
    again.close()


def test_a_stale_epoch_checkpoint_is_completed_from_the_log(part: Path) -> None:
    log = open_log(part)
    log.append_as_leader([b"a"], 1)
    log.flush()  # checkpoint: epoch 1 only
    log.append_as_leader([b"b"], 2)
    log.append_as_leader([b"c"], 5)
    log.log.flush()  # segments durable, checkpoint not rewritten (a crash right here)
    log.log.close()
    assert read_leader_epoch_checkpoint(part / LEADER_EPOCH_CHECKPOINT_FILE) == [(1, 0)]
    again = open_log(part)
    assert again.epoch_entries() == [(1, 0), (2, 1), (5, 2)]
    again.close()


def test_a_torn_tail_is_cut_and_the_epoch_cache_follows(part: Path) -> None:
    log = open_log(part)
    log.append_as_leader([b"a"], 1)
    log.append_as_leader([b"b"], 2)
    log.append_as_leader([b"c", b"d"], 4)
    log.flush()
    log.close()
    assert read_leader_epoch_checkpoint(part / LEADER_EPOCH_CHECKPOINT_FILE) == [
        (1, 0),
        (2, 1),
        (4, 2),
    ]
    (segment,) = part.glob("*.log")
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # the last batch (epoch 4) is torn
    again = open_log(part)
    assert (again.log_end_offset, again.last_fetched_epoch) == (2, 2)
    assert again.epoch_entries() == [(1, 0), (2, 1)]
    assert again.end_offset_for_epoch(4) == OffsetAndEpoch(2, 2)
    assert read_leader_epoch_checkpoint(part / LEADER_EPOCH_CHECKPOINT_FILE) == [(1, 0), (2, 1)]
    again.append_as_leader([b"e"], 5)
    assert again.end_offset_for_epoch(4) == OffsetAndEpoch(2, 2)
    again.close()


def test_reopen_after_truncation_and_a_new_epoch(part: Path) -> None:
    log = open_log(part)
    for epoch in (1, 2, 2, 3):
        log.append_as_leader([b"r"], epoch)
    log.flush()
    log.truncate_to(2)
    assert read_leader_epoch_checkpoint(part / LEADER_EPOCH_CHECKPOINT_FILE) == [(1, 0), (2, 1)]
    log.append_as_follower(leader_batches(part.parent, base=2, epochs=(4,)), 4)
    log.log.flush()  # a crash before the checkpoint is rewritten
    log.log.close()
    again = open_log(part)
    assert again.epoch_entries() == [(1, 0), (2, 1), (4, 2)]
    assert again.log_end_offset == 3
    again.close()


def leader_batches(path: Path, *, base: int, epochs: tuple[int, ...]) -> bytes:
    """Bytes a leader would send: batches of the given epochs starting at ``base``."""
    leader = open_log(path / "leader" / "__cluster_metadata-0")
    leader.install_snapshot(SnapshotId(base, 1), b"")
    for epoch in epochs:
        leader.append_as_leader([b"new"], epoch)
    data = leader.read(base, 1 << 20)
    leader.close()
    return data


def test_a_downloaded_snapshot_past_the_log_end_truncates_the_log_on_open(part: Path) -> None:
    log = open_log(part)
    log.append_as_leader([b"a"], 1)
    log.flush()
    log._write_snapshot(SnapshotId(5, 2), b"downloaded")  # crash before the truncation
    log.close()
    again = open_log(part)
    assert (again.log_start_offset, again.log_end_offset, again.last_fetched_epoch) == (5, 5, 2)
    assert again.epoch_entries() == []
    again.close()


def test_partial_snapshots_are_deleted_on_open(part: Path) -> None:
    log = open_log(part)
    log.append_as_leader([b"a"], 1)
    log.close()
    partial = part / (snapshot_file_name(SnapshotId(1, 1)) + ".part")
    partial.write_bytes(b"half")
    again = open_log(part)
    assert not partial.exists()
    assert again.latest_snapshot_id is None
    again.close()


def test_segments_below_the_log_start_are_deleted(part: Path, tmp_path: Path) -> None:
    from pykbroker.log.log_config import LogConfig

    config = LogConfig.from_properties(
        {"segment.bytes": "200", "retention.ms": "-1", "retention.bytes": "-1"}
    )
    log = KafkaReplicatedLog.open(part, config=config, clock=lambda: 1000)
    for _ in range(6):
        log.append_as_leader([b"x" * 80], 1)
    segments_before = len(list(part.glob("*.log")))
    assert segments_before > 2
    log.create_snapshot(SnapshotId(5, 1), b"s")
    log.delete_before_snapshot(SnapshotId(5, 1))
    assert len(list(part.glob("*.log"))) < segments_before
    assert values(log) == [b"x" * 80]
    log.close()
    again = KafkaReplicatedLog.open(part, config=config, clock=lambda: 1000)
    assert (again.log_start_offset, again.log_end_offset) == (5, 6)
    assert again.epoch_entries() == [(1, 5)]
    again.close()


def test_a_malformed_epoch_checkpoint_is_rebuilt(part: Path) -> None:
    log = open_log(part)
    log.append_as_leader([b"a"], 2)
    log.append_as_leader([b"b"], 3)
    log.close()
    (part / LEADER_EPOCH_CHECKPOINT_FILE).write_text("0\n5\n2 0\n")
    again = open_log(part)
    assert again.epoch_entries() == [(2, 0), (3, 1)]
    again.close()


def test_a_log_start_without_its_snapshot_is_refused(part: Path) -> None:
    log = open_log(part)
    log.install_snapshot(SnapshotId(10, 4), b"image")
    log.append_as_leader([b"a"], 5)
    log.close()
    (part / snapshot_file_name(SnapshotId(10, 4))).unlink()
    with pytest.raises(InconsistentSnapshotStateError):
        open_log(part)


def test_a_half_installed_snapshot_that_disagrees_with_the_log_wins_on_open(part: Path) -> None:
    log = open_log(part)
    for epoch in (1, 1, 3, 3, 3):
        log.append_as_leader([b"r"], epoch)
    log.flush()
    log._write_snapshot(SnapshotId(4, 5), b"leader image")  # our offset 3 is epoch 3: diverged
    log.close()
    again = open_log(part)
    assert (again.log_start_offset, again.log_end_offset, again.last_fetched_epoch) == (4, 4, 5)
    assert again.end_offset_for_epoch(5) == SnapshotId(4, 5)
    again.close()


def test_a_snapshot_kept_without_cleaning_leaves_the_log_start_alone(part: Path) -> None:
    log = open_log(part)
    for epoch in (1, 1, 2):
        log.append_as_leader([b"r"], epoch)
    log.create_snapshot(SnapshotId(2, 1), b"image")
    log.close()
    again = open_log(part)
    assert (again.log_start_offset, again.log_end_offset) == (0, 3)
    assert again.earliest_snapshot_id is None
    assert again.latest_snapshot_id == SnapshotId(2, 1)
    assert again.epoch_entries() == [(1, 0), (2, 2)]
    again.close()


def test_an_unflushed_log_start_move_may_be_forgotten_but_stays_consistent(part: Path) -> None:
    log = open_log(part)
    for epoch in (1, 1, 2):
        log.append_as_leader([b"r"], epoch)
    log.flush()
    log.create_snapshot(SnapshotId(2, 1), b"image")
    log.delete_before_snapshot(SnapshotId(2, 1))
    log.log.close()  # crash: the trimmed epoch checkpoint was never written
    again = open_log(part)
    assert again.log_start_offset in (0, 2)
    assert again.end_offset_for_epoch(2) == OffsetAndEpoch(3, 2)
    assert again.latest_snapshot_id == SnapshotId(2, 1)
    again.close()


def _same_state(memory: MemoryLog, disk: KafkaReplicatedLog) -> None:
    assert (disk.log_start_offset, disk.log_end_offset, disk.last_fetched_epoch) == (
        memory.log_start_offset,
        memory.log_end_offset,
        memory.last_fetched_epoch,
    )
    assert disk.earliest_snapshot_id == memory.earliest_snapshot_id
    assert disk.latest_snapshot_id == memory.latest_snapshot_id
    for epoch in range(memory.last_fetched_epoch + 2):
        assert disk.end_offset_for_epoch(epoch) == memory.end_offset_for_epoch(epoch), epoch
    assert values(disk) == values(memory)


@pytest.mark.parametrize("seed", range(25))
def test_random_operations_match_memory_log_across_reopens(part: Path, seed: int) -> None:
    rng = random.Random(seed)
    memory = MemoryLog()
    disk = open_log(part)
    epoch = 1
    for step in range(40):
        choice = rng.random()
        boundaries = [b.next_offset for b in memory.batches()]
        if choice < 0.45:
            epoch += rng.random() < 0.3
            records = [f"{seed}-{step}-{i}".encode() for i in range(rng.randint(1, 3))]
            control = ControlRecordType.LEADER_CHANGE if rng.random() < 0.2 else None
            for log in (memory, disk):
                log.append_as_leader(records, epoch, control)
        elif choice < 0.6 and boundaries:
            latest = memory.latest_snapshot_id
            floor = 0 if latest is None else latest.offset  # never below the high watermark
            offset = rng.choice([o for o in [memory.log_start_offset, *boundaries] if o >= floor])
            for log in (memory, disk):
                log.truncate_to(offset)
        elif choice < 0.75 and boundaries:
            index = rng.randrange(len(boundaries))
            snapshot_id = SnapshotId(boundaries[index], memory.batches()[index].epoch)
            clean = rng.random() < 0.7
            for log in (memory, disk):
                log.create_snapshot(snapshot_id, b"image")
                if clean:
                    log.delete_before_snapshot(snapshot_id)
        elif choice < 0.8:
            epoch += 1
            latest = memory.latest_snapshot_id
            floor = 0 if latest is None else latest.offset + 1  # a newer snapshot than ours
            offset = max(memory.log_end_offset + rng.randint(0, 3), floor)
            snapshot_id = SnapshotId(offset, epoch)
            for log in (memory, disk):
                log.install_snapshot(snapshot_id, b"downloaded")
        else:
            memory.flush()
            memory.recover()
            disk.close()
            disk = open_log(part)
        epoch = max(epoch, memory.last_fetched_epoch)
        _same_state(memory, disk)
    disk.close()
