"""Request handlers, one module per API key; HANDLERS maps each served API key to its handler.

Each module defines ``API_KEY`` and ``async def handle(ctx, request) -> response | None``, and
opens with a kfake-style docstring: versions, behaviour, per-version notes, what is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import (
    api_versions,
    create_topics,
    delete_topics,
    fetch,
    list_offsets,
    metadata,
    produce,
)

_MODULES = [
    api_versions,
    create_topics,
    delete_topics,
    fetch,
    list_offsets,
    metadata,
    produce,
]

HANDLERS: dict[int, Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any] | None]]] = {
    module.API_KEY: module.handle for module in _MODULES
}
