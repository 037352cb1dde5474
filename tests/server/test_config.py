"""BrokerConfig from Kafka properties: parsing, validation, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykbroker.config import BrokerConfig, ConfigError, Listener, read_properties


def test_kafka_keys_map_to_attributes() -> None:
    config, unknown = BrokerConfig.from_properties(
        {
            "node.id": "3",
            "process.roles": "broker,controller",
            "listeners": "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9094",
            "advertised.listeners": "PLAINTEXT://localhost:9093",
            "log.dirs": "/tmp/a,/tmp/b",
            "num.partitions": "4",
            "auto.create.topics.enable": "false",
            "log.segment.bytes": "1048576",
            "log.retention.hours": "2",
        }
    )
    assert unknown == []
    assert config.node_id == 3
    assert config.listeners[1] == Listener("CONTROLLER", "127.0.0.1", 9094)
    assert config.advertised == (Listener("PLAINTEXT", "localhost", 9093),)
    assert config.log_dirs == (Path("/tmp/a"), Path("/tmp/b"))
    assert (config.num_partitions, config.auto_create_topics_enable) == (4, False)
    assert config.log_segment_bytes == 1048576
    assert config.log_retention_ms == 2 * 3_600_000


def test_unknown_keys_are_reported_not_fatal() -> None:
    config, unknown = BrokerConfig.from_properties({"made.up.key": "1", "num.partitions": "2"})
    assert unknown == ["made.up.key"]
    assert config.num_partitions == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("node.id", "abc"),
        ("num.partitions", "0"),
        ("auto.create.topics.enable", "yes"),
        ("listeners", "127.0.0.1:9092"),
        ("listeners", "PLAINTEXT://127.0.0.1:99999"),
        ("process.roles", "zookeeper"),
        ("log.segment.bytes", "-5"),
        ("message.max.bytes", "999999999999"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.split(".")[0]):
        BrokerConfig.from_properties({key: value})


def test_properties_file_with_comments_and_continuations(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text(
        "# a comment\n! another\nnode.id=7\nlisteners = PLAINTEXT://127.0.0.1:1\\\n234\n"
        "log.dirs: /data\n\n"
    )
    assert read_properties(path) == {
        "node.id": "7",
        "listeners": "PLAINTEXT://127.0.0.1:1234",
        "log.dirs": "/data",
    }


def test_group_coordinator_keys_are_accepted_and_checked() -> None:
    config, unknown = BrokerConfig.from_properties(
        {"offsets.retention.minutes": "5", "group.consumer.assignors": "range"}
    )
    assert unknown == []
    assert config.extra["offsets.retention.minutes"] == "5"
    with pytest.raises(ConfigError, match=r"offsets\.retention\.minutes"):
        BrokerConfig.from_properties({"offsets.retention.minutes": "0"})
