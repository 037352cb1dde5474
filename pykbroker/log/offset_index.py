"""Sparse offset -> file position index of one segment, after Kafka's ``OffsetIndex``.

Mirrors ``org.apache.kafka.storage.internals.log.OffsetIndex``: the ``.index`` file
holds 8-byte entries ``(relative offset uint32, position uint32)``; relative offset is
``offset - base_offset``. One entry is added every ``index.interval.bytes`` of log;
the entry names a batch's last offset and the position of that batch.

Invariant: offsets and positions strictly increase from entry to entry, so
``lookup(target)`` (the largest entry <= target) gives a position at or before the
batch containing ``target``, from which a forward scan finds it.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from pykbroker.log.index import AbstractIndex, CorruptIndexError

__all__ = ["OffsetIndex", "OffsetPosition"]

_ENTRY = struct.Struct(">II")


OffsetPosition = tuple[int, int]
"""``(offset, position)`` as returned by ``OffsetIndex.lookup``."""


class OffsetIndex(AbstractIndex):
    """The ``.index`` file of a ``LogSegment``."""

    ENTRY_SIZE: ClassVar[int] = 8
    _KEY: ClassVar[struct.Struct] = struct.Struct(">I")

    def entry(self, slot: int) -> OffsetPosition:
        relative_offset, position = _ENTRY.unpack(self._entry_at(slot))
        return self.base_offset + relative_offset, position

    @property
    def last_offset(self) -> int:
        """Offset of the last entry, or the base offset when there is none."""
        return self.entry(self._entries - 1)[0] if self._entries else self.base_offset

    def append(self, offset: int, position: int) -> None:
        """Add ``(offset, position)``; offsets must grow (Kafka: InvalidOffsetException)."""
        if self._entries and offset <= self.last_offset:
            raise ValueError(
                f"offset {offset} is not larger than {self.last_offset} in {self.path}"
            )
        if self.is_full:
            raise ValueError(f"offset index {self.path} is full")
        self._write_entry(_ENTRY.pack(offset - self.base_offset, position))

    def lookup(self, target_offset: int) -> OffsetPosition:
        """The largest entry whose offset is <= ``target_offset``, else (base_offset, 0)."""
        relative = target_offset - self.base_offset
        if relative < 0:
            return self.base_offset, 0
        slot = self._upper_bound_slot(min(relative, 0xFFFFFFFF)) - 1
        if slot < 0:
            return self.base_offset, 0
        return self.entry(slot)

    def truncate_to(self, offset: int) -> None:
        """Remove every entry whose offset is >= ``offset``."""
        self.truncate_entries(self._lower_bound_slot(max(0, offset - self.base_offset)))

    def sanity_check(self, log_size: int) -> None:
        """Raise CorruptIndexError unless the entries look like this index wrote them.

        Stricter than Kafka's check so a zeroed or stale file is rebuilt: the first
        batch of a segment is never indexed, so no entry has position 0.
        """
        self.check_file_size()
        if not self._entries:
            return
        first_offset, first_position = self.entry(0)
        last_offset, last_position = self.entry(self._entries - 1)
        if (
            first_position <= 0
            or first_offset <= self.base_offset
            or last_position >= log_size
            or (
                self._entries > 1
                and (last_offset <= first_offset or last_position <= first_position)
            )
        ):
            raise CorruptIndexError(
                f"{self.path}: entries run from ({first_offset}, {first_position}) to "
                f"({last_offset}, {last_position}) with log size {log_size}"
            )
