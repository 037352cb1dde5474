"""Memory-mapped sparse index file, after Kafka's ``AbstractIndex``.

Mirrors ``org.apache.kafka.storage.internals.log.AbstractIndex``: fixed-size entries
whose first field is a key that grows with the entry number, kept in a file that is
preallocated to ``segment.index.bytes`` and memory-mapped while its segment is
active, and trimmed to ``entries * entry_size`` when the segment rolls or closes.

Invariant: ``entries`` entries at the start of the file are valid and their keys are
non-decreasing; bytes after them are meaningless (zeros after a preallocation).
The mapping is created lazily, so an index that is never consulted holds no mapping
and no file descriptor. Not thread-safe.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import ClassVar

__all__ = ["AbstractIndex", "CorruptIndexError"]


class CorruptIndexError(Exception):
    """An index file fails its sanity check; the segment must rebuild it (Kafka's name)."""


class AbstractIndex:
    """Entries of ``ENTRY_SIZE`` bytes, binary-searchable by the key at byte 0."""

    ENTRY_SIZE: ClassVar[int]
    _KEY: ClassVar[struct.Struct]

    def __init__(self, path: Path, base_offset: int, max_index_size: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._max_entries = max(1, max_index_size // self.ENTRY_SIZE)
        try:
            self._file_size = path.stat().st_size
        except FileNotFoundError:
            path.touch()
            self._file_size = 0
        self._entries = self._file_size // self.ENTRY_SIZE
        self._mm: mmap.mmap | None = None

    # -- size and mapping -------------------------------------------------------------

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def is_full(self) -> bool:
        return self._entries >= self.max_entries

    @property
    def size_in_bytes(self) -> int:
        return self._entries * self.ENTRY_SIZE

    def _set_file_size(self, size: int) -> None:
        self._unmap()
        os.truncate(self.path, size)
        self._file_size = size

    def _unmap(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def _mapping(self) -> mmap.mmap:
        """The mapping of the whole file (the file must not be empty)."""
        if self._mm is None:
            with open(self.path, "r+b") as f:
                self._mm = mmap.mmap(f.fileno(), self._file_size)
        return self._mm

    def _mapping_for_append(self) -> mmap.mmap:
        """A mapping with room for one more entry, preallocating the file if needed."""
        needed = (self._entries + 1) * self.ENTRY_SIZE
        if self._file_size < needed:
            preallocated = self.max_entries * self.ENTRY_SIZE
            self._set_file_size(max(needed, preallocated))
        return self._mapping()

    def resize(self, max_index_size: int) -> None:
        """Preallocate the file for appends again (Kafka's ``resize`` on becoming active)."""
        self._max_entries = max(1, max_index_size // self.ENTRY_SIZE)
        size = max(self.max_entries * self.ENTRY_SIZE, self.size_in_bytes)
        if size != self._file_size:
            self._set_file_size(size)

    def trim_to_valid_size(self) -> None:
        """Cut the file to its valid entries and drop the mapping."""
        if self._file_size != self.size_in_bytes:
            self._set_file_size(self.size_in_bytes)
        else:
            self._unmap()

    # -- entries ----------------------------------------------------------------------

    def _write_entry(self, packed: bytes) -> None:
        mm = self._mapping_for_append()
        position = self._entries * self.ENTRY_SIZE
        mm[position : position + self.ENTRY_SIZE] = packed
        self._entries += 1

    def _entry_at(self, slot: int) -> bytes:
        position = slot * self.ENTRY_SIZE
        return self._mapping()[position : position + self.ENTRY_SIZE]

    def _key_at(self, mm: mmap.mmap, slot: int) -> int:
        key: int = self._KEY.unpack_from(mm, slot * self.ENTRY_SIZE)[0]
        return key

    def _upper_bound_slot(self, key: int) -> int:
        """Number of entries whose key is <= ``key`` (so the largest such slot + 1)."""
        if self._entries == 0:
            return 0
        mm = self._mapping()
        low, high = 0, self._entries
        while low < high:
            middle = (low + high) // 2
            if self._key_at(mm, middle) <= key:
                low = middle + 1
            else:
                high = middle
        return low

    def _lower_bound_slot(self, key: int) -> int:
        """Number of entries whose key is < ``key``."""
        if self._entries == 0:
            return 0
        mm = self._mapping()
        low, high = 0, self._entries
        while low < high:
            middle = (low + high) // 2
            if self._key_at(mm, middle) < key:
                low = middle + 1
            else:
                high = middle
        return low

    def truncate_entries(self, entries: int) -> None:
        """Keep only the first ``entries`` entries."""
        self._entries = min(self._entries, max(0, entries))

    def reset(self) -> None:
        """Drop every entry (recovery rebuilds the index from the log)."""
        self._entries = 0

    def flush(self) -> None:
        if self._mm is not None:
            self._mm.flush()

    def close(self) -> None:
        self.trim_to_valid_size()

    def close_mapping(self) -> None:
        """Drop the mapping without touching the file (the segment is going away)."""
        self._unmap()

    def rename_to(self, path: Path) -> None:
        os.rename(self.path, path)
        self.path = path

    def delete(self) -> None:
        self._unmap()
        self._entries = 0
        self.path.unlink(missing_ok=True)

    def check_file_size(self) -> None:
        if self._file_size % self.ENTRY_SIZE:
            raise CorruptIndexError(
                f"{self.path}: size {self._file_size} is not a multiple of {self.ENTRY_SIZE}"
            )
