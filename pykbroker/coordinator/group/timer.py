"""Keyed timers for the pure coordinator core (Kafka's ``CoordinatorTimer``).

``schedule(key, deadline_ms, action)`` replaces any timer under the same key; ``cancel(key)``
drops it; ``poll(now_ms)`` pops the actions that are due, earliest first. No clock is read:
the driver asks ``next_deadline()`` and calls back when that time has come. Stale heap entries
are skipped lazily (each key keeps a sequence number), so rescheduling on every heartbeat is
O(log n).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Timer(Generic[T]):
    """Timers keyed by any hashable; actions return a ``T`` when run."""

    def __init__(self) -> None:
        self._seq = 0
        self._heap: list[tuple[int, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, int, Callable[[], T]]] = {}

    def schedule(self, key: Hashable, deadline_ms: int, action: Callable[[], T]) -> None:
        self._seq += 1
        self._live[key] = (deadline_ms, self._seq, action)
        heapq.heappush(self._heap, (deadline_ms, self._seq, key))

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def cancel_all(self) -> None:
        self._live.clear()
        self._heap.clear()

    def is_scheduled(self, key: Hashable) -> bool:
        return key in self._live

    def deadline(self, key: Hashable) -> int | None:
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def _drop_stale(self) -> None:
        while self._heap:
            _, seq, key = self._heap[0]
            live = self._live.get(key)
            if live is not None and live[1] == seq:
                return
            heapq.heappop(self._heap)

    def next_deadline(self) -> int | None:
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> Callable[[], T] | None:
        """Remove and return the earliest action due at ``now_ms``, or None."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now_ms:
            return None
        _, _, key = heapq.heappop(self._heap)
        _, _, action = self._live.pop(key)
        return action

    def __len__(self) -> int:
        return len(self._live)
