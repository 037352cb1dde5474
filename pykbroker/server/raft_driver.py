"""RaftDriver: the trio driver around the sans-I/O ``RaftReplica`` (Kafka's ``KafkaRaftClient``
poll loop + ``KafkaNetworkChannel``).

It owns one ``RaftReplica`` over the on-disk ``KafkaReplicatedLog`` of ``__cluster_metadata-0``
and the ``quorum-state`` file (``FileQuorumStateStore``) and does every effect the replica asks
for, in ``RaftOutput``'s order, synchronously on the trio thread so no other step can run in
between: (1) write ``quorum-state``, (2) fsync the log, (3) send the messages, (4) publish the
high watermark and the leader to the listener (the metadata layer), which only then reads the
committed records. Outbound requests go to the voters' CONTROLLER endpoints
(``controller.quorum.voters``) over ``NodeConnection`` with the KRaft RPCs on the wire (Vote v2,
BeginQuorumEpoch v1, EndQuorumEpoch v1, Fetch v17, FetchSnapshot v1), each at the highest version
both sides support: as Kafka's ``NetworkClient``, the driver asks a peer for its ApiVersions once
per connection. A request the peer cannot take at any common version -- a pre-vote to a voter
without Vote v2 -- is answered locally with ``UNSUPPORTED_VERSION`` (Kafka's
``VoteRequest.Builder`` + ``KafkaNetworkChannel``), on which a Prospective node runs a standard
election; a request that fails on the network is answered locally with ``BROKER_NOT_AVAILABLE``
(as Kafka's network channel does), so the replica backs off and retries. Inbound requests
arrive from the CONTROLLER listener's handlers (``handle_request``) and wait for the replica's
response (a Fetch may be parked up to its ``max_wait_ms``). A timer task ticks the replica at
``RaftOutput.next_tick_ms``.

Dynamic quorums (KIP-853): with ``controller.quorum.bootstrap.servers`` instead of
``controller.quorum.voters`` the replica starts with no static voters and reads the voter set
from the log's VotersRecords (the bootstrap checkpoint ``pykbroker format --standalone |
--initial-controllers`` wrote, or the leader's log); after every output the driver takes the
voters' endpoints from it (``_sync_voter_endpoints``). The bootstrap addresses get pseudo node
ids -2, -3, ... (as Kafka's ``QuorumConfig``): an observer with no known leader sends its
Fetch there, and learns the leader's endpoint from the response's ``NodeEndpoints``.
AddRaftVoter / RemoveRaftVoter / UpdateRaftVoter arrive through ``handle_request`` like the other
raft RPCs and wait until the new VotersRecord commits (AddRaftVoter: up to its ``timeout_ms``).

Pre-vote (KIP-996) is on by default (``QuorumConfig.pre_vote_enabled``, as Kafka 4.x always
does): a voter whose fetch timer expires first asks for pre-votes in its current epoch and only
bumps the epoch once a majority would vote for it, so a partitioned or restarted voter rejoins
without disrupting the leader.

Snapshots (KIP-630): listeners that have ``handle_load_snapshot(snapshot_id, data)`` (Kafka's
``Listener.handleLoadSnapshot``) hear the latest snapshot on start, before any commit, and every
snapshot installed from the leader over FetchSnapshot, before the high watermark that follows
it. ``create_snapshot`` stores the metadata layer's snapshot of the committed prefix (it decides
when, ``metadata.log.max.record.bytes.between.snapshots`` / ``...snapshot.interval.ms``); then,
and once a minute, ``KafkaReplicatedLog.maybe_clean`` deletes the log and snapshots before a
newer snapshot per ``metadata.max.retention.bytes`` / ``.ms`` (``MetadataLogRetention``).
"""

from __future__ import annotations

import itertools
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from pykbroker.api.protocol.codec import CodecError
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.clock import wall_clock_ms
from pykbroker.raft import (
    AddRaftVoterRequest,
    AddRaftVoterResponse,
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    FetchSnapshotResponse,
    LeaderAndEpoch,
    QuorumConfig,
    QuorumInfo,
    RaftMessage,
    RaftOutput,
    RaftReplica,
    RaftRequest,
    RaftResponse,
    RemoveRaftVoterRequest,
    RemoveRaftVoterResponse,
    SnapshotId,
    UpdateRaftVoterRequest,
    UpdateRaftVoterResponse,
    VoteRequest,
    VoteResponse,
    wire,
)
from pykbroker.raft.log import ControlRecordType
from pykbroker.raft.messages import REQUEST_TYPES
from pykbroker.raft.voter_set import SUPPORTED_KRAFT_VERSIONS, Endpoint

from .network_client import NodeConnection, NodeUnavailable
from .quorum_state_store import FileQuorumStateStore
from .raft_log import KafkaReplicatedLog

log = logging.getLogger(__name__)

#: The version of each raft API this driver sends at most (Kafka 4.1 sends the newest both sides
#: support, so Vote v2 -- with PreVote -- to 4.x voters).
OUTBOUND_VERSIONS: dict[int, int] = {52: 2, 53: 1, 54: 1, 1: 17, 59: 1, 82: 0}
API_VERSIONS_KEY = 18
#: Without a timer the driver still ticks this often (ms).
_IDLE_TICK_MS = 1000
#: Hosts that are not an address another node can reach (never sent in UpdateRaftVoter).
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: How often the log is checked against the retention settings besides after a snapshot.
_CLEAN_INTERVAL_MS = 60_000


class RaftListener(Protocol):
    """What the metadata layer hears from the driver (Kafka's ``RaftClient.Listener``)."""

    def handle_commit(self, high_watermark: int) -> None:
        """Every record below ``high_watermark`` is committed (and flushed locally)."""
        ...

    def handle_leader_change(self, leader: LeaderAndEpoch) -> None:
        """The quorum's leader or epoch changed."""
        ...


@dataclass(frozen=True, slots=True)
class MetadataLogRetention:
    """How much metadata log (and how many snapshots) is kept before the latest snapshot:
    ``metadata.max.retention.bytes`` (< 1: unlimited) and ``metadata.max.retention.ms``
    (< 0: unlimited); Kafka's defaults."""

    max_bytes: int = 104_857_600
    max_ms: int = 604_800_000


@dataclass(frozen=True, slots=True)
class VoterEndpoint:
    """A voter's CONTROLLER endpoint: from ``controller.quorum.voters``, the voter set's
    VotersRecord (KIP-853), or a ``controller.quorum.bootstrap.servers`` address (pseudo node
    ids -2, -3, ...)."""

    node_id: int
    host: str
    port: int


@dataclass(slots=True)
class _Pending:
    """An inbound request waiting for the replica's response."""

    done: trio.Event = field(default_factory=trio.Event)
    response: RaftResponse | None = None


def _source_of(body: RaftRequest) -> int:
    if isinstance(body, VoteRequest):
        return body.candidate_id
    if isinstance(body, BeginQuorumEpochRequest | EndQuorumEpochRequest):
        return body.leader_id
    return body.replica_id


def network_error_response(body: RaftRequest) -> RaftResponse:
    """What a request lost on the network is answered with (Kafka's
    ``RaftUtil.errorResponse(apiKey, BROKER_NOT_AVAILABLE)``): stale (epoch -1), so the replica
    only backs off and retries."""
    return local_error_response(body, ErrorCode.BROKER_NOT_AVAILABLE)


def local_error_response(body: RaftRequest, error: ErrorCode) -> RaftResponse:
    """The response of ``body``'s type that carries ``error`` and no leader (epoch -1)."""
    if isinstance(body, VoteRequest):
        return VoteResponse(error, -1, -1)
    if isinstance(body, BeginQuorumEpochRequest):
        return BeginQuorumEpochResponse(error, -1, -1)
    if isinstance(body, EndQuorumEpochRequest):
        return EndQuorumEpochResponse(error, -1, -1)
    if isinstance(body, FetchRequest):
        return FetchResponse(error, -1, -1)
    if isinstance(body, AddRaftVoterRequest):
        return AddRaftVoterResponse(error)
    if isinstance(body, RemoveRaftVoterRequest):
        return RemoveRaftVoterResponse(error)
    if isinstance(body, UpdateRaftVoterRequest):
        return UpdateRaftVoterResponse(error)
    return FetchSnapshotResponse(error, -1, -1)


def bootstrap_ids(count: int) -> list[int]:
    """The pseudo node ids of ``count`` ``controller.quorum.bootstrap.servers`` addresses
    (Kafka's ``QuorumConfig`` gives them -2, -3, ...: never a real node id)."""
    return [-2 - i for i in range(count)]


class RaftDriver:
    """Runs a ``RaftReplica`` on real files, sockets and time (see the module docstring)."""

    def __init__(
        self,
        *,
        node_id: int,
        voters: Mapping[int, VoterEndpoint],
        log: KafkaReplicatedLog,
        store: FileQuorumStateStore,
        cluster_id: str | None,
        config: QuorumConfig | None = None,
        listener_name: str = "CONTROLLER",
        controller_endpoint: tuple[str, int] | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        retention: MetadataLogRetention | None = None,
        directory_id: uuid.UUID | None = None,
        bootstrap_servers: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.node_id = node_id
        #: The voters' CONTROLLER endpoints: the static ``controller.quorum.voters``, or, with
        #: a dynamic quorum (kraft.version 1), the latest VotersRecord's, updated after every
        #: output of the replica.
        self.voters = dict(voters)
        self._static_voters = frozenset(voters)
        self.directory_id = directory_id
        #: ``controller.quorum.bootstrap.servers`` by pseudo node id (-2, -3, ...).
        self.bootstrap_servers = {
            pseudo: VoterEndpoint(pseudo, host, port)
            for pseudo, (host, port) in zip(
                bootstrap_ids(len(bootstrap_servers)), bootstrap_servers, strict=True
            )
        }
        #: Leader endpoints learnt from responses' ``NodeEndpoints`` (Fetch v16+,
        #: FetchSnapshot v1+): how an observer that knows no voter set reaches the leader.
        self._learnt: dict[int, VoterEndpoint] = {}
        #: UpdateRaftVoter: in flight, and not sent again before this time (ms).
        self._updating_voter = False
        self._next_update_voter_ms = 0
        self.log = log
        self.store = store
        self.cluster_id = cluster_id
        self.config = config or QuorumConfig()
        self.retention = retention or MetadataLogRetention()
        self.listener_name = listener_name
        self.controller_endpoint = controller_endpoint
        self._clock = clock
        self._rng = rng or random.Random()
        self._listeners: list[RaftListener] = []
        self._replica: RaftReplica | None = None
        self._nursery: trio.Nursery | None = None
        self._connections: dict[int, NodeConnection] = {}
        #: Each peer's ApiVersions (api key -> (min, max)), asked once per connection.
        self._peer_versions: dict[int, dict[int, tuple[int, int]]] = {}
        self._next_clean_ms = 0
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._inbound_ids = itertools.count(1_000_000_000)
        self._next_tick_ms: int | None = None
        self._timer_changed = trio.Event()
        self._closed = False
        self.high_watermark = -1
        self.leader_and_epoch = LeaderAndEpoch(-1, 0)
        self.started = trio.Event()

    # --- public API -----------------------------------------------------------------------

    def add_listener(self, listener: RaftListener) -> None:
        """Register before ``run``: it hears every commit and leader change from the start."""
        self._listeners.append(listener)

    @property
    def replica(self) -> RaftReplica:
        assert self._replica is not None, "the raft driver is not running"
        return self._replica

    @property
    def is_leader(self) -> bool:
        return self._replica is not None and self._replica.is_leader

    def leader_endpoint(self) -> VoterEndpoint | None:
        """The CONTROLLER endpoint of the current leader, if known."""
        return self.endpoint_of(self.leader_and_epoch.leader_id)

    def endpoint_of(self, node_id: int) -> VoterEndpoint | None:
        """Where to reach ``node_id``: a voter, a leader learnt from a response, or a
        bootstrap server (pseudo id)."""
        if node_id in self.voters:
            return self.voters[node_id]
        if node_id <= -2:
            return self.bootstrap_servers.get(node_id)
        return self._learnt.get(node_id) if node_id >= 0 else None

    def snapshot_control_records(self, end_offset: int) -> list[tuple[ControlRecordType, bytes]]:
        """The KRaftVersionRecord and VotersRecord a metadata snapshot ending at
        ``end_offset`` carries after its header (none for kraft.version 0)."""
        if self._replica is None:
            return []
        return self._replica.snapshot_control_records(end_offset)

    def append(self, records: Sequence[bytes]) -> int:
        """Leader only (else ``NotLeaderError``): append ``records`` as one batch in the current
        epoch; return the offset of the last one. Committed once ``handle_commit`` passes it."""
        replica = self.replica
        last = replica.append(list(records), self._clock())
        self._process(replica.take_output())
        return last

    def resign(self) -> None:
        """Leader only (else ``NotLeaderError``): step down, telling the voters."""
        replica = self.replica
        replica.resign(self._clock())
        self._process(replica.take_output())

    def describe_quorum(self) -> QuorumInfo:
        """Leader only (else ``NotLeaderError``)."""
        return self.replica.describe_quorum()

    def create_snapshot(self, end_offset: int, data: bytes) -> SnapshotId:
        """Store ``data``, the listener's snapshot of every record below ``end_offset`` (a
        committed batch boundary; ``ValueError`` otherwise), as
        ``<end offset>-<epoch>.checkpoint``; then clean the log per ``retention`` (Kafka's
        ``RaftClient.createSnapshot`` + ``KafkaMetadataLog.maybeClean``)."""
        snapshot_id = self.replica.create_snapshot(end_offset, data, delete_log_before=False)
        log.info("raft: node %d wrote metadata snapshot %s", self.node_id, snapshot_id)
        self._clean_log()
        return snapshot_id

    def latest_snapshot(self) -> tuple[SnapshotId, bytes] | None:
        """The newest snapshot this node holds and its bytes."""
        snapshot_id = self.log.latest_snapshot_id
        if snapshot_id is None:
            return None
        data = self.log.read_snapshot(snapshot_id)
        return None if data is None else (snapshot_id, data)

    def _clean_log(self) -> None:
        now = self._clock()
        self._next_clean_ms = now + _CLEAN_INTERVAL_MS
        if self.log.maybe_clean(self.retention.max_bytes, self.retention.max_ms, now):
            self.log.flush()
            log.info(
                "raft: node %d cleaned the metadata log to start at %d",
                self.node_id,
                self.log.log_start_offset,
            )

    async def handle_request(self, body: RaftRequest) -> RaftResponse | None:
        """An inbound raft request: step it and wait for the replica's answer (None when none
        came within ``controller.quorum.request.timeout.ms``)."""
        if self._replica is None or self._closed:
            return None
        source = _source_of(body)
        timeout_ms = self.config.controller_quorum_request_timeout_ms
        if isinstance(body, AddRaftVoterRequest):
            # Answered when the new VotersRecord commits, at most ``timeout_ms`` later.
            timeout_ms = max(timeout_ms, body.timeout_ms)
        correlation_id = next(self._inbound_ids)
        pending = _Pending()
        key = (source, correlation_id)
        self._pending[key] = pending
        try:
            message = RaftMessage(source, self.node_id, correlation_id, body)
            self._process(self._replica.step(message, self._clock()))
            # The replica answers a voter change itself at its deadline; wait a little longer.
            with trio.move_on_after(timeout_ms / 1000 + 1.0):
                await pending.done.wait()
        finally:
            del self._pending[key]
        return pending.response

    # --- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Create the replica from the files, then tick it until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                static = self._static_voters
                if not static and not self.bootstrap_servers:
                    static = frozenset({self.node_id})  # a one-voter quorum of itself
                self._replica = RaftReplica(
                    self.node_id,
                    static,
                    self.log,
                    random=self._rng,
                    config=self.config,
                    cluster_id=self.cluster_id,
                    election_state=self.store.read(),
                    now_ms=self._clock(),
                    directory_id=self.directory_id,
                    bootstrap_servers=list(self.bootstrap_servers),
                )
                self._sync_voter_endpoints()
                latest = self.latest_snapshot()
                if latest is not None:  # Kafka's listeners load the latest snapshot first
                    self._load_snapshot(*latest)
                self._process(self._replica.take_output())
                self.started.set()
                task_status.started(self)
                await self._timer_loop()
        finally:
            self._closed = True
            for pending in self._pending.values():
                pending.done.set()
            with trio.CancelScope(shield=True):
                for connection in self._connections.values():
                    await connection.aclose()

    async def _timer_loop(self) -> None:
        while not self._closed:  # until the run task is cancelled
            now = self._clock()
            deadline = self._next_tick_ms
            delay_ms = _IDLE_TICK_MS if deadline is None else max(0, deadline - now)
            with trio.move_on_after(min(delay_ms, _IDLE_TICK_MS) / 1000):
                await self._timer_changed.wait()
            self._timer_changed = trio.Event()
            now = self._clock()
            if self._next_tick_ms is None or now >= self._next_tick_ms:
                self._process(self.replica.tick(now))
            if now >= self._next_clean_ms:
                self._clean_log()

    # --- effects, in RaftOutput's order ---------------------------------------------------

    def _process(self, out: RaftOutput) -> None:
        if self._closed:
            return
        self._sync_voter_endpoints()
        if out.persist_election_state is not None:
            self.store.write(out.persist_election_state, sorted(self.voters))
        if out.flush_log:
            self.log.flush()
        for message in out.messages:
            if message.is_request:
                assert self._nursery is not None
                self._nursery.start_soon(self._send, message)
            else:
                pending = self._pending.get((message.destination, message.correlation_id))
                if pending is not None:
                    pending.response = message.body  # type: ignore[assignment]
                    pending.done.set()
        if out.snapshot_installed is not None:
            data = self.log.read_snapshot(out.snapshot_installed)
            if data is None:
                log.error("installed snapshot %s is not in the log", out.snapshot_installed)
            else:
                self._load_snapshot(out.snapshot_installed, data)
        if out.leader_change is not None:
            self.leader_and_epoch = out.leader_change
            log.info(
                "raft: node %d sees leader %d in epoch %d",
                self.node_id,
                out.leader_change.leader_id,
                out.leader_change.epoch,
            )
            for listener in self._listeners:
                listener.handle_leader_change(out.leader_change)
        if out.high_watermark is not None and out.high_watermark > self.high_watermark:
            self.high_watermark = out.high_watermark
            self.log.high_watermark = out.high_watermark
            for listener in self._listeners:
                listener.handle_commit(out.high_watermark)
        self._maybe_update_voter()
        previous = self._next_tick_ms
        self._next_tick_ms = out.next_tick_ms
        if out.next_tick_ms is not None and (previous is None or out.next_tick_ms < previous):
            self._timer_changed.set()

    def _sync_voter_endpoints(self) -> None:
        """KIP-853: with kraft.version 1 the voters and their endpoints are the latest
        VotersRecord's (Kafka's ``KafkaRaftClient`` updates its network channel from the voter
        set); a voter whose endpoint changed gets a new connection."""
        replica = self._replica
        if replica is None or replica.kraft_version < 1:
            return
        voter_set = replica.voter_set
        voters: dict[int, VoterEndpoint] = {}
        for voter_id in sorted(voter_set.voter_ids):
            endpoints = voter_set.endpoints(voter_id)
            chosen = next((e for e in endpoints if e.name == self.listener_name), None)
            if chosen is None and endpoints:
                chosen = endpoints[0]
            if chosen is not None:
                voters[voter_id] = VoterEndpoint(voter_id, chosen.host, chosen.port)
            elif voter_id == self.node_id and self.controller_endpoint is not None:
                host, port = self.controller_endpoint
                voters[voter_id] = VoterEndpoint(voter_id, host, port)
        if voters == self.voters:
            return
        log.info(
            "raft: node %d sees voters %s",
            self.node_id,
            ", ".join(f"{v.node_id}@{v.host}:{v.port}" for v in voters.values()),
        )
        for voter_id, endpoint in voters.items():
            old = self.voters.get(voter_id) or self._learnt.get(voter_id)
            if old is not None and (old.host, old.port) != (endpoint.host, endpoint.port):
                self._drop_connection(voter_id)
        self.voters = voters

    def _maybe_update_voter(self) -> None:
        """KIP-853: a voter whose CONTROLLER endpoint differs from its VotersRecord entry tells
        the leader with UpdateRaftVoter (Kafka's follower ``pollFollowerAsVoter`` /
        ``shouldSendUpdateVoteRequest``), retried every ``controller.quorum.request.timeout.ms``
        until the new VotersRecord arrives."""
        replica = self._replica
        endpoint = self.controller_endpoint
        if (
            replica is None
            or self._nursery is None
            or self._updating_voter
            or endpoint is None
            or endpoint[0] in _WILDCARD_HOSTS
            or replica.kraft_version < 1
            or replica.is_leader
            or self.leader_and_epoch.leader_id < 0
        ):
            return
        node = replica.voter_set.voters.get(self.node_id)
        if node is None or node.key.directory_id != self.directory_id:
            return
        wanted = (Endpoint(self.listener_name, endpoint[0], endpoint[1]),)
        if node.endpoints == wanted:
            return
        now = self._clock()
        if now < self._next_update_voter_ms:
            return
        self._next_update_voter_ms = now + self.config.controller_quorum_request_timeout_ms
        self._updating_voter = True
        request = UpdateRaftVoterRequest(
            self.cluster_id,
            self.leader_and_epoch.epoch,
            node.key,
            wanted,
            SUPPORTED_KRAFT_VERSIONS[0],
            SUPPORTED_KRAFT_VERSIONS[-1],
        )
        self._nursery.start_soon(self._send_update_voter, self.leader_and_epoch.leader_id, request)

    async def _send_update_voter(self, leader_id: int, request: UpdateRaftVoterRequest) -> None:
        try:
            response = await self._exchange(leader_id, request)
            log.info(
                "raft: node %d sent UpdateRaftVoter %s to %d: %s",
                self.node_id,
                ", ".join(f"{e.name}://{e.host}:{e.port}" for e in request.listeners),
                leader_id,
                response.error_code.name,
            )
        finally:
            self._updating_voter = False

    def _learn_endpoints(self, answer: dict[str, Any]) -> None:
        """Leader endpoints from a response's ``NodeEndpoints`` (Kafka's
        ``KafkaRaftClient.handleFetchResponse`` passes them to ``maybeTransition``)."""
        for item in answer.get("node_endpoints") or ():
            node_id, host, port = item["node_id"], item["host"], item["port"]
            if node_id < 0 or node_id in self.voters or port <= 0:
                continue
            endpoint = VoterEndpoint(node_id, host, port)
            old = self._learnt.get(node_id)
            if old != endpoint:
                if old is not None:
                    self._drop_connection(node_id)
                self._learnt[node_id] = endpoint

    def _drop_connection(self, node_id: int) -> None:
        connection = self._connections.pop(node_id, None)
        self._peer_versions.pop(node_id, None)
        if connection is not None and self._nursery is not None:
            self._nursery.start_soon(connection.aclose)

    def _load_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        log.info("raft: node %d loads metadata snapshot %s", self.node_id, snapshot_id)
        for listener in self._listeners:
            load = getattr(listener, "handle_load_snapshot", None)
            if load is not None:
                load(snapshot_id, data)

    def _connection(self, node_id: int) -> NodeConnection | None:
        connection = self._connections.get(node_id)
        if connection is None:
            endpoint = self.endpoint_of(node_id)
            if endpoint is None or endpoint.port < 0:
                return None
            connection = NodeConnection(
                endpoint.host,
                endpoint.port,
                client_id=f"raft-client-{self.node_id}",
                connect_timeout_s=self.config.controller_quorum_request_timeout_ms / 1000,
            )
            self._connections[node_id] = connection
        return connection

    async def _send(self, message: RaftMessage) -> None:
        body = message.body
        assert isinstance(body, REQUEST_TYPES)
        response = await self._exchange(message.destination, body)
        if self._closed or self._replica is None:
            return
        reply = RaftMessage(message.destination, self.node_id, message.correlation_id, response)
        self._process(self._replica.step(reply, self._clock()))

    async def _exchange(self, destination: int, body: RaftRequest) -> RaftResponse:
        api_key = wire.api_key(body)
        connection = self._connection(destination)
        if connection is None:
            return network_error_response(body)
        try:
            with trio.fail_after(self.config.controller_quorum_request_timeout_ms / 1000):
                version = await self._version_for(destination, connection, api_key)
                if version is None:
                    return local_error_response(body, ErrorCode.UNSUPPORTED_VERSION)
                try:
                    data = wire.to_wire(
                        body, version, leader_endpoints=self._leader_endpoints(body)
                    )
                except wire.UnsupportedVersionError as exc:
                    log.info("raft: node %d cannot send to %d: %s", self.node_id, destination, exc)
                    return local_error_response(body, ErrorCode.UNSUPPORTED_VERSION)
                answer = await connection.request(api_key, version, data)
            self._learn_endpoints(answer)
            return wire.response_from_wire(api_key, version, answer)
        except (NodeUnavailable, trio.TooSlowError) as exc:
            self._peer_versions.pop(destination, None)  # a new connection asks again
            log.debug(
                "raft request %s to node %d failed: %s", type(body).__name__, destination, exc
            )
        except (wire.WireError, CodecError, KeyError, ValueError) as exc:
            log.warning("bad raft response from node %d: %s", destination, exc)
        return network_error_response(body)

    async def _version_for(
        self, destination: int, connection: NodeConnection, api_key: int
    ) -> int | None:
        """The highest version of ``api_key`` both this driver and the peer support (None: no
        common one), from the peer's ApiVersions (asked once per connection, v0)."""
        versions = self._peer_versions.get(destination)
        if versions is None:
            answer = await connection.request(API_VERSIONS_KEY, 0, {})
            versions = {
                item["api_key"]: (item["min_version"], item["max_version"])
                for item in answer["api_keys"]
            }
            self._peer_versions[destination] = versions
        ours_low, _ = wire.version_range(api_key)
        theirs = versions.get(api_key)
        if theirs is None:
            return None
        version = min(OUTBOUND_VERSIONS[api_key], theirs[1])
        return version if version >= max(ours_low, theirs[0]) else None

    def _leader_endpoints(self, body: RaftRequest) -> list[wire.Endpoint]:
        if not isinstance(body, BeginQuorumEpochRequest | EndQuorumEpochRequest):
            return []
        if self.controller_endpoint is None:
            return []
        host, port = self.controller_endpoint
        return [(self.listener_name, host, port)]
