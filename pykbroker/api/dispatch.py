"""The request dispatcher (Kafka's ``KafkaApis``): one frame in, one response frame out.

It is the firewall between bytes from the network and the handlers:

* a frame whose header cannot be read, or that names an API or version pykbroker does not
  serve, raises ``CloseConnection`` (Kafka's SocketServer closes such connections), except
  ApiVersions at too new a version, which is answered at v0 with ``UNSUPPORTED_VERSION`` so the
  client can downgrade;
* a body that does not decode raises ``CloseConnection`` too;
* a ``KafkaError`` from a handler becomes that error code in the response;
* any other exception is logged with the request summary and answered with
  ``UNKNOWN_SERVER_ERROR`` in every error field the response has (``error_responses.py``);
  the connection stays open.
"""

from __future__ import annotations

import json
import logging
import struct
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO

from .context import BrokerServices, RequestContext
from .error_responses import error_response as error_response
from .handlers import HANDLERS
from .protocol import codec
from .protocol.api_keys import RELEASE_4_1, ApiKey
from .protocol.codec import CodecError
from .protocol.errors import ErrorCode, KafkaError
from .protocol.header import (
    RequestHeader,
    decode_request_header,
    encode_response_header,
    peek_api,
    response_header_version,
)
from .protocol.registry import api_name, request_message, response_message

log = logging.getLogger(__name__)
#: One JSON object per request and per response when ``pykbroker.trace.requests`` is on.
trace_log = logging.getLogger("pykbroker.trace")


def install_trace_handler(stream: TextIO | None = None) -> logging.Handler:
    """Make ``pykbroker.trace`` write each trace line as bare JSON to ``stream`` (stdout).

    The handler formats just the message (no time/level prefix), the logger is at INFO
    whatever the root level (``--log-level WARNING`` does not hide the trace) and does not
    propagate, so the lines are not duplicated, prefixed, on the root handler.
    """
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    trace_log.addHandler(handler)
    trace_log.setLevel(logging.INFO)
    trace_log.propagate = False
    return handler


Handler = Callable[[RequestContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]

#: The (min, max) versions served: Kafka 4.1's range for every API that has a handler.
SUPPORTED: dict[int, tuple[int, int]] = {
    key: RELEASE_4_1[key] for key in HANDLERS if key in RELEASE_4_1
}

#: Produce v0-2 are listed for old librdkafka (KAFKA-18659) but rejected, as in Kafka 4.x.
_LISTED_ONLY: dict[int, int] = {ApiKey.PRODUCE: 3}

_SIZE = struct.Struct(">i")


class CloseConnection(Exception):
    """The connection must be closed: the peer sent something that cannot be answered."""


def advertised_api_keys(
    supported: Mapping[int, tuple[int, int]] | None = None,
) -> list[dict[str, int]]:
    return [
        {"api_key": key, "min_version": low, "max_version": high}
        for key, (low, high) in sorted((SUPPORTED if supported is None else supported).items())
    ]


def _frame(header: bytes, body: bytes) -> bytes:
    return _SIZE.pack(len(header) + len(body)) + header + body


def unsupported_api_versions_response(
    correlation_id: int, supported: Mapping[int, tuple[int, int]] | None = None
) -> bytes:
    """ApiVersions v0 with UNSUPPORTED_VERSION and the versions served (KIP-511)."""
    body = codec.encode(
        response_message(ApiKey.API_VERSIONS),
        0,
        {"error_code": ErrorCode.UNSUPPORTED_VERSION, "api_keys": advertised_api_keys(supported)},
    )
    return _frame(encode_response_header(correlation_id, 0), body)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class Dispatcher:
    """Decodes request frames, calls handlers and encodes response frames.

    ``handlers``/``supported`` default to the broker listener's table; the KRaft CONTROLLER
    listener passes its own (``server/controller_apis.py``)."""

    def __init__(
        self,
        broker: BrokerServices,
        *,
        trace: bool = False,
        handlers: Mapping[int, Handler] | None = None,
        supported: Mapping[int, tuple[int, int]] | None = None,
    ) -> None:
        self.broker = broker
        self.trace = trace
        self.handlers: Mapping[int, Handler] = HANDLERS if handlers is None else handlers
        self.supported: Mapping[int, tuple[int, int]] = (
            SUPPORTED if supported is None else supported
        )

    def parse(self, frame: bytes) -> tuple[RequestHeader, dict[str, Any]] | bytes:
        """The header and request, or ready response bytes (ApiVersions downgrade)."""
        try:
            api_key, api_version, correlation_id = peek_api(frame)
        except CodecError as exc:
            raise CloseConnection(str(exc)) from exc
        served = self.supported.get(api_key)
        low = _LISTED_ONLY.get(api_key, served[0]) if served else 0
        if served is None or not low <= api_version <= served[1]:
            if api_key == ApiKey.API_VERSIONS:
                return unsupported_api_versions_response(correlation_id, self.supported)
            raise CloseConnection(
                f"unsupported API {api_name(api_key)} (key {api_key}) version {api_version}"
            )
        try:
            header, offset = decode_request_header(frame)
            request, _ = codec.decode_prefix(request_message(api_key), api_version, frame, offset)
        except CodecError as exc:
            raise CloseConnection(
                f"cannot decode {api_name(api_key)} v{api_version} request: {exc}"
            ) from exc
        return header, request

    async def handle(
        self, header: RequestHeader, request: dict[str, Any], client_host: str, connection_id: str
    ) -> bytes | None:
        """Run the handler; return the response frame, or None when none is due (acks=0)."""
        api_key = header.request_api_key
        handler: Handler = self.handlers[api_key]
        ctx = RequestContext(header, self.broker, client_host, connection_id)
        if self.trace:
            self._trace("request", header, request, connection_id)
        try:
            response = await handler(ctx, request)
        except KafkaError as exc:
            response = error_response(
                api_key, header.request_api_version, request, exc.code, exc.message
            )
        except Exception:
            log.exception(
                "unexpected error handling %s v%d (correlation id %d, client %r, from %s)",
                api_name(api_key),
                header.request_api_version,
                header.correlation_id,
                header.client_id,
                client_host,
            )
            response = error_response(
                api_key, header.request_api_version, request, ErrorCode.UNKNOWN_SERVER_ERROR, None
            )
        if response is None:
            return None
        if self.trace:
            self._trace("response", header, response, connection_id)
        version = header.request_api_version
        body = codec.encode(response_message(api_key), version, response)
        head = encode_response_header(
            header.correlation_id, response_header_version(api_key, version)
        )
        return _frame(head, body)

    def _trace(
        self, kind: str, header: RequestHeader, message: dict[str, Any], connection_id: str
    ) -> None:
        trace_log.info(
            json.dumps(
                {
                    "kind": kind,
                    "api": api_name(header.request_api_key),
                    "version": header.request_api_version,
                    "correlation_id": header.correlation_id,
                    "client_id": header.client_id,
                    "connection": connection_id,
                    "body": _jsonable(message),
                }
            )
        )
