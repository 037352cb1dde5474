"""Connection limits, idle timeout, pipelining and the request trace."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.testing import serve
from tests.wire import WireClient, encode_request


async def test_max_connections_per_ip_closes_the_extra_connection() -> None:
    async with serve(max_connections_per_ip=2) as broker:
        first = await WireClient.connect(broker.bootstrap_servers)
        second = await WireClient.connect(broker.bootstrap_servers)
        assert (await first.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        assert (await second.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        third = await WireClient.connect(broker.bootstrap_servers)
        with trio.fail_after(5):
            assert await third.receive_frame() is None
        await first.aclose()
        with trio.fail_after(5):
            while True:  # the freed slot is usable again once the broker saw the close
                fourth = await WireClient.connect(broker.bootstrap_servers)
                await fourth.send(ApiKey.METADATA, 12, {"topics": None})
                if await fourth.receive_frame() is not None:
                    break
                await fourth.aclose()
        await fourth.aclose()
        await second.aclose()
        await third.aclose()


async def test_idle_connection_is_closed_after_connections_max_idle_ms() -> None:
    async with serve(connections_max_idle_ms=200) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        with trio.fail_after(5):
            assert await client.receive_frame() is None
        await client.aclose()


async def test_pipelined_requests_are_answered_in_order_in_one_read() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        burst = b"".join(
            encode_request(ApiKey.METADATA, 12, {"topics": None}, correlation_id)
            for correlation_id in range(1, 51)
        )
        await client.send_raw(burst)
        seen = []
        for _ in range(50):
            frame = await client.receive_frame()
            assert frame is not None
            seen.append(int.from_bytes(frame[:4], "big"))
        assert seen == list(range(1, 51))
        await client.aclose()


async def test_trace_logs_each_request_and_response_as_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pykbroker.trace")
    async with serve(pykbroker_trace_requests="true") as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await client.request(ApiKey.METADATA, 12, {"topics": None})
        await client.aclose()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pykbroker.trace"]
    kinds = [(line["kind"], line["api"], line["version"]) for line in lines]
    assert ("request", "Metadata", 12) in kinds
    assert ("response", "Metadata", 12) in kinds
    response = next(
        line for line in lines if line["kind"] == "response" and line["api"] == "Metadata"
    )
    assert response["body"]["brokers"][0]["node_id"] == 1
