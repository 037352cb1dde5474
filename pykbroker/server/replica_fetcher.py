"""Replica fetchers: followers copy their leaders' logs (Kafka's ReplicaFetcherManager and
ReplicaFetcherThread, with the KIP-101/KIP-279 truncation of AbstractFetcherThread).

``ReplicaFetcherManager`` follows ``ReplicaManager.followed_partitions()`` after every metadata
image: one ``ReplicaFetcher`` trio task per source broker (the partition's leader), fetching
from that broker's registered inter-broker endpoint (its PLAINTEXT listener in the image). A
partition that changes leader or leader epoch is moved/re-added in the *truncating* state; one
that this broker now leads (or no longer hosts) is removed, and a fetcher left without
partitions is stopped (Kafka's ``shutdownIdleFetcherThreads``). A response for a partition whose
fetch state changed meanwhile is dropped.

Truncation (Kafka's ``truncateToEpochEndOffsets`` / ``getOffsetTruncationState``): the
follower sends OffsetForLeaderEpoch (v4, its replica id, the current leader epoch) for the
latest epoch of its leader epoch cache and truncates to min(the answer's end offset, its own end
offset for that epoch, its log end offset) when the leader answers the same epoch; when the
leader answers an older epoch the follower truncates to its own end offset of that epoch and
asks again with its new latest epoch (bounded by the number of cached epochs). A log without
epochs, or an answer without an end offset, truncates to the follower's high watermark. Nothing
is truncated without the leader's answer.

Fetching: Fetch v18 with ``replica_state`` (this broker's id and epoch), ``max_wait_ms``
``replica.fetch.wait.max.ms`` (500), ``min_bytes`` 1, ``replica.fetch.max.bytes`` (1 MiB) per
partition and ``replica.fetch.response.max.bytes`` (10 MiB) per response, from each partition's
log end offset. Batches are appended with ``Log.append_as_follower`` (the leader's offsets and
partitionLeaderEpoch kept, so the leader epoch cache follows the leader's) and the high
watermark becomes min(the leader's, the log end offset) and the log start offset follows the
leader's (up to that high watermark). Errors: NOT_LEADER_OR_FOLLOWER,
FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_* delay the partition by
``replica.fetch.backoff.ms`` (the next metadata image re-adds it); OFFSET_OUT_OF_RANGE below
the leader's log start offset restarts the log there, else truncates again; a failed append
re-truncates; a network failure backs the whole fetcher off (doubling up to 1 s) and
reconnects.

Not implemented: fetch sessions (KIP-227; every fetch is a full one), truncation through the
fetch response's diverging epoch (KIP-595 style; OffsetForLeaderEpoch is used), throttling,
and fetching from a non-PLAINTEXT inter-broker listener.
"""

from __future__ import annotations

import enum
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from pykbroker.api.protocol.api_keys import RELEASE_4_1, ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.leader_epoch_cache import UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
from pykbroker.replication.partition import Partition
from pykbroker.replication.replica_manager import FollowedPartition, ReplicaManager

from .network_client import NodeConnection, NodeUnavailable

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]

FETCH_VERSION = RELEASE_4_1[ApiKey.FETCH][1]
OFFSET_FOR_LEADER_EPOCH_VERSION = RELEASE_4_1[ApiKey.OFFSET_FOR_LEADER_EPOCH][1]
_MAX_NETWORK_BACKOFF_S = 1.0
_IDLE_WAIT_S = 1.0
#: Slack over ``max_wait_ms`` before a fetch counts as lost.
_REQUEST_TIMEOUT_SLACK_S = 10.0
_ZERO_UUID = uuid.UUID(int=0)
#: Partition errors after which the partition waits for the next metadata image (or backoff).
_DELAY_ON = frozenset(
    {
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.FENCED_LEADER_EPOCH,
        ErrorCode.UNKNOWN_LEADER_EPOCH,
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ErrorCode.UNKNOWN_TOPIC_ID,
        ErrorCode.REPLICA_NOT_AVAILABLE,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.KAFKA_STORAGE_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class ReplicaFetcherConfig:
    """The replica.fetch.* settings."""

    fetch_max_bytes: int = 1_048_576
    fetch_response_max_bytes: int = 10_485_760
    fetch_wait_max_ms: int = 500
    fetch_backoff_ms: int = 1000


class FetchState(enum.Enum):
    TRUNCATING = "truncating"
    FETCHING = "fetching"


@dataclass(slots=True)
class PartitionFetchState:
    """Kafka's ``PartitionFetchState``."""

    topic_id: uuid.UUID
    leader_epoch: int
    state: FetchState = FetchState.TRUNCATING
    delayed_until: float = 0.0


class ReplicaFetcher:
    """Fetches every partition this broker follows from one source broker (Kafka's
    ReplicaFetcherThread)."""

    def __init__(
        self,
        replica_manager: ReplicaManager,
        source_id: int,
        host: str,
        port: int,
        config: ReplicaFetcherConfig,
        clock: Callable[[], int],
    ) -> None:
        self.replica_manager = replica_manager
        self.node_id = replica_manager.node_id
        self.source_id = source_id
        self.endpoint = (host, port)
        self.config = config
        self._clock = clock
        self.partitions: dict[TopicPartition, PartitionFetchState] = {}
        self.cancel_scope = trio.CancelScope()
        self._changed = trio.Event()
        self._network_backoff_s = 0.0
        self._connection = NodeConnection(
            host, port, client_id=f"broker-{self.node_id}-fetcher-{source_id}"
        )

    # -- partitions --------------------------------------------------------------------------

    def add_partition(self, tp: TopicPartition, followed: FollowedPartition) -> None:
        self.partitions[tp] = PartitionFetchState(followed.topic_id, followed.leader_epoch)
        self._wake()

    def remove_partition(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp, None)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _delay(self, tp: TopicPartition, state: PartitionFetchState) -> None:
        state.delayed_until = trio.current_time() + self.config.fetch_backoff_ms / 1000

    def _current(
        self, tp: TopicPartition, state: PartitionFetchState
    ) -> tuple[Partition, PartitionFetchState] | None:
        """The partition if ``state`` is still its fetch state (nothing changed meanwhile)."""
        if self.partitions.get(tp) is not state:
            return None
        partition = self.replica_manager.get_partition(*tp)
        if partition is None or partition.is_leader or partition.log.is_closed:
            return None
        return partition, state

    # -- the task ----------------------------------------------------------------------------

    async def run(self) -> None:
        with self.cancel_scope:
            try:
                while True:  # until cancelled; every round waits or sends a request
                    await self._round()
            finally:
                with trio.CancelScope(shield=True):
                    await self._connection.aclose()

    async def _round(self) -> None:
        if self._network_backoff_s:
            await trio.sleep(self._network_backoff_s)
        else:
            await trio.lowlevel.checkpoint()  # a round that sends nothing still yields
        now = trio.current_time()
        ready = {tp: s for tp, s in self.partitions.items() if s.delayed_until <= now}
        if not ready:
            wake_at = min((s.delayed_until for s in self.partitions.values()), default=math.inf)
            changed = self._changed
            with trio.move_on_at(min(wake_at, now + _IDLE_WAIT_S)):
                await changed.wait()
            return
        try:
            truncating = {tp: s for tp, s in ready.items() if s.state is FetchState.TRUNCATING}
            if truncating:
                await self._truncate(truncating)
            else:
                await self._fetch(ready)
            self._network_backoff_s = 0.0
        except Exception as exc:  # a fetcher failure must not stop the broker
            if not isinstance(exc, (NodeUnavailable, trio.TooSlowError, KafkaError)):
                log.exception("replica fetcher %d->%d failed", self.source_id, self.node_id)
            first_failure = not self._network_backoff_s
            self._network_backoff_s = min(
                max(self._network_backoff_s * 2, 0.05), _MAX_NETWORK_BACKOFF_S
            )
            log.log(
                logging.INFO if first_failure else logging.DEBUG,
                "replica fetcher %d->%d: %s (retrying in %.2fs)",
                self.source_id,
                self.node_id,
                exc,
                self._network_backoff_s,
            )

    async def _request(self, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        timeout_s = self.config.fetch_wait_max_ms / 1000 + _REQUEST_TIMEOUT_SLACK_S
        with trio.fail_after(timeout_s):
            return await self._connection.request(api_key, version, body)

    # -- truncation (KIP-101 / KIP-279) -----------------------------------------------------------

    async def _truncate(self, states: Mapping[TopicPartition, PartitionFetchState]) -> None:
        """One OffsetForLeaderEpoch round for ``states``; partitions whose truncation is done
        move to fetching, the others ask again next round with their new latest epoch."""
        requested: dict[TopicPartition, tuple[PartitionFetchState, int]] = {}
        topics: dict[str, list[dict[str, Any]]] = {}
        for tp, state in states.items():
            current = self._current(tp, state)
            if current is None:
                self._delay(tp, state)  # the next metadata image moves or removes it
                continue
            partition = current[0]
            cache = partition.log.leader_epoch_cache
            latest = cache.latest_epoch() if cache is not None else None
            if latest is None:
                # No epochs: Kafka's fallback, the high watermark.
                truncate_log(partition, partition.log.high_watermark, "no leader epochs")
                state.state = FetchState.FETCHING
                continue
            requested[tp] = (state, latest)
            topics.setdefault(tp[0], []).append(
                {
                    "partition": tp[1],
                    "current_leader_epoch": state.leader_epoch,
                    "leader_epoch": latest,
                }
            )
        if not requested:
            return
        response = await self._request(
            ApiKey.OFFSET_FOR_LEADER_EPOCH,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            {
                "replica_id": self.node_id,
                "topics": [{"topic": t, "partitions": parts} for t, parts in topics.items()],
            },
        )
        answered: set[TopicPartition] = set()
        for topic in response["topics"]:
            for part in topic["partitions"]:
                tp = (topic["topic"], part["partition"])
                if tp not in requested:
                    continue
                answered.add(tp)
                state, latest = requested[tp]
                current = self._current(tp, state)
                if current is None:
                    continue
                error = ErrorCode(part["error_code"])
                if error != ErrorCode.NO_ERROR:
                    log.info(
                        "%s-%d: OffsetForLeaderEpoch from %d answered %s",
                        tp[0],
                        tp[1],
                        self.source_id,
                        error.name,
                    )
                    self._delay(tp, state)
                    continue
                if truncate_to_epoch_end_offset(
                    current[0], latest, part["leader_epoch"], part["end_offset"]
                ):
                    state.state = FetchState.FETCHING
        for tp, (state, _) in requested.items():
            if tp not in answered:
                self._delay(tp, state)

    # -- fetching -------------------------------------------------------------------------------

    def _fetch_request(
        self, states: Mapping[TopicPartition, PartitionFetchState]
    ) -> tuple[dict[str, Any], dict[TopicPartition, tuple[PartitionFetchState, int]]]:
        image = self.replica_manager.image
        own = image.brokers.get(self.node_id)
        topics: dict[uuid.UUID, dict[str, Any]] = {}
        requested: dict[TopicPartition, tuple[PartitionFetchState, int]] = {}
        for tp, state in states.items():
            current = self._current(tp, state)
            if current is None:
                self._delay(tp, state)  # the next metadata image moves or removes it
                continue
            plog = current[0].log
            fetch_offset = plog.log_end_offset
            requested[tp] = (state, fetch_offset)
            topics.setdefault(
                state.topic_id, {"topic": tp[0], "topic_id": state.topic_id, "partitions": []}
            )["partitions"].append(
                {
                    "partition": tp[1],
                    "current_leader_epoch": state.leader_epoch,
                    "fetch_offset": fetch_offset,
                    "last_fetched_epoch": -1,
                    "log_start_offset": plog.log_start_offset,
                    "partition_max_bytes": self.config.fetch_max_bytes,
                    "replica_directory_id": _ZERO_UUID,
                }
            )
        body = {
            "cluster_id": None,
            "replica_id": self.node_id,
            "replica_state": {
                "replica_id": self.node_id,
                "replica_epoch": own.epoch if own is not None else -1,
            },
            "max_wait_ms": self.config.fetch_wait_max_ms,
            "min_bytes": 1,
            "max_bytes": self.config.fetch_response_max_bytes,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": list(topics.values()),
            "forgotten_topics_data": [],
            "rack_id": "",
        }
        return body, requested

    async def _fetch(self, states: Mapping[TopicPartition, PartitionFetchState]) -> None:
        body, requested = self._fetch_request(states)
        if not requested:
            return
        response = await self._request(ApiKey.FETCH, FETCH_VERSION, body)
        top_error = ErrorCode(response.get("error_code", 0))
        if top_error != ErrorCode.NO_ERROR:
            log.info("fetch from %d answered %s", self.source_id, top_error.name)
            for tp, (state, _) in requested.items():
                self._delay(tp, state)
            return
        names = {s.topic_id: tp[0] for tp, (s, _) in requested.items()}
        now_ms = self._clock()
        for topic in response["responses"]:
            name = names.get(topic["topic_id"], topic.get("topic"))
            for part in topic["partitions"]:
                tp = (name, part["partition_index"])
                if tp not in requested:
                    continue
                state, fetch_offset = requested[tp]
                current = self._current(tp, state)
                if current is None or current[0].log.log_end_offset != fetch_offset:
                    continue  # the partition changed while the fetch was out
                self._process_partition(tp, current[0], state, fetch_offset, part, now_ms)

    @staticmethod
    def _follow_log_start_offset(partition: Partition, leader_log_start_offset: int) -> None:
        """Kafka's follower ``maybeIncrementLogStartOffset(leaderLogStartOffset)`` (retention
        and DeleteRecords on the leader), never past this replica's high watermark."""
        plog = partition.log
        target = min(leader_log_start_offset, plog.high_watermark)
        if target > plog.log_start_offset:
            plog.maybe_increment_log_start_offset(target)

    def _process_partition(
        self,
        tp: TopicPartition,
        partition: Partition,
        state: PartitionFetchState,
        fetch_offset: int,
        part: Mapping[str, Any],
        now_ms: int,
    ) -> None:
        """Kafka's ``processPartitionData`` and the fetcher's error handling."""
        error = ErrorCode(part["error_code"])
        if error == ErrorCode.NO_ERROR:
            records = part.get("records") or b""
            try:
                if records:
                    partition.append_as_follower(records, part["high_watermark"], now_ms)
                else:
                    partition.update_follower_high_watermark(part["high_watermark"])
                self._follow_log_start_offset(partition, part.get("log_start_offset", -1))
            except KafkaError as exc:
                log.warning(
                    "%s-%d: cannot append from %d at %d (%s); truncating again",
                    tp[0],
                    tp[1],
                    self.source_id,
                    fetch_offset,
                    exc,
                )
                state.state = FetchState.TRUNCATING
                self._delay(tp, state)
            return
        if error == ErrorCode.OFFSET_OUT_OF_RANGE:
            leader_start = part.get("log_start_offset", -1)
            if leader_start is not None and fetch_offset < leader_start:
                log.info(
                    "%s-%d: fetch offset %d below the leader's log start offset %d; "
                    "restarting the log there",
                    tp[0],
                    tp[1],
                    fetch_offset,
                    leader_start,
                )
                partition.log.truncate_fully_and_start_at(leader_start)
            else:
                state.state = FetchState.TRUNCATING
                self._delay(tp, state)
            return
        if error not in _DELAY_ON:
            log.info("%s-%d: fetch from %d answered %s", tp[0], tp[1], self.source_id, error.name)
        self._delay(tp, state)


def truncate_log(partition: Partition, offset: int, why: str) -> None:
    """Truncate the follower's log to ``offset`` (nothing when it is at or past the end)."""
    plog = partition.log
    if offset >= plog.log_end_offset:
        return
    log.info(
        "%s-%d: truncating from %d to %d (%s)",
        partition.topic,
        partition.index,
        plog.log_end_offset,
        offset,
        why,
    )
    plog.truncate_to(offset)


def truncate_to_epoch_end_offset(
    partition: Partition, requested_epoch: int, leader_epoch: int, leader_end_offset: int
) -> bool:
    """Kafka's ``getOffsetTruncationState`` then ``truncate``: apply the leader's
    OffsetForLeaderEpoch answer ``(leader_epoch, leader_end_offset)`` for ``requested_epoch``;
    True when truncation is complete, False when the follower must ask again for its (new)
    latest epoch."""
    plog = partition.log
    log_end = plog.log_end_offset
    if leader_end_offset == UNDEFINED_EPOCH_OFFSET:
        truncate_log(partition, plog.high_watermark, "the leader knows no end offset")
        return True
    if leader_epoch == UNDEFINED_EPOCH:
        truncate_log(partition, min(leader_end_offset, log_end), "the leader has no epochs")
        return True
    follower_epoch, follower_end = plog.end_offset_for_epoch(leader_epoch)
    if follower_epoch == UNDEFINED_EPOCH:
        truncate_log(partition, min(leader_end_offset, log_end), f"no epoch <= {leader_epoch} here")
        return True
    if follower_epoch == leader_epoch:
        truncate_log(
            partition,
            min(follower_end, leader_end_offset, log_end),
            f"epoch {leader_epoch} ends at {leader_end_offset} on the leader",
        )
        return True
    truncate_log(
        partition,
        min(follower_end, log_end),
        f"the leader's greatest epoch <= {requested_epoch} is {leader_epoch}",
    )
    cache = plog.leader_epoch_cache
    latest = cache.latest_epoch() if cache is not None else None
    # Done when nothing older is left to compare; else ask again with the new latest epoch.
    return latest is None or latest >= requested_epoch


class ReplicaFetcherManager:
    """Starts, feeds and stops one ``ReplicaFetcher`` per source broker (Kafka's
    ReplicaFetcherManager)."""

    def __init__(
        self,
        replica_manager: ReplicaManager,
        config: ReplicaFetcherConfig,
        clock: Callable[[], int],
    ) -> None:
        self.replica_manager = replica_manager
        self.config = config
        self._clock = clock
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._assigned: dict[TopicPartition, FollowedPartition] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the fetchers until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.replica_manager.add_follower_listener(self.update_followers)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def update_followers(self, followed: Mapping[TopicPartition, FollowedPartition]) -> None:
        """Move partitions between fetchers as the metadata image says (Kafka's
        ``addFetcherForPartitions`` / ``removeFetcherForPartitions``)."""
        if self._nursery is None:
            return
        image = self.replica_manager.image
        for tp, old in list(self._assigned.items()):
            new = followed.get(tp)
            if new != old:
                fetcher = self.fetchers.get(old.leader_id)
                if fetcher is not None:
                    fetcher.remove_partition(tp)
                del self._assigned[tp]
        for source_id, fetcher in list(self.fetchers.items()):
            broker = image.brokers.get(source_id)
            if broker is None or fetcher.endpoint != (broker.host, broker.port):
                self._stop(source_id)  # re-registered elsewhere: a new connection
        for tp, target in followed.items():
            if tp in self._assigned:
                continue
            broker = image.brokers.get(target.leader_id)
            if broker is None or broker.port < 0:
                continue  # the leader's endpoint is not known yet: next image
            fetcher = self.fetchers.get(target.leader_id)
            if fetcher is None:
                fetcher = ReplicaFetcher(
                    self.replica_manager,
                    target.leader_id,
                    broker.host,
                    broker.port,
                    self.config,
                    self._clock,
                )
                self.fetchers[target.leader_id] = fetcher
                self._nursery.start_soon(fetcher.run)
            fetcher.add_partition(tp, target)
            self._assigned[tp] = target
        for source_id in [s for s, f in self.fetchers.items() if not f.partitions]:
            self._stop(source_id)

    def _stop(self, source_id: int) -> None:
        fetcher = self.fetchers.pop(source_id)
        for tp in fetcher.partitions:
            self._assigned.pop(tp, None)
        fetcher.cancel_scope.cancel()
