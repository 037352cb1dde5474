"""RequestHeader (v1, v2) and ResponseHeader (v0, v1), and which version a message uses.

A request header is v2 when the request's API version is flexible, else v1 (v0 left Kafka with
ControlledShutdown v0 in 4.0). The client id is always a classic nullable string, even in v2.
A response header is v1 for flexible versions, else v0, except ApiVersions, whose response
always uses header v0 so that a client can read it whatever version it asked for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import codec
from .api_keys import ApiKey
from .codec import CodecError
from .messages.headers import REQUEST_HEADER, RESPONSE_HEADER
from .registry import request_message

_API_KEY_VERSION = struct.Struct(">hh")


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The decoded header of one request."""

    request_api_key: int
    request_api_version: int
    correlation_id: int
    client_id: str | None
    header_version: int


def peek_api(frame: bytes | memoryview) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id) from the first 8 bytes of a request frame."""
    if len(frame) < 8:
        raise CodecError(f"request frame of {len(frame)} bytes is too short for a header")
    api_key, api_version = _API_KEY_VERSION.unpack_from(frame, 0)
    correlation_id = int.from_bytes(frame[4:8], "big", signed=True)
    return api_key, api_version, correlation_id


def request_header_version(api_key: int, api_version: int) -> int:
    """2 when the request is flexible, else 1."""
    return 2 if api_version in request_message(api_key).flexible else 1


def response_header_version(api_key: int, api_version: int) -> int:
    """1 when the response is flexible, else 0; always 0 for ApiVersions."""
    if api_key == ApiKey.API_VERSIONS:
        return 0
    return 1 if api_version in request_message(api_key).flexible else 0


def decode_request_header(frame: bytes | memoryview) -> tuple[RequestHeader, int]:
    """Decode the header; return it and the offset of the request body in ``frame``."""
    api_key, api_version, _ = peek_api(frame)
    version = request_header_version(api_key, api_version)
    obj, offset = codec.decode_prefix(REQUEST_HEADER, version, frame)
    header = RequestHeader(
        request_api_key=obj["request_api_key"],
        request_api_version=obj["request_api_version"],
        correlation_id=obj["correlation_id"],
        client_id=obj["client_id"],
        header_version=version,
    )
    return header, offset


def encode_request_header(
    api_key: int, api_version: int, correlation_id: int, client_id: str | None
) -> bytes:
    """The header bytes a client would send (used by tests and the inter-broker client)."""
    version = request_header_version(api_key, api_version)
    obj = {
        "request_api_key": api_key,
        "request_api_version": api_version,
        "correlation_id": correlation_id,
        "client_id": client_id,
    }
    return codec.encode(REQUEST_HEADER, version, obj)


def encode_response_header(correlation_id: int, header_version: int) -> bytes:
    """ResponseHeader v0 (correlation id) or v1 (plus an empty tagged-field section)."""
    return codec.encode(RESPONSE_HEADER, header_version, {"correlation_id": correlation_id})
