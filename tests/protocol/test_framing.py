"""Size-prefixed framing (``FrameBuffer``) and request/response headers.

Every frame sequence is fed split at every byte boundary (and one byte at a time), as h11's
tests do; a bad size prefix raises ``FrameTooLarge`` as soon as its 4 bytes are in, before any
of the announced body is buffered. Headers: v1/v2 requests, v0/v1 responses, ApiVersions
always answering with response header v0, and the client id staying a classic int16 string
even in the flexible request header v2.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykbroker.api.protocol import codec, header
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.codec import CodecError
from pykbroker.api.protocol.framing import FrameBuffer, FrameTooLarge
from pykbroker.api.protocol.messages.api_versions import REQUEST as API_VERSIONS_REQUEST
from pykbroker.api.protocol.messages.metadata import REQUEST as METADATA_REQUEST

MAX = 1024


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def drain(buffer: FrameBuffer) -> list[bytes]:
    frames = []
    while (f := buffer.next_frame()) is not None:
        frames.append(f)
    return frames


PAYLOADS = [
    b"",
    b"x",
    header.encode_request_header(18, 3, 1, "c") + b"\x02a\x02b\x00",
    bytes(range(256)),
    b"\x00\x00\x00\x04",  # a payload that looks like a size prefix
]
STREAM = b"".join(frame(p) for p in PAYLOADS)


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_frames_are_reassembled_when_split_at_any_byte(split: int) -> None:
    buffer = FrameBuffer(MAX)
    buffer.receive_data(STREAM[:split])
    frames = drain(buffer)
    buffer.receive_data(STREAM[split:])
    frames += drain(buffer)
    assert frames == PAYLOADS
    assert buffer.buffered == 0


def test_frames_are_reassembled_when_fed_one_byte_at_a_time() -> None:
    buffer = FrameBuffer(MAX)
    frames: list[bytes] = []
    for i in range(len(STREAM)):
        buffer.receive_data(STREAM[i : i + 1])
        frames += drain(buffer)
    assert frames == PAYLOADS


@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=8).map(sorted))
@settings(max_examples=100, deadline=None, derandomize=True, database=None)
def test_frames_are_reassembled_from_arbitrary_chunks(cuts: list[int]) -> None:
    buffer = FrameBuffer(MAX)
    frames: list[bytes] = []
    bounds = [0, *cuts, len(STREAM)]
    for start, end in itertools.pairwise(bounds):
        buffer.receive_data(STREAM[start:end])
        frames += drain(buffer)
    assert frames == PAYLOADS


def test_incomplete_frame_waits_for_more_data() -> None:
    buffer = FrameBuffer(MAX)
    buffer.receive_data(frame(b"hello")[:-1])
    assert buffer.next_frame() is None
    assert buffer.buffered == 8
    buffer.receive_data(b"o")
    assert buffer.next_frame() == b"hello"
    assert buffer.next_frame() is None


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    buffer = FrameBuffer(MAX)
    buffer.receive_data(frame(b"a" * MAX))
    assert buffer.next_frame() == b"a" * MAX


@pytest.mark.parametrize(
    "size", [MAX + 1, 2**31 - 1, -1, -(2**31)], ids=["limit+1", "2GiB", "minus-1", "int32-min"]
)
def test_oversize_or_negative_prefix_raises_before_body_is_buffered(size: int) -> None:
    buffer = FrameBuffer(MAX)
    buffer.receive_data(struct.pack(">i", size))  # only the prefix has arrived
    with pytest.raises(FrameTooLarge, match=str(size)):
        buffer.next_frame()
    assert buffer.buffered == 4


def test_bad_prefix_after_good_frames_is_raised_once_they_are_taken() -> None:
    buffer = FrameBuffer(MAX)
    buffer.receive_data(frame(b"ok") + struct.pack(">i", -5))
    assert buffer.next_frame() == b"ok"
    with pytest.raises(FrameTooLarge):
        buffer.next_frame()


def test_frame_too_large_is_a_codec_error() -> None:
    assert issubclass(FrameTooLarge, CodecError)


def test_buffer_compacts_after_many_frames() -> None:
    buffer = FrameBuffer(MAX)
    payload = b"p" * 1000
    for _ in range(200):
        buffer.receive_data(frame(payload)[:500])
        assert drain(buffer) == []
        buffer.receive_data(frame(payload)[500:])
        assert drain(buffer) == [payload]
    assert buffer.buffered == 0


# --- headers ----------------------------------------------------------------------------------


def test_request_header_is_v1_for_classic_and_v2_for_flexible_versions() -> None:
    assert header.request_header_version(ApiKey.METADATA, 8) == 1
    assert header.request_header_version(ApiKey.METADATA, 9) == 2
    assert header.request_header_version(ApiKey.API_VERSIONS, 2) == 1
    assert header.request_header_version(ApiKey.API_VERSIONS, 3) == 2
    assert header.request_header_version(ApiKey.SASL_HANDSHAKE, 1) == 1  # never flexible


def test_request_header_v1_bytes_and_decode() -> None:
    data = header.encode_request_header(ApiKey.METADATA, 8, 0x01020304, "cli")
    assert data == bytes.fromhex("0003 0008 01020304 0003 636c69")
    decoded, offset = header.decode_request_header(data + b"BODY")
    assert decoded == header.RequestHeader(3, 8, 0x01020304, "cli", 1)
    assert offset == len(data)


def test_request_header_v2_keeps_client_id_a_classic_int16_string() -> None:
    data = header.encode_request_header(ApiKey.API_VERSIONS, 3, 7, "abc")
    # int16 length 0x0003 (a compact string would be the single byte 0x04), then no tags
    assert data == bytes.fromhex("0012 0003 00000007 0003 616263 00")
    decoded, offset = header.decode_request_header(data)
    assert decoded == header.RequestHeader(18, 3, 7, "abc", 2)
    assert offset == len(data)


def test_request_header_null_client_id_is_minus_one_in_v1_and_v2() -> None:
    v1 = header.encode_request_header(ApiKey.METADATA, 1, 1, None)
    v2 = header.encode_request_header(ApiKey.METADATA, 12, 1, None)
    assert v1 == bytes.fromhex("0003 0001 00000001 ffff")
    assert v2 == bytes.fromhex("0003 000c 00000001 ffff 00")
    assert header.decode_request_header(v1)[0].client_id is None
    assert header.decode_request_header(v2)[0].client_id is None


def test_request_header_v2_tagged_fields_are_skipped() -> None:
    data = bytes.fromhex("0012 0003 00000007 0001 61 01 05 02 abcd")  # tag 5, 2 bytes
    decoded, offset = header.decode_request_header(data + b"\x02a\x02b\x00")
    assert decoded.client_id == "a"
    assert offset == len(data)
    body = codec.decode(API_VERSIONS_REQUEST, 3, (data + b"\x02a\x02b\x00")[offset:])
    assert body == {"client_software_name": "a", "client_software_version": "b"}


def test_peek_api_reads_key_version_and_correlation_id() -> None:
    data = header.encode_request_header(ApiKey.FETCH, 12, -5, "x")
    assert header.peek_api(data) == (1, 12, -5)
    with pytest.raises(CodecError, match="too short"):
        header.peek_api(data[:7])


def test_api_versions_response_header_is_always_v0() -> None:
    assert header.response_header_version(18, 3) == 0
    for version in range(5):
        assert header.response_header_version(ApiKey.API_VERSIONS, version) == 0


def test_response_header_is_v1_for_flexible_versions() -> None:
    assert header.response_header_version(ApiKey.METADATA, 8) == 0
    assert header.response_header_version(ApiKey.METADATA, 9) == 1
    assert header.response_header_version(ApiKey.PRODUCE, 9) == 1


def test_response_header_v0_and_v1_bytes() -> None:
    assert header.encode_response_header(42, 0) == bytes.fromhex("0000002a")
    assert header.encode_response_header(42, 1) == bytes.fromhex("0000002a 00")


def test_request_header_then_body_of_a_real_frame() -> None:
    body = codec.encode(
        METADATA_REQUEST,
        12,
        {"topics": None, "allow_auto_topic_creation": False,
         "include_topic_authorized_operations": False},
    )  # fmt: skip
    payload = header.encode_request_header(3, 12, 9, "c") + body
    buffer = FrameBuffer(MAX)
    buffer.receive_data(frame(payload))
    got = buffer.next_frame()
    assert got is not None
    hdr, offset = header.decode_request_header(got)
    assert (hdr.request_api_key, hdr.request_api_version, hdr.header_version) == (3, 12, 2)
    assert codec.decode(METADATA_REQUEST, 12, got[offset:])["topics"] is None


def test_header_and_body_decode_from_a_memoryview() -> None:
    payload = header.encode_request_header(18, 3, 1, "c") + b"\x02a\x02b\x00"
    view = memoryview(bytearray(payload))
    hdr, offset = header.decode_request_header(view)
    assert hdr.client_id == "c"
    body, end = codec.decode_prefix(API_VERSIONS_REQUEST, 3, view, offset)
    assert body == {"client_software_name": "a", "client_software_version": "b"}
    assert end == len(payload)
