"""The leader epoch cache of a partition and its ``leader-epoch-checkpoint`` file.

Mirrors Kafka's ``LeaderEpochFileCache`` and ``LeaderEpochCheckpointFile``
(``org.apache.kafka.storage.internals.epoch`` / ``.checkpoint``, KIP-101, KIP-279): an
ascending list of ``EpochEntry(epoch, start_offset)``, one per leader epoch that wrote to the
log, the start offset being the first offset the leader of that epoch appended. Both the
partition ``Log`` and the metadata log (``server.raft_log.KafkaReplicatedLog``) use it.

The checkpoint is Kafka's text format, replaced atomically (temp file + fsync + rename +
directory fsync)::

    0          <- version
    2          <- number of entries
    0 0        <- epoch start_offset
    3 1234

Operations, with Kafka's rules:

* ``assign(epoch, start_offset)``: nothing if the latest entry has the same epoch and a start
  offset at or below ``start_offset``; otherwise every entry with an epoch >= ``epoch`` or a
  start offset >= ``start_offset`` is removed (epochs and offsets stay strictly monotonic) and
  the entry appended;
* ``truncate_from_end(end_offset)``: entries starting at or past ``end_offset`` go (follower
  truncation); ``truncate_from_start(start_offset)``: entries starting at or below it go and
  the last of them comes back starting at ``start_offset`` (log start offset moves);
* ``end_offset_for(epoch, log_end_offset)``: ``(epoch, end offset)`` as Kafka's
  ``endOffsetFor`` answers OffsetForLeaderEpoch: the log end offset for the latest epoch, the
  start offset of the first greater epoch (with the greatest epoch <= the requested one)
  otherwise, the requested epoch and the first start offset below the first epoch, and
  ``(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`` for -1, for an epoch past the latest, or when
  the cache is empty.

Mutations only mark the cache dirty; the owner decides when the file is written: ``flush``
at once (the partition ``Log`` with inline flushing, as Kafka's ``assign`` does; the metadata
log on its flush), or ``write(sync=False)`` at once and ``checkpoint_snapshot`` + a synced
write in a worker thread + ``mark_written`` later (the ``Log``'s off-loop flush,
``log_flush.FlushSnapshot``).
A missing, unreadable or malformed file loads as "not there" (the owner rebuilds the cache
from its batch headers) where Kafka would take the log dir offline; an empty file counts as
malformed (Kafka reads it as no entries) so that a log with batches is never left without
epochs. Not implemented: Kafka's flush scheduler (the ``Log``'s flush rounds stand in for it)
and clearing the cache on a message-format downgrade (only v2 batches are accepted here).
Not thread-safe: only ``write_leader_epoch_checkpoint`` may run in another thread.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "LEADER_EPOCH_CHECKPOINT_FILE",
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "EpochEntry",
    "LeaderEpochFileCache",
    "read_leader_epoch_checkpoint",
    "write_file_atomically",
    "write_leader_epoch_checkpoint",
]

logger = logging.getLogger(__name__)

LEADER_EPOCH_CHECKPOINT_FILE = "leader-epoch-checkpoint"
#: Kafka's ``UNDEFINED_EPOCH`` / ``UNDEFINED_EPOCH_OFFSET`` (``EpochEndOffset``).
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1
_CHECKPOINT_VERSION = 0


class EpochEntry(NamedTuple):
    """Kafka's ``EpochEntry``: the first offset written by the leader of ``epoch``."""

    epoch: int
    start_offset: int


# --- the checkpoint file -------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(
    path: Path, data: bytes, tmp_suffix: str = ".tmp", *, sync: bool = True
) -> None:
    """Replace ``path`` with ``data``: write ``path + tmp_suffix``, fsync, rename, fsync dir.
    Without ``sync`` nothing is fsynced: the rename is atomic, not yet durable."""
    tmp = path.with_name(path.name + tmp_suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        _fsync_dir(path.parent)


def write_leader_epoch_checkpoint(
    path: Path, entries: Sequence[tuple[int, int]], tmp_suffix: str = ".tmp", *, sync: bool = True
) -> None:
    """Kafka's ``LeaderEpochCheckpointFile.write``: ``0``, count, ``epoch start_offset`` lines.
    Writers that may overlap (a flush thread, the owner's thread) use distinct ``tmp_suffix``."""
    lines = [str(_CHECKPOINT_VERSION), str(len(entries))]
    lines.extend(f"{epoch} {start}" for epoch, start in entries)
    write_file_atomically(path, ("\n".join(lines) + "\n").encode(), tmp_suffix, sync=sync)


def read_leader_epoch_checkpoint(path: Path) -> list[tuple[int, int]] | None:
    """The ``(epoch, start_offset)`` entries of ``path``; None if missing or malformed."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("ignoring unreadable leader epoch checkpoint %s: %s", path, exc)
        return None
    try:
        if len(lines) < 2 or int(lines[0]) != _CHECKPOINT_VERSION:
            raise ValueError("bad version or count line")
        count = int(lines[1])
        if count != len(lines) - 2:
            raise ValueError(f"expected {count} entries, found {len(lines) - 2}")
        entries: list[tuple[int, int]] = []
        for line in lines[2:]:
            epoch_text, offset_text = line.split()
            entries.append((int(epoch_text), int(offset_text)))
    except ValueError as exc:
        logger.warning("ignoring malformed leader epoch checkpoint %s: %s", path, exc)
        return None
    if any(epoch < 0 or start < 0 for epoch, start in entries):
        logger.warning("ignoring leader epoch checkpoint %s: negative entries", path)
        return None
    for (e1, o1), (e2, o2) in itertools.pairwise(entries):
        if e2 <= e1 or o2 < o1:
            logger.warning("ignoring leader epoch checkpoint %s: entries out of order", path)
            return None
    return entries


# --- the cache -----------------------------------------------------------------------------


class LeaderEpochFileCache:
    """Kafka's ``LeaderEpochFileCache`` over the checkpoint at ``checkpoint_path``; see the
    module docstring. ``load`` reads the file; the constructor starts from ``entries``."""

    def __init__(self, checkpoint_path: Path, entries: Iterable[tuple[int, int]] = ()) -> None:
        self.checkpoint_path = checkpoint_path
        self._entries: list[EpochEntry] = [EpochEntry(e, s) for e, s in entries]
        self._version = 0  # bumped by every change
        self._written_version = 0  # the version the file holds

    @classmethod
    def load(cls, checkpoint_path: Path) -> tuple[LeaderEpochFileCache, bool]:
        """The cache as the file holds it, and whether the file was there and well formed
        (False: the cache is empty and its owner rebuilds it from the batch headers)."""
        loaded = read_leader_epoch_checkpoint(checkpoint_path)
        cache = cls(checkpoint_path, loaded or ())
        return cache, loaded is not None

    # --- reading -----------------------------------------------------------------------------

    @property
    def entries(self) -> Sequence[EpochEntry]:
        """The entries, ascending by epoch and start offset (do not mutate)."""
        return self._entries

    @property
    def dirty(self) -> bool:
        """The cache changed since the file was last written."""
        return self._version != self._written_version

    def _changed(self) -> None:
        self._version += 1

    def __len__(self) -> int:
        return len(self._entries)

    def latest_entry(self) -> EpochEntry | None:
        return self._entries[-1] if self._entries else None

    def latest_epoch(self) -> int | None:
        return self._entries[-1].epoch if self._entries else None

    def earliest_entry(self) -> EpochEntry | None:
        return self._entries[0] if self._entries else None

    def epoch_for_offset(self, offset: int) -> int | None:
        """Kafka's ``epochForOffset``: the epoch of the entry covering ``offset``."""
        index = bisect.bisect_right([e.start_offset for e in self._entries], offset) - 1
        return self._entries[index].epoch if index >= 0 else None

    def previous_epoch(self, epoch: int) -> int | None:
        """Kafka's ``previousEpoch``: the greatest cached epoch below ``epoch``."""
        lower = [e.epoch for e in self._entries if e.epoch < epoch]
        return lower[-1] if lower else None

    def next_epoch(self, epoch: int) -> int | None:
        """Kafka's ``nextEpoch``: the smallest cached epoch above ``epoch``."""
        return next((e.epoch for e in self._entries if e.epoch > epoch), None)

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's ``endOffsetFor``: ``(epoch, end_offset)``; see the module docstring."""
        entries = self._entries
        if requested_epoch == UNDEFINED_EPOCH or not entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if entries[-1].epoch == requested_epoch:
            return requested_epoch, log_end_offset
        epochs = [e.epoch for e in entries]
        higher = bisect.bisect_right(epochs, requested_epoch)
        if higher == len(entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if higher == 0:
            return requested_epoch, entries[0].start_offset
        return entries[higher - 1].epoch, entries[higher].start_offset

    # --- changes -----------------------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Kafka's ``assign``; True if the cache changed. ValueError for negative values."""
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"invalid leader epoch entry ({epoch}, {start_offset})")
        latest = self.latest_entry()
        if latest is not None and latest.epoch == epoch and latest.start_offset <= start_offset:
            return False
        entries = self._entries
        while entries and (entries[-1].epoch >= epoch or entries[-1].start_offset >= start_offset):
            removed = entries.pop()
            if removed.start_offset != start_offset:
                logger.warning(
                    "%s: new entry (%d, %d) removes the non-monotonic entry %s",
                    self.checkpoint_path,
                    epoch,
                    start_offset,
                    removed,
                )
        entries.append(EpochEntry(epoch, start_offset))
        self._changed()
        return True

    def truncate_from_end(self, end_offset: int) -> bool:
        """Kafka's ``truncateFromEnd``: drop the entries starting at or past ``end_offset``
        (nothing for a negative offset); True if the cache changed."""
        entries = self._entries
        if end_offset < 0 or not entries or entries[-1].start_offset < end_offset:
            return False
        while entries and entries[-1].start_offset >= end_offset:
            entries.pop()
        self._changed()
        return True

    def truncate_from_start(self, start_offset: int) -> bool:
        """Kafka's ``truncateFromStart``: the entries starting at or below ``start_offset`` go
        and the last of them comes back starting there; True if the cache changed."""
        entries = self._entries
        removed = bisect.bisect_right([e.start_offset for e in entries], start_offset)
        if removed == 0:
            return False
        first = EpochEntry(entries[removed - 1].epoch, start_offset)
        changed = removed > 1 or entries[0] != first
        entries[:removed] = [first]
        if changed:
            self._changed()
        return changed

    def clear(self) -> None:
        """Kafka's ``clear`` (``clearAndFlush`` is ``clear`` then ``flush``)."""
        self._entries.clear()
        self._changed()

    # --- the file ------------------------------------------------------------------------------

    def flush(self) -> bool:
        """Write the checkpoint if the cache changed since the last write; True if written."""
        if not self.dirty:
            return False
        self.write()
        return True

    def write(self, *, sync: bool = True) -> None:
        """Write the checkpoint now (atomically, fsynced). Without ``sync`` the file is
        replaced but not fsynced, so the cache stays dirty until a synced write."""
        write_leader_epoch_checkpoint(self.checkpoint_path, self._entries, sync=sync)
        if sync:
            self._written_version = self._version

    def checkpoint_snapshot(self) -> tuple[int, list[EpochEntry]]:
        """``(version, entries)`` to write from another thread (``write_leader_epoch_checkpoint``
        to ``checkpoint_path``), then ``mark_written(version)`` back on the owner's thread."""
        return self._version, list(self._entries)

    def mark_written(self, version: int) -> None:
        """The file now holds the cache as it was at ``version`` (``checkpoint_snapshot``)."""
        self._written_version = max(self._written_version, version)

    def __repr__(self) -> str:
        entries = ", ".join(f"({e.epoch}, {e.start_offset})" for e in self._entries)
        return f"LeaderEpochFileCache({self.checkpoint_path.parent.name}: [{entries}])"
