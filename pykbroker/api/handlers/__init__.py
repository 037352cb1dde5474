"""Request handlers, one module per API key; HANDLERS maps each served API key to its handler.

Each module defines ``API_KEY`` and ``async def handle(ctx, request) -> response | None``, and
opens with a kfake-style docstring: versions, behaviour, per-version notes, what is missing.
Registering an API is adding its module name to ``_MODULES``; ApiVersions then advertises it.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

_MODULES = (
    "add_offsets_to_txn",
    "add_partitions_to_txn",
    "add_raft_voter",
    "alter_configs",
    "alter_partition_reassignments",
    "api_versions",
    "consumer_group_describe",
    "consumer_group_heartbeat",
    "create_partitions",
    "create_topics",
    "delete_groups",
    "delete_records",
    "delete_topics",
    "describe_cluster",
    "describe_configs",
    "describe_groups",
    "describe_producers",
    "describe_quorum",
    "describe_transactions",
    "elect_leaders",
    "end_txn",
    "fetch",
    "find_coordinator",
    "heartbeat",
    "incremental_alter_configs",
    "init_producer_id",
    "join_group",
    "leave_group",
    "list_groups",
    "list_offsets",
    "list_partition_reassignments",
    "list_transactions",
    "metadata",
    "offset_commit",
    "offset_delete",
    "offset_fetch",
    "offset_for_leader_epoch",
    "produce",
    "remove_raft_voter",
    "sync_group",
    "txn_offset_commit",
    "unregister_broker",
    "write_txn_markers",
)

HANDLERS: dict[int, Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any] | None]]] = {}
for _name in _MODULES:
    _module = importlib.import_module(f"{__name__}.{_name}")
    HANDLERS[_module.API_KEY] = _module.handle
