"""``broker.rack``: registered with the controller and shown to clients in Metadata."""

from __future__ import annotations

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.config import BrokerConfig
from pykbroker.testing import serve
from tests.wire import WireClient


def test_broker_rack_is_read_from_properties() -> None:
    config, unknown = BrokerConfig.from_properties({"broker.rack": " rack-a "})
    assert (config.broker_rack, unknown) == ("rack-a", [])
    assert BrokerConfig.from_properties({})[0].broker_rack is None


async def test_metadata_names_the_broker_rack() -> None:
    async with serve(broker_rack="rack-a") as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        try:
            metadata = await client.request(ApiKey.METADATA, 12, {"topics": None})
            assert [(b["node_id"], b["rack"]) for b in metadata["brokers"]] == [(1, "rack-a")]
            cluster = await client.request(ApiKey.DESCRIBE_CLUSTER, 1, {})
            assert [b["rack"] for b in cluster["brokers"]] == ["rack-a"]
        finally:
            await client.aclose()
