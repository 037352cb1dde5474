"""Request handlers, one module per API key; HANDLERS maps each served API key to its handler.

Each module defines ``API_KEY`` and ``async def handle(ctx, request) -> response | None``, and
opens with a kfake-style docstring: versions, behaviour, per-version notes, what is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import (
    add_offsets_to_txn,
    add_partitions_to_txn,
    api_versions,
    consumer_group_heartbeat,
    create_topics,
    delete_groups,
    delete_records,
    delete_topics,
    describe_groups,
    end_txn,
    fetch,
    find_coordinator,
    heartbeat,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    produce,
    sync_group,
    txn_offset_commit,
)

_MODULES = [
    add_offsets_to_txn,
    add_partitions_to_txn,
    api_versions,
    consumer_group_heartbeat,
    create_topics,
    delete_groups,
    delete_records,
    delete_topics,
    describe_groups,
    end_txn,
    fetch,
    find_coordinator,
    heartbeat,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_delete,
    offset_fetch,
    produce,
    sync_group,
    txn_offset_commit,
]

HANDLERS: dict[int, Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any] | None]]] = {
    module.API_KEY: module.handle for module in _MODULES
}
