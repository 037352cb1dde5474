"""The broker's own client: requests to another node, reconnects after a broken connection."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.server.network_client import NodeConnection, NodeUnavailable
from pykbroker.testing import serve


async def test_requests_round_trip_and_reconnect_after_the_node_restarts(tmp_path: Path) -> None:
    async with serve(log_dirs=tmp_path) as broker:
        port = broker.endpoint().port
        connection = NodeConnection("127.0.0.1", port, client_id="node-2")
        response = await connection.request(ApiKey.METADATA, 12, {"topics": None})
        assert response["brokers"][0]["port"] == port
        versions = await connection.request(
            ApiKey.API_VERSIONS,
            3,
            {"client_software_name": "pykbroker", "client_software_version": "1"},
        )
        assert versions["error_code"] == 0
    with pytest.raises(NodeUnavailable):
        await connection.request(ApiKey.METADATA, 12, {"topics": None})
    async with serve(log_dirs=tmp_path, listeners=f"PLAINTEXT://127.0.0.1:{port}") as broker:
        with trio.fail_after(10):
            response = await connection.request(ApiKey.METADATA, 12, {"topics": None})
        assert response["cluster_id"] == broker.cluster_id
    await connection.aclose()


async def test_unreachable_node_is_reported_not_raised_as_oserror() -> None:
    connection = NodeConnection("127.0.0.1", 1, client_id="node-2", connect_timeout_s=2)
    with pytest.raises(NodeUnavailable):
        await connection.request(ApiKey.METADATA, 12, {"topics": None})
