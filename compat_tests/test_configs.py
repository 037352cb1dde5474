"""DescribeConfigs / AlterConfigs / IncrementalAlterConfigs with real admin clients against a
``pykbroker serve`` process (confluent-kafka's AdminClient, kafka-python's KafkaAdminClient),
and on a 3-node KRaft cluster: a config altered through one node is described with the new
value by every node (the ConfigRecord goes through the active controller and Raft)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType

from pykbroker.api.protocol import codec
from pykbroker.api.protocol.header import encode_request_header, response_header_version
from pykbroker.api.protocol.messages.headers import RESPONSE_HEADER
from pykbroker.api.protocol.registry import request_message, response_message

from .conftest import LIBRDKAFKA_LOG, REFERENCE, BrokerProcess, close_at_teardown
from .helpers import unique_topic, wait_until
from .test_cluster import ProcessCluster, _receive_exactly, cluster  # noqa: F401 - the fixture

TIMEOUT_S = 15
INCREMENTAL_ALTER_CONFIGS = 44


def raw_incremental(port: int, *resources: dict[str, Any]) -> list[dict[str, Any]]:
    """IncrementalAlterConfigs v1 to 127.0.0.1:port; the per-resource responses."""
    body = {"resources": list(resources), "validate_only": False}
    payload = encode_request_header(INCREMENTAL_ALTER_CONFIGS, 1, 1, "compat-configs")
    payload += codec.encode(request_message(INCREMENTAL_ALTER_CONFIGS), 1, body)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", _receive_exactly(sock, 4))[0]
        frame = _receive_exactly(sock, size)
    _, offset = codec.decode_prefix(
        RESPONSE_HEADER, response_header_version(INCREMENTAL_ALTER_CONFIGS, 1), frame
    )
    response = codec.decode(response_message(INCREMENTAL_ALTER_CONFIGS), 1, frame[offset:])
    responses: list[dict[str, Any]] = response["responses"]
    return responses


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG})


def create(client: AdminClient, topic: str) -> None:
    client.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=TIMEOUT_S)


def describe_topic(client: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries: dict[str, ConfigEntry] = client.describe_configs([resource])[resource].result(
        timeout=TIMEOUT_S
    )
    return entries


def incremental(
    client: AdminClient, resource: ConfigResource, *, validate_only: bool = False
) -> None:
    client.incremental_alter_configs([resource], validate_only=validate_only)[resource].result(
        timeout=TIMEOUT_S
    )


def topic_ops(topic: str, *ops: tuple[str, str, AlterConfigOpType]) -> ConfigResource:
    return ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(n, v, incremental_operation=op) for n, v, op in ops],
    )


def test_confluent_describe_and_incremental_alter(module_broker: BrokerProcess) -> None:
    client = admin(module_broker.bootstrap_servers)
    topic = unique_topic("configs")
    create(client, topic)
    entries = describe_topic(client, topic)
    assert {"retention.ms", "cleanup.policy", "max.message.bytes"} <= set(entries)
    assert entries["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert entries["cleanup.policy"].value == "delete"

    set_retention = topic_ops(topic, ("retention.ms", "3600000", AlterConfigOpType.SET))
    incremental(client, set_retention, validate_only=True)
    assert describe_topic(client, topic)["retention.ms"].value == "604800000"
    incremental(client, set_retention)
    incremental(client, topic_ops(topic, ("cleanup.policy", "compact", AlterConfigOpType.APPEND)))
    entries = describe_topic(client, topic)
    assert entries["retention.ms"].value == "3600000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert entries["cleanup.policy"].value == "delete,compact"
    incremental(
        client,
        topic_ops(
            topic,
            ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT),
            ("retention.ms", "", AlterConfigOpType.DELETE),
        ),
    )
    entries = describe_topic(client, topic)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    with pytest.raises(KafkaException) as failed:
        incremental(client, topic_ops(topic, ("retention.ms", "1", AlterConfigOpType.APPEND)))
    assert failed.value.args[0].name() == "INVALID_CONFIG"
    with pytest.raises(KafkaException) as failed:
        incremental(
            client, topic_ops(unique_topic("absent"), ("retention.ms", "1", AlterConfigOpType.SET))
        )
    assert failed.value.args[0].name() == "UNKNOWN_TOPIC_OR_PART"


def test_confluent_legacy_alter_and_broker_describe(module_broker: BrokerProcess) -> None:
    client = admin(module_broker.bootstrap_servers)
    topic = unique_topic("legacy")
    create(client, topic)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"segment.ms": "60000"})
    with pytest.warns(DeprecationWarning, match="alter_configs has been deprecated"):
        futures = client.alter_configs([resource])
    futures[resource].result(timeout=TIMEOUT_S)
    entries = describe_topic(client, topic)
    assert entries["segment.ms"].value == "60000"
    assert entries["segment.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    node_id = client.describe_cluster(request_timeout=TIMEOUT_S).result().nodes[0].id
    broker = ConfigResource(ConfigResource.Type.BROKER, str(node_id))
    configs = client.describe_configs([broker])[broker].result(timeout=TIMEOUT_S)
    assert configs["message.max.bytes"].is_read_only is False
    assert configs["num.partitions"].is_read_only is True


@pytest.mark.skipif(REFERENCE == "tansu", reason="checks pykbroker's config sources")
def test_kafka_python_describe_and_alter(module_broker: BrokerProcess) -> None:
    client = KafkaAdminClient(bootstrap_servers=module_broker.bootstrap_servers)
    close_at_teardown(client.close)
    topic = unique_topic("kp-configs")
    create(admin(module_broker.bootstrap_servers), topic)
    for incremental_api in (False, True):
        value = "7200000" if incremental_api else "3600000"
        result = client.alter_configs(
            [KpConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": value})],
            incremental=incremental_api,
        )
        assert result == {"topic": {topic: "OK"}}
        described: dict[str, Any] = client.describe_configs(
            [KpConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
        config = described["topic"][topic]["retention.ms"]
        assert config["value"] == value, config
    described = client.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, topic)])
    assert set(described["topic"][topic]) == {"retention.ms"}  # the "modified" filter


def test_config_altered_through_one_node_is_seen_by_every_node(
    cluster: ProcessCluster,  # noqa: F811 - the fixture
) -> None:
    leader = wait_until(cluster.leader, timeout=20, what="one raft leader")
    follower = next(n for n in cluster.nodes if n != leader[0])
    client = admin(f"127.0.0.1:{cluster.spec(follower).broker_port}")
    topic = "shared-configs"
    create(client, topic)
    incremental(client, topic_ops(topic, ("retention.ms", "123456", AlterConfigOpType.SET)))
    # Read-your-writes on the node that forwarded the change.
    assert describe_topic(client, topic)["retention.ms"].value == "123456"
    # The cluster default (BROKER ""), which confluent-kafka cannot name: a raw request.
    [result] = raw_incremental(
        cluster.spec(follower).broker_port,
        {
            "resource_type": 4,
            "resource_name": "",
            "configs": [{"name": "log.segment.bytes", "config_operation": 0, "value": "5000000"}],
        },
    )
    assert result["error_code"] == 0, result
    for node_id in cluster.nodes:
        node = admin(f"127.0.0.1:{cluster.spec(node_id).broker_port}")

        def updated(node: AdminClient = node) -> dict[str, ConfigEntry] | None:
            entries = describe_topic(node, topic)
            fresh = (
                entries["retention.ms"].value == "123456"
                and entries["segment.bytes"].value == "5000000"
            )
            return entries if fresh else None

        entries = wait_until(updated, timeout=20, what=f"the new configs on node {node_id}")
        assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert entries["segment.bytes"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
