"""Helpers shared by the storage tests: batches with known offsets and timestamps."""

from __future__ import annotations

import warnings
from pathlib import Path

from pykbroker.log.compression import CompressionType
from pykbroker.log.log import Log
from pykbroker.log.log_config import LogConfig
from pykbroker.log.record_batch import Record, build_batch, decode_records, iter_batches

# kafka-python is the golden reference client; importing it trips importlib's
# DeprecationWarning (turned into an error by the pytest config) in its own code.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import codec as kafka_codec
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

__all__ = ["DefaultRecordBatch", "DefaultRecordBatchBuilder", "kafka_codec"]


def make_batch(
    count: int = 1,
    *,
    value_size: int = 10,
    timestamp: int = 1_000,
    compression: CompressionType = CompressionType.NONE,
    tag: str = "v",
    base_offset: int = 0,
) -> bytes:
    """A client-style batch of ``count`` records stamped ``timestamp``, ``timestamp+1``..."""
    records = [
        Record(
            key=f"k{i}".encode(),
            value=(f"{tag}{i}-".encode() * value_size)[:value_size],
            timestamp=timestamp + i,
        )
        for i in range(count)
    ]
    return build_batch(records, base_offset=base_offset, compression=compression)


def small_config(**overrides: object) -> LogConfig:
    """A config with tiny segments and a dense index so tests exercise rolls and lookups."""
    values: dict[str, object] = {
        "segment_bytes": 1024,
        "index_interval_bytes": 100,
        "segment_index_bytes": 1024,
    }
    values.update(overrides)
    return LogConfig(**values)  # type: ignore[arg-type]


def all_records(log: Log, fetch_offset: int | None = None) -> list[Record]:
    """Every record from ``fetch_offset`` (default: log start) to the log end offset."""
    offset = log.log_start_offset if fetch_offset is None else fetch_offset
    records: list[Record] = []
    while offset < log.log_end_offset:
        data = log.read(offset, 4096)
        assert data, f"no data at {offset} < {log.log_end_offset}"
        for header, batch in iter_batches(data):
            records.extend(r for r in decode_records(batch) if r.offset >= offset)
            offset = header.next_offset
    return records


def values(records: list[Record]) -> list[bytes | None]:
    return [r.value for r in records]


def segment_files(log_dir: Path, suffix: str) -> list[Path]:
    return sorted(log_dir.glob(f"*{suffix}"))
