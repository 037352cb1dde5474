"""``advertised.listeners``: clients are told the advertised host:port, not the bound one."""

from __future__ import annotations

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.testing import serve
from tests.wire import WireClient

ADVERTISED_HOST = "kafka.example.com"
ADVERTISED_PORT = 19092


async def test_metadata_and_find_coordinator_return_the_advertised_endpoint() -> None:
    async with serve(
        advertised_listeners=f"PLAINTEXT://{ADVERTISED_HOST}:{ADVERTISED_PORT}"
    ) as broker:
        bound = broker.bound[0]
        assert (bound.host, bound.port) != (ADVERTISED_HOST, ADVERTISED_PORT)
        assert bound.port != 0
        # the client connects to the bound port; the answers name the advertised one
        client = await WireClient.connect(f"127.0.0.1:{bound.port}")
        try:
            for version in (1, 12):
                metadata = await client.request(ApiKey.METADATA, version, {"topics": None})
                brokers = [(b["node_id"], b["host"], b["port"]) for b in metadata["brokers"]]
                assert brokers == [(1, ADVERTISED_HOST, ADVERTISED_PORT)]

            v3 = await client.request(ApiKey.FIND_COORDINATOR, 3, {"key": "a-group", "key_type": 0})
            assert v3["error_code"] == ErrorCode.NO_ERROR
            assert (v3["node_id"], v3["host"], v3["port"]) == (
                1,
                ADVERTISED_HOST,
                ADVERTISED_PORT,
            )

            v4 = await client.request(
                ApiKey.FIND_COORDINATOR,
                4,
                {"key_type": 0, "coordinator_keys": ["a-group", "another-group"]},
            )
            found = [
                (c["key"], c["error_code"], c["node_id"], c["host"], c["port"])
                for c in v4["coordinators"]
            ]
            assert found == [
                (key, ErrorCode.NO_ERROR, 1, ADVERTISED_HOST, ADVERTISED_PORT)
                for key in ("a-group", "another-group")
            ]
        finally:
            await client.aclose()
