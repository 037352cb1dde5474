"""TransactionMarkerChannelManager: the COMMIT/ABORT markers of a transaction, to every leader.

Kafka's ``TransactionMarkerChannelManager`` and ``TransactionMarkerRequestCompletionHandler``
for one transaction: each partition of the transaction is looked up in the metadata image.
A partition this broker leads gets its marker in-process (``markers.write_txn_markers``, the
WriteTxnMarkers handler's path, ``__consumer_offsets`` partitions through the local group
coordinator); the partitions of every other broker go to that broker's current leader as one
WriteTxnMarkers v1 request per broker (the endpoint is the broker's registration in the image,
sent through an ``InterBrokerClient``: one connection per destination broker, reused).
Partitions are retried, with an exponential backoff (``retry.backoff.ms`` up to
``retry.backoff.max.ms``), until their marker is acknowledged:

- NO_ERROR: done;
- UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS(_AFTER_APPEND),
  REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR, a broker that cannot be reached (NETWORK_EXCEPTION),
  a leader not known yet (offline partition, fenced or unregistered broker) and the local group
  coordinator loading (COORDINATOR_LOAD_IN_PROGRESS): retried, the leader looked up again;
- a partition no longer in the image (its topic was deleted): dropped, as Kafka skips it;
- UNSUPPORTED_FOR_MESSAGE_FORMAT, UNSUPPORTED_VERSION (and the errors Kafka treats as a bug:
  CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_REQUIRED_ACKS): the
  partition is dropped with a log line;
- INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED: the partition already has a marker of
  a newer producer or coordinator epoch; if this coordinator's epoch changed the sending is
  abandoned (Kafka's ``abortSending``), otherwise the partition is dropped;
- the local group coordinator stopping (COORDINATOR_NOT_AVAILABLE): abandoned, the
  transaction stays prepared and is resumed when the coordinators load again.

Before each round ``still_valid`` is asked (the coordinator epoch of the transactional id's
``__transaction_state`` partition is unchanged and this broker still leads it): if not, the
sending is abandoned, as Kafka does when the coordinator epoch changes. A round that finds
nothing left ends with COMPLETED; a sending still unfinished at its deadline ends with
TIMED_OUT (the coordinator resumes it on its next sweep, with the partitions still pending).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.metadata.image import MetadataImage

from .markers import GroupTransactionParticipant, write_txn_markers

__all__ = [
    "WRITE_TXN_MARKERS_VERSION",
    "InterBrokerClient",
    "MarkerOutcome",
    "TransactionMarkerChannelManager",
]

log = logging.getLogger(__name__)

#: Kafka 4.1 advertises WriteTxnMarkers v1 only.
WRITE_TXN_MARKERS_VERSION = 1
DEFAULT_RETRY_BACKOFF_MS = 100
DEFAULT_RETRY_BACKOFF_MAX_MS = 1_000
DEFAULT_DELIVERY_TIMEOUT_MS = 30_000

_RETRIABLE = frozenset(
    {
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.KAFKA_STORAGE_ERROR,
        ErrorCode.NETWORK_EXCEPTION,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.UNKNOWN_SERVER_ERROR,
    }
)
_DROPPED = frozenset(
    {
        ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.CORRUPT_MESSAGE,
        ErrorCode.MESSAGE_TOO_LARGE,
        ErrorCode.RECORD_LIST_TOO_LARGE,
        ErrorCode.INVALID_REQUIRED_ACKS,
    }
)
_FENCED = frozenset({ErrorCode.INVALID_PRODUCER_EPOCH, ErrorCode.TRANSACTION_COORDINATOR_FENCED})
#: Only from the local group coordinator: it is stopping.
_STOPPING = ErrorCode.COORDINATOR_NOT_AVAILABLE


class MarkerOutcome(enum.Enum):
    """How a sending of markers ended."""

    COMPLETED = "completed"  # every partition acknowledged (or dropped)
    ABANDONED = "abandoned"  # the coordinator epoch changed, or this broker is stopping
    TIMED_OUT = "timed out"  # partitions still pending at the deadline: resumed later


class InterBrokerClient(Protocol):
    """Requests to another broker's listener (one reused connection per broker); a broker that
    cannot be reached or does not answer in time raises ``KafkaError`` (NETWORK_EXCEPTION,
    REQUEST_TIMED_OUT)."""

    async def send(
        self, node_id: int, host: str, port: int, api_key: int, version: int, body: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def _marker_name(commit: bool) -> str:
    return "COMMIT" if commit else "ABORT"


class TransactionMarkerChannelManager:
    """Sends one transaction's markers to the leaders of its partitions until acknowledged."""

    def __init__(
        self,
        *,
        node_id: int,
        replica_manager: Any,
        group_coordinator: GroupTransactionParticipant | None,
        metadata: Callable[[], MetadataImage] | None,
        client: InterBrokerClient | None,
        clock: Callable[[], int],
        retry_backoff_ms: int = DEFAULT_RETRY_BACKOFF_MS,
        retry_backoff_max_ms: int = DEFAULT_RETRY_BACKOFF_MAX_MS,
        delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS,
    ) -> None:
        self.node_id = node_id
        self.replica_manager = replica_manager
        self.group_coordinator = group_coordinator
        self._metadata = metadata
        self.client = client
        self._clock = clock
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.delivery_timeout_ms = delivery_timeout_ms

    def image(self) -> MetadataImage | None:
        """The metadata image (None: no cluster view; every partition is this broker's)."""
        return self._metadata() if self._metadata is not None else None

    def leader_of(self, topic: str, partition: int) -> int | None:
        """The partition's leader id from the image (-1: none now); None when the partition is
        not in the image (deleted). Without an image, or before a topic exists in it while the
        image is empty, this broker."""
        image = self.image()
        if image is None:
            return self.node_id
        found = image.topics.get(topic)
        if found is None or partition not in found.partitions:
            return None
        return found.partitions[partition].leader

    def endpoint_of(self, node_id: int) -> tuple[str, int] | None:
        """A live broker's registered endpoint (None: unknown or fenced)."""
        image = self.image()
        broker = image.brokers.get(node_id) if image is not None else None
        if broker is None or broker.fenced or broker.port < 0:
            return None
        return broker.host, broker.port

    async def send_markers(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
        pending: set[tuple[str, int]],
        still_valid: Callable[[], bool],
    ) -> MarkerOutcome:
        """Write the marker on every partition of ``pending`` (acknowledged and dropped ones
        are removed from it, so a TIMED_OUT sending resumes with the rest)."""
        name = _marker_name(commit)
        deadline = trio.current_time() + self.delivery_timeout_ms / 1000
        backoff_ms = self.retry_backoff_ms
        attempt = 0
        while pending:  # bounded by the deadline (and ends on abandon)
            attempt += 1
            if not still_valid():
                log.info(
                    "%s markers of %r abandoned: the coordinator epoch %d is no longer current",
                    name,
                    transactional_id,
                    coordinator_epoch,
                )
                return MarkerOutcome.ABANDONED
            results = await self._send_round(
                transactional_id, producer_id, producer_epoch, coordinator_epoch, commit, pending
            )
            for tp, error in results.items():
                if error == ErrorCode.NO_ERROR:
                    pending.discard(tp)
                elif error == _STOPPING:
                    log.info(
                        "%s marker of %r on %s-%d: the group coordinator is stopping; the "
                        "transaction stays prepared",
                        name,
                        transactional_id,
                        *tp,
                    )
                    return MarkerOutcome.ABANDONED
                elif error in _FENCED:
                    if not still_valid():
                        return MarkerOutcome.ABANDONED
                    log.warning(
                        "%s marker of %r on %s-%d not written (%s): the partition has a newer "
                        "one, dropped",
                        name,
                        transactional_id,
                        *tp,
                        error.name,
                    )
                    pending.discard(tp)
                elif error in _DROPPED:
                    log.error(
                        "%s marker of %r on %s-%d failed with %s, dropped",
                        name,
                        transactional_id,
                        *tp,
                        error.name,
                    )
                    pending.discard(tp)
            if not pending:
                break
            now = trio.current_time()
            if now >= deadline:
                log.warning(
                    "%s markers of %r still pending on %s after %d attempts; resumed later",
                    name,
                    transactional_id,
                    _describe(pending),
                    attempt,
                )
                return MarkerOutcome.TIMED_OUT
            log.info(
                "%s markers of %r: retrying %s in %d ms (attempt %d: %s)",
                name,
                transactional_id,
                _describe(pending),
                backoff_ms,
                attempt,
                ", ".join(
                    f"{t}-{p}: {e.name}"
                    for (t, p), e in sorted(results.items())
                    if (t, p) in pending
                ),
            )
            await trio.sleep(min(backoff_ms / 1000, max(deadline - now, 0.0)))
            backoff_ms = min(backoff_ms * 2, self.retry_backoff_max_ms)
        return MarkerOutcome.COMPLETED

    async def _send_round(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
        pending: set[tuple[str, int]],
    ) -> dict[tuple[str, int], ErrorCode]:
        """One attempt at every pending partition: the error of each (partitions dropped
        because their topic is gone are removed from ``pending`` and not listed)."""
        results: dict[tuple[str, int], ErrorCode] = {}
        local: list[tuple[str, int]] = []
        remote: dict[int, list[tuple[str, int]]] = {}
        for tp in sorted(pending):
            leader = self.leader_of(*tp)
            if leader is None:
                log.info(
                    "%s marker of %r on %s-%d skipped: the partition no longer exists",
                    _marker_name(commit),
                    transactional_id,
                    *tp,
                )
                pending.discard(tp)
            elif leader == self.node_id:
                local.append(tp)
            elif leader < 0 or self.endpoint_of(leader) is None or self.client is None:
                results[tp] = ErrorCode.NOT_LEADER_OR_FOLLOWER  # no live leader known yet
            else:
                remote.setdefault(leader, []).append(tp)
        if local:
            results.update(
                await write_txn_markers(
                    self.replica_manager,
                    producer_id,
                    producer_epoch,
                    coordinator_epoch,
                    commit,
                    local,
                    self._clock(),
                    group_coordinator=self.group_coordinator,
                    translate_coordinator_errors=False,
                )
            )
            if self._metadata is None:
                # No image: the replica manager decides what exists; a partition it does not
                # have is gone (deleted), as a partition missing from the image.
                for tp in local:
                    if results.get(tp) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                        log.info(
                            "%s marker of %r on %s-%d skipped: the partition does not exist",
                            _marker_name(commit),
                            transactional_id,
                            *tp,
                        )
                        del results[tp]
                        pending.discard(tp)
        if remote:
            async with trio.open_nursery() as nursery:
                for node_id, partitions in remote.items():
                    nursery.start_soon(
                        self._send_to_broker,
                        node_id,
                        producer_id,
                        producer_epoch,
                        coordinator_epoch,
                        commit,
                        partitions,
                        results,
                    )
        return results

    async def _send_to_broker(
        self,
        node_id: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
        partitions: list[tuple[str, int]],
        results: dict[tuple[str, int], ErrorCode],
    ) -> None:
        """One WriteTxnMarkers request to one broker; the error of each of its partitions."""
        endpoint = self.endpoint_of(node_id)
        assert self.client is not None
        if endpoint is None:
            results.update(dict.fromkeys(partitions, ErrorCode.NOT_LEADER_OR_FOLLOWER))
            return
        by_topic: dict[str, list[int]] = {}
        for topic, partition in partitions:
            by_topic.setdefault(topic, []).append(partition)
        body = {
            "markers": [
                {
                    "producer_id": producer_id,
                    "producer_epoch": producer_epoch,
                    "transaction_result": commit,
                    "topics": [
                        {"name": t, "partition_indexes": p} for t, p in sorted(by_topic.items())
                    ],
                    "coordinator_epoch": coordinator_epoch,
                }
            ]
        }
        try:
            response = await self.client.send(
                node_id,
                *endpoint,
                ApiKey.WRITE_TXN_MARKERS,
                WRITE_TXN_MARKERS_VERSION,
                body,
            )
        except KafkaError as exc:
            log.info("WriteTxnMarkers to broker %d failed: %s", node_id, exc)
            results.update(dict.fromkeys(partitions, exc.code))
            return
        answered: dict[tuple[str, int], ErrorCode] = {}
        for marker in response.get("markers", []):
            if marker["producer_id"] != producer_id:
                continue
            for topic in marker["topics"]:
                for p in topic["partitions"]:
                    answered[(topic["name"], p["partition_index"])] = _error_code(p["error_code"])
        for tp in partitions:
            # A partition the response does not mention is retried.
            results[tp] = answered.get(tp, ErrorCode.REQUEST_TIMED_OUT)


def _error_code(code: int) -> ErrorCode:
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR


def _describe(partitions: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{t}-{p}" for t, p in sorted(partitions))
