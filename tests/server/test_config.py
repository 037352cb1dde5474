"""BrokerConfig from Kafka properties: parsing, validation, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykbroker.config import BrokerConfig, ConfigError, Listener, read_properties
from pykbroker.log.record_batch import Record, build_batch


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


_RETENTION_KEYS = {
    "log.retention.ms": "5000",
    "log.retention.minutes": "7",
    "log.retention.hours": "3",
}


@pytest.mark.parametrize(
    "order",
    [
        ("log.retention.ms", "log.retention.minutes", "log.retention.hours"),
        ("log.retention.hours", "log.retention.minutes", "log.retention.ms"),
        ("log.retention.minutes", "log.retention.hours", "log.retention.ms"),
    ],
)
def test_retention_ms_beats_minutes_beats_hours_in_any_key_order(
    order: tuple[str, ...],
) -> None:
    config, unknown = BrokerConfig.from_properties({key: _RETENTION_KEYS[key] for key in order})
    assert unknown == []
    assert config.log_retention_ms == 5000
    without_ms = {key: _RETENTION_KEYS[key] for key in order if key != "log.retention.ms"}
    config, _ = BrokerConfig.from_properties(without_ms)
    assert config.log_retention_ms == 7 * 60_000
    config, _ = BrokerConfig.from_properties({"log.retention.hours": "3"})
    assert config.log_retention_ms == 3 * 3_600_000


@pytest.mark.parametrize("reverse", [False, True])
def test_roll_ms_beats_roll_hours_in_any_key_order(reverse: bool) -> None:
    items = [("log.roll.ms", "90000"), ("log.roll.hours", "2")]
    config, unknown = BrokerConfig.from_properties(dict(reversed(items) if reverse else items))
    assert unknown == []
    assert config.log_roll_ms == 90_000
    config, _ = BrokerConfig.from_properties({"log.roll.hours": "2"})
    assert config.log_roll_ms == 2 * 3_600_000


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("log.retention.hours", "-1"),
        ("log.retention.minutes", "-1"),
        ("log.retention.ms", "-1"),
        ("log.retention.hours", "-5"),
        ("log.retention.ms", "-100"),
    ],
)
def test_any_negative_retention_is_unlimited_and_logs_can_be_created(
    key: str, value: str, tmp_path: Path
) -> None:
    from pykbroker.log.log_manager import LogManager
    from pykbroker.server.broker import log_config_factory

    config, _ = BrokerConfig.from_properties({key: value})
    assert config.log_retention_ms == -1
    log_config = log_config_factory(config)({})
    assert log_config.retention_ms == -1
    manager = LogManager([tmp_path], log_config)
    manager.startup(now_ms=0)
    try:
        log = manager.get_or_create_log("t", 0, now_ms=0)
        assert log.config.retention_ms == -1
    finally:
        manager.shutdown()


def test_invalid_lower_precedence_time_keys_are_still_rejected() -> None:
    with pytest.raises(ConfigError, match=r"log\.retention\.hours"):
        BrokerConfig.from_properties({"log.retention.ms": "1000", "log.retention.hours": "x"})
    with pytest.raises(ConfigError, match=r"log\.roll\.hours"):
        BrokerConfig.from_properties({"log.roll.hours": "0"})


def test_broker_log_roll_settings_apply_to_new_logs(tmp_path: Path) -> None:
    from pykbroker.log.log_manager import LogManager
    from pykbroker.server.broker import log_config_factory

    for props, expected in (
        ({"log.roll.hours": "2"}, 2 * 3_600_000),
        ({"log.roll.hours": "2", "log.roll.ms": "60000"}, 60_000),
    ):
        config, _ = BrokerConfig.from_properties(props)
        make = log_config_factory(config)
        assert make({}).segment_ms == expected
        assert make({"segment.ms": "1234"}).segment_ms == 1234  # topic config wins
        log_dir = tmp_path / str(expected)
        manager = LogManager([log_dir], make({}))
        manager.startup(now_ms=0)
        try:
            log = manager.get_or_create_log("t", 0, now_ms=0)
            assert log.config.segment_ms == expected
            for now_ms in (0, expected - 1, expected + 1):
                batch = build_batch([Record(key=b"k", value=b"v", timestamp=now_ms)])
                log.append_as_leader(batch, 0, now_ms=now_ms)
            # the third batch is segment.ms past the first one: rolled by log.roll.*
            assert [s.base_offset for s in log.segments] == [0, 2]
        finally:
            manager.shutdown()
