"""RequestManager: at most one outbound request per destination, timeouts and retry backoff.

Mirrors Kafka's ``org.apache.kafka.raft.RequestManager``. Invariant: a response is acted on only
if it answers the one request in flight to its source (same correlation id); anything else -- a
duplicate, a late answer to a timed-out request, an answer from before a state transition
(``reset_all``) -- is ignored.
"""

from __future__ import annotations

from .config import QuorumConfig


class RequestManager:
    """In-flight requests by destination node."""

    def __init__(self, config: QuorumConfig) -> None:
        self._request_timeout_ms = config.controller_quorum_request_timeout_ms
        self._retry_backoff_ms = config.controller_quorum_retry_backoff_ms
        self._inflight: dict[int, tuple[int, int]] = {}  # node -> (correlation id, deadline)
        self._backoff_until: dict[int, int] = {}

    def is_ready(self, node: int, now_ms: int) -> bool:
        """No request in flight to ``node`` and not backing off from a failure."""
        self._expire(node, now_ms)
        if node in self._inflight:
            return False
        until = self._backoff_until.get(node)
        return until is None or now_ms >= until

    def has_inflight(self, node: int, now_ms: int) -> bool:
        self._expire(node, now_ms)
        return node in self._inflight

    def _expire(self, node: int, now_ms: int) -> None:
        inflight = self._inflight.get(node)
        if inflight is not None and now_ms >= inflight[1]:
            del self._inflight[node]
            self._backoff_until[node] = now_ms + self._retry_backoff_ms

    def on_request_sent(self, node: int, correlation_id: int, now_ms: int) -> None:
        self._inflight[node] = (correlation_id, now_ms + self._request_timeout_ms)
        self._backoff_until.pop(node, None)

    def is_response_expected(self, node: int, correlation_id: int) -> bool:
        inflight = self._inflight.get(node)
        return inflight is not None and inflight[0] == correlation_id

    def on_response(self, node: int, success: bool, now_ms: int) -> None:
        """The in-flight request to ``node`` completed; back off before retrying a failure."""
        self._inflight.pop(node, None)
        if success:
            self._backoff_until.pop(node, None)
        else:
            self._backoff_until[node] = now_ms + self._retry_backoff_ms

    def reset_all(self) -> None:
        """Forget every request (on a state transition: old answers no longer matter)."""
        self._inflight.clear()
        self._backoff_until.clear()

    def next_deadline_ms(self, now_ms: int) -> int | None:
        """When a timeout or a backoff next ends (to schedule the next tick)."""
        for node in [n for n, until in self._backoff_until.items() if until <= now_ms]:
            del self._backoff_until[node]
        deadlines = [d for _, d in self._inflight.values()]
        deadlines.extend(self._backoff_until.values())
        return min(deadlines) if deadlines else None
