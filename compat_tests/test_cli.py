"""The ``pykbroker serve`` process contract: startup line, signals, config errors, restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from compat_tests.conftest import (
    LIBRDKAFKA_LOG,
    ROOT,
    BrokerFactory,
    BrokerProcess,
    close_at_teardown,
)
from compat_tests.helpers import unique_topic, wait_until

pytestmark = pytest.mark.compat

CLIENT: dict[str, Any] = {"socket.timeout.ms": 10_000, "logger": LIBRDKAFKA_LOG}


def producer(b: BrokerProcess) -> Producer:
    p = Producer({"bootstrap.servers": b.bootstrap_servers, **CLIENT})

    def close() -> None:
        p.purge()
        p.flush(1)
        p.close()

    close_at_teardown(close)
    return p


def admin(b: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.bootstrap_servers, **CLIENT})


def partitions_of(b: BrokerProcess, topic: str) -> int | None:
    md = admin(b).list_topics(timeout=10)
    return len(md.topics[topic].partitions) if topic in md.topics else None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_gracefully_with_exit_code_0(
    broker_factory: BrokerFactory, sig: signal.Signals
) -> None:
    b = broker_factory()
    topic = unique_topic("cli-sig")
    p = producer(b)
    p.produce(topic, b"v")
    assert p.flush(15) == 0  # a client is connected while the broker stops
    result = b.stop(sig=sig)
    assert result is not None
    assert result.returncode == 0, b.tail(40)
    assert not result.killed
    assert result.seconds < 5, f"graceful shutdown took {result.seconds:.1f}s"


@pytest.mark.parametrize(
    "override",
    [
        "num.partitions=0",
        "num.partitions=lots",
        "node.id=-1",
        "listeners=not-a-listener",
        "auto.create.topics.enable=perhaps",
        "default.replication.factor=0",
        "message.max.bytes=-5",
        "offsets.topic.num.partitions=0",
        "group.initial.rebalance.delay.ms=-1",
        "process.roles=dancer",
    ],
)
def test_invalid_config_exits_2_before_writing_anything(tmp_path: Path, override: str) -> None:
    data = tmp_path / "data"
    cmd = [
        sys.executable,
        "-m",
        "pykbroker",
        "serve",
        "--override",
        "listeners=PLAINTEXT://127.0.0.1:0",
        "--override",
        f"log.dirs={data}",
        "--override",
        override,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=20, cwd=tmp_path, env=env, check=False
    )
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr}"
    assert override.split("=")[0] in proc.stderr, proc.stderr
    assert not data.exists(), "the broker wrote to log.dirs despite invalid config"
    assert "pykbroker started" not in proc.stderr


def test_override_without_equals_sign_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pykbroker", "serve", "--override", "num.partitions"],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_properties_file_is_read_and_overrides_win(
    tmp_path: Path, broker_factory: BrokerFactory
) -> None:
    props = tmp_path / "server.properties"
    props.write_text(
        "# a Kafka-style file\n"
        "node.id=1\n"
        "process.roles=broker,controller\n"
        "num.partitions=4\n"
        "auto.create.topics.enable=false\n"
        "listeners=PLAINTEXT://127.0.0.1:9\n"
    )
    b = broker_factory({"auto.create.topics.enable": "true"}, properties_file=props)
    topic = unique_topic("cli-props")
    p = producer(b)
    p.produce(topic, b"v")
    assert p.flush(15) == 0  # auto-created: the override beat the file
    assert partitions_of(b, topic) == 4  # num.partitions came from the file


def test_topics_and_deletions_survive_restart(broker_factory: BrokerFactory) -> None:
    b = broker_factory()
    kept, dropped = unique_topic("cli-kept"), unique_topic("cli-dropped")
    a = admin(b)  # keep it referenced: a destroyed AdminClient fails its futures with _DESTROY
    for f in a.create_topics([NewTopic(kept, 3, 1), NewTopic(dropped, 2, 1)]).values():
        f.result(timeout=15)
    for f in a.delete_topics([dropped]).values():
        f.result(timeout=15)
    wait_until(lambda: partitions_of(b, dropped) is None, timeout=10, what="deletion")

    b.restart()
    assert partitions_of(b, kept) == 3
    assert partitions_of(b, dropped) is None

    b.restart(kill=True)
    assert partitions_of(b, kept) == 3
    assert partitions_of(b, dropped) is None


def test_garbage_on_the_socket_does_not_take_the_broker_down(module_broker: BrokerProcess) -> None:
    junk = [
        b"\xff\xff\xff\xff",  # negative frame length
        b"\x00\x00\x00\x08\x00\x63\x00\x00\x00\x00\x00\x01",  # unknown api key 99
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\x00\x00\x02\x00",  # truncated frame, then close
    ]
    for payload in junk:
        with socket.create_connection(("127.0.0.1", module_broker.port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    assert module_broker.running
    assert partitions_of(module_broker, "no-such-topic-for-metadata") is None
