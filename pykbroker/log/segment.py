"""One segment of a partition's log, after Kafka's ``LogSegment`` (and ``FileRecords``).

Mirrors ``org.apache.kafka.storage.internals.log.LogSegment``: the files
``<base_offset:020d>.log`` (record batches back to back, as the producer's bytes with
offsets assigned), ``.index`` (``OffsetIndex``), ``.timeindex`` (``TimeIndex``) and, once
the segment holds an ABORT marker, ``.txnindex`` (``TransactionIndex``).

Invariant: the ``.log`` file holds only whole, CRC-valid v2 batches with increasing
offsets, all >= ``base_offset`` and < ``base_offset + 2**32``; every index entry
names a batch in the file (offset index: the batch's last offset and position; time
index: the largest timestamp so far and the last offset of the batch carrying it; the
transaction index: one entry per ABORT marker in the file).
A crash can leave a torn tail and stale indexes; ``recover`` restores the invariant
(the transaction index from the producer state at the segment's start, as Kafka's).
Appends go through ``os.write`` (page cache), reads through ``os.pread``; ``flush``
fsyncs. Not thread-safe: the owning ``Log`` serialises calls.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from crc32c import crc32c

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.index import CorruptIndexError
from pykbroker.log.offset_index import OffsetIndex
from pykbroker.log.record_batch import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_VALUE_V2,
    MIN_BATCH_LENGTH,
    BatchHeader,
    EndTxnMarker,
    decode_records,
    end_txn_marker_type,
    unpack_header,
)
from pykbroker.log.time_index import NO_TIMESTAMP, TimeIndex
from pykbroker.log.transaction_index import AbortedTxn, TransactionIndex, TxnIndexSearchResult

if TYPE_CHECKING:
    from pykbroker.log.producer_state import CompletedTxn, ProducerStateManager

__all__ = [
    "LogSegment",
    "log_file",
    "offset_index_file",
    "time_index_file",
    "txn_index_file",
]

LOG_FILE_SUFFIX = ".log"
INDEX_FILE_SUFFIX = ".index"
TIME_INDEX_FILE_SUFFIX = ".timeindex"
TXN_INDEX_FILE_SUFFIX = ".txnindex"
DELETED_FILE_SUFFIX = ".deleted"
CLEANED_FILE_SUFFIX = ".cleaned"
SWAP_FILE_SUFFIX = ".swap"
MAX_RELATIVE_OFFSET = 0xFFFFFFFF

_SCAN_CHUNK = 16 * 1024  # header scans start at an index entry, <= ~index.interval.bytes away
_RECOVERY_CHUNK = 1024 * 1024
_LENGTH_AT = 8
_INT32 = struct.Struct(">i")


def filename_prefix(offset: int) -> str:
    return f"{offset:020d}"


def log_file(log_dir: Path, base_offset: int) -> Path:
    return log_dir / (filename_prefix(base_offset) + LOG_FILE_SUFFIX)


def offset_index_file(log_dir: Path, base_offset: int) -> Path:
    return log_dir / (filename_prefix(base_offset) + INDEX_FILE_SUFFIX)


def time_index_file(log_dir: Path, base_offset: int) -> Path:
    return log_dir / (filename_prefix(base_offset) + TIME_INDEX_FILE_SUFFIX)


def txn_index_file(log_dir: Path, base_offset: int) -> Path:
    return log_dir / (filename_prefix(base_offset) + TXN_INDEX_FILE_SUFFIX)


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix) if suffix else path


def _storage_error(message: str) -> KafkaError:
    return KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, message)


class LogSegment:
    """A ``.log`` file plus its offset, time and transaction indexes, all starting at
    ``base_offset``."""

    def __init__(
        self,
        log_dir: Path,
        base_offset: int,
        *,
        index_interval_bytes: int,
        max_index_size: int,
        created_ms: int,
        file_suffix: str = "",
    ) -> None:
        self.dir = log_dir
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = created_ms
        self.log_path = _with_suffix(log_file(log_dir, base_offset), file_suffix)
        index_path = _with_suffix(offset_index_file(log_dir, base_offset), file_suffix)
        time_index_path = _with_suffix(time_index_file(log_dir, base_offset), file_suffix)
        self.indexes_existed = index_path.exists() and time_index_path.exists()
        self._fd: int | None = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        self.offset_index = OffsetIndex(index_path, base_offset, max_index_size)
        self.time_index = TimeIndex(time_index_path, base_offset, max_index_size)
        self.txn_index = TransactionIndex(
            _with_suffix(txn_index_file(log_dir, base_offset), file_suffix), base_offset
        )
        self._bytes_since_last_index_entry = 0
        self._next_offset: int | None = base_offset if self._size == 0 else None
        self._max_timestamp_and_offset: tuple[int, int] | None = None
        self._rolling_based_timestamp: int | None = None

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path}, size={self._size})"

    # -- properties -------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise _storage_error(f"segment {self.log_path} is closed")
        return self._fd

    @property
    def next_offset(self) -> int:
        """One past the last offset in the segment (``base_offset`` when empty)."""
        if self._next_offset is None:
            self._next_offset = self._read_next_offset()
        return self._next_offset

    def _read_next_offset(self) -> int:
        entries = self.offset_index.entries
        position = self.offset_index.entry(entries - 1)[1] if entries else 0
        next_offset = self.base_offset
        for _, header in self.scan(position):
            next_offset = header.next_offset
        return next_offset

    @property
    def max_timestamp_and_offset_so_far(self) -> tuple[int, int]:
        """``(largest batch maxTimestamp, last offset of that batch)``; -1 when unknown."""
        if self._max_timestamp_and_offset is None:
            self._max_timestamp_and_offset = self.time_index.last_entry
        return self._max_timestamp_and_offset

    @property
    def largest_timestamp(self) -> int:
        """Largest timestamp in the segment, or the file's mtime (Kafka's fallback)."""
        timestamp = self.max_timestamp_and_offset_so_far[0]
        if timestamp >= 0:
            return timestamp
        return os.stat(self.log_path).st_mtime_ns // 1_000_000

    @property
    def rolling_based_timestamp(self) -> int | None:
        """maxTimestamp of the first batch: what ``segment.ms`` is measured from."""
        if self._rolling_based_timestamp is None and self._size >= BATCH_HEADER_SIZE:
            header = unpack_header(os.pread(self.fd, BATCH_HEADER_SIZE, 0))
            self._rolling_based_timestamp = header.max_timestamp
        return self._rolling_based_timestamp

    # -- scanning ---------------------------------------------------------------------

    def scan(
        self, start_position: int = 0, end_position: int | None = None
    ) -> Iterator[tuple[int, BatchHeader]]:
        """``(position, header)`` of each whole batch in [start_position, end_position)."""
        end = self._size if end_position is None else min(end_position, self._size)
        fd = self.fd
        position = start_position
        chunk = b""
        chunk_start = 0
        while end - position >= BATCH_HEADER_SIZE:
            in_chunk = position - chunk_start
            if in_chunk < 0 or in_chunk + BATCH_HEADER_SIZE > len(chunk):
                chunk = os.pread(fd, min(_SCAN_CHUNK, end - position), position)
                chunk_start, in_chunk = position, 0
                if len(chunk) < BATCH_HEADER_SIZE:
                    return
            header = unpack_header(chunk, in_chunk)
            if header.batch_length < MIN_BATCH_LENGTH:
                raise _storage_error(f"corrupt batch length at {position} in {self.log_path}")
            size = header.batch_length + LOG_OVERHEAD
            if position + size > end:
                return
            yield position, header
            position += size

    def translate_offset(
        self, offset: int, starting_position: int = 0
    ) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset is >= ``offset``."""
        _, position = self.offset_index.lookup(offset)
        for batch_position, header in self.scan(max(position, starting_position)):
            if header.last_offset >= offset:
                return batch_position, header
        return None

    # -- append and read --------------------------------------------------------------

    def append(
        self,
        largest_offset: int,
        batch_bytes: bytes | bytearray | memoryview,
        max_timestamp: int,
        offset_of_max_timestamp: int,
    ) -> None:
        """Append validated batches whose offsets are assigned, and index them.

        As Kafka, an offset index entry (batch last offset, batch position) and a time
        index entry are added when more than ``index.interval.bytes`` were appended
        since the last entry.
        """
        view = memoryview(batch_bytes)
        length = len(view)
        if not length:
            return
        if largest_offset - self.base_offset > MAX_RELATIVE_OFFSET:
            raise _storage_error(f"offset {largest_offset} does not fit segment {self.base_offset}")
        physical_position = self._size
        if physical_position == 0:
            self._rolling_based_timestamp = max_timestamp
        so_far_timestamp, so_far_offset = self.max_timestamp_and_offset_so_far
        interval = self.index_interval_bytes
        since = self._bytes_since_last_index_entry
        position = 0
        while position < length:
            header = unpack_header(view, position)
            if header.max_timestamp > so_far_timestamp:
                so_far_timestamp, so_far_offset = header.max_timestamp, header.last_offset
            if since > interval and not self.offset_index.is_full:
                self.offset_index.append(header.last_offset, physical_position + position)
                if so_far_timestamp >= 0:
                    self.time_index.maybe_append(
                        so_far_timestamp, so_far_offset, skip_full_check=True
                    )
                since = 0
            size = header.batch_length + LOG_OVERHEAD
            since += size
            position += size
        if max_timestamp > so_far_timestamp:
            so_far_timestamp, so_far_offset = max_timestamp, offset_of_max_timestamp
        self._write(view)
        self._bytes_since_last_index_entry = since
        self._max_timestamp_and_offset = (so_far_timestamp, so_far_offset)
        self._next_offset = largest_offset + 1

    def _write(self, view: memoryview) -> None:
        fd = self.fd
        written = 0
        try:
            while written < len(view):
                written += os.write(fd, view[written:])
        except OSError as exc:
            if written:  # keep the file made of whole batches
                os.ftruncate(fd, self._size)
            raise _storage_error(f"append to {self.log_path} failed: {exc}") from exc
        self._size += written

    def read(
        self,
        start_offset: int,
        max_size: int,
        max_position: int | None = None,
        min_one_message: bool = True,
    ) -> bytes | None:
        """Whole batches from the one containing ``start_offset``, or None if none does.

        At most ``max_size`` bytes, except that with ``min_one_message`` the first batch
        is returned whole even when larger; never bytes at or past ``max_position``.
        """
        found = self.translate_offset(start_offset)
        if found is None:
            return None
        start_position, header = found
        limit = self._size if max_position is None else min(max_position, self._size)
        if start_position >= limit:
            return b""
        first_size = header.size_in_bytes
        wanted = max(max_size, first_size) if min_one_message else max_size
        fetch_size = min(limit - start_position, wanted)
        if fetch_size < first_size:
            return b""
        data = os.pread(self.fd, fetch_size, start_position)
        if fetch_size == limit - start_position:
            return data  # limit is a batch boundary: nothing partial at the end
        whole = _whole_batches_length(data)
        return data if whole == len(data) else data[:whole]

    def find_offset_by_timestamp(
        self, timestamp: int, starting_offset: int = 0
    ) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record with timestamp >= ``timestamp``."""
        _, timestamp_offset = self.time_index.lookup(timestamp)
        _, position = self.offset_index.lookup(max(timestamp_offset, starting_offset))
        for batch_position, header in self.scan(position):
            if header.max_timestamp < timestamp or header.last_offset < starting_offset:
                continue
            batch = os.pread(self.fd, header.size_in_bytes, batch_position)
            for record in decode_records(batch):
                if record.timestamp >= timestamp and record.offset >= starting_offset:
                    return record.offset, record.timestamp
        return None

    def find_record_with_timestamp(self, timestamp: int, batch_last_offset: int) -> int | None:
        """Offset of the first record stamped ``timestamp`` in the batch ending at the offset."""
        found = self.translate_offset(batch_last_offset)
        if found is None:
            return None
        position, header = found
        for record in decode_records(os.pread(self.fd, header.size_in_bytes, position)):
            if record.timestamp == timestamp:
                return record.offset
        return None

    # -- aborted transactions ----------------------------------------------------------

    def update_txn_index(self, completed_txn: CompletedTxn, is_aborted: bool) -> None:
        """Index a transaction a marker in this segment ended, if aborted (Kafka's
        ``updateTxnIndex``)."""
        if is_aborted:
            self.txn_index.append(
                AbortedTxn(
                    completed_txn.producer_id,
                    completed_txn.first_offset,
                    completed_txn.last_offset,
                    completed_txn.last_stable_offset,
                )
            )

    def collect_aborted_txns(
        self, fetch_offset: int, upper_bound_offset: int
    ) -> TxnIndexSearchResult:
        """Aborted transactions indexed here overlapping ``[fetch_offset,
        upper_bound_offset)`` (Kafka's ``collectAbortedTxns``)."""
        return self.txn_index.collect_aborted_txns(fetch_offset, upper_bound_offset)

    # -- roll, recovery, truncation -----------------------------------------------------

    def should_roll(
        self,
        *,
        segment_bytes: int,
        segment_ms: int,
        messages_size: int,
        max_timestamp_in_messages: int,
        max_offset_in_messages: int,
        now_ms: int,
    ) -> bool:
        """Kafka's ``shouldRoll``: size, age, a full index or a relative-offset overflow."""
        rolling_based = self.rolling_based_timestamp
        if rolling_based is not None and rolling_based >= 0:
            waited = max_timestamp_in_messages - rolling_based
        else:
            waited = now_ms - self.created_ms
        if self._size == 0:  # an empty segment takes any batch (Kafka would re-create it)
            return max_offset_in_messages - self.base_offset > MAX_RELATIVE_OFFSET
        return (
            self._size > segment_bytes - messages_size
            or waited > segment_ms
            or self.offset_index.is_full
            or self.time_index.is_full
            or max_offset_in_messages - self.base_offset > MAX_RELATIVE_OFFSET
        )

    def on_become_inactive(self) -> None:
        """The segment stops being active: final time index entry, trim both indexes,
        close the transaction index's descriptor (an append would reopen it)."""
        timestamp, offset = self.max_timestamp_and_offset_so_far
        if timestamp >= 0:
            self.time_index.maybe_append(timestamp, offset, skip_full_check=True)
        self.offset_index.trim_to_valid_size()
        self.time_index.trim_to_valid_size()
        self.txn_index.close()

    def resize_indexes(self, max_index_size: int) -> None:
        """Preallocate the indexes again: the segment became active (Kafka's name)."""
        self.offset_index.resize(max_index_size)
        self.time_index.resize(max_index_size)

    def sanity_check(self) -> None:
        """Raise CorruptIndexError if an index is missing, malformed or points nowhere."""
        if not self.indexes_existed and self._size > 0:
            raise CorruptIndexError(f"index files of {self.log_path} are missing")
        self.offset_index.sanity_check(self._size)
        if self.offset_index.entries:
            offset, position = self.offset_index.entry(self.offset_index.entries - 1)
            raw = os.pread(self.fd, BATCH_HEADER_SIZE, position)
            if len(raw) < BATCH_HEADER_SIZE:
                raise CorruptIndexError(f"{self.offset_index.path}: entry past the log end")
            header = unpack_header(raw)
            if header.magic != MAGIC_VALUE_V2 or header.last_offset != offset:
                raise CorruptIndexError(
                    f"{self.offset_index.path}: entry ({offset}, {position}) names no batch"
                )
        try:
            next_offset = self.next_offset
        except KafkaError as exc:
            raise CorruptIndexError(str(exc)) from exc
        self.time_index.sanity_check(next_offset - 1)
        self.txn_index.sanity_check(next_offset)

    def recover(
        self, max_batch_bytes: int, producer_state: ProducerStateManager | None = None
    ) -> int:
        """Rebuild the indexes from the log and cut it after the last valid batch.

        A batch is valid when it is whole, magic 2, its CRC-32C matches and its offsets
        follow the previous batch and fit the segment. Returns the bytes truncated.
        ``max_batch_bytes`` only sizes reads: a batch written under a larger
        ``max.message.bytes`` is still kept, as in Kafka. With ``producer_state`` (the
        state of the batches before this segment, Kafka's way) the transaction index is
        rebuilt too, from the markers, and the state is left after the last valid batch;
        without it the transaction index is kept as it is (``sanity_check`` judges it).
        """
        fd = self.fd
        file_size = os.fstat(fd).st_size
        self.offset_index.reset()
        self.time_index.reset()
        if producer_state is not None:
            self.txn_index.reset()
        self._bytes_since_last_index_entry = 0
        self._max_timestamp_and_offset = (NO_TIMESTAMP, self.base_offset)
        self._size = file_size
        next_offset = self.base_offset
        position = 0
        chunk = b""
        chunk_start = 0
        read_size = max(_RECOVERY_CHUNK, min(max_batch_bytes, 16 * _RECOVERY_CHUNK))
        while file_size - position >= BATCH_HEADER_SIZE:
            in_chunk = position - chunk_start
            if in_chunk + BATCH_HEADER_SIZE > len(chunk):
                chunk = os.pread(fd, min(read_size, file_size - position), position)
                chunk_start, in_chunk = position, 0
            header = unpack_header(chunk, in_chunk)
            size = header.batch_length + LOG_OVERHEAD
            if (
                header.magic != MAGIC_VALUE_V2
                or header.batch_length < MIN_BATCH_LENGTH
                or position + size > file_size
                or header.base_offset < next_offset
                or header.last_offset_delta < 0
                or header.last_offset - self.base_offset > MAX_RELATIVE_OFFSET
            ):
                break
            if in_chunk + size > len(chunk):
                if size <= read_size:
                    chunk = os.pread(fd, min(read_size, file_size - position), position)
                    chunk_start, in_chunk = position, 0
                    crc = crc32c(memoryview(chunk)[ATTRIBUTES_OFFSET:size])
                else:
                    crc = self._streamed_crc(position + ATTRIBUTES_OFFSET, position + size)
            else:
                crc = crc32c(memoryview(chunk)[in_chunk + ATTRIBUTES_OFFSET : in_chunk + size])
            if crc != header.crc:
                break
            self._index_recovered_batch(header, position)
            if producer_state is not None:
                batch = None
                if header.is_control and in_chunk + size <= len(chunk):
                    batch = chunk[in_chunk : in_chunk + size]
                self._update_producer_state(producer_state, header, position, batch)
            next_offset = header.next_offset
            position += size
        truncated = file_size - position
        if truncated:
            os.ftruncate(fd, position)
        self._size = position
        self._next_offset = next_offset
        self._rolling_based_timestamp = None
        self.indexes_existed = True
        self.on_become_inactive()  # trims; appends re-preallocate on demand
        return truncated

    def _index_recovered_batch(self, header: BatchHeader, position: int) -> None:
        so_far_timestamp, so_far_offset = self.max_timestamp_and_offset_so_far
        if header.max_timestamp > so_far_timestamp:
            so_far_timestamp, so_far_offset = header.max_timestamp, header.last_offset
            self._max_timestamp_and_offset = (so_far_timestamp, so_far_offset)
        if (
            self._bytes_since_last_index_entry > self.index_interval_bytes
            and not self.offset_index.is_full
        ):
            self.offset_index.append(header.last_offset, position)
            if so_far_timestamp >= 0:
                self.time_index.maybe_append(so_far_timestamp, so_far_offset, skip_full_check=True)
            self._bytes_since_last_index_entry = 0
        self._bytes_since_last_index_entry += header.size_in_bytes

    def _update_producer_state(
        self,
        producer_state: ProducerStateManager,
        header: BatchHeader,
        position: int,
        batch: bytes | None,
    ) -> None:
        """Feed one recovered batch to ``producer_state`` and index the transaction its
        marker aborts (Kafka's ``LogSegment.updateProducerState``)."""
        for completed in producer_state.update_from_replay((header,)):
            if batch is None:
                batch = os.pread(self.fd, header.size_in_bytes, position)
            try:
                is_aborted = end_txn_marker_type(batch) is EndTxnMarker.ABORT
            except KafkaError:
                is_aborted = False  # an unreadable marker (CRC-valid, so never written so)
            self.update_txn_index(completed, is_aborted)

    def _streamed_crc(self, start: int, end: int) -> int:
        crc = 0
        position = start
        while position < end:
            data = os.pread(self.fd, min(_RECOVERY_CHUNK, end - position), position)
            if not data:
                return -1
            crc = crc32c(data, crc)
            position += len(data)
        return crc

    def truncate_to(self, offset: int) -> int:
        """Drop the batch containing ``offset`` and everything after; return bytes cut."""
        found = self.translate_offset(offset)
        if found is None:
            return 0
        position, _ = found
        self.offset_index.truncate_to(offset)
        self.time_index.truncate_to(offset)
        self.txn_index.truncate_to(offset)
        truncated = self._size - position
        os.ftruncate(self.fd, position)
        self._size = position
        self._bytes_since_last_index_entry = 0
        self._next_offset = None if position else self.base_offset
        self._max_timestamp_and_offset = self._max_timestamp_after_truncation()
        if position == 0:
            self._rolling_based_timestamp = None
        return truncated

    def _max_timestamp_after_truncation(self) -> tuple[int, int]:
        """Exact max timestamp of what is left (Kafka settles for the time index's last
        entry, which misses batches after the last index point)."""
        timestamp, offset = self.time_index.last_entry
        entries = self.offset_index.entries
        position = self.offset_index.entry(entries - 1)[1] if entries else 0
        for _, header in self.scan(position):
            if header.max_timestamp > timestamp:
                timestamp, offset = header.max_timestamp, header.last_offset
        return timestamp, offset

    # -- lifecycle ----------------------------------------------------------------------

    def flush(self) -> None:
        """fsync the log and transaction index files and msync the index mappings."""
        os.fsync(self.fd)
        self.offset_index.flush()
        self.time_index.flush()
        self.txn_index.flush()

    def close(self) -> None:
        if self._fd is None:
            return
        self.on_become_inactive()
        os.close(self._fd)
        self._fd = None

    def delete(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.offset_index.delete()
        self.time_index.delete()
        self.txn_index.delete()
        self.log_path.unlink(missing_ok=True)

    def change_file_suffixes(self, old_suffix: str, new_suffix: str) -> None:
        """Rename the files, e.g. ``.cleaned`` -> ``.swap`` (Kafka's name), the ``.log``
        last (its new name is what marks the step done); open descriptors and mappings
        stay valid."""
        for index in (self.offset_index, self.time_index, self.txn_index):
            index.rename_to(_replace_suffix(index.path, old_suffix, new_suffix))
        new_log_path = _replace_suffix(self.log_path, old_suffix, new_suffix)
        os.rename(self.log_path, new_log_path)
        self.log_path = new_log_path

    def mark_for_deletion(self) -> None:
        """Close the segment and rename its files ``*.deleted``: startup removes such
        files, so the actual unlinking (``delete``) may happen later, in a thread."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.offset_index.close_mapping()
        self.time_index.close_mapping()
        self.txn_index.close()
        self.change_file_suffixes("", DELETED_FILE_SUFFIX)

    def flush_handles(self) -> tuple[int, list[Path]]:
        """A duplicate of the log descriptor and the index paths, for an fsync from a
        worker thread that must not race with ``close`` (the caller closes the dup)."""
        return os.dup(self.fd), [self.offset_index.path, self.time_index.path, self.txn_index.path]


def _replace_suffix(path: Path, old_suffix: str, new_suffix: str) -> Path:
    name = path.name
    if old_suffix:
        if not name.endswith(old_suffix):
            raise ValueError(f"{path} does not end with {old_suffix}")
        name = name[: -len(old_suffix)]
    return path.with_name(name + new_suffix)


def _whole_batches_length(data: bytes) -> int:
    """Length of the prefix of ``data`` made of whole batches."""
    position = 0
    end = len(data)
    unpack_from = _INT32.unpack_from
    while end - position >= LOG_OVERHEAD:
        size = unpack_from(data, position + _LENGTH_AT)[0] + LOG_OVERHEAD
        if size < BATCH_HEADER_SIZE or position + size > end:
            break
        position += size
    return position
