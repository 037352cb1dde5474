"""All partition logs of a broker's ``log.dirs``, after Kafka's ``LogManager``.

Mirrors ``kafka.log.LogManager``: one directory ``<topic>-<partition>`` per hosted
partition under one of ``log.dirs``; startup loads them all, recovering unflushed
segments unless the previous run left the ``.kafka_cleanshutdown`` marker; the
``recovery-point-offset-checkpoint`` and ``log-start-offset-checkpoint`` files of each
log dir carry each log's recovery point and log start offset across restarts; deleted
logs are renamed ``<topic>-<partition>.<uuid>-delete`` before their files go. Retention
(``remove_expired_segments``) and checkpoints (``checkpoint_snapshot`` +
``write_checkpoints``) are split so the file work can run in a worker thread
(``log_tasks``); ``__cluster_metadata`` is exempt from retention and cleaning, as in
Kafka, where the raft layer owns it.

Invariant: the clean-shutdown marker exists only between a ``shutdown`` that flushed,
checkpointed and closed every log and the next ``startup``, which removes it. Not
thread-safe: call from one thread at a time (startup and shutdown may run in a worker
thread while nothing else touches the manager).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log import TopicPartition
from pykbroker.log.checkpoint import (
    LOG_START_OFFSET_CHECKPOINT_FILE,
    RECOVERY_POINT_CHECKPOINT_FILE,
    read_offset_checkpoint,
    write_offset_checkpoint,
)
from pykbroker.log.log import Log
from pykbroker.log.log_config import LogConfig
from pykbroker.log.producer_state import DEFAULT_PRODUCER_ID_EXPIRATION_MS
from pykbroker.log.segment import LogSegment

__all__ = [
    "CLEAN_SHUTDOWN_FILE",
    "METADATA_TOPIC",
    "LogManager",
    "parse_topic_partition_name",
    "write_checkpoints",
]

CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
DELETE_DIR_SUFFIX = "-delete"
METADATA_TOPIC = "__cluster_metadata"
_PARTITION_DIR = re.compile(r"^([a-zA-Z0-9._-]+)-(0|[1-9][0-9]*)$")

logger = logging.getLogger(__name__)


def parse_topic_partition_name(name: str) -> TopicPartition | None:
    """``"my-topic-3"`` -> ``TopicPartition("my-topic", 3)``; None for other names."""
    match = _PARTITION_DIR.match(name)
    if match is None:
        return None
    return TopicPartition(match.group(1), int(match.group(2)))


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


class LogManager:
    """Creates, loads, checkpoints and deletes the logs under ``log_dirs``."""

    def __init__(
        self,
        log_dirs: list[Path],
        default_config: LogConfig,
        *,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
    ) -> None:
        if not log_dirs:
            raise ValueError("log.dirs is empty")
        self.log_dirs = [Path(d) for d in log_dirs]
        self.default_config = default_config
        self._logs: dict[TopicPartition, Log] = {}
        self._log_dir_of: dict[TopicPartition, Path] = {}
        self._topic_configs: dict[str, LogConfig] = {}
        self._unclean_dirs: set[Path] = set()
        self._checkpointed_recovery_points: dict[TopicPartition, int] = {}
        self._inline_flush = True
        self.producer_id_expiration_ms = producer_id_expiration_ms

    # -- startup and shutdown -------------------------------------------------------------

    def startup(self, now_ms: int, topic_configs: Mapping[str, LogConfig] | None = None) -> None:
        """Load every partition directory of every log dir (Kafka's ``loadLogs``)."""
        if topic_configs:
            self._topic_configs.update(topic_configs)
        for log_dir in self.log_dirs:
            log_dir.mkdir(parents=True, exist_ok=True)
            marker = log_dir / CLEAN_SHUTDOWN_FILE
            clean = marker.exists()
            recovery_points = read_offset_checkpoint(log_dir / RECOVERY_POINT_CHECKPOINT_FILE)
            start_offsets = read_offset_checkpoint(log_dir / LOG_START_OFFSET_CHECKPOINT_FILE)
            if not clean:
                self._unclean_dirs.add(log_dir)
                self._checkpointed_recovery_points.update(recovery_points)
            for child in sorted(log_dir.iterdir()):
                if not child.is_dir():
                    continue
                if child.name.endswith(DELETE_DIR_SUFFIX):
                    shutil.rmtree(child, ignore_errors=True)  # a deletion cut short
                    continue
                tp = parse_topic_partition_name(child.name)
                if tp is None or tp.topic == METADATA_TOPIC:
                    continue  # the metadata log belongs to the raft layer, as in Kafka
                if tp in self._logs:
                    raise KafkaError(
                        ErrorCode.KAFKA_STORAGE_ERROR,
                        f"duplicate log directories for {tp}: {self._logs[tp].dir} and {child}",
                    )
                self._logs[tp] = Log.open(
                    child,
                    self._config_for(tp.topic),
                    recover=not clean,
                    now_ms=now_ms,
                    # no checkpoint: recover every segment, as Kafka (recovery point 0)
                    recovery_point=recovery_points.get(tp, 0),
                    log_start_offset=start_offsets.get(tp),
                    producer_id_expiration_ms=self.producer_id_expiration_ms,
                )
                self._logs[tp].inline_flush = self._inline_flush
                self._log_dir_of[tp] = log_dir
            if clean:
                marker.unlink()
            logger.info(
                "loaded logs of %s after %s shutdown", log_dir, "a clean" if clean else "an unclean"
            )

    @property
    def inline_flush(self) -> bool:
        """Whether logs fsync inline when ``flush.messages`` is reached (Kafka's way);
        False once a ``FlushCoordinator`` does it off the event loop."""
        return self._inline_flush

    @inline_flush.setter
    def inline_flush(self, value: bool) -> None:
        self._inline_flush = value
        for log in self._logs.values():
            log.inline_flush = value

    def shutdown(self) -> None:
        """Flush, checkpoint and close every log, then write the clean-shutdown markers."""
        for log in self._logs.values():
            log.flush()
        self.checkpoint()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        self._log_dir_of.clear()
        for log_dir in self.log_dirs:
            if log_dir.is_dir():
                _write_marker(log_dir / CLEAN_SHUTDOWN_FILE)

    # -- logs -----------------------------------------------------------------------

    def _config_for(self, topic: str) -> LogConfig:
        return self._topic_configs.get(topic, self.default_config)

    def get_log(self, topic: str, partition: int) -> Log | None:
        return self._logs.get(TopicPartition(topic, partition))

    def get_or_create_log(
        self, topic: str, partition: int, config: LogConfig | None = None, now_ms: int = 0
    ) -> Log:
        """The log of ``topic-partition``, created in the least loaded log dir if new."""
        tp = TopicPartition(topic, partition)
        log = self._logs.get(tp)
        if log is not None:
            if config is not None:
                log.config = config
            return log
        if parse_topic_partition_name(partition_dir_name(topic, partition)) != tp:
            raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"invalid topic name {topic!r}")
        existing = [d for d in self.log_dirs if (d / partition_dir_name(*tp)).is_dir()]
        log_dir = (existing or self.log_dirs)[0]
        if not existing:
            log_dir = min(
                self.log_dirs, key=lambda d: sum(1 for v in self._log_dir_of.values() if v == d)
            )
        # A directory startup skipped (the metadata log) is recovered like the others.
        log = Log.open(
            log_dir / partition_dir_name(topic, partition),
            config if config is not None else self._config_for(topic),
            recover=bool(existing) and log_dir in self._unclean_dirs,
            now_ms=now_ms,
            recovery_point=self._checkpointed_recovery_points.get(tp, 0),
            producer_id_expiration_ms=self.producer_id_expiration_ms,
        )
        log.inline_flush = self._inline_flush
        self._logs[tp] = log
        self._log_dir_of[tp] = log_dir
        return log

    def update_topic_config(self, topic: str, config: LogConfig) -> None:
        """Apply ``config`` to every log of ``topic`` and to its future partitions."""
        self._topic_configs[topic] = config
        for tp, log in self._logs.items():
            if tp.topic == topic:
                log.config = config

    def delete_log(self, topic: str, partition: int) -> bool:
        """Close the log, rename its dir ``<topic>-<partition>.<uuid>-delete``, remove it."""
        tp = TopicPartition(topic, partition)
        log = self._logs.pop(tp, None)
        self._log_dir_of.pop(tp, None)
        if log is None:
            return False
        log.close()
        doomed = log.dir.with_name(f"{tp}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}")
        try:
            log.dir.rename(doomed)
        except FileNotFoundError:
            return True
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def all_logs(self) -> dict[TopicPartition, Log]:
        return dict(self._logs)

    # -- background work ------------------------------------------------------------------

    def flush_all(self) -> None:
        for log in list(self._logs.values()):
            log.flush()

    def flush_dirty_logs(self, now_ms: int) -> int:
        """Flush logs whose ``flush.ms`` elapsed (Kafka's log flusher); return how many."""
        return sum(log.flush_if_due(now_ms) for log in list(self._logs.values()))

    def retained_logs(self) -> dict[TopicPartition, Log]:
        """The logs retention and the cleaner work on: all but ``__cluster_metadata``."""
        return {tp: log for tp, log in self._logs.items() if tp.topic != METADATA_TOPIC}

    def cleanup_logs(self, now_ms: int) -> int:
        """Apply retention to every log (Kafka's ``cleanupLogs``); return segments deleted."""
        removed = self.remove_expired_segments(now_ms)
        for segment in removed:
            segment.delete()
        return len(removed)

    def remove_expired_segments(self, now_ms: int) -> list[LogSegment]:
        """Retention without the unlinking: the segments removed from their logs, files
        renamed ``*.deleted``, for the caller to ``delete`` (in a worker thread)."""
        removed: list[LogSegment] = []
        for log in self.retained_logs().values():
            if not log.is_closed:
                removed.extend(log.remove_old_segments(now_ms))
                log.remove_expired_producers(now_ms)  # producer.id.expiration.ms
        return removed

    def checkpoint(self) -> None:
        """Write the recovery point and log start offset checkpoints of every log dir."""
        write_checkpoints(self.checkpoint_snapshot())

    def checkpoint_snapshot(
        self, *, recovery_points: bool = True, log_start_offsets: bool = True
    ) -> list[tuple[Path, dict[TopicPartition, int]]]:
        """The checkpoint files' contents, taken now, for ``write_checkpoints`` (which may
        run in a worker thread)."""
        snapshot: list[tuple[Path, dict[TopicPartition, int]]] = []
        for log_dir in self.log_dirs:
            in_dir = {tp: log for tp, log in self._logs.items() if self._log_dir_of[tp] == log_dir}
            if recovery_points:
                snapshot.append(
                    (
                        log_dir / RECOVERY_POINT_CHECKPOINT_FILE,
                        {tp: log.recovery_point for tp, log in in_dir.items()},
                    )
                )
            if log_start_offsets:
                snapshot.append(
                    (
                        log_dir / LOG_START_OFFSET_CHECKPOINT_FILE,
                        {tp: log.log_start_offset for tp, log in in_dir.items()},
                    )
                )
        return snapshot


def write_checkpoints(snapshot: list[tuple[Path, dict[TopicPartition, int]]]) -> None:
    """Write checkpoint files taken by ``LogManager.checkpoint_snapshot`` (thread-safe)."""
    for path, offsets in snapshot:
        if path.parent.is_dir():
            write_offset_checkpoint(path, offsets)


def _write_marker(path: Path) -> None:
    """Create an empty file durably (file and directory entry fsynced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
