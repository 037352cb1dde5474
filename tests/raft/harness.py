"""A scripted, instant-delivery network of ``RaftReplica``s for focused unit tests.

Unlike ``SimulatedCluster`` nothing here is random except the replicas' election jitter
(seeded): messages are delivered in send order as soon as ``deliver()`` runs, unless a node is
isolated or down. Every output goes through ``check_output_contract`` and is then acted on as a
driver must (persist, flush, send).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from pykbroker.raft import (
    ElectionState,
    MemoryLog,
    QuorumConfig,
    RaftMessage,
    RaftOutput,
    RaftReplica,
)

from .contract import check_output_contract

UNIT_CONFIG = QuorumConfig(
    controller_quorum_election_timeout_ms=100,
    controller_quorum_fetch_timeout_ms=200,
    controller_quorum_election_backoff_max_ms=100,
    controller_quorum_request_timeout_ms=150,
    controller_quorum_retry_backoff_ms=10,
    fetch_max_wait_ms=50,
)


class Harness:
    def __init__(
        self,
        voters: Iterable[int] = (1, 2, 3),
        observers: Iterable[int] = (),
        *,
        config: QuorumConfig = UNIT_CONFIG,
        seed: int = 0,
        logs: dict[int, MemoryLog] | None = None,
        election_states: dict[int, ElectionState] | None = None,
        start: bool = True,
    ) -> None:
        self.voters = frozenset(voters)
        self.ids = sorted(self.voters | set(observers))
        self.config = config
        self.rng = random.Random(seed)
        self.now = 0
        self.logs = {i: MemoryLog() for i in self.ids}
        self.logs.update(logs or {})
        self.durable: dict[int, ElectionState | None] = dict.fromkeys(self.ids)
        self.durable.update(election_states or {})
        self.replicas: dict[int, RaftReplica] = {}
        self.isolated: set[int] = set()
        self.in_flight: list[RaftMessage] = []
        self.outputs: dict[int, list[RaftOutput]] = {i: [] for i in self.ids}
        self.sent: list[RaftMessage] = []
        if start:
            for node_id in self.ids:
                self.start(node_id)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, node_id: int) -> RaftReplica:
        replica = RaftReplica(
            node_id,
            self.voters,
            self.logs[node_id],
            random=random.Random(self.rng.getrandbits(32)),
            config=self.config,
            cluster_id="test-cluster",
            election_state=self.durable[node_id],
            now_ms=self.now,
        )
        self.replicas[node_id] = replica
        self.handle(node_id, replica.take_output())
        return replica

    def crash(self, node_id: int) -> None:
        del self.replicas[node_id]
        self.logs[node_id].recover()
        self.in_flight = [m for m in self.in_flight if node_id not in (m.source, m.destination)]

    def restart(self, node_id: int) -> RaftReplica:
        if node_id in self.replicas:
            self.crash(node_id)
        return self.start(node_id)

    # --- driving ---------------------------------------------------------------------------

    def handle(self, node_id: int, out: RaftOutput, trigger: RaftMessage | None = None) -> None:
        self.durable[node_id] = check_output_contract(
            node_id, self.durable[node_id], out, self.logs[node_id], trigger
        )
        if out.flush_log:
            self.logs[node_id].flush()
        self.outputs[node_id].append(out)
        for message in out.messages:
            self.sent.append(message)
            if message.source not in self.isolated and message.destination not in self.isolated:
                self.in_flight.append(message)

    def take(self, node_id: int) -> RaftOutput:
        out = self.replicas[node_id].take_output()
        self.handle(node_id, out)
        return out

    def deliver(self, max_messages: int = 10_000) -> int:
        """Deliver every message in flight (and those they cause); return how many."""
        delivered = 0
        while self.in_flight and delivered < max_messages:
            message = self.in_flight.pop(0)
            replica = self.replicas.get(message.destination)
            if replica is None or message.destination in self.isolated:
                continue
            delivered += 1
            self.handle(message.destination, replica.step(message, self.now), message)
        return delivered

    def advance(self, ms: int, step_ms: int = 5) -> None:
        """Let ``ms`` pass in steps, ticking every node and delivering after each step."""
        end = self.now + ms
        while self.now < end:
            self.now = min(self.now + step_ms, end)
            for node_id, replica in list(self.replicas.items()):
                if node_id in self.replicas:
                    self.handle(node_id, replica.tick(self.now))
            self.deliver()

    def run_until(self, condition: Callable[[], bool], max_ms: int = 5_000) -> int:
        """Advance until ``condition()``; return the simulated ms it took."""
        start = self.now
        self.deliver()
        while not condition():
            if self.now - start > max_ms:
                raise AssertionError(f"condition not met within {max_ms} ms")
            self.advance(5)
        return self.now - start

    def isolate(self, node_id: int) -> None:
        self.isolated.add(node_id)
        self.in_flight = [m for m in self.in_flight if node_id not in (m.source, m.destination)]

    def heal(self) -> None:
        self.isolated.clear()

    # --- queries ---------------------------------------------------------------------------

    def leaders(self) -> list[int]:
        return [i for i, r in self.replicas.items() if r.is_leader]

    def leader(self) -> int | None:
        """The leader a majority of voters follows (and that committed in its epoch)."""
        for node_id in self.leaders():
            replica = self.replicas[node_id]
            followers = sum(
                1
                for i, r in self.replicas.items()
                if i in self.voters and r.epoch == replica.epoch and r.leader_id == node_id
            )
            committed = replica.describe_quorum().high_watermark >= 0
            if followers > len(self.voters) // 2 and committed:
                return node_id
        return None

    def elect(self, max_ms: int = 5_000) -> int:
        self.run_until(lambda: self.leader() is not None, max_ms)
        leader = self.leader()
        assert leader is not None
        return leader

    def caught_up(self, offset: int, nodes: Iterable[int] | None = None) -> bool:
        ids = self.ids if nodes is None else nodes
        return all(i in self.replicas and self.replicas[i].high_watermark >= offset for i in ids)
