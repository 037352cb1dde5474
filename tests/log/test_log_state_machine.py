"""Log against a list model: append, read, roll, truncate, reopen, timestamp lookups,
log start offset moves (DeleteRecords), retention (size and time) and restarts from checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pykbroker.log.compression import CompressionType
from pykbroker.log.log import Log
from pykbroker.log.log_config import LogConfig
from pykbroker.log.record_batch import Record, build_batch, decode_records, iter_batches

CONFIG = LogConfig(segment_bytes=700, index_interval_bytes=150, segment_index_bytes=64)


@dataclass
class ModelBatch:
    base_offset: int
    records: list[tuple[bytes, int]]  # (value, timestamp)

    @property
    def next_offset(self) -> int:
        return self.base_offset + len(self.records)


class LogStateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="pykbroker-log-sm-"))
        self.log = Log.open(self.tmp / "t-0", CONFIG, now_ms=0)
        self.batches: list[ModelBatch] = []
        self.counter = 0
        self.log_start_offset = 0
        self.empty_end = 0  # the log end offset when every batch is gone

    def _open(self, *, recover: bool) -> Log:
        """Reopen as LogManager does: the checkpointed log start offset is passed in."""
        return Log.open(
            self.tmp / "t-0",
            CONFIG,
            recover=recover,
            now_ms=0,
            log_start_offset=self.log_start_offset,
        )

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def log_end_offset(self) -> int:
        return self.batches[-1].next_offset if self.batches else self.empty_end

    def model_records(self) -> list[tuple[int, bytes, int]]:
        return [
            (b.base_offset + i, value, ts)
            for b in self.batches
            for i, (value, ts) in enumerate(b.records)
            if b.base_offset + i >= self.log_start_offset
        ]

    @rule(
        timestamps=st.lists(st.integers(0, 50), min_size=1, max_size=6),
        size=st.integers(0, 120),
        ctype=st.sampled_from([CompressionType.NONE, CompressionType.NONE, CompressionType.LZ4]),
    )
    def append(self, timestamps: list[int], size: int, ctype: CompressionType) -> None:
        records = []
        for ts in timestamps:
            self.counter += 1
            records.append((f"{self.counter}:".encode() + b"x" * size, ts))
        batch = build_batch(
            [Record(None, value, (), ts) for value, ts in records], compression=ctype
        )
        info = self.log.append_as_leader(batch, 0, now_ms=0)
        assert info.first_offset == self.log_end_offset
        assert info.last_offset == self.log_end_offset + len(records) - 1
        self.batches.append(ModelBatch(info.first_offset, records))

    @precondition(lambda self: self.batches)
    @rule(data=st.data(), max_bytes=st.integers(1, 3000))
    def read(self, data: st.DataObject, max_bytes: int) -> None:
        offset = data.draw(st.integers(self.log_start_offset, self.log_end_offset))
        raw = self.log.read(offset, max_bytes)
        if offset == self.log_end_offset:
            assert raw == b""
            return
        expected = {o: v for o, v, _ in self.model_records()}
        got = [(h, decode_records(b)) for h, b in iter_batches(raw)]
        assert got, "min_one_message must return the batch holding the offset"
        assert sum(h.size_in_bytes for h, _ in got) == len(raw)
        first = got[0][0]
        assert first.base_offset <= offset <= first.last_offset
        assert len(raw) <= max_bytes or len(got) == 1
        next_offset = first.base_offset
        for header, records in got:
            assert header.base_offset == next_offset
            for record in records:
                if record.offset >= self.log_start_offset:
                    assert record.value == expected[record.offset]
            next_offset = header.next_offset

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def read_below_high_watermark(self, data: st.DataObject) -> None:
        max_offset = data.draw(st.integers(0, self.log_end_offset))
        offset = data.draw(st.integers(self.log_start_offset, self.log_end_offset))
        raw = self.log.read(offset, 1 << 20, max_offset=max_offset)
        for header, _ in iter_batches(raw):
            assert header.last_offset < max_offset
        if any(b.base_offset <= offset < b.next_offset <= max_offset for b in self.batches):
            assert raw

    @rule()
    def roll(self) -> None:
        self.log.roll(now_ms=0)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def truncate_to(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.log_start_offset, self.log_end_offset + 2))
        if offset >= self.log_end_offset:
            return
        self.log.truncate_to(offset)
        self.batches = [b for b in self.batches if b.next_offset <= offset]
        if not self.batches or self.batches[-1].next_offset < self.log_start_offset:
            # the whole log, or all of it from the log start, is gone: it restarts empty
            self.empty_end = self.log.log_end_offset
            self.batches = [b for b in self.batches if b.next_offset > self.empty_end]
        self.log_start_offset = min(self.log_start_offset, self.log.log_end_offset)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def delete_records(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(0, self.log_end_offset))
        self.log.high_watermark = self.log.log_end_offset
        moved = self.log.maybe_increment_log_start_offset(offset)
        assert moved == (offset > self.log_start_offset)
        self.log_start_offset = max(self.log_start_offset, offset)
        assert self.log.log_start_offset == self.log_start_offset

    @rule(retention_bytes=st.sampled_from([-1, 0, 300, 1500]))
    def retention(self, retention_bytes: int) -> None:
        self.log.high_watermark = self.log.log_end_offset
        self.log.update_config(replace(CONFIG, retention_ms=-1, retention_bytes=retention_bytes))
        self.log.delete_old_segments(now_ms=0)
        self.log.update_config(CONFIG)
        assert self.log.log_start_offset >= self.log_start_offset
        self.log_start_offset = self.log.log_start_offset
        if retention_bytes >= 0 and len(self.log.segments) > 1:
            # Kafka's rule: the oldest segment stays once deleting it would undershoot
            assert self.log.size_in_bytes - self.log.segments[0].size < retention_bytes
        self.batches = [b for b in self.batches if b.next_offset > self.log_start_offset]
        if not self.batches:
            self.empty_end = self.log.log_end_offset

    @precondition(lambda self: self.log_start_offset == 0)  # the model holds every batch
    @rule(retention_ms=st.sampled_from([-1, 0, 10, 40]), now_ms=st.integers(0, 120))
    def retention_by_time(self, retention_ms: int, now_ms: int) -> None:
        """Kafka's ``retention.ms``: whole segments from the oldest while ``now`` is more
        than ``retention.ms`` past their largest timestamp, below the high watermark; an
        empty active segment never goes, a non-empty one is rolled first."""
        self.log.high_watermark = self.log.log_end_offset
        segments = list(self.log.segments)
        expected_start = 0
        for i, segment in enumerate(segments):
            last = i == len(segments) - 1
            upper = self.log_end_offset if last else segments[i + 1].base_offset
            stamps = [ts for o, _, ts in self.model_records() if segment.base_offset <= o < upper]
            if retention_ms < 0 or (last and not stamps):
                break
            largest = max(stamps) if stamps else segment.largest_timestamp
            if now_ms - largest <= retention_ms:
                break
            expected_start = upper
        self.log.update_config(replace(CONFIG, retention_ms=retention_ms))
        self.log.delete_old_segments(now_ms=now_ms)
        self.log.update_config(CONFIG)
        assert self.log.log_start_offset == expected_start
        assert self.log.log_end_offset == self.log_end_offset
        self.log_start_offset = expected_start
        self.batches = [b for b in self.batches if b.next_offset > self.log_start_offset]
        if not self.batches:
            self.empty_end = self.log.log_end_offset

    @rule(clean=st.booleans())
    def reopen(self, clean: bool) -> None:
        self.log.close()
        self.log = self._open(recover=not clean)

    @precondition(lambda self: self.log.active_segment.size > 0)
    @rule(data=st.data())
    def crash_with_torn_tail(self, data: st.DataObject) -> None:
        active = self.log.active_segment
        batches = list(active.scan())
        new_size = active.size - data.draw(st.integers(1, active.size))
        self.log.close()
        os.truncate(active.log_path, new_size)
        survivors = [h.next_offset for p, h in batches if p + h.size_in_bytes <= new_size]
        log_end_offset = max(survivors, default=active.base_offset)
        self.batches = [b for b in self.batches if b.next_offset <= log_end_offset]
        if log_end_offset < self.log_start_offset:  # the start offset's data was torn off
            self.batches = []
            self.empty_end = self.log_start_offset
        elif not self.batches:
            self.empty_end = log_end_offset
        self.log = self._open(recover=True)

    @precondition(lambda self: self.log_start_offset == 0)
    @rule(timestamp=st.integers(0, 55))
    def offset_for_timestamp(self, timestamp: int) -> None:
        expected = next(((o, ts) for o, _, ts in self.model_records() if ts >= timestamp), None)
        assert self.log.fetch_offset_by_timestamp(timestamp) == expected

    @precondition(lambda self: self.log_start_offset == 0)
    @rule()
    def max_timestamp(self) -> None:
        records = self.model_records()
        if not records:
            assert self.log.max_timestamp_and_offset() == (-1, -1)
            return
        top = max(ts for _, _, ts in records)
        first = next(o for o, _, ts in records if ts == top)
        assert self.log.max_timestamp_and_offset() == (top, first)

    @invariant()
    def offsets_match(self) -> None:
        assert self.log.log_end_offset == self.log_end_offset
        assert self.log.log_start_offset == self.log_start_offset
        bases = [s.base_offset for s in self.log.segments]
        assert bases == sorted(set(bases))
        assert bases[0] <= self.log_start_offset


LogStateMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_log_matches_list_model = LogStateMachine.TestCase
