"""ControllerBase: the Raft plumbing every part of the QuorumController shares.

The Raft leader is the active controller. A change is validated against the committed image
plus the leader's own appends not committed yet (``_validation_image``), appended as one batch
of records through Raft (``_append``), and answered once committed and replayed
(``_commit``: ``REQUEST_TIMED_OUT`` after ``commit_timeout_ms``, ``NOT_CONTROLLER`` if
leadership moved first). Every node -- active or not -- replays committed records in order into
a new immutable ``MetadataImage`` (``handle_commit``) and publishes it to listeners. A node that
is not the active controller forwards an operation to the active one's CONTROLLER listener
(``_forward`` over a ``ControllerChannel``), retrying while the answer is NOT_CONTROLLER.

Snapshots (KIP-630, Kafka's ``MetadataLoader`` + ``SnapshotGenerator``): a node starts from the
latest snapshot (``handle_load_snapshot``, before the log after it is replayed) and reloads from
one the leader sent it over FetchSnapshot, publishing old -> new image to the listeners like a
commit. Every node writes its own snapshot of the committed image (``snapshot.write_snapshot``)
once ``snapshot_policy`` says so, counted from the metadata log's bytes since the last one.

The concerns built on this live in their own modules: ``broker_lifecycle`` (registration,
heartbeats, fencing), ``topic_control`` (CreateTopics, CreatePartitions, DeleteTopics),
``replication_control`` (leader election, AlterPartition, ElectLeaders, leader rebalance);
``controller.QuorumController`` puts them together.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.raft import LeaderAndEpoch, NotLeaderError, SnapshotId

from .image import MetadataImage
from .metadata_log import MetadataLog, encode
from .records import MetadataRecord
from .replica_placement import StripedReplicaPlacer
from .snapshot import SnapshotFormatError, SnapshotPolicy, load_snapshot, write_snapshot

log = logging.getLogger(__name__)

METADATA_VERSION = 27  # 4.1-IV0
RETRY_BACKOFF_S = 0.05
ZERO_UUID = uuid.UUID(int=0)


class MetadataRaft(Protocol):
    """What the controller needs of the Raft driver (``server/raft_driver.RaftDriver``)."""

    @property
    def leader_and_epoch(self) -> LeaderAndEpoch: ...

    def append(self, records: Sequence[bytes]) -> int:
        """Append one batch as the leader (``NotLeaderError`` otherwise); its last offset."""
        ...


class ControllerChannel(Protocol):
    """Sends a request to the active controller's CONTROLLER listener (Kafka's
    ``NodeToControllerChannelManager``); raises ``KafkaError(REQUEST_TIMED_OUT)`` when no
    controller answered by ``deadline`` (trio time)."""

    async def send(
        self, api_key: int, version: int, body: dict[str, Any], deadline: float
    ) -> dict[str, Any]: ...


class ControllerBase:
    """This node's controller: active when it leads the Raft quorum, forwarding otherwise.

    ``image`` is the committed metadata image (every node replays the committed records in
    order, ``handle_commit``). The active controller validates against ``image`` plus its own
    appends not committed yet, so two changes in flight see each other, as in Kafka.
    """

    def __init__(
        self,
        metadata_log: MetadataLog,
        raft: MetadataRaft,
        *,
        node_id: int,
        default_num_partitions: int,
        default_replication_factor: int,
        clock: Callable[[], int],
        cluster_id: str = "",
        channel: ControllerChannel | None = None,
        commit_timeout_ms: int = 30_000,
        broker_session_timeout_ms: int = 9000,
        unclean_leader_election_enable: bool = False,
        auto_leader_rebalance_enable: bool = True,
        leader_imbalance_check_interval_ms: int = 300_000,
        rng: random.Random | None = None,
    ) -> None:
        self.metadata_log = metadata_log
        self.raft = raft
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.channel = channel
        self.default_num_partitions = default_num_partitions
        self.default_replication_factor = default_replication_factor
        self.commit_timeout_ms = commit_timeout_ms
        self.broker_session_timeout_ms = broker_session_timeout_ms
        #: The broker-level ``unclean.leader.election.enable``; a topic config overrides it.
        self.unclean_leader_election_enable = unclean_leader_election_enable
        self.auto_leader_rebalance_enable = auto_leader_rebalance_enable
        self.leader_imbalance_check_interval_ms = leader_imbalance_check_interval_ms
        self.placer = StripedReplicaPlacer(rng)
        self._clock = clock
        self.image = MetadataImage()
        self._listeners: list[Callable[[MetadataImage, MetadataImage], None]] = []
        self._applied_end = metadata_log.start_offset
        self._epoch_start: int | None = None
        self._leader_image: MetadataImage | None = None
        self._uncommitted_end = 0
        self._changed = trio.Event()
        self._heartbeats: dict[int, int] = {}
        self.incarnation_id = uuid.uuid4()
        self.broker_epoch = -1
        #: When to write the next metadata snapshot (``metadata.log.max.*`` settings).
        self.snapshot_policy = SnapshotPolicy()
        self._last_snapshot_ms = clock()
        self._last_snapshot_end = metadata_log.start_offset
        #: Log size when the last snapshot was written or loaded (0: count the whole log).
        self._bytes_at_last_snapshot = 0

    # --- state --------------------------------------------------------------------------

    @property
    def controller_id(self) -> int:
        """The active controller: the Raft leader (-1 while there is none)."""
        return self.raft.leader_and_epoch.leader_id

    @property
    def client_controller_id(self) -> int:
        """The controller id Metadata and DescribeCluster give clients: the Raft leader when it
        is a live broker, else the lowest live broker (clients can only reach brokers, which
        forward admin requests; Kafka's KRaft brokers give a random live broker)."""
        live = sorted(b for b, reg in self.image.brokers.items() if not reg.fenced)
        leader = self.controller_id
        if leader in live or not live:
            return leader
        return live[0]

    @property
    def is_raft_leader(self) -> bool:
        return self.raft.leader_and_epoch.leader_id == self.node_id

    @property
    def is_active(self) -> bool:
        """Leader, and every record of earlier epochs is replayed (Kafka's controller claims
        leadership only then)."""
        return (
            self.is_raft_leader
            and self._epoch_start is not None
            and self._applied_end >= self._epoch_start
        )

    @property
    def applied_offset(self) -> int:
        """The exclusive end of the records replayed into ``image``."""
        return self._applied_end

    def add_listener(self, listener: Callable[[MetadataImage, MetadataImage], None]) -> None:
        """Called with (old image, new image) after every committed change."""
        self._listeners.append(listener)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _deadline(self) -> float:
        return trio.current_time() + self.commit_timeout_ms / 1000

    def _validation_image(self) -> MetadataImage:
        return self._leader_image if self._leader_image is not None else self.image

    # --- RaftListener ---------------------------------------------------------------------

    def handle_commit(self, high_watermark: int) -> None:
        """Replay the records newly committed (below ``high_watermark``) into the image."""
        if high_watermark <= self._applied_end:
            return
        was_active = self.is_active
        records = [rec for _, rec in self.metadata_log.read(self._applied_end, high_watermark)]
        old = self.image
        self.image = old.apply(records, high_watermark - 1)
        self._applied_end = high_watermark
        if self._leader_image is not None and high_watermark >= self._uncommitted_end:
            self._leader_image = None
        if records:
            for listener in self._listeners:
                try:
                    listener(old, self.image)
                except Exception:
                    log.exception("metadata listener failed at offset %d", high_watermark - 1)
        self._maybe_snapshot()
        if self.is_active and not was_active:
            now = self._clock()
            self._heartbeats = dict.fromkeys(self.image.brokers, now)
            log.info(
                "node %d is the active controller (epoch %d, metadata offset %d)",
                self.node_id,
                self.raft.leader_and_epoch.epoch,
                high_watermark,
            )
        self._wake()

    def handle_load_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        """Replace the image with the snapshot of every record below ``snapshot_id.offset``
        (on start, or installed from the leader); the log after it is replayed on commit."""
        if self.image.offset >= snapshot_id.offset - 1:
            return  # the image already covers it
        try:
            image = load_snapshot(data, snapshot_id.offset)
        except SnapshotFormatError:
            log.exception("cannot load metadata snapshot %s", snapshot_id)
            return
        was_active = self.is_active
        old = self.image
        self.image = image
        self._applied_end = max(self._applied_end, snapshot_id.offset)
        self._leader_image = None
        self._last_snapshot_end = snapshot_id.offset
        self._last_snapshot_ms = self._clock()
        self._bytes_at_last_snapshot = self._metadata_log_bytes()
        log.info("node %d loaded the metadata image from snapshot %s", self.node_id, snapshot_id)
        for listener in self._listeners:
            try:
                listener(old, image)
            except Exception:
                log.exception("metadata listener failed on snapshot %s", snapshot_id)
        if self.is_active and not was_active:
            self._heartbeats = dict.fromkeys(self.image.brokers, self._clock())
        self._wake()

    def _metadata_log_bytes(self) -> int:
        size: int = self.metadata_log.log.size_in_bytes
        return size

    def _maybe_snapshot(self) -> None:
        """Write a snapshot of the committed image when ``snapshot_policy`` says it is due
        (Kafka's ``SnapshotGenerator.maybeEmit``)."""
        create = getattr(self.raft, "create_snapshot", None)
        if create is None or self._applied_end <= self._last_snapshot_end:
            return
        size = self._metadata_log_bytes()
        if size < self._bytes_at_last_snapshot:  # the log was cleaned meanwhile
            self._bytes_at_last_snapshot = size
        now = self._clock()
        if not self.snapshot_policy.due(
            size - self._bytes_at_last_snapshot, now - self._last_snapshot_ms
        ):
            return
        end = self._applied_end
        # KIP-853: the voter set at the snapshot's end goes in it, after the header.
        control_records = getattr(self.raft, "snapshot_control_records", None)
        data = write_snapshot(
            self.image,
            self.raft.leader_and_epoch.epoch,
            now,
            control_records(end) if control_records is not None else (),
        )
        try:
            create(end, data)
        except ValueError as exc:  # not a batch boundary, or not committed: try later
            log.warning("node %d: no metadata snapshot at %d: %s", self.node_id, end, exc)
            return
        self._last_snapshot_end = end
        self._last_snapshot_ms = now
        self._bytes_at_last_snapshot = self._metadata_log_bytes()

    def handle_leader_change(self, leader: LeaderAndEpoch) -> None:
        self._leader_image = None
        if leader.leader_id == self.node_id:
            # The leader appended its LeaderChange record: active once the log end is replayed.
            self._epoch_start = self.metadata_log.end_offset
        else:
            self._epoch_start = None
            self._heartbeats.clear()
        self._wake()

    # --- writing through raft -------------------------------------------------------------

    async def _await_active(self, deadline: float) -> bool:
        """True once active; False if another node leads (or none does) -- forward then."""
        while self.is_raft_leader and not self.is_active:  # bounded by the deadline
            if trio.current_time() >= deadline:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "controller not ready")
            event = self._changed
            with trio.move_on_at(deadline):
                await event.wait()
        return self.is_active

    def _append(self, records: Sequence[MetadataRecord]) -> int:
        """Append one batch; the validation image includes it at once."""
        base = self._validation_image()
        try:
            offset = self.raft.append(encode(records))
        except NotLeaderError as exc:
            raise KafkaError(ErrorCode.NOT_CONTROLLER, "this node is not the controller") from exc
        if self._applied_end <= offset:
            self._leader_image = base.apply(records, offset)
            self._uncommitted_end = offset + 1
        return offset

    async def _wait_committed(self, offset: int, deadline: float) -> None:
        epoch = self.raft.leader_and_epoch.epoch
        while self._applied_end <= offset:  # bounded by the deadline
            if not self.is_raft_leader or self.raft.leader_and_epoch.epoch != epoch:
                raise KafkaError(ErrorCode.NOT_CONTROLLER, "leadership moved before the commit")
            if trio.current_time() >= deadline:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "the change was not committed")
            event = self._changed
            with trio.move_on_at(deadline):
                await event.wait()

    async def _commit(self, records: Sequence[MetadataRecord], deadline: float) -> int:
        """Append and wait until committed and replayed; the offset of the last record."""
        offset = self._append(records)
        await self._wait_committed(offset, deadline)
        return offset

    async def _await_image(self, ready: Callable[[MetadataImage], bool], deadline: float) -> bool:
        """Wait (bounded) until the local image satisfies ``ready``."""
        while not ready(self.image):  # bounded by the deadline
            if trio.current_time() >= deadline:
                return False
            event = self._changed
            with trio.move_on_at(deadline):
                await event.wait()
        return True

    async def _forward(
        self,
        api_key: int,
        version: int,
        body: dict[str, Any],
        deadline: float,
        errors: Callable[[dict[str, Any]], Sequence[int]],
    ) -> dict[str, Any]:
        """Send to the active controller; retry while the answer is NOT_CONTROLLER."""
        if self.channel is None:
            raise KafkaError(ErrorCode.NOT_CONTROLLER, "no controller channel")
        while True:  # bounded by the deadline
            response = await self.channel.send(api_key, version, body, deadline)
            if ErrorCode.NOT_CONTROLLER not in errors(response):
                return response
            if trio.current_time() >= deadline:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "no active controller")
            await trio.sleep(RETRY_BACKOFF_S)
