"""Flushing a log from a worker thread: the handles an fsync needs, taken on the trio thread.

Kafka's ``UnifiedLog.flush`` runs on the request handler or the scheduler's thread; here
the event loop must never wait for the disk, so a flush has three steps: ``Log.flush_snapshot``
(trio thread: duplicate the descriptors of the segments at or after the recovery point),
``FlushSnapshot.fsync`` (any thread) and ``Log.complete_flush`` (trio thread: move the
recovery point). ``log_tasks.FlushCoordinator`` drives them with group commit.

Invariant: a snapshot owns its duplicated descriptors and closes them exactly once, so the
log may close, roll or delete segments while an fsync runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FlushSnapshot"]


@dataclass(slots=True)
class FlushSnapshot:
    """Duplicated descriptors of the segments a flush must fsync, taken on the trio
    thread; ``fsync`` is safe in a worker thread even if the log closes meanwhile."""

    log_end_offset: int
    truncations: int
    handles: list[tuple[int, list[Path]]]

    def fsync(self) -> None:
        """fsync each log file and its index files (written through mmap), then close
        the duplicated descriptors. Index files deleted meanwhile are skipped."""
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
