"""confluent-kafka (librdkafka) against a pykbroker process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from compat_tests.conftest import (
    LIBRDKAFKA_LOG,
    BrokerFactory,
    BrokerProcess,
    close_at_teardown,
)
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

# Short timeouts and backoffs: a silent broker fails a test in seconds; a restarted one is
# found again within about a second.
COMMON: dict[str, Any] = {
    "logger": LIBRDKAFKA_LOG,  # into pytest's captured log, not straight onto fd 2
    "socket.timeout.ms": 10_000,
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 1_000,
    "topic.metadata.refresh.interval.ms": 5_000,
}


# -- client helpers ---------------------------------------------------------------------------


def admin_client(b: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.bootstrap_servers, **COMMON})


def new_producer(b: BrokerProcess, **conf: Any) -> Producer:
    """A producer that is purged and closed when the test ends."""
    p = Producer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "linger.ms": 5,
            "message.timeout.ms": 20_000,
            **COMMON,
            **conf,
        }
    )

    def close() -> None:
        p.purge()
        p.flush(1)
        p.close()

    close_at_teardown(close)
    return p


@contextlib.contextmanager
def consumer(b: BrokerProcess, group: str | None = None, **conf: Any) -> Iterator[Consumer]:
    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": group or unique_topic("ck-assign-only"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            **COMMON,
            **conf,
        }
    )
    try:
        yield c
    finally:
        c.close()


def create_topic(b: BrokerProcess, topic: str, partitions: int = 1) -> None:
    admin = admin_client(b)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)], operation_timeout=10
    )
    futures[topic].result(timeout=15)
    wait_until(
        lambda: topic in admin.list_topics(timeout=5).topics, timeout=10, what=f"{topic} listed"
    )


def produce_all(p: Producer, topic: str, records: list[Rec]) -> list[Message]:
    delivered: list[tuple[KafkaError | None, Message]] = []
    for r in records:
        p.produce(
            topic,
            value=r.value,
            key=r.key,
            partition=r.partition,
            timestamp=r.timestamp or 0,
            headers=list(r.headers),
            on_delivery=lambda err, msg: delivered.append((err, msg)),
        )
        p.poll(0)
    remaining = p.flush(30)
    assert remaining == 0, f"{remaining} records not delivered within 30s"
    errors = [err for err, _ in delivered if err is not None]
    assert not errors, f"delivery errors: {errors[:5]}"
    assert len(delivered) == len(records)
    return [msg for _, msg in delivered]


def to_rec(m: Message) -> Rec:
    ts_type, ts = m.timestamp()
    assert ts_type == TIMESTAMP_CREATE_TIME, f"offset {m.offset()}: timestamp type {ts_type}"
    headers = m.headers() or []
    assert isinstance(headers, list)
    partition = m.partition()
    assert partition is not None
    hdrs = cast(list[tuple[str, bytes]], headers)
    return Rec(as_bytes(m.key()), as_bytes(m.value()), tuple(hdrs), ts, partition, m.offset())


def as_bytes(data: str | bytes | None) -> bytes | None:
    assert not isinstance(data, str)
    return data


def error_code(m: Message) -> Any:
    err = m.error()
    return None if err is None else err.code()


def read(c: Consumer, n: int, *, timeout: float = 20, settle: float = 0.0) -> list[Rec]:
    """Poll until ``n`` records came; then keep polling ``settle`` s to catch extra ones."""
    out: list[Rec] = []

    def poll_once(wait: float) -> None:
        m = c.poll(wait)
        if m is None:
            return
        if m.error() is not None:
            if error_code(m) == KafkaError._PARTITION_EOF:
                return
            raise KafkaException(m.error())
        out.append(to_rec(m))

    deadline = Deadline(timeout, f"reading {n} records")
    while len(out) < n:
        deadline.check(f"(got {len(out)})")
        poll_once(0.2)
    extra = Deadline(settle, "settle")
    while not extra.expired():
        poll_once(0.05)
    return out


def eof_offset(c: Consumer, tp: TopicPartition, timeout: float = 10) -> int:
    """With enable.partition.eof, poll until ``tp`` reports end-of-partition; return its offset.

    That is the first moment the consumer has certainly resolved its fetch position (for
    OFFSET_END / auto.offset.reset=latest), so records produced after it must be delivered.
    """
    deadline = Deadline(timeout, f"end-of-partition event for {tp}")
    while True:
        deadline.check()
        m = c.poll(0.1)
        if m is None:
            continue
        assert m.error() is not None, f"unexpected record at offset {m.offset()}"
        assert error_code(m) == KafkaError._PARTITION_EOF, m.error()
        if (m.topic(), m.partition()) == (tp.topic, tp.partition):
            offset = m.offset()
            assert offset is not None
            return offset


def committed(c: Consumer, tp: TopicPartition) -> int:
    (tpo,) = c.committed([TopicPartition(tp.topic, tp.partition)], timeout=10)
    assert tpo.error is None, tpo.error
    return int(tpo.offset)


# -- metadata and admin -----------------------------------------------------------------------


def test_metadata_lists_the_single_broker_and_topics(module_broker: BrokerProcess) -> None:
    topic = unique_topic("ck-meta")
    create_topic(module_broker, topic, partitions=3)
    md = admin_client(module_broker).list_topics(timeout=10)
    nid = module_broker.node_id
    brokers: dict[int, tuple[int, Any, Any]] = {
        i: (bm.id, bm.host, bm.port) for i, bm in md.brokers.items()
    }
    assert brokers == {nid: (nid, "127.0.0.1", module_broker.port)}
    cluster_id: object = md.cluster_id  # typed as None by confluent-kafka's stubs
    assert cluster_id
    tmd = md.topics[topic]
    topic_error: object = tmd.error  # typed non-optional by confluent-kafka, None when fine
    assert topic_error is None
    assert sorted(tmd.partitions) == [0, 1, 2]
    for pmd in tmd.partitions.values():
        assert pmd.error is None
        assert (pmd.leader, pmd.replicas, pmd.isrs) == (nid, [nid], [nid])
    # a single-topic request answers for that topic only
    assert list(admin_client(module_broker).list_topics(topic, timeout=10).topics) == [topic]


def test_admin_creates_and_deletes_topics(module_broker: BrokerProcess) -> None:
    admin = admin_client(module_broker)
    topics = [unique_topic("ck-admin") for _ in range(2)]
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=2, replication_factor=1) for t in topics], operation_timeout=10
    )
    for f in futures.values():
        assert f.result(timeout=15) is None
    wait_until(
        lambda: set(topics) <= set(admin.list_topics(timeout=5).topics),
        timeout=10,
        what="topics listed",
    )
    assert len(admin.list_topics(timeout=5).topics[topics[0]].partitions) == 2

    again = admin.create_topics([NewTopic(topics[0], 1, 1)], operation_timeout=10)
    with pytest.raises(KafkaException) as exc:
        again[topics[0]].result(timeout=15)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    deleted = admin.delete_topics(topics, operation_timeout=10)
    for f in deleted.values():
        assert f.result(timeout=15) is None
    wait_until(
        lambda: not set(topics) & set(admin.list_topics(timeout=5).topics),
        timeout=10,
        what="topics gone from metadata",
    )
    gone = admin.delete_topics([topics[0]], operation_timeout=10)
    with pytest.raises(KafkaException) as exc:
        gone[topics[0]].result(timeout=15)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_admin_create_topics_validate_only_and_bad_replication_factor(
    module_broker: BrokerProcess,
) -> None:
    admin = admin_client(module_broker)
    topic = unique_topic("ck-validate")
    futures = admin.create_topics([NewTopic(topic, 1, 1)], validate_only=True)
    assert futures[topic].result(timeout=15) is None
    assert topic not in admin.list_topics(timeout=5).topics

    futures = admin.create_topics([NewTopic(topic, 1, replication_factor=3)])
    with pytest.raises(KafkaException) as exc:
        futures[topic].result(timeout=15)
    assert exc.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    assert topic not in admin.list_topics(timeout=5).topics


# -- produce ----------------------------------------------------------------------------------


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_with_acks_then_consume_byte_identical(
    module_broker: BrokerProcess, acks: str
) -> None:
    topic = unique_topic(f"ck-acks{acks}")
    create_topic(module_broker, topic)
    sent = make_records(60, seed=11, big_every=25)
    msgs = produce_all(new_producer(module_broker, acks=acks), topic, sent)
    if acks != "0":  # acks=0 has no response, so no offsets: the consumer checks those
        assert sorted(m.offset() or 0 for m in msgs) == list(range(len(sent)))
    with consumer(module_broker) as c:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert_same_records(read(c, len(sent), settle=0.3), sent)


@pytest.mark.parametrize("codec", CODECS)
def test_produce_compressed_then_consume_byte_identical(
    module_broker: BrokerProcess, codec: str
) -> None:
    topic = unique_topic(f"ck-{codec}")
    create_topic(module_broker, topic)
    sent = make_records(400, seed=12, big_every=150)
    p = new_producer(module_broker, acks="all", **{"compression.type": codec, "linger.ms": 50})
    msgs = produce_all(p, topic, sent)
    assert sorted(m.offset() or 0 for m in msgs) == list(range(len(sent)))
    with consumer(module_broker) as c:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert_same_records(read(c, len(sent), settle=0.3), sent)


def test_idempotent_producer(module_broker: BrokerProcess) -> None:
    """enable.idempotence=true (Java's default since 3.0) needs InitProducerId and sequences."""
    topic = unique_topic("ck-idem")
    create_topic(module_broker, topic)
    sent = make_records(50, seed=13)
    msgs = produce_all(new_producer(module_broker, **{"enable.idempotence": True}), topic, sent)
    assert sorted(m.offset() or 0 for m in msgs) == list(range(len(sent)))


# -- consume with assign() --------------------------------------------------------------------


def test_consume_from_earliest_latest_and_given_offset(module_broker: BrokerProcess) -> None:
    topic = unique_topic("ck-assign")
    create_topic(module_broker, topic, partitions=2)
    tp = TopicPartition(topic, 1)
    first = make_records(30, seed=14, partition=1)
    p = new_producer(module_broker, acks="1")
    produce_all(p, topic, first)

    with consumer(module_broker) as c:
        c.assign([TopicPartition(topic, 1, OFFSET_BEGINNING)])
        assert_same_records(read(c, 30, settle=0.2), first)
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 30)
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)

    with consumer(module_broker) as c:
        c.assign([TopicPartition(topic, 1, 17)])
        assert_same_records(read(c, 13, settle=0.2), first[17:], first_offset=17)

    with consumer(module_broker, None, **{"enable.partition.eof": True}) as c:
        c.assign([TopicPartition(topic, 1, OFFSET_END)])
        assert eof_offset(c, tp) == 30
        more = make_records(5, seed=15, partition=1)
        produce_all(p, topic, more)
        assert_same_records(read(c, 5, settle=0.3), more, first_offset=30)

    latest = {"auto.offset.reset": "latest", "enable.partition.eof": True}
    with consumer(module_broker, None, **latest) as c:
        c.assign([tp])  # no offset, nothing committed: auto.offset.reset=latest decides
        assert eof_offset(c, tp) == 35
        c.seek(TopicPartition(topic, 1, 33))
        assert [r.offset for r in read(c, 2, settle=0.2)] == [33, 34]


def test_list_offsets_by_timestamp(module_broker: BrokerProcess) -> None:
    topic = unique_topic("ck-times")
    create_topic(module_broker, topic)
    p = new_producer(module_broker, acks="1", **{"linger.ms": 0})
    for i in range(10):  # one batch each, so the time index has an entry per record
        produce_all(p, topic, [Rec(b"k", b"v%d" % i, (), BASE_TS + 1000 * i)])
    with consumer(module_broker) as c:

        def lookup(ts: int) -> int:
            (tpo,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tpo.error is None, tpo.error
            return int(tpo.offset)

        assert lookup(BASE_TS + 4500) == 5
        assert lookup(BASE_TS + 5000) == 5
        assert lookup(BASE_TS - 1) == 0
        assert lookup(BASE_TS + 10**6) == -1  # past the last timestamp: OFFSET_END


# -- consumer groups --------------------------------------------------------------------------


def test_group_resumes_from_committed_offset_after_broker_restart(
    persistent: BrokerProcess,
) -> None:
    b = persistent
    topic, group = unique_topic("ck-grp"), unique_topic("ck-group")
    create_topic(b, topic)
    tp = TopicPartition(topic, 0)
    sent = make_records(20, seed=16)
    produce_all(new_producer(b, acks="all"), topic, sent)

    assigned: list[list[TopicPartition]] = []
    with consumer(b, group) as c:
        c.subscribe([topic], on_assign=lambda _c, parts: assigned.append(parts))
        got = read(c, 10)
        assert [(p.topic, p.partition) for p in assigned[-1]] == [(topic, 0)]
        assert_same_records(got[:10], sent[:10])
        c.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        assert committed(c, tp) == 10

    b.restart()

    with consumer(b, group) as c:
        assert committed(c, tp) == 10
        c.subscribe([topic])
        # nothing below the committed offset may come again
        assert_same_records(read(c, 10, settle=0.5), sent[10:], first_offset=10)
        more = make_records(3, seed=17)
        msgs = produce_all(new_producer(b, acks="all"), topic, more)
        assert [m.offset() for m in msgs] == [20, 21, 22]
        assert_same_records(read(c, 3, settle=0.3), more, first_offset=20)
        c.commit(asynchronous=False)
        assert committed(c, tp) == 23


def test_live_group_consumer_rejoins_after_broker_restart_on_same_port(
    persistent: BrokerProcess,
) -> None:
    b = persistent
    topic, group = unique_topic("ck-live"), unique_topic("ck-live-group")
    create_topic(b, topic)
    sent = make_records(20, seed=18)
    produce_all(new_producer(b, acks="all"), topic, sent)
    with consumer(b, group) as c:
        c.subscribe([topic])
        assert_same_records(read(c, 20, settle=0.2), sent)
        c.commit(asynchronous=False)

        b.restart(keep_port=True)

        more = make_records(5, seed=19)
        msgs = produce_all(new_producer(b, acks="all"), topic, more)
        assert [m.offset() for m in msgs] == [20, 21, 22, 23, 24]
        # the same client finds the broker again, rejoins, and goes on from offset 20
        assert_same_records(read(c, 5, timeout=40, settle=0.5), more, first_offset=20)


def test_acknowledged_records_and_commits_survive_kill_9(persistent: BrokerProcess) -> None:
    b = persistent
    topic, group = unique_topic("ck-kill"), unique_topic("ck-kill-group")
    create_topic(b, topic)
    sent = make_records(500, seed=20, big_every=100)
    produce_all(new_producer(b, acks="all", **{"compression.type": "lz4"}), topic, sent)
    with consumer(b, group) as c:
        c.subscribe([topic])
        read(c, 100)
        c.commit(offsets=[TopicPartition(topic, 0, 100)], asynchronous=False)

    b.restart(kill=True)

    with consumer(b, group) as c:
        assert committed(c, TopicPartition(topic, 0)) == 100
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert_same_records(read(c, 500, settle=0.3), sent)


# -- errors -----------------------------------------------------------------------------------


def test_produce_to_missing_topic_without_auto_create_is_unknown_topic(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory({"auto.create.topics.enable": "false"})
    topic = unique_topic("ck-missing")
    admin = admin_client(b)
    tmd = admin.list_topics(topic, timeout=10).topics[topic]
    assert tmd.error is not None
    assert tmd.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    p = new_producer(b, **{"topic.metadata.propagation.max.ms": 1_000, "message.timeout.ms": 5_000})
    errors: list[KafkaError | None] = []
    try:
        p.produce(topic, b"v", on_delivery=lambda err, _msg: errors.append(err))
    except KafkaException as exc:  # librdkafka may already know the topic is missing
        errors.append(exc.args[0])
    assert p.flush(15) == 0
    assert len(errors) == 1
    assert errors[0] is not None
    assert errors[0].code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART)
    assert topic not in admin.list_topics(timeout=5).topics


def test_record_over_message_max_bytes_is_rejected(broker_factory: BrokerFactory) -> None:
    b = broker_factory({"message.max.bytes": "20000"})
    topic = unique_topic("ck-too-large")
    create_topic(b, topic)
    # the client allows 5 MB, so the broker is the one that must refuse
    p = new_producer(b, **{"message.max.bytes": 5_000_000, "message.timeout.ms": 10_000})
    errors: list[KafkaError | None] = []
    p.produce(topic, b"x" * 50_000, on_delivery=lambda err, _m: errors.append(err))
    assert p.flush(15) == 0
    # separately: the limit applies per batch, so a shared batch would fail as a whole
    p.produce(topic, b"small", on_delivery=lambda err, _m: errors.append(err))
    assert p.flush(15) == 0
    assert len(errors) == 2
    codes = sorted(str(e.code()) if e else "ok" for e in errors)
    assert codes == sorted([str(KafkaError.MSG_SIZE_TOO_LARGE), "ok"]), errors
    with consumer(b) as c:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert [r.value for r in read(c, 1, settle=0.3)] == [b"small"]


# -- more than one member ---------------------------------------------------------------------


def test_two_members_split_partitions_and_rebalance_when_one_leaves(
    module_broker: BrokerProcess,
) -> None:
    topic, group = unique_topic("ck-two"), unique_topic("ck-two-group")
    create_topic(module_broker, topic, partitions=4)
    assignments: dict[str, set[int]] = {"a": set(), "b": set()}

    def tracker(name: str) -> dict[str, Any]:
        def on_assign(_c: Consumer, parts: list[TopicPartition]) -> None:
            assignments[name] = {p.partition for p in parts}

        def on_revoke(_c: Consumer, _parts: list[TopicPartition]) -> None:
            assignments[name] = set()

        return {"on_assign": on_assign, "on_revoke": on_revoke}

    with consumer(module_broker, group) as a:
        a.subscribe([topic], **tracker("a"))
        wait_until(lambda: a.poll(0.05) is None and assignments["a"], timeout=20, what="a joins")
        assert assignments["a"] == {0, 1, 2, 3}
        with consumer(module_broker, group) as b:
            b.subscribe([topic], **tracker("b"))

            def split() -> bool:
                a.poll(0.05)
                b.poll(0.05)
                return bool(assignments["a"]) and bool(assignments["b"])

            wait_until(split, timeout=30, what="both members assigned")
            assert assignments["a"] | assignments["b"] == {0, 1, 2, 3}
            assert not assignments["a"] & assignments["b"]
            assert len(assignments["a"]) == len(assignments["b"]) == 2
        # b closed (LeaveGroup): a gets everything back

        def all_back() -> bool:
            a.poll(0.05)
            return assignments["a"] == {0, 1, 2, 3}

        wait_until(all_back, timeout=30, what="a owns all partitions again")


def test_deleted_topic_recreated_under_the_same_name_starts_empty(
    module_broker: BrokerProcess,
) -> None:
    topic = unique_topic("ck-recreate")
    create_topic(module_broker, topic)
    produce_all(new_producer(module_broker, acks="all"), topic, make_records(10, seed=21))
    admin = admin_client(module_broker)
    admin.delete_topics([topic], operation_timeout=10)[topic].result(timeout=15)
    wait_until(lambda: topic not in admin.list_topics(timeout=5).topics, timeout=10, what="deleted")
    create_topic(module_broker, topic)
    with consumer(module_broker) as c:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)
    sent = make_records(3, seed=22)
    msgs = produce_all(new_producer(module_broker, acks="all"), topic, sent)
    assert [m.offset() for m in msgs] == [0, 1, 2]
    with consumer(module_broker) as c:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert_same_records(read(c, 3, settle=0.3), sent)
