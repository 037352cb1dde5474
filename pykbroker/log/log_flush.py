"""Flushing a log from a worker thread: the handles an fsync needs, taken on the trio thread.

Kafka's ``UnifiedLog.flush`` runs on the request handler or the scheduler's thread; here
the event loop must never wait for the disk, so a flush has three steps: ``Log.flush_snapshot``
(trio thread: duplicate the descriptors of the segments at or after the recovery point),
``FlushSnapshot.fsync`` (any thread) and ``Log.complete_flush`` (trio thread: move the
recovery point). ``log_tasks.FlushCoordinator`` drives them with group commit. A changed
leader epoch cache rides along: ``fsync`` also rewrites the ``leader-epoch-checkpoint``.

Invariant: a snapshot owns its duplicated descriptors and closes them exactly once, so the
log may close, roll or delete segments while an fsync runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pykbroker.log.leader_epoch_cache import EpochEntry, write_leader_epoch_checkpoint

__all__ = ["FlushSnapshot"]


@dataclass(slots=True)
class FlushSnapshot:
    """Duplicated descriptors of the segments a flush must fsync, taken on the trio
    thread; ``fsync`` is safe in a worker thread even if the log closes meanwhile."""

    log_end_offset: int
    truncations: int
    handles: list[tuple[int, list[Path]]]
    #: ``(path, cache version, entries)`` of a leader epoch checkpoint to rewrite, if changed
    epoch_checkpoint: tuple[Path, int, list[EpochEntry]] | None = None

    def fsync(self) -> None:
        """fsync each log file and its index files (written through mmap), then close
        the duplicated descriptors. Index files deleted meanwhile are skipped. Then the
        leader epoch checkpoint is rewritten (unless its directory went away)."""
        try:
            for fd, index_paths in self.handles:
                os.fsync(fd)
                for path in index_paths:
                    try:
                        index_fd = os.open(path, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
                    try:
                        os.fsync(index_fd)
                    finally:
                        os.close(index_fd)
        finally:
            for fd, _ in self.handles:
                os.close(fd)
            self.handles = []
        if self.epoch_checkpoint is not None:
            path, _, entries = self.epoch_checkpoint
            if path.parent.is_dir():
                write_leader_epoch_checkpoint(path, entries, ".flush.tmp")
