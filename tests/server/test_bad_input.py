"""Bad input from a peer closes only that connection, with a log line saying why."""

from __future__ import annotations

import logging
import struct

import pytest

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.testing import serve
from tests.wire import WireClient, encode_request

SOCKET_LOG = "pykbroker.server.socket_server"


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _header_only(api_key: int, version: int) -> bytes:
    """A v1 request header (key, version, correlation id 1, null client id) and no body."""
    return _frame(struct.pack(">hhih", api_key, version, 1, -1))


def _garbage_metadata() -> bytes:
    frame = encode_request(ApiKey.METADATA, 12, {"topics": None}, 1)
    # keep the size prefix and the fixed header fields, spoil everything after them
    return frame[: 4 + 12] + b"\xff" * (len(frame) - 16)


BAD_INPUT = {
    "garbage-body": (_garbage_metadata(), "cannot decode Metadata v12 request"),
    "unknown-key": (_header_only(999, 0), "unsupported API Unknown(999) (key 999) version 0"),
    "metadata-v99": (
        _header_only(ApiKey.METADATA, 99),
        "unsupported API Metadata (key 3) version 99",
    ),
    "produce-v2": (_header_only(ApiKey.PRODUCE, 2), "unsupported API Produce (key 0) version 2"),
    "oversize-frame": (
        struct.pack(">i", 1_500_000_000) + b"\x00" * 10,
        "frame of 1500000000 bytes is over socket.request.max.bytes=2000000",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
async def test_bad_input_closes_only_that_connection_and_logs_why(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SOCKET_LOG)
    data, reason = BAD_INPUT[case]
    async with serve(socket_request_max_bytes=2_000_000) as broker:
        good = await WireClient.connect(broker.bootstrap_servers)
        bad = await WireClient.connect(broker.bootstrap_servers)
        try:
            assert (await good.request(ApiKey.METADATA, 12, {"topics": None}))["cluster_id"]
            await bad.send_raw(data)
            assert await bad.receive_frame() is None  # the broker closed it
            # the other connection, opened before, is still served
            response = await good.request(ApiKey.METADATA, 12, {"topics": None})
            assert response["brokers"][0]["node_id"] == 1
        finally:
            await bad.aclose()
            await good.aclose()
    closing = [
        r
        for r in caplog.records
        if r.name == SOCKET_LOG and r.getMessage().startswith("closing connection ")
    ]
    assert len(closing) == 1, [r.getMessage() for r in caplog.records]
    assert closing[0].levelno == logging.WARNING
    assert reason in closing[0].getMessage(), closing[0].getMessage()
    assert "127.0.0.1" in closing[0].getMessage()
