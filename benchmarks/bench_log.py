"""Throughput of the storage engine (``Log``) next to a plain sequential write of the same bytes.

    python benchmarks/bench_log.py                 # 256 MiB per case in a temp dir under .
    python benchmarks/bench_log.py --megabytes 64 --dir /mnt/disk

For 1 KiB and 64 KiB record batches (one uncompressed record each, as a client sends them):

* append: ``Log.append_as_leader`` (header validation, CRC-32C, offset assignment, the copy,
  ``os.write``, index entries, segment rolls at 1 GiB) of N batches, then one fsync, against
  ``os.write`` of the same bytes to one file on the same disk, then one fsync;
* read: ``Log.read`` from offset 0 to the end in 1 MiB fetches (whole batches, index lookups)
  against ``os.pread`` of the same file in 1 MiB chunks, both from the page cache right after
  the write (so: CPU cost of the read path, not disk speed).

MB/s are of batch bytes (1 MB = 10^6 bytes). Not a test: it prints a table and exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pykbroker.log.log import Log
from pykbroker.log.log_config import LogConfig
from pykbroker.log.record_batch import Record, build_batch

CHUNK = 1 << 20
NOW_MS = 1_700_000_000_000


def make_batch(size: int) -> bytes:
    """One uncompressed batch of ``size`` bytes (give or take the varint lengths)."""
    overhead = len(build_batch([Record(b"key", b"", timestamp=NOW_MS)]))
    value = os.urandom(size - overhead - 4)  # the record's length varints grow too
    return build_batch([Record(b"key", value, timestamp=NOW_MS)])


def timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def plain_write(path: Path, batch: bytes, count: int) -> float:
    def work() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for _ in range(count):
                os.write(fd, batch)
            os.fsync(fd)
        finally:
            os.close(fd)

    return timed(work)


def plain_read(path: Path) -> float:
    def work() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            position = 0
            while data := os.pread(fd, CHUNK, position):
                position += len(data)
        finally:
            os.close(fd)

    return timed(work)


def log_append(log: Log, batch: bytes, count: int) -> float:
    def work() -> None:
        for _ in range(count):
            log.append_as_leader(batch, 0, NOW_MS)
        log.flush()

    return timed(work)


def log_read(log: Log, batch_size: int) -> tuple[float, int]:
    """Fetch everything; every batch holds one record, so a fetch of n bytes ends n /
    batch_size offsets further (the consumer-side parsing is not what is measured)."""
    read = [0]

    def work() -> None:
        offset = 0
        end = log.log_end_offset
        while offset < end:
            data = log.read(offset, CHUNK)
            read[0] += len(data)
            offset += len(data) // batch_size

    elapsed = timed(work)
    return elapsed, read[0]


def run_case(root: Path, batch_size: int, total_bytes: int) -> dict[str, float]:
    batch = make_batch(batch_size)
    count = max(1, total_bytes // len(batch))
    volume = count * len(batch) / 1e6
    case_dir = root / f"case-{batch_size}"
    case_dir.mkdir()
    plain_path = case_dir / "plain.bin"
    plain_write_s = plain_write(plain_path, batch, count)
    plain_read_s = plain_read(plain_path)
    plain_path.unlink()
    config = LogConfig(message_timestamp_after_max_ms=2**62)
    log = Log.open(case_dir / "bench-0", config, now_ms=NOW_MS)
    append_s = log_append(log, batch, count)
    log.high_watermark = log.log_end_offset
    read_s, read_bytes = log_read(log, len(batch))
    assert read_bytes == count * len(batch), (read_bytes, count * len(batch))
    log.close()
    shutil.rmtree(case_dir)
    return {
        "plain_write": volume / plain_write_s,
        "log_append": volume / append_s,
        "plain_read": volume / plain_read_s,
        "log_read": volume / read_s,
        "batches_per_s": count / append_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256, help="MiB written per case")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where to write (a disk)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pykbroker-bench-log-", dir=args.dir))
    try:
        total = args.megabytes << 20
        rows = [(size, run_case(root, size, total)) for size in (1024, 65536)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.megabytes} MiB per case in {root.parent.resolve()}; MB/s (10^6 bytes/s)")
    header = (
        f"{'batch':>7} | {'plain write':>11} | {'Log append':>10} | {'ratio':>5} | "
        f"{'plain read':>10} | {'Log read':>8} | {'ratio':>5} | {'appends/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for size, r in rows:
        print(
            f"{size // 1024:>5}Ki | {r['plain_write']:>11.0f} | {r['log_append']:>10.0f} | "
            f"{r['log_append'] / r['plain_write']:>5.2f} | {r['plain_read']:>10.0f} | "
            f"{r['log_read']:>8.0f} | {r['log_read'] / r['plain_read']:>5.2f} | "
            f"{r['batches_per_s']:>9.0f}"
        )


if __name__ == "__main__":
    main()
