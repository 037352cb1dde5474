"""Connection limits, idle timeout, pipelining and the request trace."""

from __future__ import annotations

import json
import logging
import struct

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


async def _closed_by_broker(client: WireClient) -> bool:
    with trio.fail_after(5):
        return await client.receive_frame() is None


async def test_max_connections_closes_the_connection_over_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pykbroker.server.socket_server")
    async with serve(max_connections=2) as broker:
        first = await WireClient.connect(broker.bootstrap_servers)
        second = await WireClient.connect(broker.bootstrap_servers)
        assert (await first.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        assert (await second.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        third = await WireClient.connect(broker.bootstrap_servers)
        await third.send(ApiKey.METADATA, 12, {"topics": None})
        assert await _closed_by_broker(third)
        assert any("max.connections=2 reached" in r.getMessage() for r in caplog.records)
        # the first two keep working
        assert (await first.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        assert (await second.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        await first.aclose()
        with trio.fail_after(5):
            while True:  # the slot frees once the broker has seen the close
                fourth = await WireClient.connect(broker.bootstrap_servers)
                await fourth.send(ApiKey.METADATA, 12, {"topics": None})
                if await fourth.receive_frame() is not None:
                    break
                await fourth.aclose()
        assert (await fourth.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        assert (await second.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        for client in (second, third, fourth):
            await client.aclose()


def _raw_request(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """A frame with a v1 request header (int16 client id), for versions pykbroker cannot encode."""
    client_id = b"raw"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return struct.pack(">i", len(header) + len(body)) + header + body


@pytest.mark.parametrize(
    ("api_key", "version", "reason"),
    [
        *(
            pytest.param(
                ApiKey.PRODUCE,
                v,
                f"unsupported API Produce (key 0) version {v}",
                id=f"produce-v{v}",
            )
            for v in range(3)
        ),
        pytest.param(999, 0, "unsupported API Unknown(999) (key 999) version 0", id="unknown-key"),
    ],
)
async def test_unsupported_request_closes_only_that_connection_with_a_log_line(
    caplog: pytest.LogCaptureFixture, api_key: int, version: int, reason: str
) -> None:
    """Produce v0-2 (advertised from v0 for old librdkafka, KAFKA-18659, but rejected) and an
    unknown API key close the connection, as Kafka does; other connections carry on."""
    caplog.set_level(logging.WARNING, logger="pykbroker.server.socket_server")
    async with serve() as broker:
        bystander = await WireClient.connect(broker.bootstrap_servers)
        assert (await bystander.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        offender = await WireClient.connect(broker.bootstrap_servers)
        # acks=1, timeout 1000, no topics: a plausible old Produce body
        await offender.send_raw(
            _raw_request(api_key, version, 7, b"\x00\x01\x00\x00\x03\xe8\x00\x00\x00\x00")
        )
        assert await _closed_by_broker(offender)
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("closing connection" in line and reason in line for line in lines), lines
        assert (await bystander.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
        versions = await bystander.request(
            ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"}
        )
        assert versions["error_code"] == 0
        await offender.aclose()
        await bystander.aclose()


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
