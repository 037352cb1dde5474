"""Convert the KRaft message dataclasses to and from the codec's wire dicts.

Mirrors Kafka's ``RaftUtil`` (``singletonVoteRequest``, ``singletonFetchResponse``, ...): every
message names one partition, ``__cluster_metadata-0`` (Fetch v13+ names it by its topic id,
``Uuid(0, 1)``). ``to_wire(body, version)`` gives a dict for
``codec.encode(declaration(body).REQUEST/RESPONSE, version, dict)``; ``request_from_wire`` /
``response_from_wire`` take ``codec.decode`` output.

Versions: Vote v0-2, BeginQuorumEpoch v0-1, EndQuorumEpoch v0-1, Fetch v13-18, FetchSnapshot
v0-1. Only Vote v2 can say "pre-vote" (KIP-996): ``to_wire`` raises ``UnsupportedVersionError``
for a pre-vote below v2 (Kafka's ``VoteRequest.Builder``), and the driver answers it locally
with ``VoteResponse(UNSUPPORTED_VERSION)``, on which the prospective node runs a standard
election (KIP-996 compatibility).

Invariant: ``x_from_wire(to_wire(x, v))`` returns ``x`` for every field version ``v`` carries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.api.protocol.messages import (
    add_raft_voter,
    begin_quorum_epoch,
    describe_quorum,
    end_quorum_epoch,
    fetch,
    fetch_snapshot,
    remove_raft_voter,
    update_raft_voter,
    vote,
)
from pykbroker.api.protocol.schema import Message

from .messages import (
    AddRaftVoterRequest,
    AddRaftVoterResponse,
    BeginQuorumEpochRequest,
    BeginQuorumEpochResponse,
    EndQuorumEpochRequest,
    EndQuorumEpochResponse,
    FetchRequest,
    FetchResponse,
    FetchSnapshotRequest,
    FetchSnapshotResponse,
    OffsetAndEpoch,
    RaftRequest,
    RaftResponse,
    RemoveRaftVoterRequest,
    RemoveRaftVoterResponse,
    SnapshotId,
    UpdateRaftVoterRequest,
    UpdateRaftVoterResponse,
    VoteRequest,
    VoteResponse,
)
from .voter_set import (
    Endpoint as VoterEndpoint,
)
from .voter_set import (
    ReplicaKey,
    from_wire_directory_id,
    wire_directory_id,
)

METADATA_TOPIC = "__cluster_metadata"
METADATA_TOPIC_ID = uuid.UUID(int=1)  # Kafka's Uuid.METADATA_TOPIC_ID = new Uuid(0L, 1L)
METADATA_PARTITION = 0
ZERO_UUID = uuid.UUID(int=0)

#: Errors Kafka's raft sends at the top level of a response (the rest are per partition).
TOP_LEVEL_ERRORS = frozenset(
    {
        ErrorCode.INCONSISTENT_CLUSTER_ID,
        ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.BROKER_NOT_AVAILABLE,
    }
)

#: api key, request declaration, response declaration, (lowest, highest) version supported.
_APIS: dict[type, tuple[int, Message, Message, tuple[int, int]]] = {
    VoteRequest: (52, vote.REQUEST, vote.RESPONSE, (0, 2)),
    BeginQuorumEpochRequest: (
        53,
        begin_quorum_epoch.REQUEST,
        begin_quorum_epoch.RESPONSE,
        (0, 1),
    ),
    EndQuorumEpochRequest: (54, end_quorum_epoch.REQUEST, end_quorum_epoch.RESPONSE, (0, 1)),
    FetchRequest: (1, fetch.REQUEST, fetch.RESPONSE, (13, 18)),
    FetchSnapshotRequest: (59, fetch_snapshot.REQUEST, fetch_snapshot.RESPONSE, (0, 1)),
    AddRaftVoterRequest: (80, add_raft_voter.REQUEST, add_raft_voter.RESPONSE, (0, 0)),
    RemoveRaftVoterRequest: (81, remove_raft_voter.REQUEST, remove_raft_voter.RESPONSE, (0, 0)),
    UpdateRaftVoterRequest: (82, update_raft_voter.REQUEST, update_raft_voter.RESPONSE, (0, 0)),
}
_RESPONSE_OF = {
    VoteResponse: VoteRequest,
    BeginQuorumEpochResponse: BeginQuorumEpochRequest,
    EndQuorumEpochResponse: EndQuorumEpochRequest,
    FetchResponse: FetchRequest,
    FetchSnapshotResponse: FetchSnapshotRequest,
    AddRaftVoterResponse: AddRaftVoterRequest,
    RemoveRaftVoterResponse: RemoveRaftVoterRequest,
    UpdateRaftVoterResponse: UpdateRaftVoterRequest,
}
_REQUEST_OF_KEY = {api[0]: request_type for request_type, api in _APIS.items()}

Endpoint = tuple[str, str, int]  # (listener name, host, port)


class UnsupportedVersionError(ValueError):
    """The message cannot be expressed at that version (e.g. a pre-vote before Vote v2)."""


class WireError(ValueError):
    """A decoded message that does not name ``__cluster_metadata-0`` as KRaft does."""


def _api(body: RaftRequest | RaftResponse) -> tuple[int, Message, Message, tuple[int, int]]:
    request_type: type = _RESPONSE_OF.get(type(body), type(body))
    return _APIS[request_type]


def api_key(body: RaftRequest | RaftResponse) -> int:
    return _api(body)[0]


def declaration(body: RaftRequest | RaftResponse) -> Message:
    """The codec declaration (``REQUEST`` or ``RESPONSE``) to encode ``body`` with."""
    _, request, response, _ = _api(body)
    return response if type(body) in _RESPONSE_OF else request


def version_range(api_key_: int) -> tuple[int, int]:
    """The versions of a raft API this module converts."""
    return _APIS[_REQUEST_OF_KEY[api_key_]][3]


def _check_version(body: RaftRequest | RaftResponse, version: int) -> None:
    low, high = _api(body)[3]
    if not low <= version <= high:
        raise UnsupportedVersionError(f"{type(body).__name__} v{version} (supported {low}-{high})")


def _split_error(error: ErrorCode) -> tuple[int, int]:
    """(top-level error, partition error)."""
    return (int(error), 0) if error in TOP_LEVEL_ERRORS else (0, int(error))


def _endpoints(endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    return [{"name": n, "host": h, "port": p} for n, h, p in endpoints]


def _snapshot_id(data: dict[str, Any]) -> SnapshotId | None:
    if data["end_offset"] < 0 and data["epoch"] < 0:
        return None
    return SnapshotId(data["end_offset"], data["epoch"])


# --- to the wire ---------------------------------------------------------------------------


def to_wire(
    body: RaftRequest | RaftResponse,
    version: int,
    *,
    leader_endpoints: Sequence[Endpoint] = (),
) -> dict[str, Any]:
    """The codec dict of ``body`` at ``version`` (``leader_endpoints``: BeginQuorumEpoch and
    EndQuorumEpoch v1 requests)."""
    _check_version(body, version)
    if isinstance(body, VoteRequest):
        if body.pre_vote and version < 2:
            raise UnsupportedVersionError(f"a pre-vote needs Vote v2, not v{version}")
        partition: dict[str, Any] = {
            "partition_index": METADATA_PARTITION,
            "candidate_epoch": body.candidate_epoch,
            "candidate_id": body.candidate_id,
            "last_offset_epoch": body.last_offset_epoch,
            "last_offset": body.last_offset,
        }
        if version >= 2:
            partition["pre_vote"] = body.pre_vote
        return {
            "cluster_id": body.cluster_id,
            "voter_id": body.voter_id,
            "topics": [{"topic_name": METADATA_TOPIC, "partitions": [partition]}],
        }
    if isinstance(body, BeginQuorumEpochRequest):
        partition = {
            "partition_index": METADATA_PARTITION,
            "leader_id": body.leader_id,
            "leader_epoch": body.leader_epoch,
        }
        return {
            "cluster_id": body.cluster_id,
            "voter_id": body.voter_id,
            "topics": [{"topic_name": METADATA_TOPIC, "partitions": [partition]}],
            "leader_endpoints": _endpoints(leader_endpoints),
        }
    if isinstance(body, EndQuorumEpochRequest):
        partition = {
            "partition_index": METADATA_PARTITION,
            "leader_id": body.leader_id,
            "leader_epoch": body.leader_epoch,
            "preferred_successors": list(body.preferred_successors),
            "preferred_candidates": [
                {"candidate_id": c, "candidate_directory_id": ZERO_UUID}
                for c in body.preferred_successors
            ],
        }
        return {
            "cluster_id": body.cluster_id,
            "topics": [{"topic_name": METADATA_TOPIC, "partitions": [partition]}],
            "leader_endpoints": _endpoints(leader_endpoints),
        }
    if isinstance(body, FetchRequest):
        return _fetch_request_to_wire(body)
    if isinstance(body, AddRaftVoterRequest | RemoveRaftVoterRequest | UpdateRaftVoterRequest):
        return _voter_change_request_to_wire(body)
    if isinstance(body, FetchSnapshotRequest):
        partition = {
            "partition": METADATA_PARTITION,
            "current_leader_epoch": body.current_leader_epoch,
            "snapshot_id": {"end_offset": body.snapshot_id.offset, "epoch": body.snapshot_id.epoch},
            "position": body.position,
        }
        return {
            "cluster_id": body.cluster_id,
            "replica_id": body.replica_id,
            "max_bytes": body.max_bytes,
            "topics": [{"name": METADATA_TOPIC, "partitions": [partition]}],
        }
    return _response_to_wire(body)


def _voter_change_request_to_wire(
    body: AddRaftVoterRequest | RemoveRaftVoterRequest | UpdateRaftVoterRequest,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cluster_id": body.cluster_id,
        "voter_id": body.voter.id,
        "voter_directory_id": wire_directory_id(body.voter.directory_id),
    }
    if isinstance(body, RemoveRaftVoterRequest):
        return data
    data["listeners"] = [{"name": e.name, "host": e.host, "port": e.port} for e in body.listeners]
    if isinstance(body, AddRaftVoterRequest):
        data["timeout_ms"] = body.timeout_ms
        return data
    data["current_leader_epoch"] = body.current_leader_epoch
    data["k_raft_version_feature"] = {
        "min_supported_version": body.min_supported_version,
        "max_supported_version": body.max_supported_version,
    }
    return data


def _voter_change_response_to_wire(
    body: AddRaftVoterResponse | RemoveRaftVoterResponse | UpdateRaftVoterResponse,
) -> dict[str, Any]:
    if isinstance(body, UpdateRaftVoterResponse):
        return {
            "throttle_time_ms": 0,
            "error_code": int(body.error_code),
            "current_leader": {
                "leader_id": body.leader_id,
                "leader_epoch": body.leader_epoch,
                "host": "",
                "port": -1,
            },
        }
    return {
        "throttle_time_ms": 0,
        "error_code": int(body.error_code),
        "error_message": body.error_message,
    }


def _fetch_request_to_wire(body: FetchRequest) -> dict[str, Any]:
    partition = {
        "partition": METADATA_PARTITION,
        "current_leader_epoch": body.current_leader_epoch,
        "fetch_offset": body.fetch_offset,
        "last_fetched_epoch": body.last_fetched_epoch,
        "log_start_offset": body.log_start_offset,
        "partition_max_bytes": body.max_bytes,
        "replica_directory_id": wire_directory_id(body.replica_directory_id),
    }
    return {
        "cluster_id": body.cluster_id,
        "replica_id": body.replica_id,
        "replica_state": {"replica_id": body.replica_id, "replica_epoch": -1},
        "max_wait_ms": body.max_wait_ms,
        "min_bytes": 1,
        "max_bytes": body.max_bytes,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {"topic": METADATA_TOPIC, "topic_id": METADATA_TOPIC_ID, "partitions": [partition]}
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def _response_to_wire(body: RaftResponse) -> dict[str, Any]:
    if isinstance(body, AddRaftVoterResponse | RemoveRaftVoterResponse | UpdateRaftVoterResponse):
        return _voter_change_response_to_wire(body)
    top, error = _split_error(body.error_code)
    if isinstance(body, FetchResponse):
        diverging = body.diverging_epoch or OffsetAndEpoch(-1, -1)
        snapshot = body.snapshot_id or SnapshotId(-1, -1)
        partition: dict[str, Any] = {
            "partition_index": METADATA_PARTITION,
            "error_code": error,
            "high_watermark": body.high_watermark,
            "last_stable_offset": -1,
            "log_start_offset": body.log_start_offset,
            "diverging_epoch": {"epoch": diverging.epoch, "end_offset": diverging.offset},
            "current_leader": {"leader_id": body.leader_id, "leader_epoch": body.leader_epoch},
            "snapshot_id": {"end_offset": snapshot.offset, "epoch": snapshot.epoch},
            "aborted_transactions": None,
            "preferred_read_replica": -1,
            "records": body.records,
        }
        topic = {"topic": METADATA_TOPIC, "topic_id": METADATA_TOPIC_ID, "partitions": [partition]}
        return {
            "throttle_time_ms": 0,
            "error_code": top,
            "session_id": 0,
            "responses": [] if top else [topic],
        }
    if isinstance(body, FetchSnapshotResponse):
        partition = {
            "index": METADATA_PARTITION,
            "error_code": error,
            "snapshot_id": {"end_offset": body.snapshot_id.offset, "epoch": body.snapshot_id.epoch},
            "current_leader": {"leader_id": body.leader_id, "leader_epoch": body.leader_epoch},
            "size": body.size,
            "position": body.position,
            "unaligned_records": body.unaligned_records,
        }
        topic = {"name": METADATA_TOPIC, "partitions": [partition]}
        return {"throttle_time_ms": 0, "error_code": top, "topics": [] if top else [topic]}
    partition = {
        "partition_index": METADATA_PARTITION,
        "error_code": error,
        "leader_id": body.leader_id,
        "leader_epoch": body.leader_epoch,
    }
    if isinstance(body, VoteResponse):
        partition["vote_granted"] = body.vote_granted
    topic = {"topic_name": METADATA_TOPIC, "partitions": [partition]}
    return {"error_code": top, "topics": [] if top else [topic], "node_endpoints": []}


# --- from the wire -------------------------------------------------------------------------


def _partition(topics: list[dict[str, Any]], name_key: str, index_key: str) -> dict[str, Any]:
    for topic in topics:
        if topic.get(name_key) == METADATA_TOPIC or topic.get("topic_id") == METADATA_TOPIC_ID:
            for partition in topic["partitions"]:
                if partition[index_key] == METADATA_PARTITION:
                    found: dict[str, Any] = partition
                    return found
    raise WireError(f"no {METADATA_TOPIC}-{METADATA_PARTITION} in the message")


def request_from_wire(api_key_: int, version: int, data: dict[str, Any]) -> RaftRequest:
    """The dataclass of a decoded raft request."""
    if api_key_ == 52:
        p = _partition(data["topics"], "topic_name", "partition_index")
        return VoteRequest(
            cluster_id=data["cluster_id"],
            candidate_epoch=p["candidate_epoch"],
            candidate_id=p["candidate_id"],
            last_offset_epoch=p["last_offset_epoch"],
            last_offset=p["last_offset"],
            pre_vote=bool(p.get("pre_vote", False)) if version >= 2 else False,
            voter_id=data["voter_id"],
        )
    if api_key_ == 53:
        p = _partition(data["topics"], "topic_name", "partition_index")
        return BeginQuorumEpochRequest(
            data["cluster_id"], p["leader_id"], p["leader_epoch"], data["voter_id"]
        )
    if api_key_ == 54:
        p = _partition(data["topics"], "topic_name", "partition_index")
        if version >= 1:
            successors = tuple(c["candidate_id"] for c in p["preferred_candidates"])
        else:
            successors = tuple(p["preferred_successors"])
        return EndQuorumEpochRequest(
            data["cluster_id"], p["leader_id"], p["leader_epoch"], successors
        )
    if api_key_ == 1:
        p = _partition(data["topics"], "topic", "partition")
        replica_id = data["replica_state"]["replica_id"] if version >= 15 else data["replica_id"]
        return FetchRequest(
            cluster_id=data["cluster_id"],
            replica_id=replica_id,
            fetch_offset=p["fetch_offset"],
            last_fetched_epoch=p["last_fetched_epoch"],
            current_leader_epoch=p["current_leader_epoch"],
            max_wait_ms=data["max_wait_ms"],
            max_bytes=min(data["max_bytes"], p["partition_max_bytes"]),
            log_start_offset=p["log_start_offset"],
            replica_directory_id=from_wire_directory_id(p.get("replica_directory_id")),
        )
    if api_key_ in (80, 81, 82):
        key = ReplicaKey(data["voter_id"], from_wire_directory_id(data["voter_directory_id"]))
        if api_key_ == 81:
            return RemoveRaftVoterRequest(data["cluster_id"], key)
        listeners = tuple(VoterEndpoint(e["name"], e["host"], e["port"]) for e in data["listeners"])
        if api_key_ == 80:
            return AddRaftVoterRequest(data["cluster_id"], data["timeout_ms"], key, listeners)
        feature = data["k_raft_version_feature"]
        return UpdateRaftVoterRequest(
            data["cluster_id"],
            data["current_leader_epoch"],
            key,
            listeners,
            feature["min_supported_version"],
            feature["max_supported_version"],
        )
    if api_key_ == 59:
        p = _partition(data["topics"], "name", "partition")
        return FetchSnapshotRequest(
            cluster_id=data["cluster_id"],
            replica_id=data["replica_id"],
            current_leader_epoch=p["current_leader_epoch"],
            snapshot_id=SnapshotId(p["snapshot_id"]["end_offset"], p["snapshot_id"]["epoch"]),
            position=p["position"],
            max_bytes=data["max_bytes"],
        )
    raise WireError(f"api key {api_key_} is not a raft request")


def response_from_wire(api_key_: int, version: int, data: dict[str, Any]) -> RaftResponse:
    """The dataclass of a decoded raft response."""
    top = ErrorCode(data["error_code"])
    if api_key_ == 80:
        return AddRaftVoterResponse(top, data["error_message"])
    if api_key_ == 81:
        return RemoveRaftVoterResponse(top, data["error_message"])
    if api_key_ == 82:
        leader = data.get("current_leader") or {}
        return UpdateRaftVoterResponse(
            top, leader.get("leader_id", -1), leader.get("leader_epoch", -1)
        )
    if api_key_ in (52, 53, 54):
        if top != ErrorCode.NO_ERROR:
            partition: dict[str, Any] = {"error_code": top, "leader_id": -1, "leader_epoch": -1}
        else:
            partition = _partition(data["topics"], "topic_name", "partition_index")
        error = ErrorCode(partition["error_code"])
        if api_key_ == 52:
            granted = bool(partition.get("vote_granted", False))
            return VoteResponse(error, partition["leader_id"], partition["leader_epoch"], granted)
        response_type = BeginQuorumEpochResponse if api_key_ == 53 else EndQuorumEpochResponse
        return response_type(error, partition["leader_id"], partition["leader_epoch"])
    if api_key_ == 1:
        if top != ErrorCode.NO_ERROR:
            return FetchResponse(top, -1, -1)
        p = _partition(data["responses"], "topic", "partition_index")
        diverging = p["diverging_epoch"]
        return FetchResponse(
            error_code=ErrorCode(p["error_code"]),
            leader_id=p["current_leader"]["leader_id"],
            leader_epoch=p["current_leader"]["leader_epoch"],
            high_watermark=p["high_watermark"],
            log_start_offset=p["log_start_offset"],
            records=bytes(p["records"] or b""),
            diverging_epoch=(
                OffsetAndEpoch(diverging["end_offset"], diverging["epoch"])
                if diverging["epoch"] >= 0
                else None
            ),
            snapshot_id=_snapshot_id(p["snapshot_id"]),
        )
    if api_key_ == 59:
        if top != ErrorCode.NO_ERROR:
            return FetchSnapshotResponse(top, -1, -1)
        p = _partition(data["topics"], "name", "index")
        return FetchSnapshotResponse(
            error_code=ErrorCode(p["error_code"]),
            leader_id=p["current_leader"]["leader_id"],
            leader_epoch=p["current_leader"]["leader_epoch"],
            snapshot_id=SnapshotId(p["snapshot_id"]["end_offset"], p["snapshot_id"]["epoch"]),
            size=p["size"],
            position=p["position"],
            unaligned_records=bytes(p["unaligned_records"] or b""),
        )
    raise WireError(f"api key {api_key_} is not a raft response")


def describe_quorum_response(
    info: Any, version: int, error: ErrorCode = ErrorCode.NO_ERROR
) -> dict[str, Any]:
    """DescribeQuorum response dict from ``RaftReplica.describe_quorum()`` (a ``QuorumInfo``),
    or, with ``info`` None, the error a non-leader answers (NOT_LEADER_OR_FOLLOWER)."""
    del version  # every field here exists in v0-2 or has a default
    if info is None:
        partition: dict[str, Any] = {
            "partition_index": METADATA_PARTITION,
            "error_code": int(error or ErrorCode.NOT_LEADER_OR_FOLLOWER),
            "error_message": None,
            "leader_id": -1,
            "leader_epoch": -1,
            "high_watermark": -1,
            "current_voters": [],
            "observers": [],
        }
    else:

        def replicas(states: Sequence[Any]) -> list[dict[str, Any]]:
            return [
                {
                    "replica_id": s.replica_id,
                    "replica_directory_id": wire_directory_id(getattr(s, "directory_id", None)),
                    "log_end_offset": s.log_end_offset,
                    "last_fetch_timestamp": s.last_fetch_timestamp,
                    "last_caught_up_timestamp": s.last_caught_up_timestamp,
                }
                for s in states
            ]

        partition = {
            "partition_index": METADATA_PARTITION,
            "error_code": 0,
            "error_message": None,
            "leader_id": info.leader_id,
            "leader_epoch": info.leader_epoch,
            "high_watermark": info.high_watermark,
            "current_voters": replicas(info.voters),
            "observers": replicas(info.observers),
        }
    return {
        "error_code": 0,
        "error_message": None,
        "topics": [{"topic_name": METADATA_TOPIC, "partitions": [partition]}],
        "nodes": [],
    }


DESCRIBE_QUORUM_RESPONSE = describe_quorum.RESPONSE
