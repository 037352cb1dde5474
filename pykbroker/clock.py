"""Time for the broker: the only module that reads the system clock.

``wall_clock_ms`` gives record timestamps (LogAppendTime, retention); timers inside trio use
``trio.current_time()`` so tests can run them on trio's MockClock.
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """Milliseconds since the epoch, as Kafka's ``Time.milliseconds()``."""
    return time.time_ns() // 1_000_000
