"""A whole-request error as a response: Kafka's ``AbstractRequest.getErrorResponse``.

When a handler fails unexpectedly the client must still get an answer it can act on, with the
error code in every place the response has one: at the top level where the response has a
top-level ``error_code`` (in that version), else on every topic/partition/group/coordinator the
request named. The shape comes from the request itself, so this works for every API without a
hand-written case per key.
"""

from __future__ import annotations

from typing import Any

from .protocol.errors import ErrorCode
from .protocol.registry import response_message
from .protocol.schema import Field

#: request list field -> (response list field, the key fields copied from request to response)
_MIRRORS: dict[int, list[tuple[str, str, dict[str, str]]]] = {
    0: [("topic_data", "responses", {"name": "name", "topic_id": "topic_id"})],
    1: [("topics", "responses", {"topic": "topic", "topic_id": "topic_id"})],
    2: [("topics", "topics", {"name": "name"})],
    3: [("topics", "topics", {"name": "name", "topic_id": "topic_id"})],
    8: [("topics", "topics", {"name": "name", "topic_id": "topic_id"})],
    9: [("topics", "topics", {"name": "name"}), ("groups", "groups", {"group_id": "group_id"})],
    10: [("coordinator_keys", "coordinators", {"": "key"})],
    15: [("groups", "groups", {"": "group_id"})],
    19: [("topics", "topics", {"name": "name"})],
    20: [("topic_names", "responses", {"": "name"}), ("topics", "responses", {"name": "name"})],
    21: [("topics", "topics", {"name": "name"})],
    23: [("topics", "topics", {"topic": "topic"})],
    24: [("v3_and_below_topics", "results_by_topic_v3_and_below", {"name": "name"})],
    28: [("topics", "topics", {"name": "name"})],
    32: [
        (
            "resources",
            "results",
            {"resource_type": "resource_type", "resource_name": "resource_name"},
        )
    ],
    33: [
        (
            "resources",
            "responses",
            {"resource_type": "resource_type", "resource_name": "resource_name"},
        )
    ],
    37: [("topics", "results", {"name": "name"})],
    42: [("groups_names", "results", {"": "group_id"})],
    43: [("topic_partitions", "replica_election_results", {"topic": "topic"})],
    44: [
        (
            "resources",
            "responses",
            {"resource_type": "resource_type", "resource_name": "resource_name"},
        )
    ],
    45: [("topics", "responses", {"name": "name"})],
    61: [("topics", "topics", {"name": "name"})],
    65: [("transactional_ids", "transaction_states", {"": "transactional_id"})],
    69: [("group_ids", "groups", {"": "group_id"})],
}

#: request partition list -> (response partition list, index field in request, in response)
_PARTITIONS: dict[int, tuple[str, str, str, str]] = {
    0: ("partition_data", "partition_responses", "index", "index"),
    1: ("partitions", "partitions", "partition", "partition_index"),
    2: ("partitions", "partitions", "partition_index", "partition_index"),
    8: ("partitions", "partitions", "partition_index", "partition_index"),
    9: ("partition_indexes", "partitions", "", "partition_index"),
    21: ("partitions", "partitions", "partition_index", "partition_index"),
    23: ("partitions", "partitions", "partition", "partition"),
    24: ("partitions", "results_by_partition", "", "partition_index"),
    28: ("partitions", "partitions", "partition_index", "partition_index"),
    43: ("partitions", "partition_result", "", "partition_id"),
    45: ("partitions", "partitions", "partition_index", "partition_index"),
    61: ("partition_indexes", "partitions", "", "partition_index"),
}
#: the partition error field, where it is not ``error_code``
_PARTITION_ERROR_FIELD = {24: "partition_error_code"}


def _has_field(fields: tuple[Field, ...], name: str, version: int) -> bool:
    return any(f.name == name and version in f.versions for f in fields)


def error_response(
    api_key: int, version: int, request: dict[str, Any], code: ErrorCode, message: str | None
) -> dict[str, Any]:
    """A response to ``request`` that reports ``code`` everywhere it can."""
    if api_key == _WRITE_TXN_MARKERS:
        return _write_txn_markers_error(request, code)
    declaration = response_message(api_key)
    response: dict[str, Any] = {}
    if _has_field(declaration.fields, "error_code", version):
        response["error_code"] = code
        if _has_field(declaration.fields, "error_message", version):
            response["error_message"] = message
    for request_list, response_list, keys in _MIRRORS.get(api_key, []):
        items = request.get(request_list) or []
        entries = response.setdefault(response_list, [])
        for item in items:
            entry: dict[str, Any] = {"error_code": code, "error_message": message}
            for source, target in keys.items():
                entry[target] = item if source == "" else item.get(source)
            partitions = _PARTITIONS.get(api_key)
            if partitions is not None and isinstance(item, dict):
                source_list, target_list, source_index, target_index = partitions
                entry[target_list] = [
                    {
                        target_index: p if source_index == "" else p[source_index],
                        _PARTITION_ERROR_FIELD.get(api_key, "error_code"): code,
                    }
                    for p in item.get(source_list) or []
                ]
            entries.append(entry)
    return response


_WRITE_TXN_MARKERS = 27


def _write_txn_markers_error(request: dict[str, Any], code: ErrorCode) -> dict[str, Any]:
    """WriteTxnMarkers nests partitions in topics in markers (Kafka's
    ``WriteTxnMarkersRequest.getErrorResponse``): every partition of every marker."""
    return {
        "markers": [
            {
                "producer_id": marker["producer_id"],
                "topics": [
                    {
                        "name": topic["name"],
                        "partitions": [
                            {"partition_index": index, "error_code": code}
                            for index in topic.get("partition_indexes") or []
                        ],
                    }
                    for topic in marker.get("topics") or []
                ],
            }
            for marker in request.get("markers") or []
        ]
    }
