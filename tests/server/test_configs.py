"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs against an in-process broker over
real sockets: sources and synonyms, the incremental operations, validate_only, per-resource
errors, dynamic cluster defaults, and a lowered max.message.bytes taking effect on a live topic."""

from __future__ import annotations

from typing import Any

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.testing import serve
from tests.wire import WireClient

TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
TOPIC_SOURCE, DYNAMIC_DEFAULT, STATIC, DEFAULT = 1, 3, 4, 5


async def create_topic(client: WireClient, name: str) -> None:
    response = await client.request(
        ApiKey.CREATE_TOPICS,
        7,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": 1,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [],
                }
            ],
            "timeout_ms": 5000,
        },
    )
    assert response["topics"][0]["error_code"] == ErrorCode.NO_ERROR


async def describe(
    client: WireClient,
    kind: int,
    name: str,
    keys: list[str] | None = None,
    *,
    version: int = 4,
    synonyms: bool = True,
    docs: bool = False,
) -> dict[str, Any]:
    response = await client.request(
        ApiKey.DESCRIBE_CONFIGS,
        version,
        {
            "resources": [
                {"resource_type": kind, "resource_name": name, "configuration_keys": keys}
            ],
            "include_synonyms": synonyms,
            "include_documentation": docs,
        },
    )
    result: dict[str, Any] = response["results"][0]
    return result


def entries(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in result["configs"]}


async def incremental(
    client: WireClient,
    *resources: tuple[int, str, list[tuple[str, str | None, int]]],
    validate_only: bool = False,
) -> list[dict[str, Any]]:
    response = await client.request(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        1,
        {
            "resources": [
                {
                    "resource_type": kind,
                    "resource_name": name,
                    "configs": [
                        {"name": n, "value": v, "config_operation": op} for n, v, op in configs
                    ],
                }
                for kind, name, configs in resources
            ],
            "validate_only": validate_only,
        },
    )
    results: list[dict[str, Any]] = response["responses"]
    return results


async def test_describe_topic_lists_every_config_with_sources_and_synonyms() -> None:
    async with serve(log_retention_ms=3_600_000) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        result = await describe(client, TOPIC, "t", docs=True)
        assert result["error_code"] == ErrorCode.NO_ERROR
        configs = entries(result)
        assert {"cleanup.policy", "retention.ms", "max.message.bytes", "segment.ms"} <= set(configs)
        retention = configs["retention.ms"]
        assert retention["value"] == "3600000"
        assert retention["config_source"] == STATIC
        assert retention["synonyms"] == [
            {"name": "log.retention.ms", "value": "3600000", "source": STATIC},
            {"name": "log.retention.hours", "value": "168", "source": DEFAULT},
        ]
        assert retention["config_type"] == 5  # LONG
        assert retention["documentation"]
        size = configs["max.message.bytes"]
        assert (size["value"], size["config_source"], size["read_only"]) == (
            "1048588",
            DEFAULT,
            False,
        )
        assert size["synonyms"] == [
            {"name": "message.max.bytes", "value": "1048588", "source": DEFAULT}
        ]
        assert configs["cleanup.policy"]["config_type"] == 7  # LIST
        filtered = await describe(client, TOPIC, "t", ["segment.ms"], version=1, synonyms=False)
        assert [(c["name"], c["value"], c["synonyms"]) for c in filtered["configs"]] == [
            ("segment.ms", "604800000", [])
        ]
        missing = await describe(client, TOPIC, "nope")
        assert (missing["error_code"], missing["configs"]) == (
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            [],
        )
        await client.aclose()


async def test_incremental_alter_topic_operations_and_errors() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        [ok] = await incremental(client, (TOPIC, "t", [("retention.ms", "1000", SET)]))
        assert ok["error_code"] == ErrorCode.NO_ERROR
        retention = entries(await describe(client, TOPIC, "t", ["retention.ms"]))["retention.ms"]
        assert (retention["value"], retention["config_source"]) == ("1000", TOPIC_SOURCE)
        assert retention["synonyms"][0] == {
            "name": "retention.ms",
            "value": "1000",
            "source": TOPIC_SOURCE,
        }
        # validate_only checks and changes nothing.
        [ok] = await incremental(
            client, (TOPIC, "t", [("retention.ms", "2000", SET)]), validate_only=True
        )
        assert ok["error_code"] == ErrorCode.NO_ERROR
        policy = ["cleanup.policy", "retention.ms"]
        assert (
            entries(await describe(client, TOPIC, "t", policy))["retention.ms"]["value"] == "1000"
        )
        await incremental(client, (TOPIC, "t", [("cleanup.policy", "compact", APPEND)]))
        assert entries(await describe(client, TOPIC, "t", policy))["cleanup.policy"]["value"] == (
            "delete,compact"
        )
        await incremental(client, (TOPIC, "t", [("cleanup.policy", "delete", SUBTRACT)]))
        await incremental(client, (TOPIC, "t", [("retention.ms", None, DELETE)]))
        after = entries(await describe(client, TOPIC, "t", policy))
        assert after["cleanup.policy"]["value"] == "compact"
        assert (after["retention.ms"]["value"], after["retention.ms"]["config_source"]) == (
            "604800000",
            DEFAULT,
        )
        results = await incremental(
            client,
            (TOPIC, "t", [("retention.ms", "5", APPEND)]),
            (TOPIC, "missing", [("retention.ms", "5", SET)]),
            (TOPIC, "u", [("bogus.key", "5", SET)]),
            (TOPIC, "v", [("segment.bytes", "abc", SET)]),
            (3, "w", []),
        )
        assert [r["error_code"] for r in results] == [
            ErrorCode.INVALID_CONFIG,
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode.INVALID_CONFIG,
            ErrorCode.INVALID_CONFIG,
            ErrorCode.INVALID_REQUEST,
        ]
        assert results[2]["error_message"] == "Unknown topic config name: bogus.key"
        dup = await incremental(
            client,
            (TOPIC, "t", [("retention.ms", "5", SET)]),
            (TOPIC, "t", [("retention.ms", "6", SET)]),
        )
        assert [r["error_code"] for r in dup] == [ErrorCode.INVALID_REQUEST] * 2
        await client.aclose()


async def test_legacy_alter_configs_replaces_the_set() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        await incremental(client, (TOPIC, "t", [("retention.ms", "1000", SET)]))
        for version, validate_only in ((0, True), (2, False)):
            response = await client.request(
                ApiKey.ALTER_CONFIGS,
                version,
                {
                    "resources": [
                        {
                            "resource_type": TOPIC,
                            "resource_name": "t",
                            "configs": [{"name": "segment.ms", "value": "60000"}],
                        }
                    ],
                    "validate_only": validate_only,
                },
            )
            assert response["responses"][0]["error_code"] == ErrorCode.NO_ERROR
        configs = entries(await describe(client, TOPIC, "t", ["retention.ms", "segment.ms"]))
        assert configs["segment.ms"]["config_source"] == TOPIC_SOURCE
        assert configs["retention.ms"]["config_source"] == DEFAULT  # deleted by the replace
        await client.aclose()


async def test_cluster_default_broker_configs_and_broker_resources() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        results = await incremental(
            client,
            (BROKER, "", [("log.retention.ms", "5000", SET)]),
            (BROKER, "", [("num.partitions", "3", SET)]),
        )
        assert [r["error_code"] for r in results] == [ErrorCode.INVALID_REQUEST] * 2
        [ok] = await incremental(client, (BROKER, "", [("log.retention.ms", "5000", SET)]))
        assert ok["error_code"] == ErrorCode.NO_ERROR
        [bad] = await incremental(client, (BROKER, "", [("num.partitions", "3", SET)]))
        assert bad["error_code"] == ErrorCode.INVALID_REQUEST
        assert (
            bad["error_message"] == "Cannot update these configs dynamically: Set(num.partitions)"
        )
        retention = entries(await describe(client, TOPIC, "t", ["retention.ms"]))["retention.ms"]
        assert (retention["value"], retention["config_source"]) == ("5000", DYNAMIC_DEFAULT)
        cluster = await describe(client, BROKER, "")
        assert [(c["name"], c["value"], c["config_source"]) for c in cluster["configs"]] == [
            ("log.retention.ms", "5000", DYNAMIC_DEFAULT)
        ]
        node = entries(await describe(client, BROKER, "1"))
        assert node["log.retention.ms"]["value"] == "5000"
        assert node["log.retention.ms"]["read_only"] is False
        assert node["num.partitions"]["read_only"] is True
        assert node["listeners"]["config_source"] == STATIC
        other = await describe(client, BROKER, "2")
        assert other["error_code"] == ErrorCode.INVALID_REQUEST
        assert other["error_message"] == (
            "Unexpected broker id, expected 1 or empty string, but received 2"
        )
        [other_alter] = await incremental(client, (BROKER, "2", [("log.retention.ms", "1", SET)]))
        assert other_alter["error_code"] == ErrorCode.INVALID_REQUEST
        loggers = entries(await describe(client, BROKER_LOGGER, "1"))
        assert loggers["root"]["config_source"] == 6
        [ok] = await incremental(client, (BROKER_LOGGER, "1", [("pykbroker.test", "DEBUG", SET)]))
        assert ok["error_code"] == ErrorCode.NO_ERROR
        assert entries(await describe(client, BROKER_LOGGER, "1"))["pykbroker.test"]["value"] == (
            "DEBUG"
        )
        [bad] = await incremental(client, (BROKER_LOGGER, "1", [("root", "LOUD", SET)]))
        assert bad["error_code"] == ErrorCode.INVALID_CONFIG
        await client.aclose()


def produce_body(topic: str, value_size: int) -> dict[str, Any]:
    batch = build_batch([Record(None, b"x" * value_size, (), 1_700_000_000_000)])
    return {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
    }


def produce_error(response: dict[str, Any]) -> int:
    code: int = response["responses"][0]["partition_responses"][0]["error_code"]
    return code


async def test_changed_topic_configs_apply_to_the_live_topic() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t")
        await create_topic(client, "u")
        response = await client.request(ApiKey.PRODUCE, 9, produce_body("t", 2000))
        assert produce_error(response) == ErrorCode.NO_ERROR
        await incremental(client, (TOPIC, "t", [("max.message.bytes", "1000", SET)]))
        response = await client.request(ApiKey.PRODUCE, 9, produce_body("t", 2000))
        assert produce_error(response) == ErrorCode.MESSAGE_TOO_LARGE
        # A cluster default applies to topics without an override.
        await incremental(client, (BROKER, "", [("message.max.bytes", "1000", SET)]))
        response = await client.request(ApiKey.PRODUCE, 9, produce_body("u", 2000))
        assert produce_error(response) == ErrorCode.MESSAGE_TOO_LARGE
        await incremental(client, (BROKER, "", [("message.max.bytes", None, DELETE)]))
        response = await client.request(ApiKey.PRODUCE, 9, produce_body("u", 2000))
        assert produce_error(response) == ErrorCode.NO_ERROR
        # min.insync.replicas above the ISR (1 replica) rejects acks=all at once.
        await incremental(client, (TOPIC, "u", [("min.insync.replicas", "2", SET)]))
        response = await client.request(ApiKey.PRODUCE, 9, produce_body("u", 10))
        assert produce_error(response) == ErrorCode.NOT_ENOUGH_REPLICAS
        await client.aclose()
