"""Sparse timestamp -> offset index of one segment, after Kafka's ``TimeIndex``.

Mirrors ``org.apache.kafka.storage.internals.log.TimeIndex``: the ``.timeindex`` file
holds 12-byte entries ``(timestamp int64, relative offset uint32)``. An entry records
the largest timestamp seen so far in the segment and the offset of the batch carrying
it; entries are added together with offset index entries, and once more when the
segment becomes inactive (so the last entry is the segment's largest timestamp, which
time-based retention reads).

Invariant: timestamps strictly increase and offsets never decrease from entry to
entry. One slot is kept free for the final entry, so ``is_full`` triggers a roll one
entry early, as in Kafka.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from pykbroker.log.index import AbstractIndex, CorruptIndexError

__all__ = ["TimeIndex", "TimestampOffset"]

_ENTRY = struct.Struct(">qI")
_RELATIVE_OFFSET = struct.Struct(">I")

NO_TIMESTAMP = -1

TimestampOffset = tuple[int, int]
"""``(timestamp, offset)`` as returned by ``TimeIndex.lookup`` and ``last_entry``."""


class TimeIndex(AbstractIndex):
    """The ``.timeindex`` file of a ``LogSegment``."""

    ENTRY_SIZE: ClassVar[int] = 12
    _KEY: ClassVar[struct.Struct] = struct.Struct(">q")

    @property
    def is_full(self) -> bool:
        return self._entries >= self.max_entries - 1

    def entry(self, slot: int) -> TimestampOffset:
        timestamp, relative_offset = _ENTRY.unpack(self._entry_at(slot))
        return timestamp, self.base_offset + relative_offset

    @property
    def last_entry(self) -> TimestampOffset:
        """The last entry, or ``(-1, base_offset)`` when there is none."""
        if not self._entries:
            return NO_TIMESTAMP, self.base_offset
        return self.entry(self._entries - 1)

    def maybe_append(self, timestamp: int, offset: int, skip_full_check: bool = False) -> None:
        """Append ``(timestamp, offset)`` if ``timestamp`` beats the last entry."""
        if not skip_full_check and self.is_full:
            raise ValueError(f"time index {self.path} is full")
        if self._entries:
            last_timestamp, last_offset = self.last_entry
            if offset < last_offset:
                raise ValueError(f"offset {offset} is smaller than {last_offset} in {self.path}")
            if timestamp <= last_timestamp:
                return
        self._write_entry(_ENTRY.pack(timestamp, offset - self.base_offset))

    def lookup(self, target_timestamp: int) -> TimestampOffset:
        """The largest entry whose timestamp is <= target, else ``(-1, base_offset)``."""
        slot = self._upper_bound_slot(target_timestamp) - 1
        if slot < 0:
            return NO_TIMESTAMP, self.base_offset
        return self.entry(slot)

    def truncate_to(self, offset: int) -> None:
        """Remove every entry whose offset is >= ``offset`` (offsets never decrease)."""
        if not self._entries:
            return
        mm = self._mapping()
        relative = offset - self.base_offset
        low, high = 0, self._entries
        while low < high:
            middle = (low + high) // 2
            (entry_offset,) = _RELATIVE_OFFSET.unpack_from(mm, middle * self.ENTRY_SIZE + 8)
            if entry_offset < relative:
                low = middle + 1
            else:
                high = middle
        self.truncate_entries(low)

    def sanity_check(self, last_offset: int) -> None:
        """Raise CorruptIndexError unless entries are ordered and within the segment."""
        self.check_file_size()
        if not self._entries:
            return
        first_timestamp, first_offset = self.entry(0)
        last_timestamp, last_entry_offset = self.last_entry
        if (
            last_entry_offset > last_offset
            or (self._entries > 1 and last_timestamp <= first_timestamp)
            or last_entry_offset < first_offset
        ):
            raise CorruptIndexError(
                f"{self.path}: entries run from ({first_timestamp}, {first_offset}) to "
                f"({last_timestamp}, {last_entry_offset}); segment last offset {last_offset}"
            )
