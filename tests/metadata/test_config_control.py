"""ConfigControl (Kafka's ConfigurationControlManager) on a Raft that commits every append at
once: incremental SET/DELETE/APPEND/SUBTRACT, legacy replace-all, validate_only, per-resource
errors, and the dynamic broker configs that become topic defaults."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.metadata import schemas
from pykbroker.metadata.config_control import (
    BROKER_RESOURCE,
    TOPIC_RESOURCE,
    AlterConfigOp,
    AlterConfigsResource,
    OpType,
    dynamic_topic_defaults,
)
from pykbroker.metadata.controller import QuorumController
from pykbroker.metadata.records import record
from tests.metadata.controller_support import CommittingRaft, committing_controller


@asynccontextmanager
async def controller(tmp_path: Path) -> AsyncIterator[tuple[QuorumController, CommittingRaft]]:
    records = [
        record(schemas.TOPIC_RECORD, name="t", topic_id=uuid.UUID(int=7)),
        record(
            schemas.CONFIG_RECORD,
            resource_type=TOPIC_RESOURCE,
            resource_name="t",
            name="retention.ms",
            value="1000",
        ),
    ]
    async with committing_controller(tmp_path, records) as started:
        yield started


def topic(*ops: tuple[str, str | None, OpType], name: str = "t") -> AlterConfigsResource:
    return AlterConfigsResource(TOPIC_RESOURCE, name, [AlterConfigOp(n, v, op) for n, v, op in ops])


def configs(
    control: QuorumController, kind: int = TOPIC_RESOURCE, name: str = "t"
) -> dict[str, str]:
    return dict(control.image.configs.get((kind, name), {}))


async def test_incremental_set_delete_append_subtract(tmp_path: Path) -> None:
    async with controller(tmp_path) as (control, _):
        [result] = await control.incremental_alter_configs(
            [
                topic(
                    ("retention.ms", None, OpType.DELETE),
                    ("max.message.bytes", "2000", OpType.SET),
                    ("cleanup.policy", "compact", OpType.APPEND),
                )
            ]
        )
        assert result.error == ErrorCode.NO_ERROR
        # APPEND starts from the default (delete), as Kafka's getParts does.
        assert configs(control) == {"max.message.bytes": "2000", "cleanup.policy": "delete,compact"}
        [result] = await control.incremental_alter_configs(
            [topic(("cleanup.policy", "delete", OpType.SUBTRACT))]
        )
        assert result.error == ErrorCode.NO_ERROR
        assert configs(control)["cleanup.policy"] == "compact"


async def test_append_to_a_non_list_config_fails_the_whole_resource(tmp_path: Path) -> None:
    async with controller(tmp_path) as (control, raft):
        before = raft.batches
        [result] = await control.incremental_alter_configs(
            [topic(("max.message.bytes", "10", OpType.SET), ("retention.ms", "5", OpType.APPEND))]
        )
        assert result.error == ErrorCode.INVALID_CONFIG
        assert result.message == "Can't APPEND to key retention.ms because its type is not LIST."
        assert configs(control) == {"retention.ms": "1000"}
        assert raft.batches == before


async def test_validate_only_and_per_resource_errors(tmp_path: Path) -> None:
    async with controller(tmp_path) as (control, raft):
        before = raft.batches
        results = await control.incremental_alter_configs(
            [
                topic(("retention.ms", "5", OpType.SET)),
                topic(("retention.ms", "5", OpType.SET), name="missing"),
                topic(("no.such.config", "1", OpType.SET), name="x"),
                AlterConfigsResource(99, "r", []),
            ],
            validate_only=True,
        )
        assert [(r.resource_name, r.error) for r in results] == [
            ("t", ErrorCode.NO_ERROR),
            ("missing", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            ("x", ErrorCode.INVALID_CONFIG),
            ("r", ErrorCode.INVALID_REQUEST),
        ]
        assert results[2].message == "Unknown topic config name: no.such.config"
        assert configs(control) == {"retention.ms": "1000"}
        assert raft.batches == before
        results = await control.incremental_alter_configs(
            [
                topic(("segment.bytes", "1", OpType.SET)),
                topic(("min.insync.replicas", "0", OpType.SET), name="t2"),
            ]
        )
        assert results[0].error == ErrorCode.INVALID_CONFIG
        assert results[1].error == ErrorCode.INVALID_CONFIG  # checked before existence, as Kafka


async def test_duplicate_resources_and_keys_are_invalid_requests(tmp_path: Path) -> None:
    async with controller(tmp_path) as (control, _):
        results = await control.incremental_alter_configs(
            [
                topic(("retention.ms", "5", OpType.SET)),
                topic(("retention.ms", "6", OpType.SET)),
                topic(("segment.ms", "5", OpType.SET), ("segment.ms", "6", OpType.SET), name="u"),
            ]
        )
        assert [r.error for r in results] == [ErrorCode.INVALID_REQUEST] * 3
        assert results[0].message == "Each resource must appear at most once."
        assert results[2].message == "Error due to duplicate config keys"


async def test_legacy_alter_replaces_the_whole_set(tmp_path: Path) -> None:
    async with controller(tmp_path) as (control, _):
        [result] = await control.legacy_alter_configs(
            [AlterConfigsResource(TOPIC_RESOURCE, "t", [AlterConfigOp("segment.ms", "60000")])]
        )
        assert result.error == ErrorCode.NO_ERROR
        assert configs(control) == {"segment.ms": "60000"}


async def test_broker_configs_dynamic_only_and_become_topic_defaults(tmp_path: Path) -> None:
    async with controller(tmp_path) as (control, _):
        results = await control.incremental_alter_configs(
            [
                AlterConfigsResource(
                    BROKER_RESOURCE, "", [AlterConfigOp("log.retention.ms", "5000")]
                ),
                AlterConfigsResource(
                    BROKER_RESOURCE, "2", [AlterConfigOp("message.max.bytes", "100")]
                ),
                AlterConfigsResource(BROKER_RESOURCE, "3", [AlterConfigOp("num.partitions", "3")]),
                AlterConfigsResource(
                    BROKER_RESOURCE, "4", [AlterConfigOp("log.segment.bytes", "1")]
                ),
                AlterConfigsResource(BROKER_RESOURCE, "x", []),
            ]
        )
        assert [r.error for r in results] == [
            ErrorCode.NO_ERROR,
            ErrorCode.NO_ERROR,
            ErrorCode.INVALID_REQUEST,
            ErrorCode.INVALID_REQUEST,
            ErrorCode.INVALID_REQUEST,
        ]
        assert results[2].message == "Cannot update these configs dynamically: Set(num.partitions)"
        assert dynamic_topic_defaults(control.image, 2) == {
            "retention.ms": "5000",
            "max.message.bytes": "100",
        }
        assert dynamic_topic_defaults(control.image, 1) == {"retention.ms": "5000"}
        [result] = await control.incremental_alter_configs(
            [
                AlterConfigsResource(
                    BROKER_RESOURCE, "", [AlterConfigOp("log.retention.ms", None, 1)]
                )
            ]
        )
        assert result.error == ErrorCode.NO_ERROR
        assert configs(control, BROKER_RESOURCE, "") == {}
