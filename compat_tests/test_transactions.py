"""confluent-kafka's transactional API against a pykbroker process (issue 6).

A consume-transform-produce loop (``send_offsets_to_transaction``) commits some transactions
and aborts others; then a read_committed consumer must see exactly the committed output, a
read_uncommitted consumer every record written (aborted ones included, control batches
never), and the group's committed offset must move only with committed transactions.

The restart tests stop the broker (SIGTERM, or kill -9) while a transaction is open, then
check that after the restart the transaction is aborted (by the coordinator's timeout, or by
a new producer instance fencing the old one) and that read_committed readers see exactly
the committed records — the aborted ones are skipped through the partition's ``.txnindex``,
which the broker rebuilds from the log after a kill -9.

kafka-python's KafkaAdminClient (KIP-664 tooling: list_transactions, describe_transactions,
describe_producers, abort_transaction over WriteTxnMarkers) finds and aborts a hanging
transaction. confluent-kafka 2.16's AdminClient has no transaction admin calls.

kafka-python 3's transactional KafkaProducer (init_transactions, begin_transaction, send,
send_offsets_to_transaction with the consumer's group metadata, commit/abort_transaction)
runs a consume-transform-produce loop; read_committed readers see exactly the committed
records and the group's committed offset moves with committed transactions only.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import AbortTransactionSpec

from compat_tests.conftest import BrokerFactory, BrokerProcess, close_at_teardown
from compat_tests.helpers import Deadline, unique_topic
from compat_tests.test_confluent_kafka import COMMON, create_topic, new_producer
from compat_tests.test_kafka_python import COMMON as KP_COMMON

pytestmark = pytest.mark.compat


def transactional_producer(b: BrokerProcess, transactional_id: str, **conf: Any) -> Producer:
    p = new_producer(b, **{"transactional.id": transactional_id, "linger.ms": 1, **conf})
    p.init_transactions(30)
    return p


def new_consumer(b: BrokerProcess, group: str, isolation: str, **conf: Any) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            **COMMON,
            **conf,
        }
    )
    close_at_teardown(c.close)
    return c


def read_values(
    b: BrokerProcess, topic: str, isolation: str, expected: int, *, settle_s: float = 2.0
) -> list[bytes]:
    """Every value of partition 0 of ``topic`` (waits for ``expected``, then ``settle_s``)."""
    c = new_consumer(b, unique_topic("reader"), isolation)
    c.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = Deadline(30, f"{expected} records from {topic} ({isolation})")
    settle = Deadline(settle_s, "settle")
    while not deadline.expired():
        msg = c.poll(0.2)
        if msg is None:
            if len(values) >= expected and settle.expired():
                break
            continue
        assert msg.error() is None, msg.error()
        value = msg.value()
        assert isinstance(value, bytes)
        values.append(value)
        if len(values) >= expected:
            settle = Deadline(settle_s, "settle")
    return values


def committed_offset(c: Consumer, topic: str) -> int:
    (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
    return int(tp.offset)


def test_consume_transform_produce_commits_and_aborts(broker: BrokerProcess) -> None:
    source, sink = unique_topic("txn-in"), unique_topic("txn-out")
    create_topic(broker, source)
    create_topic(broker, sink)
    plain = new_producer(broker)
    for i in range(10):
        plain.produce(source, value=b"in-%d" % i, partition=0)
    assert plain.flush(20) == 0

    group = unique_topic("txn-group")
    consumer = new_consumer(broker, group, "read_committed")
    consumer.subscribe([source])
    producer = transactional_producer(broker, unique_topic("txn-id"))

    committed: list[bytes] = []
    everything: list[bytes] = []
    batch_no = 0
    pending: list[bytes] = []
    deadline = Deadline(60, "consume-transform-produce")
    while batch_no < 5:
        deadline.check(f"batch {batch_no}")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        value = msg.value()
        assert isinstance(value, bytes)
        pending.append(value)
        if len(pending) < 2:
            continue
        producer.begin_transaction()
        out = [v.replace(b"in-", b"out-") for v in pending]
        for v in out:
            producer.produce(sink, value=v, partition=0)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        everything.extend(out)
        assert producer.flush(20) == 0  # the aborted records reach the log too
        if batch_no % 2 == 0:
            producer.commit_transaction(30)
            committed.extend(out)
            assert committed_offset(consumer, source) == 2 * (batch_no + 1)
        else:
            producer.abort_transaction(30)
            # the aborted transaction's offsets are not visible to the group
            assert committed_offset(consumer, source) == 2 * batch_no
        pending = []
        batch_no += 1

    assert committed == [b"out-0", b"out-1", b"out-4", b"out-5", b"out-8", b"out-9"]
    assert read_values(broker, sink, "read_committed", len(committed)) == committed
    assert read_values(broker, sink, "read_uncommitted", len(everything)) == everything

    # a new member of the group resumes after the last committed transaction
    consumer.close()
    resumed = new_consumer(broker, group, "read_committed")
    assert committed_offset(resumed, source) == 10


def test_fencing_and_restart_keep_transactions_consistent(broker: BrokerProcess) -> None:
    topic = unique_topic("txn-fence")
    create_topic(broker, topic)
    transactional_id = unique_topic("txn-fence-id")
    zombie = transactional_producer(broker, transactional_id)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie", partition=0)
    assert zombie.flush(20) == 0

    # a new instance with the same transactional id aborts the zombie's open transaction
    producer = transactional_producer(broker, transactional_id)
    with pytest.raises(KafkaException):
        zombie.commit_transaction(10)
    producer.begin_transaction()
    producer.produce(topic, value=b"kept", partition=0)
    producer.commit_transaction(30)

    broker.restart()
    producer = transactional_producer(broker, transactional_id)
    producer.begin_transaction()
    producer.produce(topic, value=b"dropped", partition=0)
    assert producer.flush(20) == 0
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"kept-2", partition=0)
    producer.commit_transaction(30)

    assert read_values(broker, topic, "read_committed", 2) == [b"kept", b"kept-2"]
    assert read_values(broker, topic, "read_uncommitted", 4) == [
        b"zombie",
        b"kept",
        b"dropped",
        b"kept-2",
    ]


def test_kafka_python_admin_finds_and_aborts_a_hanging_transaction(broker: BrokerProcess) -> None:
    topic = unique_topic("txn-hang")
    create_topic(broker, topic)
    transactional_id = unique_topic("txn-hang-id")
    producer = transactional_producer(broker, transactional_id)
    producer.begin_transaction()
    producer.produce(topic, value=b"hanging", partition=0)
    assert producer.flush(20) == 0
    tp = KpTopicPartition(topic, 0)

    with KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers) as admin:
        by_broker = admin.list_transactions(state_filters=["Ongoing"])
        listings = [t for ts in by_broker.values() for t in ts]
        [listing] = [t for t in listings if t.transactional_id == transactional_id]
        assert listing.state.value == "Ongoing"
        assert admin.list_transactions(transactional_id_pattern="no-such-.*") == {
            node: [] for node in by_broker
        }
        description = admin.describe_transactions([transactional_id])[transactional_id]
        assert description.state.value == "Ongoing"
        assert description.producer_id == listing.producer_id
        assert description.topic_partitions == {tp}
        assert description.transaction_start_time_ms > 0
        [state] = admin.describe_producers([tp])[tp].active_producers
        assert state.producer_id == description.producer_id
        assert state.producer_epoch == description.producer_epoch
        assert (state.last_sequence, state.current_transaction_start_offset) == (0, 0)

        admin.abort_transaction(
            AbortTransactionSpec(
                tp, state.producer_id, state.producer_epoch, state.coordinator_epoch
            )
        )
        [after] = admin.describe_producers([tp])[tp].active_producers
        assert after.current_transaction_start_offset == -1

    # the aborted record is hidden from read_committed; the producer's own end of its
    # transaction still works, and its next transaction is visible
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"after", partition=0)
    producer.commit_transaction(30)
    assert read_values(broker, topic, "read_committed", 1) == [b"after"]
    assert read_values(broker, topic, "read_uncommitted", 2) == [b"hanging", b"after"]


# -- transactions across a broker restart -----------------------------------------------------

TXN_TIMEOUT_MS = 6_000
ABORTED_TXN = struct.Struct(">hqqqq")  # Kafka's .txnindex entry: 34 bytes, version 0


def close_bounded(what: str, close: Callable[[], object], timeout_s: float = 20.0) -> None:
    """Run a client's ``close`` with a time limit (a librdkafka close can block on a broker)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"close-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"closing {what} took more than {timeout_s:.0f}s"
    assert not errors, f"closing {what} failed: {errors[0]!r}"


def close_producer(what: str, p: Producer, *, fenced: bool = False) -> None:
    """Purge, flush and close (a fenced producer's flush and close report the fencing)."""

    def close() -> None:
        steps: list[Callable[[], object]] = [p.purge, lambda: p.flush(5), p.close]
        for step in steps:
            try:
                step()
            except KafkaException as exc:
                if not (fenced and exc.args[0].code() == KafkaError._FENCED):
                    raise
            except SystemError:
                # confluent-kafka 2.16's close() of a fenced producer finishes but returns
                # True with the fencing error still set; anything else is a real failure
                if not (fenced and step == p.close):
                    raise

    close_bounded(what, close)


def read_partition(
    b: BrokerProcess, topic: str, isolation: str, expected: list[bytes], timeout_s: float = 40
) -> list[tuple[int, bytes]]:
    """(offset, value) of partition 0 from offset 0: polls until ``expected`` arrived (or the
    deadline), then 1 s more to catch anything extra; the consumer is closed before return."""
    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": unique_topic("restart-reader"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "fetch.wait.max.ms": 100,
            **COMMON,
        }
    )
    got: list[tuple[int, bytes]] = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = Deadline(timeout_s, f"{len(expected)} records of {topic} ({isolation})")
        settle: Deadline | None = None
        while not deadline.expired() and (settle is None or not settle.expired()):
            msg = c.poll(0.1)
            if msg is not None:
                assert msg.error() is None, msg.error()
                value, offset = msg.value(), msg.offset()
                assert isinstance(value, bytes)
                assert offset is not None
                got.append((offset, value))
            if settle is None and len(got) >= len(expected):
                settle = Deadline(1.0, "settle")
    finally:
        close_bounded(f"{isolation} reader", c.close)
    return got


def txnindex_entries(b: BrokerProcess, topic: str) -> list[tuple[int, int, int, int, int]]:
    """The entries of every ``.txnindex`` of partition 0, decoded as Kafka's AbortedTxn."""
    entries = []
    for path in sorted((b.data_dir / f"{topic}-0").glob("*.txnindex")):
        data = path.read_bytes()
        assert len(data) % ABORTED_TXN.size == 0, f"{path} is torn"
        entries += [ABORTED_TXN.unpack_from(data, i) for i in range(0, len(data), ABORTED_TXN.size)]
    return entries


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "kill-9"])
@pytest.mark.parametrize("ended_by", ["timeout", "init_transactions"])
def test_a_transaction_open_across_a_restart_is_aborted_and_hidden(
    broker_factory: BrokerFactory, kill: bool, ended_by: str
) -> None:
    b = broker_factory({"transaction.abort.timed.out.transaction.cleanup.interval.ms": "500"})
    if not b.persistent:
        pytest.skip("the reference broker is memory-only")
    topic = unique_topic("txn-restart")
    create_topic(b, topic)
    transactional_id = unique_topic("txn-restart-id")
    timeouts = {
        "transaction.timeout.ms": TXN_TIMEOUT_MS,
        "message.timeout.ms": TXN_TIMEOUT_MS - 1_000,
        "socket.timeout.ms": TXN_TIMEOUT_MS - 1_000,
    }
    producers: list[tuple[str, Producer, bool]] = []  # (what, producer, fenced)

    def producer(what: str, txn_id: str) -> Producer:
        p = Producer(
            {
                "bootstrap.servers": b.bootstrap_servers,
                "transactional.id": txn_id,
                "linger.ms": 1,
                **COMMON,
                **timeouts,
            }
        )
        producers.append((what, p, what == "the old producer"))
        p.init_transactions(30)
        return p

    committed: list[bytes] = []
    everything: list[bytes] = []
    try:
        old = producer("the old producer", transactional_id)
        for n in range(3):
            old.begin_transaction()
            batch = [b"committed-%d-%d" % (n, i) for i in range(3)]
            for value in batch:
                old.produce(topic, value=value, partition=0)
            old.commit_transaction(30)
            committed += batch
            everything += batch
        old.begin_transaction()
        for i in range(3):
            old.produce(topic, value=b"aborted-%d" % i, partition=0)
            everything.append(b"aborted-%d" % i)
        assert old.flush(20) == 0
        old.abort_transaction(30)
        old.begin_transaction()
        for i in range(3):
            old.produce(topic, value=b"open-%d" % i, partition=0)
            everything.append(b"open-%d" % i)
        assert old.flush(20) == 0  # in the log, not committed: the broker goes down now

        if kill:
            port = b.port
            b.kill9()
            # as if the crash also lost the page cache of the index: the partition has one
            # (active) segment, which recovery re-reads, rebuilding its .txnindex from the log
            lost = list((b.data_dir / f"{topic}-0").glob("*.txnindex"))
            assert lost, "the explicit abort wrote no .txnindex"
            for path in lost:
                path.unlink()
            restarted = Deadline(10, "the broker back on its port")
            while True:  # the old port may take a moment to be free again
                try:
                    b.start(port=port)
                    break
                except pytest.fail.Exception:
                    if restarted.expired():
                        raise
                    time.sleep(0.2)
        else:
            b.restart(keep_port=True)

        if ended_by == "init_transactions":
            new = producer("the new producer", transactional_id)  # fences old, aborts its txn
        else:
            new = producer("another producer", unique_topic("txn-restart-other"))
        new.begin_transaction()
        for i in range(3):
            new.produce(topic, value=b"after-%d" % i, partition=0)
        new.commit_transaction(30)
        committed += [b"after-%d" % i for i in range(3)]
        everything += [b"after-%d" % i for i in range(3)]

        # read_committed waits for the open transaction's abort (the last stable offset
        # stays at its first record until then), then sees the committed records only
        seen = read_partition(b, topic, "read_committed", committed)
        assert [v for _, v in seen] == committed
        uncommitted = read_partition(b, topic, "read_uncommitted", everything)
        assert [v for _, v in uncommitted] == everything
        # the old producer cannot commit its open transaction any more: the coordinator
        # aborted it with an epoch bump (timeout), or the new instance fenced it
        with pytest.raises(KafkaException) as fenced:
            old.commit_transaction(10)
        assert fenced.value.args[0].code() == KafkaError._FENCED
        assert [v for _, v in read_partition(b, topic, "read_committed", committed)] == committed
    finally:
        for what, p, is_fenced in reversed(producers):
            close_producer(what, p, fenced=is_fenced)

    # both aborted transactions are in the partition's .txnindex, in Kafka's format
    offsets = {v: o for o, v in uncommitted}
    entries = txnindex_entries(b, topic)
    assert [e[0] for e in entries] == [0, 0]  # version
    assert entries[0][1] == entries[1][1]  # one producer id (its epoch was bumped)
    assert entries[0][2] == offsets[b"aborted-0"]
    assert entries[0][3] == offsets[b"aborted-2"] + 1  # the ABORT marker right after
    assert entries[1][2] == offsets[b"open-0"]
    assert entries[1][3] > offsets[b"open-2"]


# -- kafka-python's transactional producer ----------------------------------------------------


def test_kafka_python_transactional_producer_sends_records_and_offsets(
    broker: BrokerProcess,
) -> None:
    """kafka-python 3's KafkaProducer(transactional_id=...) in a consume-transform-produce
    loop: the records and the group's offsets of committed transactions only are visible."""
    source, sink = unique_topic("kp-txn-in"), unique_topic("kp-txn-out")
    create_topic(broker, source)
    create_topic(broker, sink)
    plain = new_producer(broker)
    for i in range(6):
        plain.produce(source, value=b"in-%d" % i, partition=0)
    assert plain.flush(20) == 0

    group = unique_topic("kp-txn-group")
    consumer = KafkaConsumer(
        source,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        **KP_COMMON,
    )
    close_at_teardown(lambda: consumer.close(autocommit=False))
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap_servers,
        transactional_id=unique_topic("kp-txn-id"),
        max_block_ms=10_000,
        delivery_timeout_ms=20_000,
        linger_ms=5,
        **KP_COMMON,
    )
    close_at_teardown(lambda: producer.close(timeout=10))
    close_bounded("init_transactions", producer.init_transactions)

    consumed: list[bytes] = []
    deadline = Deadline(30, "the 6 input records")
    while len(consumed) < 6:
        deadline.check(f"{len(consumed)} consumed")
        for records in consumer.poll(timeout_ms=200).values():
            consumed.extend(r.value for r in records)
    assert consumed == [b"in-%d" % i for i in range(6)]
    tp = KpTopicPartition(source, 0)

    def committed() -> int | None:
        offset = consumer.committed(tp, timeout_ms=10_000)
        return None if offset is None else int(offset)

    def transaction(first: int, commit: bool) -> list[bytes]:
        """Transform in-<first>, in-<first+1>; send the outputs and the offset after them."""
        out = [b"out-%d" % i for i in (first, first + 1)]
        producer.begin_transaction()
        for value in out:
            producer.send(sink, value=value, partition=0)
        producer.send_offsets_to_transaction(
            {tp: OffsetAndMetadata(first + 2, "", -1)}, consumer.group_metadata()
        )
        close_bounded("flush", lambda: producer.flush(timeout=20))
        if commit:
            close_bounded("commit_transaction", producer.commit_transaction)
        else:
            close_bounded("abort_transaction", producer.abort_transaction)
        return out

    everything = transaction(0, commit=True)
    assert committed() == 2
    everything += transaction(2, commit=False)
    assert committed() == 2  # the aborted transaction's offset is dropped
    everything += transaction(2, commit=True)  # the retry of the aborted one
    assert committed() == 4
    everything += transaction(4, commit=True)
    assert committed() == 6

    expected = [b"out-%d" % i for i in range(6)]
    assert read_values(broker, sink, "read_committed", len(expected)) == expected
    assert read_values(broker, sink, "read_uncommitted", len(everything)) == everything
    # another member of the group (librdkafka, require_stable) resumes after the last one
    consumer.close(autocommit=False)
    assert committed_offset(new_consumer(broker, group, "read_committed"), source) == 6
