"""A segment's aborted-transaction index, after Kafka's ``TransactionIndex`` and ``AbortedTxn``.

Mirrors ``org.apache.kafka.storage.internals.log.TransactionIndex``: the file
``<base_offset:020d>.txnindex`` beside the segment's ``.log``, ``.index`` and ``.timeindex``
holds one entry per ABORT marker written to that segment, back to back, each 34 bytes
big-endian (Kafka's ``AbortedTxn``)::

    version int16 (0) | producerId int64 | firstOffset int64 | lastOffset int64 |
    lastStableOffset int64

``firstOffset`` is the first offset of the aborted transaction on the partition (maybe in an
earlier segment), ``lastOffset`` the offset of its ABORT marker (in this segment), and
``lastStableOffset`` the partition's last stable offset right after the marker: the first
offset of the oldest transaction of another producer still open then, else
``lastOffset + 1``. Fetch with read_committed answers the entries overlapping the fetched
range as ``aborted_transactions`` (``collect_aborted_txns``); once an entry's
``lastStableOffset`` reaches the fetch's upper bound no later entry can overlap it, so the
search stops (``TxnIndexSearchResult.is_complete``).

The file is created on the first append, as Kafka's. Entries are cached in memory once
read (34 bytes each, one per aborted transaction), so a fetch costs no I/O.

Invariant: entries are ordered by strictly increasing ``lastOffset`` and every
``lastOffset`` is >= the segment's base offset; the file is exactly ``34 * len(entries)``
bytes. Not thread-safe: the owning ``LogSegment`` serialises calls.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from pykbroker.log.index import CorruptIndexError

__all__ = [
    "ABORTED_TXN_SIZE",
    "ABORTED_TXN_VERSION",
    "AbortedTxn",
    "TransactionIndex",
    "TxnIndexSearchResult",
]

ABORTED_TXN_VERSION = 0
_ENTRY = struct.Struct(">hqqqq")  # version, producerId, firstOffset, lastOffset, lastStableOffset
ABORTED_TXN_SIZE = _ENTRY.size
assert ABORTED_TXN_SIZE == 34


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction (Kafka's ``AbortedTxn``)."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def encode(self) -> bytes:
        """The 34-byte version 0 entry."""
        return _ENTRY.pack(
            ABORTED_TXN_VERSION,
            self.producer_id,
            self.first_offset,
            self.last_offset,
            self.last_stable_offset,
        )

    @classmethod
    def decode(cls, data: bytes | memoryview, position: int = 0) -> AbortedTxn:
        """The entry at ``position``; CorruptIndexError for a version other than 0."""
        version, producer_id, first, last, last_stable = _ENTRY.unpack_from(data, position)
        if version != ABORTED_TXN_VERSION:
            raise CorruptIndexError(f"unexpected aborted transaction version {version}")
        return cls(producer_id, first, last, last_stable)


@dataclass(frozen=True, slots=True)
class TxnIndexSearchResult:
    """Kafka's ``TxnIndexSearchResult``: the entries overlapping a fetch range, and whether
    no later entry (in this segment or the next ones) can overlap it."""

    aborted_transactions: list[AbortedTxn]
    is_complete: bool


class TransactionIndex:
    """The ``.txnindex`` file of one segment; see the module docstring."""

    def __init__(self, path: Path, start_offset: int) -> None:
        self.path = path
        self.start_offset = start_offset
        self._entries: list[AbortedTxn] | None = None  # read from the file on first use
        self._last_offsets: list[int] = []  # of the entries, for bisecting
        self._fd: int | None = None  # opened on the first append

    def __repr__(self) -> str:
        return f"TransactionIndex({self.path})"

    # -- reading ------------------------------------------------------------------------

    def _load(self) -> list[AbortedTxn]:
        if self._entries is None:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            if len(data) % ABORTED_TXN_SIZE:
                raise CorruptIndexError(
                    f"{self.path}: size {len(data)} is not a multiple of {ABORTED_TXN_SIZE}"
                )
            self._entries = [
                AbortedTxn.decode(data, position)
                for position in range(0, len(data), ABORTED_TXN_SIZE)
            ]
            self._last_offsets = [txn.last_offset for txn in self._entries]
        return self._entries

    def all_aborted_txns(self) -> list[AbortedTxn]:
        """Every entry, in file order (Kafka's ``allAbortedTxns``)."""
        return list(self._load())

    def collect_aborted_txns(
        self, fetch_offset: int, upper_bound_offset: int
    ) -> TxnIndexSearchResult:
        """Entries whose transaction overlaps ``[fetch_offset, upper_bound_offset)``
        (Kafka's ``collectAbortedTxns``)."""
        entries = self._load()
        found: list[AbortedTxn] = []
        # Entries ending before the fetch offset neither overlap nor end the search (their
        # last stable offset is at most their last offset + 1): skip them.
        start = bisect.bisect_left(self._last_offsets, fetch_offset)
        for txn in entries[start:]:
            if txn.first_offset < upper_bound_offset:
                found.append(txn)
            if txn.last_stable_offset >= upper_bound_offset:
                return TxnIndexSearchResult(found, True)
        return TxnIndexSearchResult(found, False)

    def sanity_check(self, next_offset: int | None = None) -> None:
        """CorruptIndexError if the file is malformed, an entry precedes the segment
        (Kafka's check), entries do not increase, or one names an offset at or past
        ``next_offset`` (a log cut shorter than its index)."""
        previous = -1
        for txn in self._load():
            if txn.last_offset < self.start_offset:
                raise CorruptIndexError(
                    f"{self.path}: last offset {txn.last_offset} of an aborted transaction is "
                    f"below the segment base offset {self.start_offset}"
                )
            if txn.last_offset <= previous:
                raise CorruptIndexError(f"{self.path}: last offsets do not increase")
            if next_offset is not None and txn.last_offset >= next_offset:
                raise CorruptIndexError(
                    f"{self.path}: aborted transaction ending at {txn.last_offset} is past "
                    f"the segment's end {next_offset}"
                )
            previous = txn.last_offset

    # -- writing ------------------------------------------------------------------------

    def append(self, txn: AbortedTxn) -> None:
        """Add an entry (creating the file); ValueError unless its last offset increases."""
        entries = self._load()
        if entries and txn.last_offset <= entries[-1].last_offset:
            raise ValueError(
                f"the last offset of appended transactions must increase: {txn.last_offset} "
                f"after {entries[-1].last_offset} in {self.path}"
            )
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = txn.encode()
        written = os.write(self._fd, data)
        if written != len(data):  # a short write to a regular file: the disk is full
            os.ftruncate(self._fd, len(entries) * ABORTED_TXN_SIZE)
            raise OSError(f"short write to {self.path}")
        entries.append(txn)
        self._last_offsets.append(txn.last_offset)

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at or after ``offset`` (Kafka's ``truncateTo``)."""
        entries = self._load()
        keep = bisect.bisect_left(self._last_offsets, offset)
        if keep == len(entries):
            return
        del entries[keep:]
        del self._last_offsets[keep:]
        self._truncate_file(keep * ABORTED_TXN_SIZE)

    def reset(self) -> None:
        """Empty the index (recovery rebuilds it; Kafka's ``reset``)."""
        self._entries = []
        self._last_offsets = []
        self._truncate_file(0)

    def _truncate_file(self, size: int) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, size)
            return
        try:
            os.truncate(self.path, size)
        except FileNotFoundError:
            pass

    # -- lifecycle ----------------------------------------------------------------------

    def flush(self) -> None:
        """fsync the file, if there is one."""
        if self._fd is not None:
            os.fsync(self._fd)
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def rename_to(self, path: Path) -> None:
        """Rename the file (if it exists yet); an open descriptor stays valid."""
        try:
            os.rename(self.path, path)
        except FileNotFoundError:
            pass
        self.path = path
