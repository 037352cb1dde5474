"""Offset checkpoint files, after Kafka's ``OffsetCheckpointFile`` / ``CheckpointFile``.

Mirrors ``org.apache.kafka.storage.internals.checkpoint.OffsetCheckpointFile``: the text
format of ``recovery-point-offset-checkpoint``, ``log-start-offset-checkpoint`` and
``replication-offset-checkpoint``::

    0                      <- version
    2                      <- number of entries
    my-topic 0 1234        <- topic partition offset
    my-topic 1 5678

Invariant: a checkpoint file is replaced atomically (write a temp file, fsync, rename,
fsync the directory), so a reader sees either the old or the new content, never a mix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pykbroker.log import TopicPartition

__all__ = [
    "LOG_START_OFFSET_CHECKPOINT_FILE",
    "RECOVERY_POINT_CHECKPOINT_FILE",
    "REPLICATION_OFFSET_CHECKPOINT_FILE",
    "read_offset_checkpoint",
    "write_offset_checkpoint",
]

RECOVERY_POINT_CHECKPOINT_FILE = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT_FILE = "log-start-offset-checkpoint"
REPLICATION_OFFSET_CHECKPOINT_FILE = "replication-offset-checkpoint"
CHECKPOINT_VERSION = 0

logger = logging.getLogger(__name__)


def write_offset_checkpoint(
    path: Path, offsets: Mapping[TopicPartition, int] | Mapping[tuple[str, int], int]
) -> None:
    """Atomically replace ``path`` with ``offsets`` in Kafka's checkpoint format."""
    lines = [str(CHECKPOINT_VERSION), str(len(offsets))]
    lines.extend(f"{topic} {partition} {offset}" for (topic, partition), offset in offsets.items())
    data = ("\n".join(lines) + "\n").encode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_offset_checkpoint(path: Path) -> dict[TopicPartition, int]:
    """The offsets in ``path``; empty if it is missing or malformed (logged)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        return _parse(text)
    except ValueError as exc:
        logger.warning("ignoring malformed checkpoint file %s: %s", path, exc)
        return {}


def _parse(text: str) -> dict[TopicPartition, int]:
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError("missing version or count line")
    if int(lines[0]) != CHECKPOINT_VERSION:
        raise ValueError(f"unsupported version {lines[0]!r}")
    count = int(lines[1])
    entries = [line for line in lines[2:] if line.strip()]
    if count != len(entries):
        raise ValueError(f"expected {count} entries, found {len(entries)}")
    offsets: dict[TopicPartition, int] = {}
    for line in entries:
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"malformed line {line!r}")
        offsets[TopicPartition(parts[0], int(parts[1]))] = int(parts[2])
    return offsets
