"""Graceful shutdown answers the requests in flight, then stops, within a few seconds."""

from __future__ import annotations

import pytest
import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.testing import serve
from tests.server.test_fetch_rules import FETCH_V, create_topic, fetch_request
from tests.wire import WireClient


async def test_shutdown_answers_a_parked_fetch_and_stops_promptly() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        try:
            await create_topic(client, "parked")
            correlation_id = await client.send(
                ApiKey.FETCH, FETCH_V, fetch_request("parked", max_wait_ms=30_000)
            )
            # nothing to read: the fetch is parked for up to 30 s
            with trio.move_on_after(0.3) as parked:
                await client.receive(ApiKey.FETCH, FETCH_V, correlation_id)
            assert parked.cancelled_caught, "the fetch was answered before any shutdown"

            began = trio.current_time()
            broker.request_shutdown()
            with trio.fail_after(5):
                response = await client.receive(ApiKey.FETCH, FETCH_V, correlation_id)
            assert response["error_code"] == ErrorCode.NO_ERROR
            part = response["responses"][0]["partitions"][0]
            assert part["error_code"] == ErrorCode.NO_ERROR
            assert not part["records"]
            with trio.fail_after(5):
                await broker.stopped.wait()
            assert trio.current_time() - began < 5
            assert broker.shutting_down.is_set()
            # the listener is closed: a new connection is refused
            with trio.fail_after(5), pytest.raises(OSError, match="onnect"):
                await WireClient.connect(broker.bootstrap_servers)
        finally:
            await client.aclose()
