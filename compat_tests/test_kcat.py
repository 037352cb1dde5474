"""kcat (librdkafka's command-line client, as Debian ships it) against a pykbroker process.

kcat is required under CI=true (the ``kcat`` fixture fails there when it is missing) and skipped
with a reason elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from compat_tests.conftest import LIBRDKAFKA_LOG, BrokerProcess
from compat_tests.helpers import BASE_TS, Deadline, unique_topic

pytestmark = pytest.mark.compat

CODECS = ["gzip", "snappy", "lz4", "zstd"]
FORMAT = "%k|%s|%h|%p|%o\\n"
# librdkafka settings that keep every kcat run short against a local broker
CLIENT_CONF = [
    "-X",
    "socket.timeout.ms=10000",
    "-X",
    "reconnect.backoff.max.ms=1000",
    "-m",
    "10",
]
RUN_TIMEOUT_S = 45


def run_kcat(
    kcat: str, b: BrokerProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [kcat, "-b", b.bootstrap_servers, *CLIENT_CONF, *args]
    try:
        proc = subprocess.run(
            cmd,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{cmd} did not finish within {RUN_TIMEOUT_S}s; stderr:\n{exc.stderr!r}"
        ) from exc
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}; stderr:\n{proc.stderr}"
    return proc


def produce_lines(kcat: str, b: BrokerProcess, topic: str, lines: list[str], *args: str) -> None:
    run_kcat(kcat, b, "-P", "-t", topic, *args, stdin="".join(f"{line}\n" for line in lines))


def parse_consumed(stdout: str) -> list[tuple[str, str, str, int, int]]:
    """Lines of FORMAT as (key, value, headers, partition, offset)."""
    out = []
    for line in stdout.splitlines():
        key, value, headers, partition, offset = line.split("|")
        out.append((key, value, headers, int(partition), int(offset)))
    return out


def consume_all(kcat: str, b: BrokerProcess, topic: str, *args: str) -> list[Any]:
    proc = run_kcat(kcat, b, "-C", "-t", topic, "-e", "-f", FORMAT, *args)
    return parse_consumed(proc.stdout)


@contextlib.contextmanager
def checking_consumer(b: BrokerProcess, group: str | None = None) -> Iterator[Consumer]:
    """A confluent-kafka consumer to check what kcat did."""
    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": group or unique_topic("kcat-check"),
            "enable.auto.commit": False,
            "socket.timeout.ms": 10_000,
            "logger": LIBRDKAFKA_LOG,
        }
    )
    try:
        yield c
    finally:
        c.close()


def test_metadata_listing(kcat: str, module_broker: BrokerProcess) -> None:
    topic = unique_topic("kcat-meta")
    produce_lines(kcat, module_broker, topic, ["hello"])  # auto-creates the topic
    nid, port = module_broker.node_id, module_broker.port

    text = run_kcat(kcat, module_broker, "-L").stdout
    assert "1 brokers:" in text, text
    assert f"broker {nid} at 127.0.0.1:{port}" in text, text
    assert f'topic "{topic}" with 1 partitions:' in text, text
    assert f"partition 0, leader {nid}, replicas: {nid}, isrs: {nid}" in text, text

    md = json.loads(run_kcat(kcat, module_broker, "-L", "-J", "-t", topic).stdout)
    assert md["brokers"] == [{"id": nid, "name": f"127.0.0.1:{port}"}]
    (tmd,) = md["topics"]
    assert tmd["topic"] == topic
    assert "error" not in tmd
    (pmd,) = tmd["partitions"]
    assert (pmd["partition"], pmd["leader"]) == (0, nid)
    assert pmd["replicas"] == [{"id": nid}]
    assert pmd["isrs"] == [{"id": nid}]


@pytest.mark.parametrize("codec", CODECS)
def test_produce_compressed_with_keys_and_headers_then_consume(
    kcat: str, module_broker: BrokerProcess, codec: str
) -> None:
    topic = unique_topic(f"kcat-{codec}")
    lines = [f"key{i}:value-{i}-{codec}-" + "x" * (i * 37 % 200) for i in range(200)]
    produce_lines(
        kcat, module_broker, topic, lines, "-z", codec, "-K:", "-H", "src=kcat", "-H", "n=2"
    )

    got = consume_all(kcat, module_broker, topic, "-o", "beginning")
    expected = [
        (line.split(":", 1)[0], line.split(":", 1)[1], "src=kcat,n=2", 0, i)
        for i, line in enumerate(lines)
    ]
    assert got == expected

    # and librdkafka through Python reads the same bytes
    with checking_consumer(module_broker) as c:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        records: list[tuple[Any, ...]] = []
        deadline = Deadline(20, "confluent consumer reading kcat's records")
        while len(records) < len(lines):
            deadline.check(f"(got {len(records)})")
            m = c.poll(0.2)
            if m is not None:
                assert m.error() is None, m.error()
                records.append((m.key(), m.value(), m.headers(), m.offset()))
    assert records == [
        (k.encode(), v.encode(), [("src", b"kcat"), ("n", b"2")], off)
        for k, v, _h, _p, off in expected
    ]


def test_consume_from_beginning_given_offset_and_relative_to_end(
    kcat: str, module_broker: BrokerProcess
) -> None:
    topic = unique_topic("kcat-offsets")
    lines = [f"k{i}:v{i}" for i in range(10)]
    produce_lines(kcat, module_broker, topic, lines, "-K:")
    all_records = [(f"k{i}", f"v{i}", "", 0, i) for i in range(10)]

    assert consume_all(kcat, module_broker, topic, "-o", "beginning") == all_records
    assert consume_all(kcat, module_broker, topic, "-o", "6") == all_records[6:]
    assert consume_all(kcat, module_broker, topic, "-o", "-3") == all_records[7:]
    assert consume_all(kcat, module_broker, topic, "-o", "end") == []
    assert (
        consume_all(kcat, module_broker, topic, "-o", "beginning", "-c", "4") == (all_records[:4])
    )


def test_group_consumer_commits_and_resumes(kcat: str, module_broker: BrokerProcess) -> None:
    topic, group = unique_topic("kcat-grp"), unique_topic("kcat-group")
    produce_lines(kcat, module_broker, topic, [f"a{i}:first{i}" for i in range(5)], "-K:")
    group_args = [
        "-G",
        group,
        topic,
        "-e",
        "-f",
        FORMAT,
        "-X",
        "auto.offset.reset=earliest",
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "heartbeat.interval.ms=500",
    ]
    first = parse_consumed(run_kcat(kcat, module_broker, *group_args).stdout)
    assert first == [(f"a{i}", f"first{i}", "", 0, i) for i in range(5)]

    with checking_consumer(module_broker, group) as c:
        (tpo,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        assert tpo.offset == 5, f"kcat -G should have committed offset 5, found {tpo}"

    produce_lines(kcat, module_broker, topic, [f"b{i}:second{i}" for i in range(3)], "-K:")
    second = parse_consumed(run_kcat(kcat, module_broker, *group_args).stdout)
    assert second == [(f"b{i}", f"second{i}", "", 0, 5 + i) for i in range(3)]


def run_kcat_bytes(
    kcat: str, b: BrokerProcess, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """``run_kcat`` with bytes in and out (no text decoding on the way)."""
    cmd = [kcat, "-b", b.bootstrap_servers, *CLIENT_CONF, *args]
    try:
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, timeout=RUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{cmd} did not finish within {RUN_TIMEOUT_S}s") from exc
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}; stderr:\n{proc.stderr!r}"
    return proc


def read_back(b: BrokerProcess, topic: str, count: int) -> list[tuple[Any, ...]]:
    """(key, value, timestamp, offset) of the first ``count`` records, read with confluent-kafka
    (polled until they are all there: after acks=0 they may land a moment later)."""
    with checking_consumer(b) as c:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        records: list[tuple[Any, ...]] = []
        deadline = Deadline(20, f"reading {count} records of {topic}")
        while len(records) < count:
            deadline.check(f"(got {len(records)})")
            m = c.poll(0.2)
            if m is not None:
                assert m.error() is None, m.error()
                records.append((m.key(), m.value(), m.timestamp()[1], m.offset()))
    return records


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_with_acks_reads_back_byte_identical(
    kcat: str, module_broker: BrokerProcess, acks: str
) -> None:
    topic = unique_topic(f"kcat-acks{acks}")
    # every byte value but the delimiter, keys split off at the first 0x1f
    raw = bytes(v for v in range(256) if v not in (0x0A, 0x1F))
    values = [raw[i:] + f"-{acks}-{i}-é✓".encode() for i in range(0, 200, 7)]
    lines = [b"key%d\x1f" % i + value for i, value in enumerate(values)]
    run_kcat_bytes(
        kcat,
        module_broker,
        "-P",
        "-t",
        topic,
        "-K",
        "\\x1f",
        "-X",
        f"acks={acks}",
        stdin=b"".join(line + b"\n" for line in lines),
    )
    got = read_back(module_broker, topic, len(values))
    assert [(k, v, off) for k, v, _ts, off in got] == [
        (b"key%d" % i, value, i) for i, value in enumerate(values)
    ]
    # and kcat reads the same bytes back
    out = run_kcat_bytes(
        kcat, module_broker, "-C", "-t", topic, "-e", "-o", "beginning", "-f", "%k\\x1f%s\\n"
    ).stdout
    assert out == b"".join(line + b"\n" for line in lines)


def test_timestamps_in_consume_format_and_offset_lookup_by_timestamp(
    kcat: str, module_broker: BrokerProcess
) -> None:
    topic = unique_topic("kcat-ts")
    # explicit CreateTime timestamps (in the past) through librdkafka's producer API, offsets 0-4
    producer = Producer(
        {"bootstrap.servers": module_broker.bootstrap_servers, "logger": LIBRDKAFKA_LOG}
    )
    stamps = [BASE_TS + 1000 * i for i in range(5)]
    for i, ts in enumerate(stamps):
        producer.produce(topic, key=f"t{i}", value=f"stamped{i}", partition=0, timestamp=ts)
    assert producer.flush(20) == 0
    # kcat 1.7 has no producer timestamp option: its records get librdkafka's CreateTime (now)
    before = int(time.time() * 1000)
    produce_lines(kcat, module_broker, topic, [f"k{i}:now{i}" for i in range(3)], "-K:")
    after = int(time.time() * 1000)

    def consume(offset: str) -> list[tuple[str, str, int, int]]:
        text = run_kcat(
            kcat, module_broker, "-C", "-t", topic, "-e", "-o", offset, "-f", "%k|%s|%T|%o\\n"
        ).stdout
        rows = [line.split("|") for line in text.splitlines()]
        return [(k, v, int(t), int(o)) for k, v, t, o in rows]

    rows = consume("beginning")
    assert [(k, v, o) for k, v, _t, o in rows] == [
        *[(f"t{i}", f"stamped{i}", i) for i in range(5)],
        *[(f"k{i}", f"now{i}", 5 + i) for i in range(3)],
    ]
    assert [t for _k, _v, t, _o in rows[:5]] == stamps  # %T: the timestamps as produced
    now_stamps = [t for _k, _v, t, _o in rows[5:]]
    assert all(before <= t <= after for t in now_stamps), (before, now_stamps, after)

    # -o s@<ts>: start at the first record whose timestamp is >= ts (ListOffsets by timestamp)
    assert [o for *_, o in consume(f"s@{stamps[2]}")] == list(range(2, 8))
    assert [o for *_, o in consume(f"s@{stamps[2] + 1}")] == list(range(3, 8))
    assert [o for *_, o in consume(f"s@{before}")] == list(range(5, 8))
    # -Q: the same lookup on its own; newer than every record: offset -1 (none)
    query = run_kcat(kcat, module_broker, "-Q", "-t", f"{topic}:0:{stamps[4]}")
    assert f"{topic} [0] offset 4" in query.stdout, query.stdout
    query = run_kcat(kcat, module_broker, "-Q", "-t", f"{topic}:0:{after + 3_600_000}")
    assert f"{topic} [0] offset -1" in query.stdout, query.stdout


def test_group_offsets_committed_by_kcat_survive_a_broker_restart(
    kcat: str, persistent: BrokerProcess
) -> None:
    topic, group = unique_topic("kcat-grp-restart"), unique_topic("kcat-group-restart")
    produce_lines(kcat, persistent, topic, [f"a{i}:first{i}" for i in range(5)], "-K:")
    group_args = [
        "-G",
        group,
        topic,
        "-e",
        "-f",
        FORMAT,
        "-X",
        "auto.offset.reset=earliest",
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "heartbeat.interval.ms=500",
    ]
    first = parse_consumed(run_kcat(kcat, persistent, *group_args).stdout)
    assert first == [(f"a{i}", f"first{i}", "", 0, i) for i in range(5)]

    stop = persistent.restart()
    assert stop is not None
    assert stop.clean, stop

    with checking_consumer(persistent, group) as c:
        (tpo,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        assert tpo.offset == 5, f"the committed offset did not survive the restart: {tpo}"
    produce_lines(kcat, persistent, topic, [f"b{i}:second{i}" for i in range(3)], "-K:")
    second = parse_consumed(run_kcat(kcat, persistent, *group_args).stdout)
    assert second == [(f"b{i}", f"second{i}", "", 0, 5 + i) for i in range(3)]
