"""The storage engine's trio drivers: group-commit fsync and the background tasks.

Mirrors the scheduled tasks of Kafka's ``LogManager`` (``kafka-log-retention``,
``kafka-log-flusher``, ``kafka-recovery-point-checkpoint``,
``kafka-log-start-offset-checkpoint``) and the ``LogCleaner`` thread, as trio tasks for
the broker's nursery:

- ``retention_loop``: every ``log.retention.check.interval.ms`` apply retention
  (``retention.ms`` / ``retention.bytes`` / below the log start offset), then delete the
  removed segments' files and write ``log-start-offset-checkpoint`` in a worker thread;
- ``flush_loop``: flush logs whose ``flush.ms`` elapsed, that reached
  ``flush.messages``, or that rolled a segment since their last flush (Kafka flushes a
  rolled segment and the producer snapshot written at the roll at once, in the background);
- ``checkpoint_loop``: write ``recovery-point-offset-checkpoint`` and
  ``log-start-offset-checkpoint`` every ``log.flush.offset.checkpoint.interval.ms`` /
  ``log.flush.start.offset.checkpoint.interval.ms``;
- ``cleaner_loop``: compaction rounds (``cleaner.LogCleaner``), sleeping
  ``log.cleaner.backoff.ms`` when no log is dirty enough.

``FlushCoordinator`` is the strict-durability path: a produce whose log reached
``flush.messages`` (``flush.messages=1``: every produce) awaits ``flush_up_to`` before it
is acknowledged, and concurrent callers share one fsync (group commit).

Invariant: nothing here blocks the event loop on the disk — every fsync, unlink,
checkpoint write and cleaning pass runs in ``trio.to_thread.run_sync``; the in-memory
changes (segment lists, offsets) happen on the trio thread. A failing round is logged and
retried at the next tick; cancellation is never swallowed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.log.checkpoint import write_offset_checkpoint
from pykbroker.log.cleaner import CleaningResult, LogCleaner, clean
from pykbroker.log.log import Log
from pykbroker.log.log_manager import LogManager, write_checkpoints
from pykbroker.log.segment import LogSegment

__all__ = [
    "FlushCoordinator",
    "checkpoint_loop",
    "cleaner_loop",
    "flush_loop",
    "retention_loop",
    "run_cleaner_once",
    "run_retention",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], int]


class FlushCoordinator:
    """Group commit: ``await flush_up_to(log, offset)`` returns once everything below
    ``offset`` is fsynced; while one fsync of a log runs, later callers wait for it and
    then share the next one, so N concurrent producers cost about two fsyncs, not N."""

    def __init__(self, clock: Clock = wall_clock_ms) -> None:
        self._clock = clock
        self._running: dict[Log, trio.Event] = {}
        self.fsync_rounds = 0

    @staticmethod
    def must_wait(log: Log, next_offset: int) -> bool:
        """Whether an append ending before ``next_offset`` waits for fsync before its
        acknowledgement: ``flush.messages`` or more are unflushed up to it (Kafka flushes
        inline then)."""
        unflushed = next_offset - log.recovery_point
        return unflushed > 0 and unflushed >= log.config.flush_messages

    async def flush_if_needed(self, log: Log, next_offset: int) -> None:
        if self.must_wait(log, next_offset):
            await self.flush_up_to(log, next_offset)

    async def flush_appended(self, appended: Iterable[tuple[Log, int]]) -> None:
        """``flush_if_needed`` for each ``(log, log end offset after the append)`` of a
        produce request, concurrently."""
        waits = [(log, offset) for log, offset in appended if self.must_wait(log, offset)]
        if len(waits) == 1:
            await self.flush_up_to(*waits[0])
            return
        async with trio.open_nursery() as nursery:
            for log, offset in waits:
                nursery.start_soon(self.flush_up_to, log, offset)

    async def flush_up_to(self, log: Log, offset: int, *, exact: bool = False) -> None:
        """Return when ``log.recovery_point >= offset`` and its leader epoch checkpoint and
        roll-time producer snapshots are durable (``Log.flush_files_pending``);
        KAFKA_STORAGE_ERROR if the log closes first or the fsync fails (as Kafka takes the
        log dir offline). Each round flushes the whole log (so waiting producers share it)
        unless ``exact``: then only below ``offset`` (a rolled segment, not the active one)."""
        while log.recovery_point < offset or log.flush_files_pending:
            if log.is_closed:
                raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"{log.dir.name} closed")
            running = self._running.get(log)
            if running is not None:
                await running.wait()
                continue
            snapshot = log.flush_snapshot(offset if exact else None)
            if snapshot is None:
                return
            done = trio.Event()
            self._running[log] = done
            try:
                await trio.to_thread.run_sync(snapshot.fsync)
                log.complete_flush(snapshot, self._clock())
                self.fsync_rounds += 1
            except OSError as exc:
                logger.exception("fsync of %s failed", log.dir)
                raise KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, str(exc)) from exc
            finally:
                del self._running[log]
                done.set()


# -- retention ------------------------------------------------------------------------------


def _delete_segments(segments: list[LogSegment]) -> None:
    for segment in segments:
        segment.delete()


async def run_retention(log_manager: LogManager, now_ms: int) -> int:
    """One retention pass (Kafka's ``cleanupLogs``); returns the segments deleted."""
    removed = log_manager.remove_expired_segments(now_ms)
    if removed:
        snapshot = log_manager.checkpoint_snapshot(recovery_points=False)

        def work() -> None:
            _delete_segments(removed)
            write_checkpoints(snapshot)

        await trio.to_thread.run_sync(work)
        logger.info("retention deleted %d segment(s)", len(removed))
    return len(removed)


async def retention_loop(
    log_manager: LogManager,
    interval_ms: int = 300_000,
    clock: Clock = wall_clock_ms,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``log.retention.check.interval.ms``, ``run_retention``."""
    task_status.started()
    while True:
        await trio.sleep(interval_ms / 1000)
        try:
            await run_retention(log_manager, clock())
        except Exception:
            logger.exception("log retention failed; retrying in %d ms", interval_ms)


# -- flushing and checkpoints -----------------------------------------------------------------


def _flush_wanted(log: Log, now_ms: int) -> tuple[int, bool] | None:
    """``(offset, exact)`` for ``flush_up_to``: the whole log when ``flush.ms`` /
    ``flush.messages`` say so, else only the segments before the active one after a roll
    (with the producer snapshot the roll wrote unsynced); None when nothing is due."""
    if log.is_closed:
        return None
    if log.flush_due(now_ms):
        return log.log_end_offset, False
    active_base = log.active_segment.base_offset
    if log.recovery_point < active_base or log.flush_files_pending:
        return active_base, True
    return None


async def flush_loop(
    log_manager: LogManager,
    flusher: FlushCoordinator,
    interval_ms: int = 1000,
    clock: Clock = wall_clock_ms,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval_ms`` flush the logs that ``flush.ms``/``flush.messages`` or a
    segment roll say need it. Sets ``log_manager.inline_flush = False``: from now on
    ``flush.messages`` fsyncs happen here or in ``FlushCoordinator`` callers, never on
    the event loop."""
    log_manager.inline_flush = False
    task_status.started()
    try:
        while True:
            await trio.sleep(interval_ms / 1000)
            now_ms = clock()
            for log in list(log_manager.all_logs().values()):
                wanted = _flush_wanted(log, now_ms)
                if wanted is None:
                    continue
                try:
                    await flusher.flush_up_to(log, wanted[0], exact=wanted[1])
                except KafkaError:
                    logger.exception("background flush of %s failed", log.dir)
    finally:
        log_manager.inline_flush = True


async def checkpoint_loop(
    log_manager: LogManager,
    recovery_point_interval_ms: int = 60_000,
    log_start_offset_interval_ms: int = 60_000,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write the recovery point and log start offset checkpoints on their schedules."""
    task_status.started()
    now = trio.current_time()
    next_recovery = now + recovery_point_interval_ms / 1000
    next_start = now + log_start_offset_interval_ms / 1000
    while True:
        await trio.sleep_until(min(next_recovery, next_start))
        now = trio.current_time()
        recovery_due, start_due = now >= next_recovery, now >= next_start
        snapshot = log_manager.checkpoint_snapshot(
            recovery_points=recovery_due, log_start_offsets=start_due
        )
        try:
            await trio.to_thread.run_sync(write_checkpoints, snapshot)
        except OSError:
            logger.exception("writing offset checkpoints failed")
        if recovery_due:
            next_recovery = now + recovery_point_interval_ms / 1000
        if start_due:
            next_start = now + log_start_offset_interval_ms / 1000


# -- compaction -----------------------------------------------------------------------------


async def run_cleaner_once(cleaner: LogCleaner, now_ms: int) -> bool:
    """One compaction round on the filthiest log; False when no log was due."""
    plan = cleaner.plan(now_ms)
    if plan is None:
        return False
    finished: list[CleaningResult] = []

    def clean_in_thread() -> CleaningResult:
        finished.append(clean(plan))
        return finished[0]

    try:
        result = await trio.to_thread.run_sync(clean_in_thread)
    except BaseException:
        for unused in finished:  # cancelled while the thread finished: drop its files
            unused.discard()
        raise
    finally:
        plan.close()
    try:
        replaced = cleaner.install(plan, result)
    finally:
        result.discard()  # anything not swapped in
    path, offsets = cleaner.checkpoint_snapshot(plan.log.dir.parent)

    def work() -> None:
        _delete_segments(replaced)
        write_offset_checkpoint(path, offsets)

    await trio.to_thread.run_sync(work)
    stats = result.stats
    logger.info(
        "cleaned %s up to offset %d: %d bytes read, %d written, %d records removed",
        plan.tp,
        result.end_offset,
        stats.bytes_read,
        stats.bytes_written,
        stats.records_removed,
    )
    return True


async def cleaner_loop(
    cleaner: LogCleaner,
    backoff_ms: int = 15_000,
    clock: Clock = wall_clock_ms,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Clean logs one after another; sleep ``log.cleaner.backoff.ms`` when none is due."""
    task_status.started()
    while True:
        try:
            cleaned = await run_cleaner_once(cleaner, clock())
        except Exception:
            logger.exception("log cleaning failed; retrying in %d ms", backoff_ms)
            cleaned = False
        if cleaned:
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep(backoff_ms / 1000)
