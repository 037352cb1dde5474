"""ProducerIdManager: hands out producer ids from blocks reserved through the controller.

Mirrors Kafka's ``RPCProducerIdManager``: the controller reserves blocks of
``PRODUCER_ID_BLOCK_SIZE`` ids with a ``ProducerIdsRecord`` in the metadata log, so an id is
never handed out twice, across restarts included (an unused rest of a block is skipped).
"""

from __future__ import annotations

from typing import Protocol

import trio

PRODUCER_ID_BLOCK_SIZE = 1000


class ProducerIdAllocator(Protocol):
    async def allocate_producer_ids(self, block_size: int) -> int: ...


class ProducerIdManager:
    """Generates unique producer ids."""

    def __init__(self, allocator: ProducerIdAllocator) -> None:
        self._allocator = allocator
        self._next = 0
        self._end = 0
        self._lock = trio.Lock()

    async def generate_producer_id(self) -> int:
        async with self._lock:
            if self._next >= self._end:
                start = await self._allocator.allocate_producer_ids(PRODUCER_ID_BLOCK_SIZE)
                self._next, self._end = start, start + PRODUCER_ID_BLOCK_SIZE
            producer_id = self._next
            self._next += 1
            return producer_id
