"""A handler that fails unexpectedly is answered with UNKNOWN_SERVER_ERROR, never a dead
connection, for every API served and every version."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pykbroker.api import dispatch
from pykbroker.api.dispatch import SUPPORTED
from pykbroker.api.protocol import codec
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.api.protocol.registry import request_message, response_message
from pykbroker.testing import serve
from tests.protocol.support import rich_example
from tests.wire import WireClient


def _error_codes(value: Any) -> list[int]:
    found: list[int] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("error_code"):  # partition_error_code too
                found.append(item)
            else:
                found.extend(_error_codes(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_error_codes(item))
    return found


@pytest.mark.parametrize(
    ("api_key", "version"),
    [
        (key, version)
        for key, (low, high) in sorted(SUPPORTED.items())
        for version in range(max(low, request_message(key).valid.low), high + 1)
    ],
)
def test_error_response_encodes_and_carries_the_code(api_key: int, version: int) -> None:
    message = request_message(api_key)
    request = codec.decode(
        message, version, codec.encode(message, version, rich_example(message, version))
    )
    response = dispatch.error_response(
        api_key, version, request, ErrorCode.UNKNOWN_SERVER_ERROR, None
    )
    encoded = codec.encode(response_message(api_key), version, response)
    decoded = codec.decode(response_message(api_key), version, encoded)
    assert ErrorCode.UNKNOWN_SERVER_ERROR in _error_codes(decoded)


async def test_crashing_handler_answers_unknown_server_error_and_keeps_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(ctx: Any, request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    monkeypatch.setitem(dispatch.HANDLERS, 3, broken)
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        response = await client.request(3, 12, {"topics": [{"name": "a"}, {"name": "b"}]})
        assert [t["error_code"] for t in response["topics"]] == [ErrorCode.UNKNOWN_SERVER_ERROR] * 2
        versions = await client.request(
            18, 3, {"client_software_name": "t", "client_software_version": "1"}
        )
        assert versions["error_code"] == ErrorCode.NO_ERROR
        await client.aclose()


async def test_unknown_server_error_is_logged_with_api_version_and_correlation_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(ctx: Any, request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom in handler")

    caplog.set_level(logging.ERROR, logger="pykbroker.api.dispatch")
    monkeypatch.setitem(dispatch.HANDLERS, 3, broken)
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        for _ in range(3):  # correlation ids 1, 2, 3
            correlation_id = await client.send(3, 12, {"topics": None})
            await client.receive(3, 12, correlation_id)
        await client.aclose()
    records = [r for r in caplog.records if r.name == "pykbroker.api.dispatch"]
    assert len(records) == 3
    line = records[-1].getMessage()
    assert "Metadata v12" in line
    assert "correlation id 3" in line
    assert "client 'test'" in line
    assert records[-1].exc_info is not None
    assert "boom in handler" in str(records[-1].exc_info[1])
