"""SimulatedCluster: a seeded, deterministic simulation of a KRaft quorum.

After Kafka's ``RaftEventSimulationTest`` and etcd's ``network`` test harness. Voters and
observers run ``RaftReplica`` over ``MemoryLog`` on a fake network and a fake clock (int ms,
one priority queue of events). The network drops, delays (so reorders) and duplicates
messages and can be partitioned; nodes crash -- also in the middle of acting on an output,
between persisting ``quorum-state``, flushing the log and sending -- and restart with only
what they had made durable. Clients append records to whichever node is leader.

Invariants checked after every event (``SimulationFailure`` names the seed):

* at most one leader per epoch, over the whole run;
* the epoch of a node never decreases, across restarts (it is persisted);
* the high watermark of a node never decreases while it runs; on restart it starts over at
  the log start offset, as Kafka's (not persisted), and everything below it is committed;
* committed records never change: the first node to apply offset N fixes it, every node
  applying N later (from its log or a snapshot) must agree;
* a new leader's log holds every committed record (leader completeness);
* after the faults stop (heal), a leader is elected and commits within a bounded time, every
  node catches up, and every append acknowledged as committed is in every node's state.

With ``dynamic=True`` (KIP-853) the initial voters are formatted with a bootstrap checkpoint
(kraft.version 1, ``--initial-controllers``), the others with ``--no-initial-controllers`` and
``controller.quorum.bootstrap.servers``; an admin client sends AddRaftVoter / RemoveRaftVoter
(one at a time, the leader refuses a second) to the leader while the faults happen, and one more
invariant is checked: the voter set in force at a committed offset is the same on every node.

``replay(seed, voters=..., observers=..., dynamic=...)`` reruns one schedule exactly.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.raft import (
    NotLeaderError,
    QuorumConfig,
    RaftMessage,
    RaftOutput,
    RaftReplica,
    VoteResponse,
)
from pykbroker.raft.bootstrap import BOOTSTRAP_SNAPSHOT_ID, kraft_control_records, memory_snapshot
from pykbroker.raft.messages import (
    AddRaftVoterRequest,
    AddRaftVoterResponse,
    RemoveRaftVoterRequest,
    RemoveRaftVoterResponse,
)
from pykbroker.raft.voter_set import VoterSet

from .contract import check_output_contract
from .simulation_support import (
    SIM_CONFIG,
    SimNode,
    SimulationFailure,
    SimulationStats,
    decode_memory_snapshot,
    decode_state,
    directory_id,
    election_bound_ms,
    encode_state,
    voter_node,
)

#: The admin client's node id in ``RaftMessage`` (node ids start at 1).
ADMIN_CLIENT = 0

__all__ = ["SIM_CONFIG", "SimulatedCluster", "SimulationFailure", "SimulationStats", "replay"]


class SimulatedCluster:
    """One seeded schedule; ``run()`` executes it and returns its stats."""

    def __init__(
        self,
        seed: int,
        voters: int = 3,
        observers: int = 1,
        *,
        config: QuorumConfig = SIM_CONFIG,
        fault_ms: int | None = None,
        dynamic: bool = False,
    ) -> None:
        self.seed, self.voter_count, self.observer_count = seed, voters, observers
        self.dynamic = dynamic
        self.rng = random.Random(seed)
        self.config = config
        self.voter_ids = frozenset(range(1, voters + 1))
        ids = list(range(1, voters + observers + 1))
        self.nodes = {i: SimNode(i, i in self.voter_ids) for i in ids}
        self.now = 0
        self._queue: list[tuple[int, int, str, Any]] = []
        self._seq = 0
        self.stats = SimulationStats(schedules=1)
        rng = self.rng
        self.bound_ms = election_bound_ms(config)
        #: Fault timings scale with the election timeout (SIM_CONFIG's is 100 ms).
        self.scale = max(1, config.controller_quorum_election_timeout_ms // 100)
        self.fault_ms = fault_ms if fault_ms is not None else rng.randint(300, 1500) * self.scale
        self.drop_rate = rng.choice([0.0, 0.01, 0.05, 0.15])
        self.duplicate_rate = rng.choice([0.0, 0.02, 0.1])
        self.long_delay_rate = rng.choice([0.0, 0.02, 0.1])
        self.fault_interval_ms = rng.choice([40, 100, 250]) * self.scale
        self.client_interval_ms = rng.choice([10, 25, 60])
        self.crash_after_vote_rate = rng.choice([0.0, 0.2, 0.6])
        self.blocked: set[tuple[int, int]] = set()
        self.healed_at: int | None = None
        self.failover = False
        self.elected_at: int | None = None
        self.final_append: tuple[int, int, int] | None = None  # (node, epoch, offset)
        self.committed: list[tuple[int, bytes]] = []  # (epoch, value) of every committed record
        self.pending: dict[int, list[tuple[int, bytes]]] = {}  # offset -> appended (epoch, value)
        self.acknowledged: dict[int, bytes] = {}
        self.leaders_by_epoch: dict[int, int] = {}
        self._checked_leaders: set[tuple[int, int]] = set()
        self._leaderless_since: int | None = 0
        self._client_counter = 0
        self._connections: dict[int, tuple[int, int, int]] = {}
        self._next_wire_id = 0
        self.trace: list[str] | None = None
        #: Offset -> voter ids in force there, fixed by the first node whose HW passed it.
        self.committed_voters: dict[int, frozenset[int]] = {}
        self._admin_correlation = 0
        if dynamic:
            bootstrap = memory_snapshot(
                kraft_control_records(VoterSet.of(voter_node(i) for i in self.voter_ids))
            )
            for node_id in self.voter_ids:  # kafka-storage format --initial-controllers
                self.nodes[node_id].log.create_snapshot(BOOTSTRAP_SNAPSHOT_ID, bootstrap)

    # --- plumbing ----------------------------------------------------------------------------

    def fail(self, message: str) -> SimulationFailure:
        dynamic = ", dynamic=True" if self.dynamic else ""
        return SimulationFailure(
            f"{message}\n  at t={self.now} ms; replay with "
            f"replay({self.seed}, voters={self.voter_count}, observers={self.observer_count}"
            f"{dynamic})"
        )

    def _schedule(self, time_ms: int, kind: str, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time_ms, self._seq, kind, payload))

    def _alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.replica is not None]

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now:6d} {text}")

    # --- the driver: act on a RaftOutput in the contract's order -----------------------------

    def _process(self, node: SimNode, out: RaftOutput, trigger: RaftMessage | None = None) -> None:
        replica = node.replica
        assert replica is not None
        try:
            check_output_contract(node.node_id, node.durable_election, out, node.log, trigger)
        except AssertionError as exc:
            raise self.fail(str(exc)) from None
        crash_point = node.crash_mid_output
        if crash_point is not None and not out.is_empty:
            node.crash_mid_output = None
            self.stats.crashes_mid_output += 1
            if crash_point == 0:
                return self._crash(node)
            if out.persist_election_state is not None:
                node.durable_election = out.persist_election_state
            if crash_point == 1:
                return self._crash(node)
            if out.flush_log:
                node.log.flush()
            sent = self.rng.randrange(0, len(out.messages) + 1)
            for message in out.messages[:sent]:
                self._send(message)
            return self._crash(node)
        if out.persist_election_state is not None:
            node.durable_election = out.persist_election_state
        if out.flush_log:
            node.log.flush()
        for message in out.messages:
            self._send(message)
        if self._crash_after_vote(node, out):
            return
        if out.snapshot_installed is not None:
            self.stats.snapshots_installed += 1
            data = node.log.read_snapshot(out.snapshot_installed)
            if data is None:
                raise self.fail(f"node {node.node_id}: installed snapshot missing")
            self._load_snapshot(node, data)
        self._apply_committed(node)
        if self.trace is not None and (
            out.persist_election_state is not None or out.leader_change is not None
        ):
            self._log(
                f"node {node.node_id}: {replica.state_name} epoch {replica.epoch} "
                f"leader {replica.leader_id} high watermark {replica.high_watermark}"
            )
        tick = out.next_tick_ms
        if tick is not None:
            tick = max(tick, self.now + 1)
            if node.tick_at is None or tick < node.tick_at:
                node.tick_at = tick
                self._schedule(tick, "tick", (node.node_id, node.incarnation))

    def _crash_after_vote(self, node: SimNode, out: RaftOutput) -> bool:
        """Targeted fault: a voter that just granted a vote crashes and restarts at once, so
        a vote not made durable would be granted again to another candidate."""
        replica = node.replica
        if (
            self.healed_at is None
            and replica is not None
            and replica.state_name == "voted"
            and any(isinstance(m.body, VoteResponse) and m.body.vote_granted for m in out.messages)
            and self.rng.random() < self.crash_after_vote_rate
        ):
            self._crash(node, restart_after_ms=self.rng.randint(0, 2))
            return True
        return False

    def _send(self, message: RaftMessage) -> None:
        stats, rng = self.stats, self.rng
        if message.destination == ADMIN_CLIENT:
            self._on_admin_response(message)
            return
        stats.messages_sent += 1
        if (message.source, message.destination) in self.blocked or rng.random() < self.drop_rate:
            stats.messages_dropped += 1
            return
        copies = 2 if rng.random() < self.duplicate_rate else 1
        stats.messages_duplicated += copies - 1
        # Like a real driver, map the replica's correlation ids onto connection-wide ones: a
        # response goes back on the connection its request came in on, so it never reaches a
        # restarted requester (whose new replica reuses correlation ids).
        if message.is_request:
            self._next_wire_id += 1
            wire_id = self._next_wire_id
            self._connections[wire_id] = (
                message.source,
                self.nodes[message.source].incarnation,
                message.correlation_id,
            )
            incarnation = self.nodes[message.destination].incarnation
            message = dataclasses.replace(message, correlation_id=wire_id)
        else:
            connection = self._connections.get(message.correlation_id)
            if connection is None:
                return
            _, incarnation, correlation_id = connection
            message = dataclasses.replace(message, correlation_id=correlation_id)
        for _ in range(copies):
            delay = rng.randint(1, 8)
            if rng.random() < self.long_delay_rate:
                delay = rng.randint(20, 200)
            self._schedule(self.now + delay, "deliver", (message, incarnation))

    # --- the application: committed records and snapshots ------------------------------------

    def _load_snapshot(self, node: SimNode, data: bytes) -> None:
        values = self._decode_snapshot(data)
        for offset, value in enumerate(values):
            if offset >= len(self.committed) or self.committed[offset][1] != value:
                raise self.fail(f"node {node.node_id}: snapshot disagrees at offset {offset}")
        node.applied = values

    def _apply_committed(self, node: SimNode) -> None:
        replica = node.replica
        assert replica is not None
        high_watermark = replica.high_watermark
        start = len(node.applied)
        if high_watermark <= start:
            return
        if start < node.log.log_start_offset:
            raise self.fail(f"node {node.node_id}: applied {start} below the log start")
        for offset, epoch, value in node.log.records(start, high_watermark):
            if offset != len(node.applied):
                raise self.fail(f"node {node.node_id}: gap in the log at {offset}")
            self._commit(node, offset, epoch, value)
            node.applied.append(value)
        if len(node.applied) != high_watermark:
            raise self.fail(f"node {node.node_id}: log ends before the high watermark")

    def _commit(self, node: SimNode, offset: int, epoch: int, value: bytes) -> None:
        committed = self.committed
        if offset < len(committed):
            if committed[offset] != (epoch, value):
                raise self.fail(
                    f"node {node.node_id}: committed offset {offset} changed from "
                    f"{committed[offset]} to {(epoch, value)}"
                )
            return
        if offset != len(committed):
            raise self.fail(f"node {node.node_id}: commits {offset} past {len(committed)}")
        committed.append((epoch, value))
        for appended in self.pending.pop(offset, []):
            if appended == (epoch, value):
                self.acknowledged[offset] = value
                self.stats.acknowledged += 1

    # --- node lifecycle ----------------------------------------------------------------------

    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        node.tick_at = None
        if self.dynamic:  # controller.quorum.bootstrap.servers, no static voters
            replica = RaftReplica(
                node.node_id,
                frozenset(),
                node.log,
                random=random.Random(self.rng.getrandbits(32)),
                config=self.config,
                cluster_id="sim-cluster",
                election_state=node.durable_election,
                now_ms=self.now,
                directory_id=directory_id(node.node_id),
                # every controller, as an operator lists them (Kafka's observers only ever
                # ask these; listing only removed voters would leave them lost)
                bootstrap_servers=sorted(self.nodes),
            )
        else:
            replica = RaftReplica(
                node.node_id,
                self.voter_ids,
                node.log,
                random=random.Random(self.rng.getrandbits(32)),
                config=self.config,
                cluster_id="sim-cluster",
                election_state=node.durable_election,
                now_ms=self.now,
            )
        node.replica = replica
        latest = node.log.latest_snapshot_id
        data = node.log.read_snapshot(latest) if latest is not None else None
        node.applied = self._decode_snapshot(data) if data is not None else []
        if data is not None:
            self._load_snapshot(node, data)
        node.last_high_watermark = replica.high_watermark
        self._log(f"start node {node.node_id} as {replica.state_name} epoch {replica.epoch}")
        self._process(node, replica.take_output())

    def _crash(self, node: SimNode, restart_after_ms: int | None = None) -> None:
        self.stats.crashes += 1
        self._log(f"crash node {node.node_id}")
        node.replica = None
        node.incarnation += 1
        node.tick_at = None
        node.crash_mid_output = None
        node.log.recover()
        if self.healed_at is None:
            if restart_after_ms is None:
                delay = self.rng.randint(10, 300) * self.scale
            else:
                delay = restart_after_ms
            self._schedule(self.now + delay, "restart", node.node_id)

    # --- events ------------------------------------------------------------------------------

    def run(self) -> SimulationStats:
        for node in self.nodes.values():
            self._start(node)
        self._schedule(self.rng.randint(0, self.fault_interval_ms), "fault")
        self._schedule(self.client_interval_ms, "client")
        self._schedule(self.fault_ms, "heal")
        handlers: dict[str, Callable[[Any], None]] = {
            "deliver": self._on_deliver,
            "tick": self._on_tick,
            "restart": self._on_restart,
            "fault": self._on_fault,
            "client": self._on_client,
            "heal": self._on_heal,
            "unblock": self._on_unblock,
        }
        while self._queue:
            time_ms, _, kind, payload = heapq.heappop(self._queue)
            self.now = time_ms
            self.stats.events += 1
            try:
                handlers[kind](payload)
            except SimulationFailure:
                raise
            except Exception as exc:  # a RaftStateError or a broken assertion in raft/
                raise self.fail(f"{type(exc).__name__}: {exc}") from exc
            self._check()
            if self._finished():
                break
        else:
            raise self.fail("event queue ran dry")
        self.stats.simulated_ms = self.now
        return self.stats

    def _on_deliver(self, payload: tuple[RaftMessage, int]) -> None:
        message, incarnation = payload
        node = self.nodes[message.destination]
        if node.replica is None or node.incarnation != incarnation:
            return  # the connection died with the process
        if self.trace is not None:
            body: Any = message.body
            for name in ("records", "unaligned_records"):
                data = getattr(body, name, b"")
                if data:
                    body = dataclasses.replace(body, **{name: f"<{len(data)} bytes>".encode()})
            self._log(f"{message.source}->{message.destination} #{message.correlation_id} {body}")
        if (message.source, message.destination) in self.blocked:
            self.stats.messages_dropped += 1
            return
        self._process(node, node.replica.step(message, self.now), message)

    def _on_tick(self, payload: tuple[int, int]) -> None:
        node = self.nodes[payload[0]]
        if node.replica is None or node.incarnation != payload[1] or node.tick_at != self.now:
            return
        node.tick_at = None
        self._process(node, node.replica.tick(self.now))

    def _on_restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.replica is None:
            self._start(node)

    def _on_unblock(self, pairs: set[tuple[int, int]]) -> None:
        self.blocked -= pairs

    def _on_fault(self, _: object) -> None:
        if self.healed_at is not None:
            return
        rng = self.rng
        alive = self._alive()
        kinds = ["crash", "crash", "partition", "partition", "snapshot", "resign"]
        kind = rng.choice([*kinds, "reconfigure", "reconfigure"] if self.dynamic else kinds)
        if kind == "reconfigure":
            self._reconfigure()
        if kind == "crash" and alive:
            node = rng.choice(alive)
            if rng.random() < 0.5:
                self._crash(node)
            else:
                node.crash_mid_output = rng.randrange(0, 3)
        elif kind == "partition":
            self.stats.partitions += 1
            ids = list(self.nodes)
            rng.shuffle(ids)
            cut = rng.randint(1, len(ids) - 1)
            side_a, side_b = ids[:cut], ids[cut:]
            pairs = {(a, b) for a in side_a for b in side_b}
            if rng.random() < 0.3:  # asymmetric: one direction only
                pairs = (
                    {(a, b) for a, b in pairs} if rng.random() < 0.5 else {(b, a) for a, b in pairs}
                )
            else:
                pairs |= {(b, a) for a, b in pairs}
            self.blocked |= pairs
            self._log(f"partition {sorted(pairs)}")
            self._schedule(self.now + rng.randint(50, 600) * self.scale, "unblock", pairs)
        elif kind == "snapshot" and alive:
            self._snapshot(rng.choice(alive))
        elif kind == "resign":
            leaders = [n for n in alive if n.replica is not None and n.replica.is_leader]
            if leaders:
                node = rng.choice(leaders)
                assert node.replica is not None
                node.replica.resign(self.now)
                self.stats.resignations += 1
                self._process(node, node.replica.take_output())
        self._schedule(self.now + rng.randint(1, 2 * self.fault_interval_ms), "fault")

    # --- KIP-853: voter changes ----------------------------------------------------------------

    def _decode_snapshot(self, data: bytes) -> list[bytes]:
        return decode_memory_snapshot(data) if self.dynamic else decode_state(data)

    def _reconfigure(self) -> None:
        """The admin client asks a leader to add an observer or remove a voter (maybe itself)."""
        rng = self.rng
        leaders = [n for n in self._alive() if n.replica is not None and n.replica.is_leader]
        if not leaders:
            return
        node = rng.choice(leaders)
        replica = node.replica
        assert replica is not None
        voters = replica.voter_set
        observers = sorted(set(self.nodes) - voters.voter_ids)
        request: AddRaftVoterRequest | RemoveRaftVoterRequest
        if len(voters) > 1 and (not observers or rng.random() < 0.5):
            key = rng.choice(voters.voter_keys)
            request = RemoveRaftVoterRequest("sim-cluster", key)
        elif observers:
            new = voter_node(rng.choice(observers))
            request = AddRaftVoterRequest("sim-cluster", 500 * self.scale, new.key, new.endpoints)
        else:
            return
        self._admin_correlation += 1
        self.stats.voter_changes_requested += 1
        message = RaftMessage(ADMIN_CLIENT, node.node_id, self._admin_correlation, request)
        self._log(f"admin -> {node.node_id}: {request}")
        self._process(node, replica.step(message, self.now), message)

    def _on_admin_response(self, message: RaftMessage) -> None:
        body = message.body
        if not isinstance(body, AddRaftVoterResponse | RemoveRaftVoterResponse):
            raise self.fail(f"unexpected message for the admin client: {body}")
        self._log(f"{message.source} -> admin: {body}")
        if body.error_code == ErrorCode.NO_ERROR:
            self.stats.voter_changes_committed += 1
        else:
            self.stats.voter_changes_refused += 1

    def _check_committed_voters(self, node: SimNode, replica: RaftReplica) -> None:
        """The voter set in force at a committed offset is the same on every node."""
        offset = replica.high_watermark - 1
        latest = node.log.latest_snapshot_id
        if offset < 0 or (latest is not None and offset < latest.offset - 1):
            return  # below the snapshot this node started from: it knows no history there
        voters = replica.voter_set_at(offset).voter_ids
        known = self.committed_voters.setdefault(offset, voters)
        if known != voters:
            raise self.fail(
                f"node {node.node_id}: voters at committed offset {offset} are "
                f"{sorted(voters)}, others saw {sorted(known)}"
            )

    def _snapshot(self, node: SimNode) -> None:
        replica = node.replica
        assert replica is not None
        end_offset = len(node.applied)
        if end_offset <= node.log.log_start_offset or end_offset > replica.high_watermark:
            return
        if self.dynamic:  # the voters at the snapshot's end go in it, as Kafka's writer does
            data = memory_snapshot(replica.snapshot_control_records(end_offset), node.applied)
        else:
            data = encode_state(node.applied)
        replica.create_snapshot(end_offset, data, delete_log_before=self.rng.random() < 0.8)
        self.stats.snapshots_created += 1
        self._process(node, replica.take_output())

    def _on_client(self, _: object) -> None:
        leaders = [n for n in self._alive() if n.replica is not None and n.replica.is_leader]
        if leaders:
            node = self.rng.choice(leaders)
            replica = node.replica
            assert replica is not None
            self._client_counter += 1
            value = f"c{self._client_counter}".encode()
            try:
                offset = replica.append([value], self.now)
            except NotLeaderError:
                pass
            else:
                self.stats.appends += 1
                self.pending.setdefault(offset, []).append((replica.epoch, value))
                if self.healed_at is not None and self.elected_at is not None:
                    self.final_append = (node.node_id, replica.epoch, offset)
                self._process(node, replica.take_output())
        if self.healed_at is None or self.final_append is None:
            interval = self.client_interval_ms if self.healed_at is None else 20
            self._schedule(self.now + self.rng.randint(1, 2 * interval), "client")

    def _on_heal(self, _: object) -> None:
        """Faults stop: the network heals and every crashed node restarts."""
        self.healed_at = self.now
        self._log("heal")
        self.blocked.clear()
        self.drop_rate = self.duplicate_rate = self.long_delay_rate = 0.0
        for node in self.nodes.values():
            node.crash_mid_output = None
            if node.replica is None:
                self._start(node)
        leader = self._stable_leader()
        if (
            leader is not None
            and leader.replica is not None
            and len(leader.replica.voters) > 1
            and self.rng.random() < 0.5
        ):
            # Fail-over measurement: kill the leader of the healed cluster once.
            self.failover = True
            self._crash(leader)
            delay = self.rng.randint(50, 500) * self.scale
            self._schedule(self.now + delay, "restart", leader.node_id)

    # --- invariants --------------------------------------------------------------------------

    def _check(self) -> None:
        any_leader = False
        for node in self.nodes.values():
            replica = node.replica
            if replica is None:
                continue
            epoch = replica.epoch
            if epoch < node.max_epoch:
                raise self.fail(f"node {node.node_id}: epoch went back to {epoch}")
            node.max_epoch = epoch
            if replica.append_errors:
                raise self.fail(f"node {node.node_id}: fetched records did not fit its log")
            high_watermark = replica.high_watermark
            if high_watermark < node.last_high_watermark:
                raise self.fail(f"node {node.node_id}: high watermark went back")
            node.last_high_watermark = high_watermark
            if replica.is_leader:
                any_leader = True
                self._check_leader(node, epoch)
            if self.dynamic:
                self._check_committed_voters(node, replica)
        if any_leader and self._leaderless_since is not None:
            self.stats.leaderless_ms.append(self.now - self._leaderless_since)
            self._leaderless_since = None
        elif not any_leader and self._leaderless_since is None:
            self._leaderless_since = self.now

    def _check_leader(self, node: SimNode, epoch: int) -> None:
        known = self.leaders_by_epoch.setdefault(epoch, node.node_id)
        if known != node.node_id:
            raise self.fail(f"two leaders in epoch {epoch}: {known} and {node.node_id}")
        if (node.node_id, epoch) in self._checked_leaders:
            return
        self._checked_leaders.add((node.node_id, epoch))
        self.stats.leaders_elected += 1
        self.stats.max_epoch = max(self.stats.max_epoch, epoch)
        log = node.log
        if log.log_end_offset < len(self.committed):
            raise self.fail(f"leader {node.node_id} of epoch {epoch} misses committed records")
        start = max(log.log_start_offset, 0)
        for offset, record_epoch, value in log.records(start, len(self.committed)):
            if self.committed[offset] != (record_epoch, value):
                raise self.fail(f"leader {node.node_id} of epoch {epoch} differs at {offset}")

    def _finished(self) -> bool:
        if self.healed_at is None:
            return False
        elapsed = self.now - self.healed_at
        if self.elected_at is None:
            if self._stable_leader() is not None:
                self.elected_at = self.now
                self.stats.heal_election_ms.append(elapsed)
                if self.failover:
                    self.stats.failover_ms.append(elapsed)
                return False
            if elapsed > self.bound_ms:
                raise self.fail(f"no leader committed within {self.bound_ms} ms of the heal")
            return False
        if self.now - self.elected_at > self.bound_ms:
            raise self.fail(f"nodes did not catch up within {self.bound_ms} ms of a leader")
        final = self.final_append
        if final is None:
            return False
        node_id, epoch, offset = final
        replica = self.nodes[node_id].replica
        if offset not in self.acknowledged and (
            replica is None or not replica.is_leader or replica.epoch != epoch
        ):
            self.final_append = None  # it went to a deposed leader: append again
            self._schedule(self.now + 1, "client")
            return False
        target = offset + 1
        if any(n.replica is None or n.replica.high_watermark < target for n in self.nodes.values()):
            return False
        self._check_final()
        return True

    def _stable_leader(self) -> SimNode | None:
        """A leader that committed in its epoch and that a majority of voters follows."""
        for node in self._alive():
            replica = node.replica
            assert replica is not None
            if not replica.is_leader or replica.describe_quorum().high_watermark < 0:
                continue
            voters = replica.voters
            followers = sum(
                1
                for n in self._alive()
                if n.node_id in voters
                and n.replica is not None
                and n.replica.epoch == replica.epoch
                and n.replica.leader_id == node.node_id
            )
            if followers >= len(voters) // 2 + 1:
                return node
        return None

    def _check_final(self) -> None:
        assert self.final_append is not None
        if self.final_append[2] not in self.acknowledged:
            raise self.fail("the append after the heal was not committed")
        for node in self.nodes.values():
            for offset, value in self.acknowledged.items():
                if offset >= len(node.applied) or node.applied[offset] != value:
                    raise self.fail(f"node {node.node_id} lost acknowledged offset {offset}")


def replay(
    seed: int,
    voters: int = 3,
    observers: int = 1,
    *,
    config: QuorumConfig = SIM_CONFIG,
    trace: bool = False,
    dynamic: bool = False,
) -> SimulationStats:
    """Rerun the schedule of ``seed`` (raises ``SimulationFailure`` as the test did)."""
    cluster = SimulatedCluster(seed, voters, observers, config=config, dynamic=dynamic)
    if trace:
        cluster.trace = []
    try:
        return cluster.run()
    finally:
        if cluster.trace is not None:
            print("\n".join(cluster.trace[-200:]))
