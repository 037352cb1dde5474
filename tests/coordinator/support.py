"""Test helpers: a synchronous harness over the pure group core, and an in-memory log."""

from __future__ import annotations

import itertools
import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.api.protocol.messages.consumer_protocol import CONSUMER_PROTOCOL_SUBSCRIPTION
from pykbroker.coordinator.group.config import GroupCoordinatorConfig
from pykbroker.coordinator.group.consumer_group_requests import ConsumerGroupHeartbeatRequest
from pykbroker.coordinator.group.coordinator_log import CoordinatorBatch
from pykbroker.coordinator.group.group import ClassicGroup
from pykbroker.coordinator.group.group_metadata_manager import GroupMetadataManager
from pykbroker.coordinator.group.offset_metadata_manager import OffsetMetadataManager
from pykbroker.coordinator.group.records import decode_record
from pykbroker.coordinator.group.requests import JoinGroupRequest, SyncGroupRequest
from pykbroker.coordinator.group.result import PendingWrite, ResponseFuture
from pykbroker.coordinator.group.shard import GroupCoordinatorShard
from pykbroker.metadata.image import MetadataImage, PartitionRegistration, TopicImage

RANGE = [("range", b"range-meta")]


class Harness:
    """Drives a GroupMetadataManager with an explicit clock; appends succeed unless told."""

    def __init__(self, **config: Any) -> None:
        settings: dict[str, Any] = {
            "group_initial_rebalance_delay_ms": 3000,
            "offsets_topic_num_partitions": 5,
        }
        settings.update(config)
        self.config = GroupCoordinatorConfig(**settings)
        counter = itertools.count(1)
        self.gmm = GroupMetadataManager(self.config, new_uuid=lambda: f"u{next(counter)}")
        self.offsets = OffsetMetadataManager(self.config, self.gmm)
        self.now = 0
        self.written: list[tuple[int, bytes, bytes | None]] = []
        self.append_error: ErrorCode = ErrorCode.NO_ERROR
        self.held: list[PendingWrite] = []
        self.hold_writes = False

    # -- plumbing ---------------------------------------------------------------------

    def apply(self, writes: Iterable[PendingWrite]) -> None:
        queue = list(writes)
        if self.hold_writes:
            self.held.extend(queue)
            return
        while queue:
            write = queue.pop(0)
            if self.append_error == ErrorCode.NO_ERROR:
                self.written.extend((write.partition, k, v) for k, v in write.records)
            queue.extend(write.complete(self.append_error, self.now))

    def release(self, error: ErrorCode = ErrorCode.NO_ERROR) -> None:
        held, self.held = self.held, []
        self.hold_writes = False
        saved, self.append_error = self.append_error, error
        self.apply(held)
        self.append_error = saved

    def advance(self, ms: int) -> None:
        """Move time forward ms by ms-sized steps of the timers (fires all due timers)."""
        target = self.now + ms
        while True:
            deadline = self.gmm.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.apply(self.gmm.tick(self.now))
        self.now = target
        self.apply(self.gmm.tick(self.now))

    def group(self, group_id: str = "g") -> ClassicGroup:
        group = self.gmm.group(group_id)
        assert group is not None
        return group

    def decoded(self) -> list[Any]:
        return [decode_record(k, v) for _, k, v in self.written]

    # -- requests ---------------------------------------------------------------------

    def join(
        self,
        member_id: str = "",
        *,
        group_id: str = "g",
        instance_id: str | None = None,
        protocols: Sequence[tuple[str, bytes]] = RANGE,
        protocol_type: str = "consumer",
        session_timeout_ms: int = 10_000,
        rebalance_timeout_ms: int = 30_000,
        client_id: str = "c",
        version: int = 9,
    ) -> ResponseFuture:
        future = ResponseFuture()
        request = JoinGroupRequest(
            group_id=group_id,
            member_id=member_id,
            group_instance_id=instance_id,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            protocol_type=protocol_type,
            protocols=list(protocols),
            client_id=client_id,
            client_host="/127.0.0.1",
            require_known_member_id=version >= 4,
            supports_skip_assignment=version >= 9,
        )
        self.apply(self.gmm.join_group(request, future, self.now))
        return future

    def join_new_member(self, **kwargs: Any) -> ResponseFuture:
        """The KIP-394 dance: join, get MEMBER_ID_REQUIRED, rejoin with the given id.

        Static members (``instance_id``) are not asked for a member id: they join at once.
        """
        first = self.join(**kwargs)
        if kwargs.get("instance_id") is not None:
            return first
        response = first.result()
        assert response["error_code"] == ErrorCode.MEMBER_ID_REQUIRED, response
        return self.join(response["member_id"], **kwargs)

    def sync(
        self,
        member_id: str,
        generation_id: int,
        assignments: dict[str, bytes] | None = None,
        *,
        group_id: str = "g",
        instance_id: str | None = None,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> ResponseFuture:
        future = ResponseFuture()
        request = SyncGroupRequest(
            group_id=group_id,
            generation_id=generation_id,
            member_id=member_id,
            group_instance_id=instance_id,
            protocol_type=protocol_type,
            protocol_name=protocol_name,
            assignments=list((assignments or {}).items()),
        )
        self.apply(self.gmm.sync_group(request, future, self.now))
        return future

    def heartbeat(
        self,
        member_id: str,
        generation_id: int,
        *,
        group_id: str = "g",
        instance_id: str | None = None,
    ) -> ErrorCode:
        return self.gmm.heartbeat(group_id, member_id, instance_id, generation_id, self.now)

    def leave(
        self, *members: tuple[str, str | None], group_id: str = "g"
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        error, errors, writes = self.gmm.leave_group(group_id, list(members), self.now)
        self.apply(writes)
        return error, errors

    def commit(
        self,
        offsets: dict[tuple[str, int], int],
        *,
        group_id: str = "g",
        generation_id: int = -1,
        member_id: str = "",
        instance_id: str | None = None,
        metadata: str | None = "",
        api_version: int = 9,
    ) -> dict[tuple[str, int], ErrorCode]:
        topics: dict[str, list[dict[str, Any]]] = {}
        for (topic, partition), offset in offsets.items():
            topics.setdefault(topic, []).append(
                {
                    "partition_index": partition,
                    "committed_offset": offset,
                    "committed_leader_epoch": 7,
                    "committed_metadata": metadata,
                }
            )
        future = ResponseFuture()
        self.apply(
            self.offsets.commit_offsets(
                group_id,
                generation_id,
                member_id,
                instance_id,
                [{"name": name, "partitions": parts} for name, parts in topics.items()],
                future,
                self.now,
                api_version=api_version,
            )
        )
        result = future.result()
        return {
            (t["name"], p["partition_index"]): p["error_code"]
            for t in result["topics"]
            for p in t["partitions"]
        }

    def stable_group(self, *names: str, **kwargs: Any) -> dict[str, str]:
        """Form a stable group whose members join in one initial rebalance; name -> id."""
        futures = {name: self.join_new_member(client_id=name, **kwargs) for name in names}
        self.advance(self.config.group_initial_rebalance_delay_ms)
        ids = {}
        generation = self.group().generation_id
        for name, future in futures.items():
            response = future.result()
            assert response["error_code"] == ErrorCode.NO_ERROR, response
            ids[name] = response["member_id"]
        leader = self.group().leader_id
        assert leader is not None
        syncs = [
            self.sync(member_id, generation, {m: m.encode() for m in ids.values()})
            if member_id == leader
            else self.sync(member_id, generation)
            for member_id in ids.values()
        ]
        assert all(s.result()["error_code"] == ErrorCode.NO_ERROR for s in syncs)
        return ids


class MemoryLog:
    """An in-memory CoordinatorLog: partitions are lists of (key, value) records written
    without a producer, and ``CoordinatorBatch``es (transactional batches and markers)."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[Any]] = {}
        self.topic_created = 0
        self.ensure_calls = 0
        self.fail_with: ErrorCode | None = None
        self.appends = 0

    async def ensure_topic(self) -> None:
        self.ensure_calls += 1
        if self.topic_created == 0:
            self.topic_created = 1

    async def append(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        *,
        producer_id: int = -1,
        producer_epoch: int = -1,
    ) -> None:
        self.appends += 1
        if self.fail_with is not None:
            raise KafkaError(self.fail_with)
        if producer_id < 0:
            self.partitions.setdefault(partition, []).extend(records)
        else:
            self.partitions.setdefault(partition, []).append(
                CoordinatorBatch(list(records), producer_id, producer_epoch, True)
            )

    async def append_marker(
        self,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
    ) -> None:
        self.appends += 1
        if self.fail_with is not None:
            raise KafkaError(self.fail_with)
        self.partitions.setdefault(partition, []).append(
            CoordinatorBatch([], producer_id, producer_epoch, True, commit)
        )

    def read_batches(self, partition: int) -> Iterable[CoordinatorBatch]:
        return [
            entry if isinstance(entry, CoordinatorBatch) else CoordinatorBatch([entry])
            for entry in self.partitions.get(partition, [])
        ]


# -- the whole pure coordinator (classic + consumer groups + offsets) -----------------------


def topic_id(name: str) -> uuid.UUID:
    """A stable topic id per name, for images built in tests."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, name)


def make_image(topics: dict[str, int]) -> MetadataImage:
    """A metadata image with the given topics (name -> number of partitions)."""
    registration = PartitionRegistration((1,), (1,), 1, 0, 0)
    images = {
        name: TopicImage(name, topic_id(name), dict.fromkeys(range(count), registration))
        for name, count in topics.items()
    }
    return MetadataImage(topics=images, topics_by_id={t.topic_id: t for t in images.values()})


class ShardHarness:
    """Drives a GroupCoordinatorShard with an explicit clock and a metadata image.

    Every write is appended to ``log`` (partition -> records) unless ``append_error`` is set;
    ``restarted()`` loads a fresh shard from that log, as the coordinator does at start-up.
    """

    def __init__(self, topics: dict[str, int] | None = None, **config: Any) -> None:
        settings: dict[str, Any] = {
            "group_initial_rebalance_delay_ms": 0,
            "offsets_topic_num_partitions": 3,
        }
        settings.update(config)
        self.settings = settings
        self.config = GroupCoordinatorConfig(**settings)
        counter = itertools.count(1)
        self.shard = GroupCoordinatorShard(self.config, new_uuid=lambda: f"u{next(counter)}")
        self.now = 0
        self.image = make_image(topics if topics is not None else {"t": 6})
        self.log: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self.append_error: ErrorCode = ErrorCode.NO_ERROR

    def set_topics(self, topics: dict[str, int]) -> None:
        self.image = make_image(topics)

    def apply(self, writes: Iterable[PendingWrite]) -> None:
        queue = list(writes)
        while queue:
            write = queue.pop(0)
            if self.append_error == ErrorCode.NO_ERROR:
                self.log.setdefault(write.partition, []).extend(write.records)
            queue.extend(write.complete(self.append_error, self.now))

    def advance(self, ms: int) -> None:
        target = self.now + ms
        while True:
            deadline = self.shard.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.apply(self.shard.tick(self.now))
        self.now = target
        self.apply(self.shard.tick(self.now))

    def records(self) -> list[Any]:
        return [decode_record(k, v) for part in self.log.values() for k, v in part]

    def restarted(self) -> ShardHarness:
        """A new shard loaded from this one's log (the broker restarted)."""
        again = ShardHarness.__new__(ShardHarness)
        again.__dict__.update(self.__dict__)
        counter = itertools.count(1000)
        again.shard = GroupCoordinatorShard(self.config, new_uuid=lambda: f"r{next(counter)}")
        again.log = {p: list(records) for p, records in self.log.items()}
        for records in again.log.values():
            for key, value in records:
                record = decode_record(key, value)
                if record is not None:
                    again.shard.replay(record, again.now)
        again.apply(again.shard.on_loaded(again.now))
        return again

    # -- ConsumerGroupHeartbeat -------------------------------------------------------

    def cg_heartbeat(
        self,
        member_id: str,
        member_epoch: int,
        *,
        group_id: str = "g",
        topics: Sequence[str] | None = None,
        owned: dict[str, Sequence[int]] | None = None,
        regex: str | None = None,
        instance_id: str | None = None,
        rebalance_timeout_ms: int = -1,
        assignor: str | None = None,
        version: int = 1,
    ) -> dict[str, Any]:
        """One heartbeat; ``owned`` is by topic name (None: not sent)."""
        request = ConsumerGroupHeartbeatRequest(
            group_id=group_id,
            member_id=member_id,
            member_epoch=member_epoch,
            instance_id=instance_id,
            rebalance_timeout_ms=rebalance_timeout_ms,
            subscribed_topic_names=list(topics) if topics is not None else None,
            subscribed_topic_regex=regex,
            server_assignor=assignor,
            topic_partitions=(
                None
                if owned is None
                else [(topic_id(name), list(parts)) for name, parts in owned.items()]
            ),
            client_id="client",
            client_host="/127.0.0.1",
            api_version=version,
        )
        future = ResponseFuture()
        self.apply(self.shard.consumer_group_heartbeat(request, future, self.now, self.image))
        return future.result()

    def join(self, member_id: str, topics: Sequence[str] = ("t",), **kwargs: Any) -> dict[str, Any]:
        """A member joins (epoch 0, full request)."""
        return self.cg_heartbeat(
            member_id, 0, topics=topics, owned={}, rebalance_timeout_ms=30_000, **kwargs
        )

    def assigned(self, response: dict[str, Any]) -> dict[str, list[int]] | None:
        """A heartbeat response's assignment by topic name (None: no assignment in it)."""
        assignment = response["assignment"]
        if assignment is None:
            return None
        names = {t.topic_id: name for name, t in self.image.topics.items()}
        return {
            names[t["topic_id"]]: sorted(t["partitions"]) for t in assignment["topic_partitions"]
        }

    # -- offsets and classic groups ---------------------------------------------------

    def commit(
        self,
        offsets: dict[tuple[str, int], int],
        *,
        group_id: str = "g",
        generation_id: int = -1,
        member_id: str = "",
        api_version: int = 9,
    ) -> dict[tuple[str, int], ErrorCode]:
        topics: dict[str, list[dict[str, Any]]] = {}
        for (topic, partition), offset in offsets.items():
            topics.setdefault(topic, []).append(
                {
                    "partition_index": partition,
                    "committed_offset": offset,
                    "committed_leader_epoch": -1,
                    "committed_metadata": "",
                }
            )
        future = ResponseFuture()
        self.apply(
            self.shard.offsets.commit_offsets(
                group_id,
                generation_id,
                member_id,
                None,
                [{"name": n, "partitions": p} for n, p in topics.items()],
                future,
                self.now,
                api_version=api_version,
            )
        )
        return {
            (t["name"], p["partition_index"]): p["error_code"]
            for t in future.result()["topics"]
            for p in t["partitions"]
        }

    def committed(self, group_id: str = "g") -> dict[tuple[str, int], int]:
        return {
            (t["name"], p["partition_index"]): p["committed_offset"]
            for t in self.shard.offsets.fetch_offsets(group_id, None)
            for p in t["partitions"]
        }

    def classic_member(
        self,
        client_id: str,
        *,
        group_id: str = "c",
        topics: Sequence[str] = ("t",),
        protocol_type: str = "consumer",
    ) -> tuple[str, int]:
        """A classic member joins and syncs (alone, or with whoever is joining); its id and
        generation."""
        subscription = struct.pack(">h", 0) + codec.encode(
            CONSUMER_PROTOCOL_SUBSCRIPTION, 0, {"topics": list(topics), "user_data": None}
        )

        def join(member_id: str) -> dict[str, Any]:
            future = ResponseFuture()
            request = JoinGroupRequest(
                group_id=group_id,
                member_id=member_id,
                group_instance_id=None,
                session_timeout_ms=10_000,
                rebalance_timeout_ms=10_000,
                protocol_type=protocol_type,
                protocols=[("range", subscription)],
                client_id=client_id,
                client_host="/127.0.0.1",
            )
            self.apply(self.shard.join_group(request, future, self.now))
            self.advance(0)
            return future.result()

        first = join("")
        if first["error_code"] != ErrorCode.MEMBER_ID_REQUIRED:
            raise AssertionError(first)
        response = join(first["member_id"])
        if response["error_code"] != ErrorCode.NO_ERROR:
            raise AssertionError(response)
        member_id, generation = response["member_id"], response["generation_id"]
        future = ResponseFuture()
        sync = SyncGroupRequest(group_id, generation, member_id, assignments=[(member_id, b"")])
        self.apply(self.shard.classic.sync_group(sync, future, self.now))
        if future.result()["error_code"] != ErrorCode.NO_ERROR:
            raise AssertionError(future.result())
        return member_id, generation
