"""Test helpers: a synchronous harness over the pure group core, and an in-memory log."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.coordinator.group.config import GroupCoordinatorConfig
from pykbroker.coordinator.group.group import ClassicGroup
from pykbroker.coordinator.group.group_metadata_manager import GroupMetadataManager
from pykbroker.coordinator.group.offset_metadata_manager import OffsetMetadataManager
from pykbroker.coordinator.group.records import decode_record
from pykbroker.coordinator.group.requests import JoinGroupRequest, SyncGroupRequest
from pykbroker.coordinator.group.result import PendingWrite, ResponseFuture

RANGE = [("range", b"range-meta")]


class Harness:
    """Drives a GroupMetadataManager with an explicit clock; appends succeed unless told."""

    def __init__(self, **config: Any) -> None:
        settings = {"group_initial_rebalance_delay_ms": 3000, "offsets_topic_num_partitions": 5}
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
    """An in-memory CoordinatorLog: partitions are lists of (key, value)."""

    def __init__(self) -> None:
        self.partitions: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self.topic_created = 0
        self.ensure_calls = 0
        self.fail_with: ErrorCode | None = None
        self.appends = 0

    async def ensure_topic(self) -> None:
        self.ensure_calls += 1
        if self.topic_created == 0:
            self.topic_created = 1

    async def append(self, partition: int, records: Sequence[tuple[bytes, bytes | None]]) -> None:
        self.appends += 1
        if self.fail_with is not None:
            raise KafkaError(self.fail_with)
        self.partitions.setdefault(partition, []).extend(records)

    def read(self, partition: int) -> Iterable[tuple[bytes, bytes | None]]:
        return list(self.partitions.get(partition, []))
