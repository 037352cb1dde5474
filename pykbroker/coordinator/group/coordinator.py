"""The group coordinator service: the trio driver around the pure group coordinator core.

Mirrors Kafka's ``GroupCoordinatorService`` (with the runtime's loading and write path): one
pure ``GroupCoordinatorShard`` per ``__consumer_offsets`` partition this broker leads, loaded
from that partition through a ``CoordinatorLog``; it serves the group APIs (classic groups,
KIP-848 consumer groups, offsets, admin) with request dicts in and response dicts (shaped for
the request's version) out, routing each group to its partition's shard, appends the records
the shards produce, and fires their timers (sessions, rebalances, offset expiry). All group
state lives in the shards; this module only does I/O and time.

Partition leadership (Kafka's ``onElection``/``onResignation``): with a metadata image that
lists ``__consumer_offsets``, this coordinator serves exactly the partitions this broker
leads. A partition it becomes the leader of (or leads at a new leader epoch) is loaded
again from its log once the writes still queued for it are done, answering
COORDINATOR_LOAD_IN_PROGRESS meanwhile; a partition it stops leading is unloaded (parked
joins and syncs answer NOT_COORDINATOR) and its groups answer NOT_COORDINATOR from then on,
so clients look the coordinator up again and find the new leader, which has every
acknowledged commit. Without such an image (before the topic exists, or with no metadata at
all) it serves every partition.

Transactions (Kafka's ``scheduleTransactionalWriteOperation`` and
``scheduleTransactionCompletion``): TxnOffsetCommit records are appended as a transactional
batch of the producer, and a transaction's COMMIT/ABORT marker on a ``__consumer_offsets``
partition (``complete_transaction``, called on the transaction coordinator's marker path) is
appended through the same per-partition queue, so it lands after the transaction's offset
commits and is then replayed by the core. Loading reads batches: records of a transactional
batch are replayed as pending offsets of its producer, markers end them.

Invariants:

* appends are performed by tasks in the coordinator's own nursery, one queue per
  ``__consumer_offsets`` partition, in the order the core produced them, and the core's
  continuation always runs, even if the request that caused the write was cancelled (a
  client disconnecting mid-SyncGroup never leaves a group stuck); a write without records is
  a barrier (OffsetFetch ``require_stable`` waits behind the writes queued before it);
* the core is only called from trio tasks, never concurrently (trio is single-threaded);
* ``clock`` gives monotonic milliseconds for timers (``trio.current_time()`` by default, so
  trio's ``MockClock`` drives session timeouts in tests); ``wall_clock`` gives the record
  timestamps.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import trio

from pykbroker.api.protocol.codec import CodecError
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.clock import wall_clock_ms
from pykbroker.metadata.image import MetadataImage

from . import records
from .config import GroupCoordinatorConfig, settings_from_properties
from .consumer_group_requests import ConsumerGroupHeartbeatRequest, heartbeat_error
from .coordinator_log import CoordinatorLog
from .offset_metadata_manager import (
    INVALID_OFFSET,
    NO_LEADER_EPOCH,
    NO_METADATA,
    error_topics,
)
from .records import OFFSETS_TOPIC
from .requests import JoinGroupRequest, SyncGroupRequest, join_error, sync_error
from .result import NO_PRODUCER_ID, PendingWrite, ResponseFuture
from .shard import GroupCoordinatorShard

log = logging.getLogger(__name__)


def trio_clock_ms() -> int:
    """Monotonic milliseconds from trio's clock (MockClock-aware)."""
    return int(trio.current_time() * 1000)


class GroupCoordinator:
    """Consumer groups (classic and KIP-848) and committed offsets, over a ``CoordinatorLog``.

    The settings are Kafka's (``group.*``, ``offsets.*``) as keywords; ``properties`` may
    instead carry the Kafka property names this coordinator reads beyond the broker config
    (``offsets.retention.minutes``, ``group.consumer.*``, see ``config.PROPERTY_NAMES``).
    """

    def __init__(
        self,
        log: CoordinatorLog,
        *,
        node_id: int,
        offsets_topic_num_partitions: int = 50,
        group_initial_rebalance_delay_ms: int = 3000,
        group_min_session_timeout_ms: int = 6000,
        group_max_session_timeout_ms: int = 1_800_000,
        group_max_size: int = 2**31 - 1,
        offset_metadata_max_bytes: int = 4096,
        clock: Callable[[], int] = trio_clock_ms,
        wall_clock: Callable[[], int] = wall_clock_ms,
        new_uuid: Callable[[], Any] = uuid.uuid4,
        properties: Mapping[str, str] | None = None,
        metadata: Callable[[], MetadataImage | None] | None = None,
        **settings: Any,
    ) -> None:
        self.log = log
        self.node_id = node_id
        self.config = GroupCoordinatorConfig(
            offsets_topic_num_partitions=offsets_topic_num_partitions,
            group_initial_rebalance_delay_ms=group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms=group_min_session_timeout_ms,
            group_max_session_timeout_ms=group_max_session_timeout_ms,
            group_max_size=group_max_size,
            offset_metadata_max_bytes=offset_metadata_max_bytes,
            **{**settings_from_properties(properties or {}), **settings},
        )
        self._new_uuid = new_uuid
        self._metadata = metadata
        #: partition -> the shard serving it (loaded)
        self._shards: dict[int, GroupCoordinatorShard] = {}
        #: partition -> the leader epoch it was loaded at (None: no leadership known)
        self._epochs: dict[int, int | None] = {}
        #: partitions being loaded
        self._loading: set[int] = set()
        #: partition -> a counter bumped by each load/unload (a superseded load gives up)
        self._generation: dict[int, int] = {}
        self._wall_offset_ms = 0
        self._clock = clock
        self._wall_clock = wall_clock
        self._active = False
        self._stopped = False
        self._nursery: trio.Nursery | None = None
        self._wakeup = trio.Event()
        self._queues: dict[int, deque[PendingWrite]] = {}
        self._draining: set[int] = set()
        self._topic_ready = False
        self._image: MetadataImage | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the ``__consumer_offsets`` partitions this broker serves, then drive timers
        (and load/unload partitions as leadership moves) until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                now = self._now()
                led = self._led_partitions(self._current_image())
                partitions = (
                    range(self.config.offsets_topic_num_partitions) if led is None else sorted(led)
                )
                loaded = {p: self._load(p, now) for p in partitions}
                self._nursery = nursery
                self._active = True
                for partition, shard in loaded.items():
                    self._shards[partition] = shard
                    self._epochs[partition] = None if led is None else led[partition]
                for shard in loaded.values():
                    self._submit(shard.on_loaded(now))
                task_status.started()
                await self._drive_timers()
        finally:
            self._active = False
            self._stopped = True
            self._nursery = None
            for shard in self._shards.values():
                shard.on_unloaded()
            self._shards.clear()

    # -- partition leadership (Kafka's onElection / onResignation) ----------------------

    def _current_image(self) -> MetadataImage | None:
        return self._metadata() if self._metadata is not None else None

    def _led_partitions(self, image: MetadataImage | None) -> dict[int, int] | None:
        """The ``__consumer_offsets`` partitions this broker leads, with their leader epochs;
        None when the image does not list the topic (this coordinator then serves all)."""
        topic = image.topics.get(OFFSETS_TOPIC) if image is not None else None
        if topic is None:
            return None
        return {
            partition: registration.leader_epoch
            for partition, registration in topic.partitions.items()
            if registration.leader == self.node_id
        }

    def on_metadata_update(self, old: MetadataImage, new: MetadataImage) -> None:
        """A metadata listener: load the partitions this broker now leads (or leads at a new
        leader epoch), unload those it no longer leads."""
        if self._nursery is None:
            return  # not running: ``run`` loads what the image says then
        led = self._led_partitions(new)
        if led is None:
            return
        for partition in sorted(set(self._shards) | self._loading):
            if partition not in led:
                self._unload(partition)
        for partition, epoch in sorted(led.items()):
            if partition in self._shards or partition in self._loading:
                known = self._epochs.get(partition)
                if known is None:
                    # Served before the topic existed (nothing written elsewhere).
                    self._epochs[partition] = epoch
                    continue
                if known == epoch:
                    continue
            self._unload(partition)
            self._loading.add(partition)
            self._epochs[partition] = epoch
            self._nursery.start_soon(self._load_partition, partition, self._bump(partition))

    def _bump(self, partition: int) -> int:
        generation = self._generation.get(partition, 0) + 1
        self._generation[partition] = generation
        return generation

    def _unload(self, partition: int) -> None:
        self._bump(partition)
        self._loading.discard(partition)
        self._epochs.pop(partition, None)
        shard = self._shards.pop(partition, None)
        if shard is not None:
            shard.on_unloaded()
            log.info("%s-%d unloaded: another broker leads it", OFFSETS_TOPIC, partition)

    async def _load_partition(self, partition: int, generation: int) -> None:
        """Load one partition once the writes queued for it (by its previous shard) are
        done; give up when a later load or unload superseded this one."""
        done = trio.Event()

        def on_done(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            done.set()
            return []

        self._submit([PendingWrite(partition, [], on_done)])
        await done.wait()
        if self._generation.get(partition) != generation:
            return
        now = self._now()
        try:
            shard = self._load(partition, now)
        except Exception:
            log.exception("%s-%d: loading failed", OFFSETS_TOPIC, partition)
            self._loading.discard(partition)
            self._epochs.pop(partition, None)
            return
        self._loading.discard(partition)
        self._shards[partition] = shard
        log.info("%s-%d loaded: this broker leads it", OFFSETS_TOPIC, partition)
        self._submit(shard.on_loaded(now))

    def _new_shard(self) -> GroupCoordinatorShard:
        shard = GroupCoordinatorShard(self.config, new_uuid=self._new_uuid)
        shard.wall_offset_ms = self._wall_offset_ms
        if self._image is not None:
            shard.consumer.update_image(self._image)
        return shard

    def _load(self, partition: int, now_ms: int) -> GroupCoordinatorShard:
        """A new shard with one partition's records replayed (Kafka's CoordinatorLoader)."""
        shard = self._new_shard()
        loaded = 0
        for batch in self.log.read_batches(partition):
            if batch.commit is not None:  # a transaction marker
                shard.replay_end_transaction_marker(batch.producer_id, batch.commit)
                continue
            producer_id = batch.producer_id if batch.is_transactional else NO_PRODUCER_ID
            for key, value in batch.records:
                try:
                    record = records.decode_record(key, value)
                except CodecError as exc:
                    log.warning(
                        "%s-%d: skipping undecodable record: %s", OFFSETS_TOPIC, partition, exc
                    )
                    continue
                if record is not None:
                    shard.replay(record, now_ms, producer_id)
                    loaded += 1
        if loaded:
            log.info(
                "%s-%d: loaded %d records: %d classic and %d consumer groups",
                OFFSETS_TOPIC,
                partition,
                loaded,
                len(shard.classic.groups),
                len(shard.consumer.groups),
            )
        return shard

    async def _drive_timers(self) -> None:
        while True:
            now = self._now()
            for shard in list(self._shards.values()):
                self._submit(shard.tick(now))
            # A fresh event after the ticks (whose own submits kick): kicks from here on
            # come from requests that may have moved the next deadline.
            self._wakeup = trio.Event()
            deadlines = [
                d for d in (s.next_deadline() for s in self._shards.values()) if d is not None
            ]
            deadline = min(deadlines, default=None)
            if deadline is None:
                await self._wakeup.wait()
            else:
                with trio.move_on_after(max(deadline - now, 1) / 1000):
                    await self._wakeup.wait()

    def _now(self) -> int:
        now = self._clock()
        self._wall_offset_ms = self._wall_clock() - now
        for shard in self._shards.values():
            shard.wall_offset_ms = self._wall_offset_ms
        return now

    def _kick(self) -> None:
        """Let the timer loop look at the (possibly earlier) next deadline."""
        self._wakeup.set()

    def _unavailable(self) -> ErrorCode | None:
        if self._active and self._nursery is not None:
            return None
        if self._stopped:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS

    def _partition_shard(self, partition: int) -> GroupCoordinatorShard | ErrorCode:
        """The shard serving ``partition``, or the error its groups answer."""
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        shard = self._shards.get(partition)
        if shard is not None:
            return shard
        if partition in self._loading:
            return ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        return ErrorCode.NOT_COORDINATOR

    def _route(self, group_id: str) -> GroupCoordinatorShard | ErrorCode:
        """The shard of ``group_id``'s partition, or the error the group answers."""
        return self._partition_shard(self.partition_for(group_id))

    def shard_for(self, group_id: str) -> GroupCoordinatorShard | None:
        """The loaded shard serving ``group_id`` (None when this broker does not)."""
        return self._shards.get(self.partition_for(group_id))

    def update_image(self, image: MetadataImage) -> None:
        """The metadata image (topic ids and partition counts) consumer groups assign from."""
        self._image = image
        for shard in self._shards.values():
            shard.consumer.update_image(image)

    # -- the write path ----------------------------------------------------------------

    def _submit(self, writes: Iterable[PendingWrite]) -> None:
        nursery = self._nursery
        for write in writes:
            if nursery is None:
                # Shutting down: nothing can be appended any more.
                self._submit(write.complete(ErrorCode.COORDINATOR_NOT_AVAILABLE, self._now()))
                continue
            self._queues.setdefault(write.partition, deque()).append(write)
            if write.partition not in self._draining:
                self._draining.add(write.partition)
                nursery.start_soon(self._drain, write.partition)
        self._kick()

    async def _drain(self, partition: int) -> None:
        queue = self._queues[partition]
        try:
            while queue:
                write = queue.popleft()
                error = ErrorCode.NO_ERROR if write.is_barrier else await self._append(write)
                try:
                    more = write.complete(error, self._now())
                except Exception:
                    log.exception("group coordinator: continuation of an append failed")
                    more = []
                self._submit(more)
        finally:
            self._draining.discard(partition)

    async def _append(self, write: PendingWrite) -> ErrorCode:
        try:
            if not self._topic_ready:
                await self.log.ensure_topic()
                self._topic_ready = True
            if write.marker is not None:
                await self.log.append_marker(
                    write.partition,
                    write.producer_id,
                    write.producer_epoch,
                    write.marker.coordinator_epoch,
                    write.marker.commit,
                )
            elif write.producer_id == NO_PRODUCER_ID:
                await self.log.append(write.partition, write.records)
            else:
                await self.log.append(
                    write.partition,
                    write.records,
                    producer_id=write.producer_id,
                    producer_epoch=write.producer_epoch,
                )
        except KafkaError as exc:
            log.warning("__consumer_offsets-%d: append failed: %s", write.partition, exc)
            return exc.code
        except Exception:
            log.exception("__consumer_offsets-%d: append failed", write.partition)
            return ErrorCode.UNKNOWN_SERVER_ERROR
        return ErrorCode.NO_ERROR

    @staticmethod
    async def _wait(future: ResponseFuture) -> Any:
        if not future.done:
            event = trio.Event()
            future.add_done_callback(lambda _: event.set())
            await event.wait()
        return future.result()

    async def _submit_and_wait(self, writes: list[PendingWrite]) -> None:
        """Submit ``writes`` and wait until each was appended (or failed)."""
        done = trio.Event()
        pending = [len(writes)]

        def watch(write: PendingWrite) -> PendingWrite:
            inner = write.on_appended

            def on_appended(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
                try:
                    return inner(error, now_ms) if inner is not None else []
                finally:
                    pending[0] -= 1
                    if pending[0] == 0:
                        done.set()

            return PendingWrite(
                write.partition,
                write.records,
                on_appended,
                producer_id=write.producer_id,
                producer_epoch=write.producer_epoch,
                marker=write.marker,
            )

        if not writes:
            return
        self._submit([watch(w) for w in writes])
        await done.wait()

    async def _barrier(self, group_id: str) -> None:
        """Wait until the writes queued so far for the group's partition are done."""
        future = ResponseFuture()

        def on_done(error: ErrorCode, now_ms: int) -> list[PendingWrite]:
            future.complete({})
            return []

        self._submit([PendingWrite(self.partition_for(group_id), [], on_done)])
        await self._wait(future)

    # -- FindCoordinator ---------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        """The ``__consumer_offsets`` partition of a group (Kafka's hash)."""
        return records.partition_for(group_id, self.config.offsets_topic_num_partitions)

    async def find_coordinator(self, key: str) -> tuple[ErrorCode, int]:
        """Make sure ``__consumer_offsets`` exists (first call), then name the group's partition."""
        partition = self.partition_for(key)
        if not self._topic_ready:
            try:
                await self.log.ensure_topic()
            except KafkaError as exc:
                log.warning("cannot create __consumer_offsets: %s", exc)
                return ErrorCode.COORDINATOR_NOT_AVAILABLE, partition
            self._topic_ready = True
        return ErrorCode.NO_ERROR, partition

    # -- JoinGroup / SyncGroup / Heartbeat / LeaveGroup --------------------------------

    async def join_group(
        self, request: dict[str, Any], version: int, client_id: str, client_host: str
    ) -> dict[str, Any]:
        """JoinGroup v0-9; returns when the member's join completes (a delayed join)."""
        shard = self._route(request["group_id"])
        if isinstance(shard, ErrorCode):
            return _join_response(join_error(request["member_id"], shard), version)
        session_timeout_ms = request["session_timeout_ms"]
        rebalance_timeout_ms = request["rebalance_timeout_ms"]
        if version == 0 or rebalance_timeout_ms < 0:
            rebalance_timeout_ms = session_timeout_ms  # v0 has no rebalance timeout
        join = JoinGroupRequest(
            group_id=request["group_id"],
            member_id=request["member_id"],
            group_instance_id=request["group_instance_id"] if version >= 5 else None,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            protocol_type=request["protocol_type"],
            protocols=[(p["name"], bytes(p["metadata"])) for p in request["protocols"]],
            client_id=client_id,
            client_host=client_host,
            require_known_member_id=version >= 4,
            supports_skip_assignment=version >= 9,
        )
        future = ResponseFuture()
        self._submit(shard.join_group(join, future, self._now()))
        return _join_response(await self._wait(future), version)

    async def sync_group(self, request: dict[str, Any], version: int) -> dict[str, Any]:
        """SyncGroup v0-5; a follower's answer waits for the leader's assignment."""
        shard = self._route(request["group_id"])
        if isinstance(shard, ErrorCode):
            return sync_error(shard)
        if version >= 5 and (request["protocol_type"] is None or request["protocol_name"] is None):
            # From v5 on both are mandatory.
            return sync_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        sync = SyncGroupRequest(
            group_id=request["group_id"],
            generation_id=request["generation_id"],
            member_id=request["member_id"],
            group_instance_id=request["group_instance_id"] if version >= 3 else None,
            protocol_type=request["protocol_type"] if version >= 5 else None,
            protocol_name=request["protocol_name"] if version >= 5 else None,
            assignments=[(a["member_id"], bytes(a["assignment"])) for a in request["assignments"]],
        )
        future = ResponseFuture()
        self._submit(shard.classic.sync_group(sync, future, self._now()))
        return dict(await self._wait(future))

    async def heartbeat(self, request: dict[str, Any], version: int) -> dict[str, Any]:
        """Heartbeat v0-4."""
        shard = self._route(request["group_id"])
        if isinstance(shard, ErrorCode):
            return {"error_code": shard}
        error = shard.classic.heartbeat(
            request["group_id"],
            request["member_id"],
            request["group_instance_id"] if version >= 3 else None,
            request["generation_id"],
            self._now(),
        )
        self._kick()
        return {"error_code": error}

    async def leave_group(self, request: dict[str, Any], version: int) -> dict[str, Any]:
        """LeaveGroup v0-5: one member (v0-2) or a batch with per-member errors (v3+)."""
        if version < 3:
            members: list[tuple[str, str | None]] = [(request["member_id"], None)]
        else:
            members = [(m["member_id"], m["group_instance_id"]) for m in request["members"]]
        member_errors: list[ErrorCode] = []
        shard = self._route(request["group_id"])
        if isinstance(shard, ErrorCode):
            error = shard
        else:
            error, member_errors, writes = shard.classic.leave_group(
                request["group_id"], members, self._now()
            )
            # As Kafka, answer once the group's records are written: a departed member must
            # not come back with a reload.
            await self._submit_and_wait(writes)
        if version < 3:
            if error == ErrorCode.NO_ERROR:
                error = next((e for e in member_errors if e != ErrorCode.NO_ERROR), error)
            return {"error_code": error}
        return {
            "error_code": error,
            "members": [
                {"member_id": member_id, "group_instance_id": instance_id, "error_code": code}
                for (member_id, instance_id), code in zip(members, member_errors, strict=False)
            ],
        }

    # -- ConsumerGroupHeartbeat / ConsumerGroupDescribe (KIP-848) -----------------------

    async def consumer_group_heartbeat(
        self,
        request: dict[str, Any],
        version: int,
        client_id: str,
        client_host: str,
        image: MetadataImage,
    ) -> dict[str, Any]:
        """ConsumerGroupHeartbeat v0-1; answered once the group's records are written."""
        shard = self._route(request["group_id"])
        if isinstance(shard, ErrorCode):
            return heartbeat_error(shard)
        self.update_image(image)
        owned = request["topic_partitions"]
        heartbeat = ConsumerGroupHeartbeatRequest(
            group_id=request["group_id"],
            member_id=request["member_id"],
            member_epoch=request["member_epoch"],
            instance_id=request["instance_id"],
            rack_id=request["rack_id"],
            rebalance_timeout_ms=request["rebalance_timeout_ms"],
            subscribed_topic_names=request["subscribed_topic_names"],
            subscribed_topic_regex=request.get("subscribed_topic_regex") if version >= 1 else None,
            server_assignor=request["server_assignor"],
            topic_partitions=(
                None if owned is None else [(t["topic_id"], t["partitions"]) for t in owned]
            ),
            client_id=client_id,
            client_host=client_host,
            api_version=version,
        )
        future = ResponseFuture()
        self._submit(shard.consumer_group_heartbeat(heartbeat, future, self._now(), image))
        return dict(await self._wait(future))

    async def consumer_group_describe(
        self, group_ids: Sequence[str], include_authorized_operations: bool, image: MetadataImage
    ) -> list[dict[str, Any]]:
        """ConsumerGroupDescribe ``DescribedGroup``s."""
        described = []
        for group_id in group_ids:
            shard = self._route(group_id)
            if isinstance(shard, ErrorCode):
                described.append({**_describe_error(group_id), "error_code": shard})
            else:
                described.extend(
                    shard.consumer_group_describe([group_id], include_authorized_operations, image)
                )
        return described

    # -- offsets -----------------------------------------------------------------------

    async def commit_offsets(self, request: dict[str, Any], version: int) -> dict[str, Any]:
        """OffsetCommit v2-9 for the topics given (the handler has removed unknown topics)."""
        topics = request["topics"]
        shard = self._route(request["group_id"])
        if isinstance(shard, ErrorCode):
            return {"topics": error_topics(topics, shard)}
        future = ResponseFuture()
        self._submit(
            shard.offsets.commit_offsets(
                request["group_id"],
                request["generation_id_or_member_epoch"],
                request["member_id"],
                request["group_instance_id"] if version >= 7 else None,
                topics,
                future,
                self._now(),
                api_version=version,
            )
        )
        return {"topics": (await self._wait(future))["topics"]}

    async def commit_transactional_offsets(
        self, request: dict[str, Any], producer_id: int, producer_epoch: int
    ) -> dict[str, Any]:
        """TxnOffsetCommit for the topics given (the handler has removed unknown topics and
        verified the transaction): ``request`` is OffsetCommit-shaped (``group_id``,
        ``generation_id_or_member_epoch``, ``member_id``, ``group_instance_id``, ``topics``).
        Answered once the transactional batch is written; the offsets are then pending."""
        topics = request["topics"]
        shard = self._route(request["group_id"])
        if isinstance(shard, ErrorCode):
            return {"topics": error_topics(topics, shard)}
        future = ResponseFuture()
        self._submit(
            shard.offsets.commit_transactional_offsets(
                request["group_id"],
                producer_id,
                producer_epoch,
                request["generation_id_or_member_epoch"],
                request["member_id"],
                request["group_instance_id"],
                topics,
                future,
                self._now(),
            )
        )
        return {"topics": (await self._wait(future))["topics"]}

    async def complete_transaction(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
    ) -> ErrorCode:
        """Write a transaction's COMMIT/ABORT marker to ``__consumer_offsets-<partition>``
        behind the writes queued there, then complete (or drop) the producer's pending
        offsets (Kafka's ``GroupCoordinatorService.completeTransaction``)."""
        if not 0 <= partition < self.config.offsets_topic_num_partitions:
            return ErrorCode.NOT_COORDINATOR
        shard = self._partition_shard(partition)
        if isinstance(shard, ErrorCode):
            return shard
        future = ResponseFuture()
        self._submit(
            shard.complete_transaction(
                partition, producer_id, producer_epoch, coordinator_epoch, commit, future
            )
        )
        return ErrorCode((await self._wait(future))["error_code"])

    async def fetch_offsets(self, request: dict[str, Any], version: int) -> dict[str, Any]:
        """OffsetFetch v1-9: one group (v1-7, ``topics`` None = all) or ``groups`` (v8+).

        ``require_stable`` (v7+) reads after the group's writes queued before the request
        completed (Kafka reads it through the write path), and a partition with a pending
        transactional offset answers UNSTABLE_OFFSET_COMMIT (the client retries)."""
        if version >= 8:
            wanted = [
                (g["group_id"], g["topics"], g.get("member_id"), g.get("member_epoch", -1))
                for g in request["groups"]
            ]
        else:
            wanted = [(request["group_id"], request["topics"], None, -1)]
        require_stable = version >= 7 and bool(request.get("require_stable"))
        if require_stable:
            for group_id in {w[0] for w in wanted}:
                if not isinstance(self._route(group_id), ErrorCode):
                    await self._barrier(group_id)
        results = [
            self._fetch_group(group_id, topics, version, member_id, member_epoch, require_stable)
            for group_id, topics, member_id, member_epoch in wanted
        ]
        if version >= 8:
            return {"groups": results}
        return {"topics": results[0]["topics"], "error_code": results[0]["error_code"]}

    def _fetch_group(
        self,
        group_id: str,
        topics: list[dict[str, Any]] | None,
        version: int,
        member_id: str | None,
        member_epoch: int,
        require_stable: bool = False,
    ) -> dict[str, Any]:
        wanted = None if topics is None else [(t["name"], t["partition_indexes"]) for t in topics]
        shard = self._route(group_id)
        fetched: list[dict[str, Any]] = []
        if isinstance(shard, ErrorCode):
            error = shard
        else:
            if version < 9:
                member_id, member_epoch = None, -1
            error, fetched = shard.fetch_offsets(
                group_id, wanted, member_id, member_epoch, require_stable
            )
        if error == ErrorCode.NO_ERROR:
            return {"group_id": group_id, "error_code": error, "topics": fetched}
        result: dict[str, Any] = {"group_id": group_id, "error_code": error, "topics": []}
        if version < 2 and topics is not None:
            # v0-1 have no top-level error: every partition carries it.
            result["error_code"] = ErrorCode.NO_ERROR
            result["topics"] = [
                {
                    "name": t["name"],
                    "partitions": [
                        {
                            "partition_index": index,
                            "committed_offset": INVALID_OFFSET,
                            "committed_leader_epoch": NO_LEADER_EPOCH,
                            "metadata": NO_METADATA,
                            "error_code": error,
                        }
                        for index in t["partition_indexes"]
                    ],
                }
                for t in topics
            ]
        return result

    async def delete_offsets(
        self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]]
    ) -> dict[str, Any]:
        """OffsetDelete for the topics given (the handler has removed unknown partitions)."""
        shard = self._route(group_id)
        if isinstance(shard, ErrorCode):
            return {"error_code": shard, "topics": []}
        future = ResponseFuture()
        self._submit(shard.delete_offsets(group_id, topics, future))
        return dict(await self._wait(future))

    # -- DescribeGroups / ListGroups / DeleteGroups -------------------------------------

    def describe_groups(
        self,
        group_ids: Sequence[str],
        version: int = 6,
        include_authorized_operations: bool = False,
    ) -> list[dict[str, Any]]:
        """DescribeGroups ``DescribedGroup``s (unknown group: Dead, or GROUP_ID_NOT_FOUND v6+)."""
        described: list[dict[str, Any]] = []
        for group_id in group_ids:
            shard = self._route(group_id)
            if isinstance(shard, ErrorCode):
                described.append(
                    {
                        "error_code": shard,
                        "error_message": None,
                        "group_id": group_id,
                        "group_state": "",
                        "protocol_type": "",
                        "protocol_data": "",
                        "members": [],
                    }
                )
            else:
                described.extend(
                    shard.describe_groups([group_id], version, include_authorized_operations)
                )
        return described

    def list_groups(
        self, states_filter: Sequence[str] = (), types_filter: Sequence[str] = ()
    ) -> tuple[ErrorCode, list[dict[str, Any]]]:
        """ListGroups ``ListedGroup``s of every loaded partition, filtered by state and type
        (case-insensitive); partitions still loading are left out, as Kafka lists only its
        active coordinators."""
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable, []
        return ErrorCode.NO_ERROR, [
            group
            for _, shard in sorted(self._shards.items())
            for group in shard.list_groups(states_filter, types_filter)
        ]

    async def delete_groups(self, group_ids: Sequence[str]) -> dict[str, ErrorCode]:
        """DeleteGroups: remove empty groups and their offsets (tombstones)."""
        result: dict[str, ErrorCode] = {}
        by_shard: dict[int, tuple[GroupCoordinatorShard, list[str]]] = {}
        for group_id in group_ids:
            shard = self._route(group_id)
            if isinstance(shard, ErrorCode):
                result[group_id] = shard
            else:
                by_shard.setdefault(id(shard), (shard, []))[1].append(group_id)
        futures = []
        for shard, ids in by_shard.values():
            future = ResponseFuture()
            self._submit(shard.delete_groups(ids, future))
            futures.append(future)
        for future in futures:
            result.update(await self._wait(future))
        return {group_id: result[group_id] for group_id in group_ids}


def _describe_error(group_id: str) -> dict[str, Any]:
    return {
        "error_message": None,
        "group_id": group_id,
        "group_state": "",
        "group_epoch": 0,
        "assignment_epoch": 0,
        "assignor_name": "",
        "members": [],
    }


def _join_response(result: dict[str, Any], version: int) -> dict[str, Any]:
    response = dict(result)
    if version < 7 and response.get("protocol_name") is None:
        response["protocol_name"] = ""  # not nullable before v7
    return response
