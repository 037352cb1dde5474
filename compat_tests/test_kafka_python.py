"""kafka-python (pure Python client) against a pykbroker process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import kafka.codec
import kafka.errors as Errors
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import NewTopic
from kafka.protocol.producer import ProduceRequest
from kafka.record.memory_records import MemoryRecordsBuilder

from compat_tests.conftest import BrokerFactory, BrokerProcess, require
from compat_tests.helpers import (
    BASE_TS,
    Deadline,
    Rec,
    assert_same_records,
    make_records,
    unique_topic,
    wait_until,
)

pytestmark = pytest.mark.compat

CODECS = ["gzip", "snappy", "lz4", "zstd"]
HAS_CODEC = {
    "gzip": kafka.codec.has_gzip,
    "snappy": kafka.codec.has_snappy,
    "lz4": kafka.codec.has_lz4,
    "zstd": kafka.codec.has_zstd,
}
CODEC_PACKAGE = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard", "gzip": "gzip"}

# Short client timeouts: a broker that does not answer fails the test in seconds, not minutes.
COMMON: dict[str, Any] = {
    "request_timeout_ms": 10_000,
    "bootstrap_timeout_ms": 10_000,
    "reconnect_backoff_max_ms": 1_000,
}


# -- client helpers ---------------------------------------------------------------------------


@contextlib.contextmanager
def admin_client(b: BrokerProcess) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap_servers, **COMMON)
    try:
        yield admin
    finally:
        admin.close()


@contextlib.contextmanager
def producer(b: BrokerProcess, **kw: Any) -> Iterator[KafkaProducer]:
    # Idempotence is kafka-python 3's default; it needs InitProducerId, which is outside the
    # API set these tests cover (see test_default_producer_settings_work).
    kw.setdefault("enable_idempotence", False)
    config = {"max_block_ms": 10_000, "delivery_timeout_ms": 20_000, "linger_ms": 5, **COMMON}
    p = KafkaProducer(bootstrap_servers=b.bootstrap_servers, **{**config, **kw})
    try:
        yield p
    finally:
        p.close(timeout=10)


@contextlib.contextmanager
def consumer(b: BrokerProcess, *topics: str, **kw: Any) -> Iterator[KafkaConsumer]:
    kw.setdefault("auto_offset_reset", "earliest")
    kw.setdefault("enable_auto_commit", False)
    config = {
        "fetch_max_wait_ms": 100,
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 500,
        **COMMON,
    }
    c = KafkaConsumer(*topics, bootstrap_servers=b.bootstrap_servers, **{**config, **kw})
    try:
        yield c
    finally:
        c.close(autocommit=False)


@contextlib.contextmanager
def group_consumer(b: BrokerProcess, topic: str, group: str, **kw: Any) -> Iterator[KafkaConsumer]:
    """A subscribed group member that knows the topic's partitions before it first joins.

    Subscribing blind lets the first JoinGroup/SyncGroup happen before the topic's metadata
    arrived: generation 1 gets an empty assignment and the client rejoins at once. Under CPU load
    kafka-python 3.0.12 sometimes goes silent after that second SyncGroup (no OffsetFetch, no
    Heartbeat, no Fetch; the broker answered everything, as --trace shows), so fetch it first.
    """
    with consumer(b, group_id=group, **kw) as c:
        wait_until(lambda: c.partitions_for_topic(topic), timeout=10, what=f"{topic} metadata")
        c.subscribe([topic])
        yield c


def create_topic(b: BrokerProcess, topic: str, partitions: int = 1) -> None:
    with admin_client(b) as admin:
        admin.create_topics([NewTopic(topic, partitions, 1)])
        wait_until(lambda: topic in admin.list_topics(), timeout=10, what=f"{topic} in list_topics")


def send_all(p: KafkaProducer, topic: str, records: list[Rec]) -> list[Any]:
    futures = [
        p.send(
            topic,
            key=r.key,
            value=r.value,
            headers=list(r.headers),
            timestamp_ms=r.timestamp,
            partition=r.partition,
        )
        for r in records
    ]
    p.flush(timeout=20)
    return [f.get(timeout=20) for f in futures]


def to_rec(m: Any) -> Rec:
    assert m.timestamp_type == 0, f"offset {m.offset}: timestamp type {m.timestamp_type} != Create"
    return Rec(m.key, m.value, tuple(m.headers or ()), m.timestamp, m.partition, m.offset)


def read(c: KafkaConsumer, n: int, *, timeout: float = 20, settle: float = 0.0) -> list[Rec]:
    """Poll until ``n`` records came; then keep polling ``settle`` s to catch extra ones."""
    out: list[Rec] = []
    deadline = Deadline(timeout, f"reading {n} records")
    while len(out) < n:
        deadline.check(f"(got {len(out)})")
        for batch in c.poll(timeout_ms=200).values():
            out.extend(to_rec(m) for m in batch)
    if settle:
        extra = Deadline(settle, "settle")
        while not extra.expired():
            for batch in c.poll(timeout_ms=100).values():
                out.extend(to_rec(m) for m in batch)
    return sorted(out, key=lambda r: (r.partition, r.offset or 0))


def assigned_from(c: KafkaConsumer, tp: TopicPartition, offset: int | None = None) -> None:
    c.assign([tp])
    if offset is None:
        c.seek_to_beginning(tp)
    else:
        c.seek(tp, offset)


# -- metadata and admin -----------------------------------------------------------------------


def test_metadata_lists_the_single_broker_and_topics(module_broker: BrokerProcess) -> None:
    topic = unique_topic("kp-meta")
    create_topic(module_broker, topic, partitions=2)
    with admin_client(module_broker) as admin:
        cluster = admin.describe_cluster()
        brokers = [(x["broker_id"], x["host"], x["port"]) for x in cluster["brokers"]]
        assert brokers == [(module_broker.node_id, "127.0.0.1", module_broker.port)]
        assert cluster["cluster_id"]
        described = admin.describe_topics([topic])
    assert len(described) == 1
    (meta,) = described
    assert meta["name"] == topic
    assert meta["error_code"] == 0
    assert not meta["is_internal"]
    parts = sorted(meta["partitions"], key=lambda p: p["partition_index"])
    assert [p["partition_index"] for p in parts] == [0, 1]
    for p in parts:
        assert p["error_code"] == 0
        assert p["leader_id"] == module_broker.node_id
        assert p["replica_nodes"] == [module_broker.node_id]
        assert p["isr_nodes"] == [module_broker.node_id]
    with consumer(module_broker) as c:
        assert topic in c.topics()
        assert c.partitions_for_topic(topic) == {0, 1}


def test_admin_creates_and_deletes_topics(module_broker: BrokerProcess) -> None:
    topics = [unique_topic("kp-admin") for _ in range(2)]
    with admin_client(module_broker) as admin:
        result = admin.create_topics([NewTopic(t, 3, 1) for t in topics])
        assert sorted(t["name"] for t in result["topics"]) == sorted(topics)
        assert all(t["error_code"] == 0 for t in result["topics"])
        wait_until(
            lambda: set(topics) <= set(admin.list_topics()), timeout=10, what="topics created"
        )
        for meta in admin.describe_topics(topics):
            assert len(meta["partitions"]) == 3

        with pytest.raises(Errors.TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topics[0], 1, 1)])

        admin.delete_topics([topics[0]])
        wait_until(lambda: topics[0] not in admin.list_topics(), timeout=10, what="topic deleted")
        assert topics[1] in admin.list_topics()
        admin.delete_topics([topics[1]])
        wait_until(
            lambda: not set(topics) & set(admin.list_topics()), timeout=10, what="all deleted"
        )
        with pytest.raises(Errors.UnknownTopicOrPartitionError):
            admin.delete_topics([topics[1]])


# -- produce ----------------------------------------------------------------------------------


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_produce_with_acks_then_consume_byte_identical(
    module_broker: BrokerProcess, acks: int | str
) -> None:
    topic = unique_topic(f"kp-acks{acks}")
    create_topic(module_broker, topic)
    sent = make_records(60, seed=1, big_every=25)
    with producer(module_broker, acks=acks) as p:
        metas = send_all(p, topic, sent)
    assert all(m.topic == topic and m.partition == 0 for m in metas)
    if acks != 0:  # acks=0 has no response, so no offsets: the consumer checks those
        assert [m.offset for m in metas] == list(range(len(sent)))
    with consumer(module_broker) as c:
        assigned_from(c, TopicPartition(topic, 0))
        assert_same_records(read(c, len(sent), settle=0.3), sent)


@pytest.mark.parametrize("codec", CODECS)
def test_produce_compressed_then_consume_byte_identical(
    module_broker: BrokerProcess, codec: str
) -> None:
    require(HAS_CODEC[codec](), f"{CODEC_PACKAGE[codec]} (kafka-python's {codec} codec)")
    topic = unique_topic(f"kp-{codec}")
    create_topic(module_broker, topic)
    sent = make_records(300, seed=2, big_every=100)
    with producer(module_broker, acks=1, compression_type=codec, linger_ms=50) as p:
        metas = send_all(p, topic, sent)
    assert [m.offset for m in metas] == list(range(len(sent)))
    with consumer(module_broker) as c:
        assigned_from(c, TopicPartition(topic, 0))
        assert_same_records(read(c, len(sent), settle=0.3), sent)


def test_default_producer_settings_work(module_broker: BrokerProcess) -> None:
    """kafka-python 3 defaults to acks=all with idempotence (InitProducerId + sequences)."""
    topic = unique_topic("kp-default")
    create_topic(module_broker, topic)
    sent = make_records(20, seed=3)
    with producer(module_broker, enable_idempotence=True) as p:
        metas = send_all(p, topic, sent)
    assert [m.offset for m in metas] == list(range(len(sent)))
    with consumer(module_broker) as c:
        assigned_from(c, TopicPartition(topic, 0))
        assert_same_records(read(c, len(sent)), sent)


# -- consume with assign() --------------------------------------------------------------------


def test_consume_from_earliest_latest_and_given_offset(module_broker: BrokerProcess) -> None:
    topic = unique_topic("kp-assign")
    create_topic(module_broker, topic, partitions=2)
    tp = TopicPartition(topic, 1)
    first = make_records(30, seed=4, partition=1)
    with producer(module_broker, acks=1) as p:
        send_all(p, topic, first)

        with consumer(module_broker, auto_offset_reset="earliest") as c:
            c.assign([tp])  # no seek: auto_offset_reset=earliest decides
            assert_same_records(read(c, 30, settle=0.2), first)

        with consumer(module_broker) as c:
            assigned_from(c, tp, 17)
            assert_same_records(read(c, 13, settle=0.2), first[17:], first_offset=17)

        with consumer(module_broker, auto_offset_reset="latest") as c:
            c.assign([tp])
            assert c.position(tp, timeout_ms=10_000) == 30
            more = make_records(5, seed=5, partition=1)
            send_all(p, topic, more)
            assert_same_records(read(c, 5, settle=0.3), more, first_offset=30)

        with consumer(module_broker) as c:
            c.assign([tp])
            c.seek_to_end(tp)
            assert c.position(tp, timeout_ms=10_000) == 35
            assert c.poll(timeout_ms=300) == {}
            c.seek_to_beginning(tp)
            assert c.position(tp, timeout_ms=10_000) == 0
    # the other partition stayed empty
    with consumer(module_broker) as c:
        tp0 = TopicPartition(topic, 0)
        assert c.beginning_offsets([tp0, tp]) == {tp0: 0, tp: 0}
        assert c.end_offsets([tp0, tp]) == {tp0: 0, tp: 35}


def test_list_offsets_by_timestamp(module_broker: BrokerProcess) -> None:
    topic = unique_topic("kp-times")
    create_topic(module_broker, topic)
    tp = TopicPartition(topic, 0)
    sent = [Rec(b"k", b"v%d" % i, (), BASE_TS + 1000 * i) for i in range(10)]
    with producer(module_broker, acks=1) as p:
        for r in sent:  # one batch each, so the time index has an entry per record
            send_all(p, topic, [r])
    with consumer(module_broker) as c:
        found = c.offsets_for_times({tp: BASE_TS + 4500})[tp]
        assert found is not None
        assert (found.offset, found.timestamp) == (5, BASE_TS + 5000)
        found = c.offsets_for_times({tp: BASE_TS - 1})[tp]
        assert found is not None
        assert (found.offset, found.timestamp) == (0, BASE_TS)
        assert c.offsets_for_times({tp: BASE_TS + 10**6})[tp] is None


# -- consumer groups --------------------------------------------------------------------------


def test_group_resumes_from_committed_offset_after_broker_restart(
    persistent: BrokerProcess,
) -> None:
    b = persistent
    topic, group = unique_topic("kp-grp"), unique_topic("kp-group")
    create_topic(b, topic)
    tp = TopicPartition(topic, 0)
    sent = make_records(20, seed=6)
    with producer(b, acks="all") as p:
        send_all(p, topic, sent)

    with group_consumer(b, topic, group, max_poll_records=4) as c:
        got = read(c, 10)
        assert c.assignment() == {tp}
        assert_same_records(got[:10], sent[:10])
        c.commit({tp: OffsetAndMetadata(10, "kp-meta", -1)})
        assert c.committed(tp) == 10

    b.restart()

    with group_consumer(b, topic, group) as c:
        assert c.committed(tp) == 10
        committed = c.committed(tp, metadata=True)
        assert committed.metadata == "kp-meta"
        # nothing below the committed offset may come again
        assert_same_records(read(c, 10, settle=0.5), sent[10:], first_offset=10)
        more = make_records(3, seed=7)
        with producer(b, acks="all") as p:
            metas = send_all(p, topic, more)
        assert [m.offset for m in metas] == [20, 21, 22]
        assert_same_records(read(c, 3, settle=0.3), more, first_offset=20)
        c.commit()
        assert c.committed(tp) == 23


# -- errors -----------------------------------------------------------------------------------


def test_produce_to_missing_topic_without_auto_create_is_unknown_topic(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory({"auto.create.topics.enable": "false"})
    topic = unique_topic("kp-missing")
    with admin_client(b) as admin:
        # Metadata for it answers UNKNOWN_TOPIC_OR_PARTITION and creates nothing.
        (meta,) = admin.describe_topics([topic])
        assert Errors.for_code(meta["error_code"]) is Errors.UnknownTopicOrPartitionError

        # A Produce straight to it answers UNKNOWN_TOPIC_OR_PARTITION.
        builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
        builder.append(timestamp=BASE_TS, key=b"k", value=b"v", headers=[])
        builder.close()
        # v13 names topics by id; v12 and below by name
        version = admin._manager.broker_version_data.api_version(ProduceRequest, max_version=12)
        request = ProduceRequest(
            transactional_id=None,
            acks=1,
            timeout_ms=5_000,
            topic_data=[
                ProduceRequest.TopicProduceData(
                    name=topic,
                    partition_data=[
                        ProduceRequest.TopicProduceData.PartitionProduceData(
                            index=0, records=builder.buffer()
                        )
                    ],
                )
            ],
            version=version,
        )

        async def send() -> Any:
            return await admin._manager.send(request, node_id=b.node_id)

        response = admin._manager.run(send)
        (topic_response,) = response.responses
        (partition_response,) = topic_response.partition_responses
        error = Errors.for_code(partition_response.error_code)
        assert error is Errors.UnknownTopicOrPartitionError

        # The producer cannot find it either, and gives up after max_block_ms.
        with producer(b, acks=1, max_block_ms=2_000) as p, pytest.raises(Errors.KafkaTimeoutError):
            p.send(topic, b"v")
        assert topic not in admin.list_topics()
