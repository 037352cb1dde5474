"""The KRaft CONTROLLER listener's APIs (what Kafka's ``ControllerApis`` serves).

A listener named in ``controller.listener.names`` serves only: ApiVersions (listing exactly these
APIs), the Raft RPCs -- Vote (v0-2; v2 carries KIP-996's PreVote), BeginQuorumEpoch (v0-1),
EndQuorumEpoch (v0-1), Fetch (v13-18, of ``__cluster_metadata-0`` only) and FetchSnapshot (v0-1),
handed to the ``RaftDriver`` -- and the
controller RPCs brokers send to the active controller: DescribeQuorum, BrokerRegistration (v0-4),
BrokerHeartbeat (v0-1), CreateTopics (v2-7), DeleteTopics (v1-6), CreatePartitions (v0-3),
AlterConfigs (v0-2), IncrementalAlterConfigs (v0-1), AllocateProducerIds (v0), AlterPartition
(v2-3, as Kafka 4.x: topic ids; v2 ISRs carry no broker epochs), ElectLeaders (v0-2) and
UnregisterBroker (v0). A node that is not the Raft leader answers the controller RPCs with
NOT_CONTROLLER, as Kafka's controller does; the broker's ``ControllerChannel`` then retries with
the new leader. KIP-853: AddRaftVoter (80), RemoveRaftVoter (81) and UpdateRaftVoter (82), v0,
go to the ``RaftDriver`` like the Raft RPCs (a non-leader answers NOT_LEADER_OR_FOLLOWER), and
Fetch v16+ / FetchSnapshot v1+ responses carry the leader's CONTROLLER endpoint in
``NodeEndpoints`` (Kafka's ``KafkaRaftClient``), so an observer that only knows the bootstrap
servers finds the leader.

Not served here (Kafka's controller has them): DescribeConfigs, Envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pykbroker.api.context import RequestContext
from pykbroker.api.error_responses import error_response
from pykbroker.api.handlers import (
    alter_configs,
    alter_partition_reassignments,
    api_versions,
    create_partitions,
    create_topics,
    delete_topics,
    elect_leaders,
    incremental_alter_configs,
    list_partition_reassignments,
    unregister_broker,
)
from pykbroker.api.handlers.describe_quorum import describe_quorum_locally
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.coordinator.transaction.producer_id_manager import PRODUCER_ID_BLOCK_SIZE
from pykbroker.metadata.replication_control import AlterPartitionItem
from pykbroker.raft import (
    AddRaftVoterRequest,
    AddRaftVoterResponse,
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    FetchSnapshotResponse,
    RaftRequest,
    RaftResponse,
    RemoveRaftVoterRequest,
    RemoveRaftVoterResponse,
    UpdateRaftVoterRequest,
    UpdateRaftVoterResponse,
    VoteRequest,
    VoteResponse,
    wire,
)

log = logging.getLogger(__name__)

Handler = Callable[[RequestContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]

_RAFT_APIS = (ApiKey.VOTE, ApiKey.BEGIN_QUORUM_EPOCH, ApiKey.END_QUORUM_EPOCH, 1, 59, 80, 81, 82)


def error_raft_response(body: RaftRequest, code: ErrorCode) -> RaftResponse:
    """A raft response carrying ``code`` and no leader knowledge (epoch -1)."""
    if isinstance(body, VoteRequest):
        return VoteResponse(code, -1, -1)
    if isinstance(body, BeginQuorumEpochRequest):
        return BeginQuorumEpochResponse(code, -1, -1)
    if isinstance(body, EndQuorumEpochRequest):
        return EndQuorumEpochResponse(code, -1, -1)
    if isinstance(body, FetchRequest):
        return FetchResponse(code, -1, -1)
    if isinstance(body, AddRaftVoterRequest):
        return AddRaftVoterResponse(code)
    if isinstance(body, RemoveRaftVoterRequest):
        return RemoveRaftVoterResponse(code)
    if isinstance(body, UpdateRaftVoterRequest):
        return UpdateRaftVoterResponse(code)
    return FetchSnapshotResponse(code, -1, -1)


def _raft_handler(api_key: int) -> Handler:
    async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        version = ctx.api_version
        try:
            body = wire.request_from_wire(api_key, version, request)
        except (wire.WireError, KeyError) as exc:
            return error_response(api_key, version, request, ErrorCode.INVALID_REQUEST, str(exc))
        driver = ctx.broker.service("raft")
        response = await driver.handle_request(body)
        if response is None:
            response = error_raft_response(body, ErrorCode.REQUEST_TIMED_OUT)
        data = wire.to_wire(response, version)
        if (api_key == 1 and version >= 16) or (api_key == 59 and version >= 1):
            data["node_endpoints"] = _leader_node_endpoints(driver, response)
        return data

    return handle


def _leader_node_endpoints(driver: Any, response: RaftResponse) -> list[dict[str, Any]]:
    """``NodeEndpoints`` of a Fetch/FetchSnapshot response: the leader it names, if known."""
    leader_id = getattr(response, "leader_id", -1)
    endpoint = driver.endpoint_of(leader_id) if leader_id >= 0 else None
    if endpoint is None or endpoint.port < 0:
        return []
    return [{"node_id": leader_id, "host": endpoint.host, "port": endpoint.port}]


def _controller_only(handler: Handler, api_key: int) -> Handler:
    """Answer NOT_CONTROLLER unless this node leads the quorum."""

    async def handle(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any] | None:
        if not ctx.broker.service("controller").is_raft_leader:
            return error_response(api_key, ctx.api_version, request, ErrorCode.NOT_CONTROLLER, None)
        return await handler(ctx, request)

    return handle


async def handle_api_versions(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    from pykbroker.api.dispatch import advertised_api_keys

    response = await api_versions.handle(ctx, request)
    response["api_keys"] = advertised_api_keys(CONTROLLER_SUPPORTED)
    return response


async def handle_describe_quorum(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    return describe_quorum_locally(ctx)


async def handle_broker_registration(
    ctx: RequestContext, request: dict[str, Any]
) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    listeners = [
        {
            "name": item["name"],
            "host": item["host"],
            "port": item["port"],
            "security_protocol": item["security_protocol"],
        }
        for item in request["listeners"]
    ]
    try:
        epoch = await controller.handle_broker_registration(
            request["broker_id"],
            request["cluster_id"],
            request["incarnation_id"],
            listeners,
            request["rack"],
        )
    except KafkaError as exc:
        return {"throttle_time_ms": 0, "error_code": exc.code, "broker_epoch": -1}
    return {"throttle_time_ms": 0, "error_code": ErrorCode.NO_ERROR, "broker_epoch": epoch}


async def handle_broker_heartbeat(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    """BrokerHeartbeat, ``want_shut_down`` (controlled shutdown, KIP-631) included."""
    controller = ctx.broker.service("controller")
    response: dict[str, Any] = await controller.broker_heartbeat_response(request)
    return response


async def handle_allocate_producer_ids(
    ctx: RequestContext, request: dict[str, Any]
) -> dict[str, Any]:
    controller = ctx.broker.service("controller")
    try:
        start = await controller.handle_allocate_producer_ids(
            request["broker_id"], request["broker_epoch"], PRODUCER_ID_BLOCK_SIZE
        )
    except KafkaError as exc:
        return {
            "throttle_time_ms": 0,
            "error_code": exc.code,
            "producer_id_start": -1,
            "producer_id_len": 0,
        }
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "producer_id_start": start,
        "producer_id_len": PRODUCER_ID_BLOCK_SIZE,
    }


async def handle_alter_partition(ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
    """AlterPartition v2-3 from a partition leader (Kafka's ``ControllerApis``)."""
    version = ctx.api_version
    items = [
        AlterPartitionItem(
            topic["topic_id"],
            p["partition_index"],
            p["leader_epoch"],
            p["partition_epoch"],
            (
                tuple((b["broker_id"], b["broker_epoch"]) for b in p["new_isr_with_epochs"])
                if version >= 3
                else tuple((b, -1) for b in p["new_isr"])
            ),
            p["leader_recovery_state"],
        )
        for topic in request["topics"]
        for p in topic["partitions"]
    ]
    controller = ctx.broker.service("controller")
    try:
        results = await controller.handle_alter_partition(
            request["broker_id"], request["broker_epoch"], items, version
        )
    except KafkaError as exc:
        return {"throttle_time_ms": 0, "error_code": exc.code, "topics": []}
    topics: dict[Any, list[dict[str, Any]]] = {}
    for result in results:
        topics.setdefault(result.topic_id, []).append(
            {
                "partition_index": result.partition_index,
                "error_code": result.error,
                "leader_id": result.leader_id,
                "leader_epoch": result.leader_epoch,
                "isr": list(result.isr),
                "leader_recovery_state": result.leader_recovery_state,
                "partition_epoch": result.partition_epoch,
            }
        )
    return {
        "throttle_time_ms": 0,
        "error_code": ErrorCode.NO_ERROR,
        "topics": [
            {"topic_id": topic_id, "partitions": partitions}
            for topic_id, partitions in topics.items()
        ],
    }


CONTROLLER_HANDLERS: dict[int, Handler] = {
    ApiKey.API_VERSIONS: handle_api_versions,
    ApiKey.DESCRIBE_QUORUM: handle_describe_quorum,
    ApiKey.BROKER_REGISTRATION: _controller_only(
        handle_broker_registration, ApiKey.BROKER_REGISTRATION
    ),
    ApiKey.BROKER_HEARTBEAT: _controller_only(handle_broker_heartbeat, ApiKey.BROKER_HEARTBEAT),
    ApiKey.CREATE_TOPICS: _controller_only(create_topics.handle, ApiKey.CREATE_TOPICS),
    ApiKey.DELETE_TOPICS: _controller_only(delete_topics.handle, ApiKey.DELETE_TOPICS),
    ApiKey.CREATE_PARTITIONS: _controller_only(create_partitions.handle, ApiKey.CREATE_PARTITIONS),
    ApiKey.ALLOCATE_PRODUCER_IDS: _controller_only(
        handle_allocate_producer_ids, ApiKey.ALLOCATE_PRODUCER_IDS
    ),
    ApiKey.ALTER_PARTITION: _controller_only(handle_alter_partition, ApiKey.ALTER_PARTITION),
    ApiKey.ELECT_LEADERS: _controller_only(elect_leaders.handle, ApiKey.ELECT_LEADERS),
    ApiKey.UNREGISTER_BROKER: _controller_only(unregister_broker.handle, ApiKey.UNREGISTER_BROKER),
    ApiKey.ALTER_CONFIGS: _controller_only(alter_configs.handle_forwarded, ApiKey.ALTER_CONFIGS),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: _controller_only(
        incremental_alter_configs.handle_forwarded, ApiKey.INCREMENTAL_ALTER_CONFIGS
    ),
    ApiKey.ALTER_PARTITION_REASSIGNMENTS: _controller_only(
        alter_partition_reassignments.handle, ApiKey.ALTER_PARTITION_REASSIGNMENTS
    ),
    ApiKey.LIST_PARTITION_REASSIGNMENTS: _controller_only(
        list_partition_reassignments.handle, ApiKey.LIST_PARTITION_REASSIGNMENTS
    ),
}
CONTROLLER_HANDLERS.update({key: _raft_handler(key) for key in _RAFT_APIS})

#: Versions served on the CONTROLLER listener.
CONTROLLER_SUPPORTED: dict[int, tuple[int, int]] = {
    ApiKey.API_VERSIONS: (0, 4),
    ApiKey.DESCRIBE_QUORUM: (0, 2),
    ApiKey.BROKER_REGISTRATION: (0, 4),
    ApiKey.BROKER_HEARTBEAT: (0, 1),
    ApiKey.CREATE_TOPICS: (2, 7),
    ApiKey.DELETE_TOPICS: (1, 6),
    ApiKey.CREATE_PARTITIONS: (0, 3),
    ApiKey.ALLOCATE_PRODUCER_IDS: (0, 0),
    ApiKey.ALTER_PARTITION: (2, 3),
    ApiKey.ELECT_LEADERS: (0, 2),
    ApiKey.UNREGISTER_BROKER: (0, 0),
    ApiKey.ALTER_CONFIGS: (0, 2),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (0, 1),
    ApiKey.ALTER_PARTITION_REASSIGNMENTS: (0, 1),
    ApiKey.LIST_PARTITION_REASSIGNMENTS: (0, 0),
    **{key: wire.version_range(key) for key in _RAFT_APIS},
}
