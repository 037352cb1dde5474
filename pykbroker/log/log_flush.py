"""Flushing a log from a worker thread: the handles an fsync needs, taken on the trio thread.

Kafka's ``UnifiedLog.flush`` runs on the request handler or the scheduler's thread; here
the event loop must never wait for the disk, so a flush has three steps: ``Log.flush_snapshot``
(trio thread: duplicate the descriptors of the segments at or after the recovery point),
``FlushSnapshot.fsync`` (any thread) and ``Log.complete_flush`` (trio thread: move the
recovery point). ``log_tasks.FlushCoordinator`` drives them with group commit. A changed
leader epoch cache rides along: ``fsync`` also rewrites the ``leader-epoch-checkpoint``; so do
the producer state snapshots a roll wrote without fsync (Kafka's ``takeSnapshot(false)`` then
``flushProducerStateSnapshot`` in the scheduler): ``fsync`` syncs them and their directory.

Invariant: a snapshot owns its duplicated descriptors and closes them exactly once, so the
log may close, roll or delete segments while an fsync runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    #: producer state snapshot files written without fsync (at roll), to fsync
    producer_snapshots: list[Path] = field(default_factory=list)

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
        if self.producer_snapshots:
            _fsync_files_and_dir(self.producer_snapshots)
        if self.epoch_checkpoint is not None:
            path, _, entries = self.epoch_checkpoint
            if path.parent.is_dir():
                write_leader_epoch_checkpoint(path, entries, ".flush.tmp")


def _fsync_files_and_dir(paths: list[Path]) -> None:
    """fsync each file that still exists (truncation or retention may have deleted it), then
    their directory so the renames that created them are durable too."""
    synced = False
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        synced = True
    if not synced:
        return
    try:
        dir_fd = os.open(paths[0].parent, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
