"""QuorumController: checks metadata changes and writes them as records through Raft.

Mirrors Kafka's ``QuorumController`` / ``ReplicationControlManager`` / ``ClusterControlManager``
for topic creation and deletion, partition creation, producer id blocks, and broker registration,
heartbeats and fencing. The Raft leader is the active controller: a change is validated (against
the committed image plus the leader's own uncommitted appends), appended as one batch of records
(``TopicRecord``, ``PartitionRecord``, ``ConfigRecord``, ``RemoveTopicRecord``,
``RegisterBrokerRecord``, ``FenceBrokerRecord``, ``UnfenceBrokerRecord``, ``ProducerIdsRecord``)
through Raft, and answered once committed (``REQUEST_TIMED_OUT`` after ``commit_timeout_ms``,
``NOT_CONTROLLER`` if leadership moved first). Every node -- active or not -- replays committed
records in order into a new immutable ``MetadataImage`` (``handle_commit``) and publishes it to
listeners. A node that is not the active controller forwards the operation to the active one's
CONTROLLER listener (``ControllerChannel``). A request that fails validation writes nothing.

When a broker is fenced its partitions lose their leader (leader -1, offline) and get it back
when it is unfenced; a broker registers fenced and is unfenced by its first heartbeat after it
replayed its own registration (Kafka's way). Not implemented: moving leadership to another replica
(the other replicas hold no data until partition data is replicated; ISR changes and
AlterPartition come with that); controlled shutdown (``want_shut_down``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.log_config import LogConfig
from pykbroker.raft import LeaderAndEpoch, NotLeaderError

from . import schemas
from .image import TOPIC_RESOURCE, MetadataImage
from .metadata_log import MetadataLog, encode
from .records import MetadataRecord, record

log = logging.getLogger(__name__)

MAX_TOPIC_NAME_LENGTH = 249
METADATA_VERSION = 27  # 4.1-IV0
NO_LEADER = -1
_RETRY_BACKOFF_S = 0.05
ZERO_UUID = uuid.UUID(int=0)
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")

#: Topic-level configs Kafka accepts (LogConfig); others get INVALID_CONFIG.
TOPIC_CONFIG_KEYS = frozenset(
    {
        "cleanup.policy",
        "compression.type",
        "compression.gzip.level",
        "compression.lz4.level",
        "compression.zstd.level",
        "delete.retention.ms",
        "file.delete.delay.ms",
        "flush.messages",
        "flush.ms",
        "follower.replication.throttled.replicas",
        "index.interval.bytes",
        "leader.replication.throttled.replicas",
        "local.retention.bytes",
        "local.retention.ms",
        "max.compaction.lag.ms",
        "max.message.bytes",
        "message.downconversion.enable",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.type",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "min.insync.replicas",
        "preallocate",
        "remote.storage.enable",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.index.bytes",
        "segment.jitter.ms",
        "segment.ms",
        "unclean.leader.election.enable",
    }
)


def validate_topic_name(name: str | None) -> str | None:
    """None if ``name`` is a legal topic name, else why not (Kafka's Topic.validate)."""
    if not name:
        return "Topic name is illegal, it can't be empty"
    if name in (".", ".."):
        return 'Topic name cannot be "." or ".."'
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters"
    if not _LEGAL_TOPIC.match(name):
        return (
            f"Topic name {name!r} is illegal, it contains a character other than ASCII "
            "alphanumerics, '.', '_' and '-'"
        )
    return None


@dataclass(slots=True)
class CreateTopicRequest:
    """One topic of a CreateTopics request, or an auto-creation."""

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    assignments: dict[int, list[int]] = field(default_factory=dict)
    configs: dict[str, str | None] = field(default_factory=dict)


@dataclass(slots=True)
class CreateTopicResult:
    name: str
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None
    topic_id: uuid.UUID = ZERO_UUID
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CreatePartitionsRequest:
    """One topic of a CreatePartitions request: grow it to ``count`` partitions."""

    name: str
    count: int
    assignments: list[list[int]] | None = None


@dataclass(slots=True)
class CreatePartitionsResult:
    name: str
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


@dataclass(slots=True)
class DeleteTopicResult:
    name: str | None
    topic_id: uuid.UUID
    error: ErrorCode = ErrorCode.NO_ERROR
    message: str | None = None


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


class QuorumController:
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
            await trio.sleep(_RETRY_BACKOFF_S)

    # --- brokers ---------------------------------------------------------------------------

    def _broker_features(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "metadata.version",
                "min_supported_version": 7,
                "max_supported_version": METADATA_VERSION,
            }
        ]

    async def register_broker(
        self, host: str, port: int, rack: str | None, listener_name: str = "PLAINTEXT"
    ) -> int:
        """Register this broker (a new incarnation each start) with the active controller and
        wait until the registration is in the local image; return the broker epoch."""
        deadline = self._deadline()
        listeners = [{"name": listener_name, "host": host, "port": port, "security_protocol": 0}]
        if await self._await_active(deadline):
            epoch = await self.handle_broker_registration(
                self.node_id, self.cluster_id, self.incarnation_id, listeners, rack
            )
        else:
            body = {
                "broker_id": self.node_id,
                "cluster_id": self.cluster_id,
                "incarnation_id": self.incarnation_id,
                "listeners": listeners,
                "features": self._broker_features(),
                "rack": rack,
                "is_migrating_zk_broker": False,
                "log_dirs": [],
                "previous_broker_epoch": self.broker_epoch,
            }
            response = await self._forward(
                ApiKey.BROKER_REGISTRATION, 4, body, deadline, lambda r: [r["error_code"]]
            )
            if response["error_code"]:
                raise KafkaError(ErrorCode(response["error_code"]), "broker registration failed")
            epoch = response["broker_epoch"]
        self.broker_epoch = epoch

        def registered(image: MetadataImage) -> bool:
            reg = image.brokers.get(self.node_id)
            return reg is not None and reg.incarnation_id == self.incarnation_id

        if not await self._await_image(registered, deadline):
            raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "registration not replicated in time")
        # Registered fenced; caught up (it replayed its own registration): heartbeat until the
        # controller unfences it, as Kafka's BrokerLifecycleManager does before serving.
        while self.image.brokers[self.node_id].fenced:  # bounded by the deadline
            if trio.current_time() >= deadline:
                raise KafkaError(ErrorCode.REQUEST_TIMED_OUT, "not unfenced in time")
            if not await self.heartbeat(reregister=False):
                await self._await_image(
                    lambda image: not image.brokers[self.node_id].fenced, deadline
                )
            else:
                await trio.sleep(_RETRY_BACKOFF_S)
        return epoch

    async def handle_broker_registration(
        self,
        broker_id: int,
        cluster_id: str,
        incarnation_id: uuid.UUID,
        listeners: Sequence[dict[str, Any]],
        rack: str | None,
    ) -> int:
        """Active controller: write a RegisterBrokerRecord; return the new broker epoch."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        if self.cluster_id and cluster_id != self.cluster_id:
            raise KafkaError(
                ErrorCode.INCONSISTENT_CLUSTER_ID,
                f"cluster id {cluster_id!r} is not {self.cluster_id!r}",
            )
        existing = self._validation_image().brokers.get(broker_id)
        if existing is not None and existing.incarnation_id == incarnation_id:
            return existing.epoch  # a retried registration
        records = []
        if "metadata.version" not in self._validation_image().features:
            records.append(
                record(
                    schemas.FEATURE_LEVEL_RECORD,
                    name="metadata.version",
                    feature_level=METADATA_VERSION,
                )
            )
        epoch = self.metadata_log.end_offset
        records.append(
            record(
                schemas.REGISTER_BROKER_RECORD,
                broker_id=broker_id,
                incarnation_id=incarnation_id,
                broker_epoch=epoch,
                end_points=[dict(listener) for listener in listeners],
                features=[],
                rack=rack,
                # Fenced until its first heartbeat after catching up (Kafka's way).
                fenced=True,
            )
        )
        # A new incarnation of a broker that still led partitions (a quick restart, never
        # fenced): they are offline until it is unfenced, and get a new leader epoch then.
        records.extend(self._leadership_changes(self._validation_image(), broker_id, fenced=True))
        self._heartbeats[broker_id] = self._clock()
        await self._commit(records, deadline)
        log.info("registered broker %d (epoch %d)", broker_id, epoch)
        return epoch

    async def heartbeat(self, *, reregister: bool = True) -> bool:
        """Send this broker's heartbeat to the active controller; True if it is fenced. With
        ``reregister``, a controller that no longer knows this incarnation gets a new
        registration."""
        deadline = trio.current_time() + self.broker_session_timeout_ms / 2000
        if await self._await_active(deadline):
            error, fenced = await self.handle_broker_heartbeat(
                self.node_id, self.broker_epoch, current_metadata_offset=self._applied_end - 1
            )
        else:
            body = {
                "broker_id": self.node_id,
                "broker_epoch": self.broker_epoch,
                "current_metadata_offset": self._applied_end - 1,
                "want_fence": False,
                "want_shut_down": False,
                "offline_log_dirs": [],
            }
            response = await self._forward(
                ApiKey.BROKER_HEARTBEAT, 1, body, deadline, lambda r: [r["error_code"]]
            )
            error, fenced = ErrorCode(response["error_code"]), bool(response["is_fenced"])
        if reregister and error in (
            ErrorCode.STALE_BROKER_EPOCH,
            ErrorCode.BROKER_ID_NOT_REGISTERED,
        ):
            reg = self.image.brokers.get(self.node_id)
            if reg is not None:
                log.warning("heartbeat rejected (%s): registering again", error.name)
                await self.register_broker(reg.host, reg.port, reg.rack)
        return fenced

    async def handle_broker_heartbeat(
        self,
        broker_id: int,
        broker_epoch: int,
        want_fence: bool = False,
        current_metadata_offset: int = -1,
    ) -> tuple[ErrorCode, bool]:
        """Active controller: note the heartbeat; unfence a fenced broker once it has replayed
        the metadata up to its own registration; (error, is_fenced). ``want_fence`` keeps it
        fenced (controlled shutdown itself is not implemented)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return ErrorCode.NOT_CONTROLLER, True
        reg = self._validation_image().brokers.get(broker_id)
        if reg is None:
            return ErrorCode.BROKER_ID_NOT_REGISTERED, True
        if reg.epoch != broker_epoch:
            return ErrorCode.STALE_BROKER_EPOCH, True
        self._heartbeats[broker_id] = self._clock()
        if not reg.fenced:
            return ErrorCode.NO_ERROR, False
        if want_fence or current_metadata_offset < reg.epoch:
            return ErrorCode.NO_ERROR, True  # not caught up yet
        if reg.fenced:
            image = self._validation_image()
            await self._commit(
                [
                    record(schemas.UNFENCE_BROKER_RECORD, id=broker_id, epoch=broker_epoch),
                    *self._leadership_changes(image, broker_id, fenced=False),
                ],
                deadline,
            )
            log.info("unfenced broker %d", broker_id)
        return ErrorCode.NO_ERROR, False

    async def fence_expired_brokers(self) -> list[int]:
        """Active controller: fence brokers whose last heartbeat is older than
        ``broker.session.timeout.ms`` (Kafka's BrokerHeartbeatManager); the fenced ids."""
        if not self.is_active:
            return []
        now = self._clock()
        fenced: list[int] = []
        records: list[MetadataRecord] = []
        image = self._validation_image()
        for broker_id, reg in sorted(image.brokers.items()):
            last = self._heartbeats.setdefault(broker_id, now)
            if not reg.fenced and now - last > self.broker_session_timeout_ms:
                records.append(record(schemas.FENCE_BROKER_RECORD, id=broker_id, epoch=reg.epoch))
                records.extend(self._leadership_changes(image, broker_id, fenced=True))
                fenced.append(broker_id)
        if records:
            log.info(
                "fencing brokers %s: no heartbeat for %d ms", fenced, self.broker_session_timeout_ms
            )
            await self._commit(records, self._deadline())
        return fenced

    def _leadership_changes(
        self, image: MetadataImage, broker_id: int, *, fenced: bool
    ) -> list[MetadataRecord]:
        """PartitionChangeRecords for a broker being fenced (its partitions lose their leader:
        -1) or coming back (leaderless partitions whose ISR holds it get it as leader).

        Until partition data is replicated the other replicas hold no data, so leadership is
        never moved to them: a partition is offline while its leader is fenced."""
        records: list[MetadataRecord] = []
        for topic in image.topics.values():
            for index, reg in sorted(topic.partitions.items()):
                if fenced and reg.leader == broker_id:
                    leader = NO_LEADER
                elif not fenced and reg.leader == NO_LEADER and broker_id in reg.isr:
                    leader = broker_id
                else:
                    continue
                records.append(
                    record(
                        schemas.PARTITION_CHANGE_RECORD,
                        partition_id=index,
                        topic_id=topic.topic_id,
                        isr=None,
                        leader=leader,
                        replicas=None,
                        removing_replicas=None,
                        adding_replicas=None,
                        leader_recovery_state=-1,
                        directories=None,
                        eligible_leader_replicas=None,
                        last_known_elr=None,
                    )
                )
        return records

    async def run_broker_lifecycle(
        self,
        heartbeat_interval_ms: int,
        *,
        heartbeat: bool = True,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Background task: heartbeat this broker (a node with the broker role), and fence
        silent brokers when this node is the active controller."""
        task_status.started()
        while True:  # until cancelled at shutdown; every round sleeps
            await trio.sleep(heartbeat_interval_ms / 1000)
            try:
                if heartbeat:
                    await self.heartbeat()
                await self.fence_expired_brokers()
            except KafkaError as exc:
                log.info("broker heartbeat: %s", exc)

    # --- topics ---------------------------------------------------------------------------
    async def create_topics(
        self, requests: Sequence[CreateTopicRequest], validate_only: bool = False
    ) -> list[CreateTopicResult]:
        """Create topics; each gets its own result (errors are per topic, as in Kafka)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return await self._forward_create_topics(requests, validate_only, deadline)
        image = self._validation_image()
        results = []
        records: list[MetadataRecord] = []
        live = sorted(b for b, reg in image.brokers.items() if not reg.fenced)
        seen: set[str] = set()
        for req in requests:
            if req.name in seen:
                results.append(
                    CreateTopicResult(req.name, ErrorCode.INVALID_REQUEST, "Duplicate topic name.")
                )
                continue
            seen.add(req.name)
            result, partitions, replication = self._check_create(req, image, len(live))
            results.append(result)
            if result.error != ErrorCode.NO_ERROR:
                continue
            result.num_partitions = partitions
            result.replication_factor = replication
            result.configs = {k: v for k, v in req.configs.items() if v is not None}
            if validate_only:
                continue
            result.topic_id = uuid.uuid4()
            records.extend(self._topic_records(req, result.topic_id, partitions, replication, live))
        if records:
            await self._commit(records, deadline)
        await self._await_existing(results, deadline)
        return results

    async def _await_existing(self, results: Sequence[CreateTopicResult], deadline: float) -> None:
        """A topic reported as already existing may still be an uncommitted append (on the
        leader) or not replayed here yet (forwarded): answer once this node's image has it, so
        a caller that goes on to use the topic (e.g. FindCoordinator) finds it."""
        existing = {r.name for r in results if r.error == ErrorCode.TOPIC_ALREADY_EXISTS}
        if existing:
            await self._await_image(lambda image: existing <= set(image.topics), deadline)

    async def _forward_create_topics(
        self, requests: Sequence[CreateTopicRequest], validate_only: bool, deadline: float
    ) -> list[CreateTopicResult]:
        body = {
            "topics": [
                {
                    "name": req.name,
                    "num_partitions": req.num_partitions,
                    "replication_factor": req.replication_factor,
                    "assignments": [
                        {"partition_index": index, "broker_ids": list(brokers)}
                        for index, brokers in sorted(req.assignments.items())
                    ],
                    "configs": [{"name": k, "value": v} for k, v in req.configs.items()],
                }
                for req in requests
            ],
            "timeout_ms": self.commit_timeout_ms,
            "validate_only": validate_only,
        }
        response = await self._forward(
            ApiKey.CREATE_TOPICS,
            7,
            body,
            deadline,
            lambda r: [t["error_code"] for t in r["topics"]],
        )
        results = [
            CreateTopicResult(
                name=t["name"],
                error=ErrorCode(t["error_code"]),
                message=t["error_message"],
                topic_id=t["topic_id"],
                num_partitions=t["num_partitions"],
                replication_factor=t["replication_factor"],
                configs={c["name"]: c["value"] for c in t["configs"] if c["value"] is not None},
            )
            for t in response["topics"]
        ]
        created = {r.topic_id for r in results if r.error == ErrorCode.NO_ERROR}
        if not validate_only:
            # Read-your-writes for the client: answer once the topics are in the local image.
            await self._await_image(lambda image: created <= set(image.topics_by_id), deadline)
        await self._await_existing(results, deadline)
        return results

    async def create_partitions(
        self, requests: Sequence[CreatePartitionsRequest], validate_only: bool = False
    ) -> list[CreatePartitionsResult]:
        """Add partitions to existing topics (Kafka's CreatePartitions); errors per topic."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return await self._forward_create_partitions(requests, validate_only, deadline)
        image = self._validation_image()
        live = sorted(b for b, reg in image.brokers.items() if not reg.fenced)
        results: list[CreatePartitionsResult] = []
        records: list[MetadataRecord] = []
        seen: set[str] = set()
        for req in requests:
            result = CreatePartitionsResult(req.name)
            results.append(result)
            if req.name in seen:
                result.error, result.message = ErrorCode.INVALID_REQUEST, "Duplicate topic name."
                continue
            seen.add(req.name)
            new_records = self._partition_records(req, image, live, result)
            if result.error == ErrorCode.NO_ERROR and not validate_only:
                records.extend(new_records)
        if records:
            await self._commit(records, deadline)
        return results

    def _partition_records(
        self,
        req: CreatePartitionsRequest,
        image: MetadataImage,
        live: list[int],
        result: CreatePartitionsResult,
    ) -> list[MetadataRecord]:
        topic = image.topics.get(req.name)
        if topic is None:
            result.error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            result.message = f"The topic '{req.name}' does not exist."
            return []
        current = len(topic.partitions)
        if req.count < current:
            result.error = ErrorCode.INVALID_PARTITIONS
            result.message = (
                f"Topic currently has {current} partitions, which is higher than the requested "
                f"{req.count}."
            )
            return []
        if req.count == current:
            result.error = ErrorCode.INVALID_PARTITIONS
            result.message = f"Topic already has {current} partitions."
            return []
        replication = len(topic.partitions[0].replicas) if 0 in topic.partitions else 1
        added = req.count - current
        if req.assignments is not None:
            if len(req.assignments) != added or any(
                len(b) != replication or len(set(b)) != len(b) or not set(b) <= set(image.brokers)
                for b in req.assignments
            ):
                result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                result.message = "Invalid replica assignment"
                return []
            placements = [list(b) for b in req.assignments]
        else:
            if replication > len(live):
                result.error = ErrorCode.INVALID_REPLICATION_FACTOR
                result.message = (
                    f"Unable to replicate the partition {replication} time(s): only "
                    f"{len(live)} broker(s) are unfenced."
                )
                return []
            placements = [
                [live[(index + i) % len(live)] for i in range(replication)]
                for index in range(current, req.count)
            ]
        return [
            record(
                schemas.PARTITION_RECORD,
                partition_id=current + offset,
                topic_id=topic.topic_id,
                replicas=replicas,
                isr=replicas,
                removing_replicas=[],
                adding_replicas=[],
                leader=replicas[0],
                leader_epoch=0,
                partition_epoch=0,
                directories=[],
            )
            for offset, replicas in enumerate(placements)
        ]

    async def _forward_create_partitions(
        self, requests: Sequence[CreatePartitionsRequest], validate_only: bool, deadline: float
    ) -> list[CreatePartitionsResult]:
        body = {
            "topics": [
                {
                    "name": req.name,
                    "count": req.count,
                    "assignments": (
                        None
                        if req.assignments is None
                        else [{"broker_ids": list(b)} for b in req.assignments]
                    ),
                }
                for req in requests
            ],
            "timeout_ms": self.commit_timeout_ms,
            "validate_only": validate_only,
        }
        response = await self._forward(
            ApiKey.CREATE_PARTITIONS,
            3,
            body,
            deadline,
            lambda r: [t["error_code"] for t in r["results"]],
        )
        results = [
            CreatePartitionsResult(t["name"], ErrorCode(t["error_code"]), t["error_message"])
            for t in response["results"]
        ]
        if not validate_only:
            grown = {
                req.name: req.count
                for req, res in zip(requests, results, strict=False)
                if res.error == ErrorCode.NO_ERROR
            }

            def visible(image: MetadataImage) -> bool:
                return all(
                    name in image.topics and len(image.topics[name].partitions) >= count
                    for name, count in grown.items()
                )

            await self._await_image(visible, deadline)
        return results

    async def delete_topics(
        self, names: Sequence[str | None], topic_ids: Sequence[uuid.UUID]
    ) -> list[DeleteTopicResult]:
        """Delete topics by name or id (DeleteTopics v6 can mix both)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            return await self._forward_delete_topics(names, topic_ids, deadline)
        image = self._validation_image()
        results: list[DeleteTopicResult] = []
        records: list[MetadataRecord] = []
        removed: set[uuid.UUID] = set()
        wanted: list[tuple[str | None, uuid.UUID | None]] = [(n, None) for n in names]
        wanted += [(None, t) for t in topic_ids]
        for name, topic_id in wanted:
            topic = (
                image.topics.get(name) if name is not None else image.topics_by_id.get(topic_id)  # type: ignore[arg-type]
            )
            if topic is None:
                code = (
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    if name is not None
                    else ErrorCode.UNKNOWN_TOPIC_ID
                )
                results.append(DeleteTopicResult(name, topic_id or ZERO_UUID, code))
                continue
            results.append(DeleteTopicResult(topic.name, topic.topic_id))
            if topic.topic_id not in removed:
                removed.add(topic.topic_id)
                records.append(record(schemas.REMOVE_TOPIC_RECORD, topic_id=topic.topic_id))
        if records:
            await self._commit(records, deadline)
        return results

    async def _forward_delete_topics(
        self, names: Sequence[str | None], topic_ids: Sequence[uuid.UUID], deadline: float
    ) -> list[DeleteTopicResult]:
        body = {
            "topics": [{"name": n, "topic_id": ZERO_UUID} for n in names]
            + [{"name": None, "topic_id": t} for t in topic_ids],
            "timeout_ms": self.commit_timeout_ms,
        }
        response = await self._forward(
            ApiKey.DELETE_TOPICS,
            6,
            body,
            deadline,
            lambda r: [t["error_code"] for t in r["responses"]],
        )
        results = [
            DeleteTopicResult(
                t["name"], t["topic_id"], ErrorCode(t["error_code"]), t["error_message"]
            )
            for t in response["responses"]
        ]
        gone = {r.topic_id for r in results if r.error == ErrorCode.NO_ERROR}
        await self._await_image(lambda image: not gone & set(image.topics_by_id), deadline)
        return results

    async def allocate_producer_ids(self, block_size: int) -> int:
        """Reserve ``block_size`` producer ids for this broker (Kafka's AllocateProducerIds:
        a ProducerIdsRecord moves the cluster's next producer id past the block)."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            body = {"broker_id": self.node_id, "broker_epoch": self.broker_epoch}
            response = await self._forward(
                ApiKey.ALLOCATE_PRODUCER_IDS, 0, body, deadline, lambda r: [r["error_code"]]
            )
            if response["error_code"]:
                raise KafkaError(ErrorCode(response["error_code"]), "AllocateProducerIds failed")
            if response["producer_id_len"] < block_size:
                raise KafkaError(ErrorCode.UNKNOWN_SERVER_ERROR, "producer id block too small")
            return int(response["producer_id_start"])
        return await self.handle_allocate_producer_ids(self.node_id, self.broker_epoch, block_size)

    async def handle_allocate_producer_ids(
        self, broker_id: int, broker_epoch: int, block_size: int
    ) -> int:
        """Active controller: reserve a block for ``broker_id``; the first id of it."""
        deadline = self._deadline()
        if not await self._await_active(deadline):
            raise KafkaError(ErrorCode.NOT_CONTROLLER)
        start = self._validation_image().next_producer_id
        await self._commit(
            [
                record(
                    schemas.PRODUCER_IDS_RECORD,
                    broker_id=broker_id,
                    broker_epoch=broker_epoch,
                    next_producer_id=start + block_size,
                )
            ],
            deadline,
        )
        return start

    def topic_configs(self, topic: str) -> Mapping[str, str]:
        return self.image.topic_config(topic)

    def _check_create(
        self, req: CreateTopicRequest, image: MetadataImage, live_brokers: int
    ) -> tuple[CreateTopicResult, int, int]:
        result = CreateTopicResult(req.name)
        problem = validate_topic_name(req.name)
        if problem:
            result.error, result.message = ErrorCode.INVALID_TOPIC_EXCEPTION, problem
            return result, 0, 0
        if req.name in image.topics:
            result.error = ErrorCode.TOPIC_ALREADY_EXISTS
            result.message = f"Topic '{req.name}' already exists."
            return result, 0, 0
        if req.assignments:
            partitions = len(req.assignments)
            replication = len(next(iter(req.assignments.values())))
            if sorted(req.assignments) != list(range(partitions)) or any(
                len(set(b)) != len(b) or not set(b) <= set(image.brokers)
                for b in req.assignments.values()
            ):
                result.error = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                result.message = "Invalid replica assignment"
                return result, 0, 0
        else:
            partitions = req.num_partitions
            replication = req.replication_factor
            if partitions == -1:
                partitions = self.default_num_partitions
            if replication == -1:
                replication = self.default_replication_factor
            if partitions <= 0:
                result.error = ErrorCode.INVALID_PARTITIONS
                result.message = "Number of partitions was set to an invalid non-positive value."
                return result, 0, 0
            if replication <= 0 or replication > live_brokers:
                result.error = ErrorCode.INVALID_REPLICATION_FACTOR
                result.message = (
                    f"Unable to replicate the partition {replication} time(s): The target "
                    f"replication factor of {replication} cannot be reached because only "
                    f"{live_brokers} broker(s) are registered."
                )
                return result, 0, 0
        for key, value in req.configs.items():
            if key not in TOPIC_CONFIG_KEYS:
                result.error = ErrorCode.INVALID_CONFIG
                result.message = f"Unknown topic config name: {key}"
                return result, 0, 0
            if value is None:
                result.error = ErrorCode.INVALID_CONFIG
                result.message = f"Null value not supported for topic configs: {key}"
                return result, 0, 0
        try:
            LogConfig.from_properties({k: v for k, v in req.configs.items() if v is not None})
        except KafkaError as exc:
            result.error = ErrorCode.INVALID_CONFIG
            result.message = exc.message
            return result, 0, 0
        return result, partitions, replication

    def _topic_records(
        self,
        req: CreateTopicRequest,
        topic_id: uuid.UUID,
        partitions: int,
        replication: int,
        live: list[int],
    ) -> list[MetadataRecord]:
        records = [record(schemas.TOPIC_RECORD, name=req.name, topic_id=topic_id)]
        for key, value in sorted(req.configs.items()):
            records.append(
                record(
                    schemas.CONFIG_RECORD,
                    resource_type=TOPIC_RESOURCE,
                    resource_name=req.name,
                    name=key,
                    value=value,
                )
            )
        for index in range(partitions):
            if req.assignments:
                replicas = list(req.assignments[index])
            else:
                start = index % len(live)
                replicas = [live[(start + i) % len(live)] for i in range(replication)]
            records.append(
                record(
                    schemas.PARTITION_RECORD,
                    partition_id=index,
                    topic_id=topic_id,
                    replicas=replicas,
                    isr=replicas,
                    removing_replicas=[],
                    adding_replicas=[],
                    leader=replicas[0],
                    leader_epoch=0,
                    partition_epoch=0,
                    directories=[],
                )
            )
        return records
