"""Consumer groups with real clients: kafka-python, confluent-kafka (classic and KIP-848
``group.protocol=consumer``) and aiokafka against a pykbroker process.

* a classic group of three members, one per client, shares a topic's partitions; a member
  that leaves, or is killed (kill -9 of its process), hands its partitions over within the
  session timeout (6 s here);
* committed offsets survive broker restarts (graceful and kill -9): no committed record is
  delivered again, whichever client resumes;
* confluent-kafka with ``group.protocol=consumer`` (ConsumerGroupHeartbeat) consumes, shares
  partitions and takes them over when a member leaves;
* DescribeGroups / ListGroups / DeleteGroups / OffsetDelete through each admin client, and lag
  (committed offset vs log end offset) as the admin clients compute it.

Every member runs its client in its own thread (aiokafka in its own asyncio loop) and
publishes its current assignment; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor as AioRange
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]
from kafka import KafkaAdminClient, KafkaConsumer, OffsetAndMetadata
from kafka import TopicPartition as KpTopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor as KpRange

from compat_tests.conftest import LIBRDKAFKA_LOG, ROOT, BrokerProcess
from compat_tests.helpers import Deadline, unique_topic, wait_until

pytestmark = pytest.mark.compat

SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
Partitions = frozenset[tuple[str, int]]
LIBRDKAFKA_COMMON: dict[str, Any] = {
    "logger": LIBRDKAFKA_LOG,
    "socket.timeout.ms": 10_000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 1_000,
    "topic.metadata.refresh.interval.ms": 5_000,
}


# -- topics and records ---------------------------------------------------------------------


def create_topic(b: BrokerProcess, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": b.bootstrap_servers, **LIBRDKAFKA_COMMON})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
        topic
    ].result(timeout=15)
    wait_until(
        lambda: topic in admin.list_topics(timeout=5).topics, timeout=10, what=f"{topic} listed"
    )


def produce(b: BrokerProcess, topic: str, partitions: int, per_partition: int) -> None:
    p = Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 5, **LIBRDKAFKA_COMMON})
    for partition in range(partitions):
        for i in range(per_partition):
            p.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    assert p.flush(30) == 0, "records not delivered within 30 s"


def everything(topic: str, partitions: int) -> Partitions:
    return frozenset((topic, p) for p in range(partitions))


# -- group members, one client each, each in its own thread ---------------------------------


class Member:
    """A group member polling in a thread; ``assignment`` is what its client says it owns."""

    kind = "member"

    def __init__(self, b: BrokerProcess, topic: str, group: str, **conf: Any) -> None:
        self.bootstrap = b.bootstrap_servers
        self.topic = topic
        self.group = group
        self.conf = conf
        self.name = f"{self.kind}-{group}"
        self._lock = threading.Lock()
        self._assignment: Partitions = frozenset()
        self.consumed: set[tuple[int, int]] = set()  # (partition, offset)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    @property
    def assignment(self) -> Partitions:
        with self._lock:
            return self._assignment

    def _publish(self, partitions: Any) -> None:
        with self._lock:
            self._assignment = frozenset((tp.topic, tp.partition) for tp in partitions)

    def start(self) -> Member:
        self._thread.start()
        return self

    def stop(self, timeout: float = 20) -> None:
        """Close the client (a graceful leave) and wait for its thread."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.name} did not stop within {timeout:.0f}s"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed") from self.error

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def run(self) -> None:
        raise NotImplementedError


class KafkaPythonMember(Member):
    kind = "kafka-python"

    def run(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            c = KafkaConsumer(
                self.topic,
                bootstrap_servers=self.bootstrap,
                group_id=self.group,
                client_id=self.kind,
                partition_assignment_strategy=[KpRange],
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                max_poll_interval_ms=30_000,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                fetch_max_wait_ms=100,
                request_timeout_ms=10_000,
                **self.conf,
            )
        try:
            while not self._stop.is_set():
                for records in c.poll(timeout_ms=100).values():
                    self.consumed.update((r.partition, r.offset) for r in records)
                self._publish(c.assignment())
        finally:
            c.close()


class ConfluentMember(Member):
    kind = "confluent-kafka"

    def run(self) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "client.id": self.kind,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            **LIBRDKAFKA_COMMON,
        }
        if self.conf.get("group.protocol") != "consumer":
            conf.update(
                {
                    "partition.assignment.strategy": "range",
                    "session.timeout.ms": SESSION_TIMEOUT_MS,
                    "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                    "max.poll.interval.ms": 30_000,
                }
            )
        c = Consumer({**conf, **self.conf})
        try:
            c.subscribe([self.topic])
            while not self._stop.is_set():
                m = c.poll(0.1)
                if m is not None and m.error() is None:
                    self.consumed.add((cast(int, m.partition()), cast(int, m.offset())))
                self._publish(c.assignment())
        finally:
            c.close()


class AiokafkaMember(Member):
    kind = "aiokafka"

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        c = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.kind,
            partition_assignment_strategy=(AioRange,),
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=30_000,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            request_timeout_ms=10_000,
            **self.conf,
        )
        await c.start()
        try:
            while not self._stop.is_set():
                batches = await c.getmany(timeout_ms=100)
                for records in batches.values():
                    self.consumed.update((r.partition, r.offset) for r in records)
                self._publish(c.assignment())
        finally:
            await c.stop()


@contextlib.contextmanager
def members(*started: Member) -> Iterator[list[Member]]:
    """Members that are stopped when the block ends (those still running)."""
    running = list(started)
    try:
        yield running
    finally:
        for member in running:
            if member._thread.is_alive():
                with contextlib.suppress(AssertionError):
                    member.stop()


def wait_for_split(
    group: list[Member], wanted: Partitions, timeout: float, *, extra: Partitions = frozenset()
) -> float:
    """Wait until the members own ``wanted`` between them, each partition once, each member at
    least one (``extra``: partitions owned outside ``group``); returns the seconds it took."""
    t0 = time.monotonic()

    def split() -> bool:
        owned = [m.assignment for m in group]
        total = sum(len(a) for a in owned) + len(extra)
        union = frozenset().union(*owned) | extra
        return union == wanted and total == len(wanted) and all(owned)

    wait_until(
        split,
        timeout=timeout,
        what=f"{[m.name for m in group]} to split {sorted(wanted)}: "
        f"{[sorted(m.assignment) for m in group]}",
    )
    return time.monotonic() - t0


# -- classic groups: three clients in one group ------------------------------------------------


def test_three_clients_share_partitions_and_a_leaver_hands_over(
    module_broker: BrokerProcess,
) -> None:
    topic, group = unique_topic("grp-mixed"), unique_topic("mixed")
    create_topic(module_broker, topic, 6)
    produce(module_broker, topic, 6, 5)
    wanted = everything(topic, 6)
    kp = KafkaPythonMember(module_broker, topic, group).start()
    ck = ConfluentMember(module_broker, topic, group).start()
    aio = AiokafkaMember(module_broker, topic, group).start()
    with members(kp, ck, aio):
        wait_for_split([kp, ck, aio], wanted, timeout=45)
        assert sorted(len(m.assignment) for m in (kp, ck, aio)) == [2, 2, 2]  # range
        # Every record was consumed by whoever owned its partition.
        wait_until(
            lambda: len(kp.consumed | ck.consumed | aio.consumed) == 30,
            timeout=20,
            what="all 30 records consumed",
        )
        # The aiokafka member leaves (LeaveGroup): the other two take its partitions over.
        aio.stop()
        seconds = wait_for_split([kp, ck], wanted, timeout=SESSION_TIMEOUT_MS / 1000 + 10)
        assert seconds < SESSION_TIMEOUT_MS / 1000, f"a leave took {seconds:.1f}s"

    with KafkaAdminClient(bootstrap_servers=module_broker.bootstrap_servers) as admin:
        described = admin.describe_groups([group])
    info = described[group] if isinstance(described, dict) else described[0]
    assert _field(info, "state", "group_state") == "Empty"


KILLABLE_MEMBER = """
import json, sys
from confluent_kafka import Consumer
c = Consumer({
    "bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "client.id": "doomed",
    "partition.assignment.strategy": "range", "session.timeout.ms": SESSION_TIMEOUT_MS,
    "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS, "auto.offset.reset": "earliest",
    "enable.auto.commit": False, "log_level": 0,
})
def assigned(consumer, partitions):
    print(json.dumps(sorted(tp.partition for tp in partitions)), flush=True)
def revoked(consumer, partitions):
    print("[]", flush=True)
c.subscribe([sys.argv[3]], on_assign=assigned, on_revoke=revoked)
while True:
    c.poll(0.1)
""".replace("SESSION_TIMEOUT_MS", str(SESSION_TIMEOUT_MS)).replace(
    "HEARTBEAT_INTERVAL_MS", str(HEARTBEAT_INTERVAL_MS)
)


def test_a_killed_members_partitions_move_within_the_session_timeout(
    module_broker: BrokerProcess,
) -> None:
    topic, group = unique_topic("grp-kill"), unique_topic("kill")
    create_topic(module_broker, topic, 4)
    wanted = everything(topic, 4)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_MEMBER, module_broker.bootstrap_servers, group, topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    doomed: list[frozenset[tuple[str, int]]] = [frozenset()]

    def read_assignments() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            doomed[0] = frozenset((topic, p) for p in json.loads(line))

    reader = threading.Thread(target=read_assignments, daemon=True)
    reader.start()
    try:
        survivor = KafkaPythonMember(module_broker, topic, group).start()
        with members(survivor):
            wait_until(lambda: doomed[0], timeout=30, what="the doomed member's assignment")
            wait_for_split([survivor], wanted, timeout=45, extra=doomed[0])
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_at = time.monotonic()
            wait_until(
                lambda: survivor.assignment == wanted,
                timeout=SESSION_TIMEOUT_MS / 1000 + 15,
                what="the survivor to own every partition",
            )
            seconds = time.monotonic() - killed_at
            # The session expires at most 6 s after the kill; the survivor rejoins on its next
            # heartbeat (1 s) and is alone, so the rebalance completes at once.
            assert seconds < SESSION_TIMEOUT_MS / 1000 + 4, f"took {seconds:.1f}s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


# -- committed offsets across restarts ---------------------------------------------------------


def test_committed_offsets_survive_restarts_and_are_not_delivered_again(
    broker_factory: Any,
) -> None:
    broker = broker_factory({"pykbroker.trace.requests": "true"})
    topic, group = unique_topic("grp-restart"), unique_topic("restart")
    create_topic(broker, topic, 3)
    produce(broker, topic, 3, 10)
    # 1. kafka-python reads everything but commits offset 4 on each partition (with metadata).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        kp = KafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            fetch_max_wait_ms=100,
            request_timeout_ms=10_000,
        )
    try:
        got = 0
        deadline = Deadline(30, "kafka-python to read 30 records")
        while got < 30:
            deadline.check(f"(got {got})")
            got += sum(len(r) for r in kp.poll(timeout_ms=200).values())
        kp.commit({KpTopicPartition(topic, p): OffsetAndMetadata(4, "kp", -1) for p in range(3)})
    finally:
        kp.close()

    # 2. A graceful restart; the offsets and their metadata are back; confluent-kafka resumes
    # at 4 and commits the end.
    broker.restart()
    with KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers) as admin:
        offsets = admin.list_group_offsets(group)[group]
    resumed = {tp.partition: (om.offset, om.metadata) for tp, om in offsets.items()}
    assert resumed == dict.fromkeys(range(3), (4, "kp"))
    seen: list[tuple[int, int]] = []
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
            **LIBRDKAFKA_COMMON,
        }
    )
    try:
        c.subscribe([topic])
        committed = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        # (Not tp.metadata: confluent-kafka reads it as a NUL-terminated C string, and only
        # librdkafka commits one with a NUL; the metadata is checked with kafka-python below.)
        assert [tp.offset for tp in committed] == [4, 4, 4]
        deadline = Deadline(30, "confluent-kafka to read the 18 uncommitted records")
        while len(seen) < 18:
            deadline.check(f"(got {len(seen)})")
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                seen.append((cast(int, m.partition()), cast(int, m.offset())))
        c.commit(asynchronous=False)
    finally:
        c.close()
    assert sorted(seen) == [(p, o) for p in range(3) for o in range(4, 10)]

    # 3. kill -9 and start again; aiokafka gets only what is produced now.
    broker.restart(kill=True)
    produce(broker, topic, 3, 1)  # offset 10 on each partition

    async def resume() -> list[tuple[int, int]]:
        aio = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            request_timeout_ms=10_000,
        )
        await aio.start()
        try:
            out: list[tuple[int, int]] = []
            while len(out) < 3:
                for records in (await aio.getmany(timeout_ms=200)).values():
                    out.extend((r.partition, r.offset) for r in records)
            return out
        finally:
            await aio.stop()

    async def bounded() -> list[tuple[int, int]]:
        return await asyncio.wait_for(resume(), 30)

    assert sorted(asyncio.run(bounded())) == [(0, 10), (1, 10), (2, 10)]


# -- KIP-848: group.protocol=consumer ----------------------------------------------------------


def test_confluent_consumer_protocol_group(module_broker: BrokerProcess) -> None:
    topic, group = unique_topic("grp-848"), unique_topic("kip848")
    create_topic(module_broker, topic, 4)
    produce(module_broker, topic, 4, 5)
    wanted = everything(topic, 4)
    a = ConfluentMember(module_broker, topic, group, **{"group.protocol": "consumer"}).start()
    with members(a):
        wait_until(lambda: a.assignment == wanted, timeout=20, what="a to own every partition")
        wait_until(lambda: len(a.consumed) == 20, timeout=20, what="a to consume 20 records")
        b = ConfluentMember(module_broker, topic, group, **{"group.protocol": "consumer"})
        with members(b.start()):
            # Revocation before assignment: a gives two partitions up, then b gets them.
            wait_for_split([a, b], wanted, timeout=30)
            assert sorted(len(m.assignment) for m in (a, b)) == [2, 2]
            admin = AdminClient({"bootstrap.servers": module_broker.bootstrap_servers})
            listed = admin.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(10)
            mine = [g for g in listed.valid if g.group_id == group]
            assert len(mine) == 1
            assert mine[0].type == ConsumerGroupType.CONSUMER
            assert mine[0].state == ConsumerGroupState.STABLE
            b.stop()
            # The group's heartbeat interval is 5 s: a learns of the new target within it.
            wait_until(lambda: a.assignment == wanted, timeout=15, what="a to take b's share")


# -- admin clients ---------------------------------------------------------------------------


def _field(info: Any, *names: str) -> Any:
    for name in names:
        if isinstance(info, dict) and name in info:
            return info[name]
        if hasattr(info, name):
            return getattr(info, name)
    raise AssertionError(f"none of {names} in {info!r}")


def test_describe_list_and_delete_groups_through_each_admin_client(
    module_broker: BrokerProcess,
) -> None:
    topic, stable, idle = unique_topic("grp-admin"), unique_topic("stable"), unique_topic("idle")
    create_topic(module_broker, topic, 2)
    bootstrap = module_broker.bootstrap_servers
    ck_admin = AdminClient({"bootstrap.servers": bootstrap, **LIBRDKAFKA_COMMON})
    # "idle": a group that only has offsets (Empty); "stable": a kafka-python member.
    ck_admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(idle, [TopicPartition(topic, 0, 1)])]
    )[idle].result(10)
    member = KafkaPythonMember(module_broker, topic, stable).start()
    with members(member):
        wait_until(lambda: len(member.assignment) == 2, timeout=30, what="a stable member")

        # confluent-kafka: ListGroups v5 with filters, DescribeGroups, DeleteGroups.
        listed = ck_admin.list_consumer_groups(
            states={ConsumerGroupState.STABLE}, types={ConsumerGroupType.CLASSIC}
        ).result(10)
        assert stable in {g.group_id for g in listed.valid}
        assert idle not in {g.group_id for g in listed.valid}
        described = ck_admin.describe_consumer_groups([stable])[stable].result(10)
        assert described.state == ConsumerGroupState.STABLE
        assert described.partition_assignor == "range"
        [m] = described.members
        assert m.client_id == "kafka-python"
        assert sorted(tp.partition for tp in m.assignment.topic_partitions) == [0, 1]
        results = ck_admin.delete_consumer_groups([stable])
        with pytest.raises(Exception, match="NON_EMPTY_GROUP"):
            results[stable].result(10)

        # kafka-python: ListGroups with a state filter, DescribeGroups.
        with KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000) as kp_admin:
            groups = kp_admin.list_groups(states_filter=["Stable"])
            assert stable in {_field(g, "group_id", "group") for g in groups}
            info = kp_admin.describe_groups([stable])
            info = info[stable] if isinstance(info, dict) else info[0]
            assert _field(info, "group_state", "state") == "Stable"
            assert _field(info, "protocol_data", "protocol") == "range"
            assert len(_field(info, "members")) == 1

        # aiokafka: ListGroups, DescribeGroups.
        async def aio_admin() -> tuple[Any, Any]:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
            await admin.start()
            try:
                return await admin.list_consumer_groups(), await admin.describe_consumer_groups(
                    [stable]
                )
            finally:
                await admin.close()

        aio_listed, aio_described = asyncio.run(asyncio.wait_for(aio_admin(), 30))
        assert {stable, idle} <= {g[0] for g in aio_listed}
        group_info = aio_described[0].groups[0]
        assert (group_info[1], group_info[2]) == (stable, "Stable")

    # The idle group can be deleted (and is gone for every client).
    assert ck_admin.delete_consumer_groups([idle])[idle].result(10) is None
    listed = ck_admin.list_consumer_groups().result(10)
    assert idle not in {g.group_id for g in listed.valid}


def test_lag_through_the_admin_clients(module_broker: BrokerProcess) -> None:
    topic, group = unique_topic("grp-lag"), unique_topic("lag")
    create_topic(module_broker, topic, 2)
    produce(module_broker, topic, 2, 10)
    bootstrap = module_broker.bootstrap_servers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        kp = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        kp.commit(
            {
                KpTopicPartition(topic, 0): OffsetAndMetadata(4, "", -1),
                KpTopicPartition(topic, 1): OffsetAndMetadata(7, "", -1),
            }
        )
    finally:
        kp.close()
    expected_lag = {0: 6, 1: 3}

    # confluent-kafka: OffsetFetch (require_stable) + ListOffsets(latest).
    admin = AdminClient({"bootstrap.servers": bootstrap, **LIBRDKAFKA_COMMON})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(2)])
    offsets = admin.list_consumer_group_offsets([request], require_stable=True)[group].result(10)
    committed = {tp.partition: tp.offset for tp in offsets.topic_partitions}
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    ends = admin.list_offsets({TopicPartition(topic, p): latest for p in range(2)})
    end = {tp.partition: f.result(10).offset for tp, f in ends.items()}
    assert {p: end[p] - committed[p] for p in range(2)} == expected_lag

    # kafka-python: OffsetFetch for the group + ListOffsets.
    with KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000) as kp_admin:
        fetched = kp_admin.list_group_offsets(group)[group]
        from kafka.admin import OffsetSpec as KpOffsetSpec

        latest = kp_admin.list_partition_offsets(
            {KpTopicPartition(topic, p): KpOffsetSpec.LATEST for p in range(2)}
        )
        lag = {
            tp.partition: latest[KpTopicPartition(tp.topic, tp.partition)].offset - om.offset
            for tp, om in fetched.items()
        }
        assert lag == expected_lag

    # aiokafka: OffsetFetch.
    async def aio_committed() -> dict[int, int]:
        aio = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await aio.start()
        try:
            result = await aio.list_consumer_group_offsets(group)
            return {tp.partition: om.offset for tp, om in result.items()}
        finally:
            await aio.close()

    assert asyncio.run(asyncio.wait_for(aio_committed(), 30)) == {0: 4, 1: 7}
