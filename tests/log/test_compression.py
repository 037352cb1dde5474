"""Codecs: round trips, Kafka's framings, bounded and checked decompression."""

from __future__ import annotations

import os
import struct

import cramjam
import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pykbroker.api.protocol.errors import ErrorCode, KafkaError
from pykbroker.log.compression import XERIAL_MAGIC, CompressionType, compress, decompress

from .support import kafka_codec

CODECS = list(CompressionType)
PAYLOADS = [b"", b"x", b"hello kafka " * 1000, os.urandom(100_000)]


@pytest.mark.parametrize("ctype", CODECS, ids=lambda c: c.name)
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: str(len(p)))
def test_round_trip(ctype: CompressionType, payload: bytes) -> None:
    assert decompress(ctype, compress(ctype, payload), len(payload)) == payload


@pytest.mark.parametrize("ctype", CODECS[1:], ids=lambda c: c.name)
def test_decompressing_beyond_max_size_is_corrupt_message(ctype: CompressionType) -> None:
    payload = b"a" * 100_000
    with pytest.raises(KafkaError) as info:
        decompress(ctype, compress(ctype, payload), len(payload) - 1)
    assert info.value.code == ErrorCode.CORRUPT_MESSAGE


@pytest.mark.parametrize("ctype", CODECS[1:], ids=lambda c: c.name)
@pytest.mark.parametrize("cut", ["garbage", "truncated", "empty"])
def test_bad_input_is_corrupt_message(ctype: CompressionType, cut: str) -> None:
    good = compress(ctype, os.urandom(5000) * 4)
    data = {"garbage": b"not compressed at all", "truncated": good[:-7], "empty": b""}[cut]
    with pytest.raises(KafkaError) as info:
        decompress(ctype, data, 1 << 20)
    assert info.value.code == ErrorCode.CORRUPT_MESSAGE


def test_snappy_uses_xerial_framing_like_java_kafka() -> None:
    payload = os.urandom(70_000)  # three 32 KiB xerial blocks
    framed = compress(CompressionType.SNAPPY, payload)
    assert framed.startswith(XERIAL_MAGIC + struct.pack(">ii", 1, 1))
    assert kafka_codec.snappy_decode(framed) == payload


def test_snappy_accepts_xerial_from_kafka_python_and_raw_blocks() -> None:
    payload = b"librdkafka " * 10_000
    xerial = kafka_codec.snappy_encode(payload, xerial_compatible=True)
    raw = bytes(cramjam.snappy.compress_raw(payload))
    assert decompress(CompressionType.SNAPPY, xerial, len(payload)) == payload
    assert decompress(CompressionType.SNAPPY, raw, len(payload)) == payload
    with pytest.raises(KafkaError):
        decompress(CompressionType.SNAPPY, raw, len(payload) - 1)


def test_lz4_frames_have_independent_blocks() -> None:
    framed = compress(CompressionType.LZ4, b"abc" * 100_000)
    assert framed[:4] == b"\x04\x22\x4d\x18"  # LZ4 frame magic
    assert framed[4] & 0x20  # FLG: block independence (Kafka rejects linked blocks)
    assert lz4.frame.decompress(framed) == b"abc" * 100_000


def test_zstd_frames_without_content_size_and_several_frames() -> None:
    payload = os.urandom(3000) * 30
    streamer = zstandard.ZstdCompressor().compressobj()
    no_size = streamer.compress(payload) + streamer.flush()
    assert zstandard.frame_content_size(no_size) == -1
    assert decompress(CompressionType.ZSTD, no_size, len(payload)) == payload
    two = no_size + compress(CompressionType.ZSTD, b"tail")
    assert decompress(CompressionType.ZSTD, two, len(payload) + 4) == payload + b"tail"
    with pytest.raises(KafkaError):
        decompress(CompressionType.ZSTD, no_size, len(payload) - 1)


def test_gzip_accepts_concatenated_members() -> None:
    data = compress(CompressionType.GZIP, b"one") + compress(CompressionType.GZIP, b"two")
    assert decompress(CompressionType.GZIP, data, 6) == b"onetwo"


def test_unknown_codec_is_corrupt_message() -> None:
    with pytest.raises(KafkaError) as info:
        decompress(7, b"x", 10)
    assert info.value.code == ErrorCode.CORRUPT_MESSAGE


@settings(max_examples=25, deadline=None)
@given(ctype=st.sampled_from(CODECS), payload=st.binary(max_size=2000))
def test_round_trip_property(ctype: CompressionType, payload: bytes) -> None:
    assert decompress(ctype, compress(ctype, payload), len(payload)) == payload


@settings(max_examples=40, deadline=None)
@given(ctype=st.sampled_from(CODECS[1:]), garbage=st.binary(max_size=300))
def test_garbage_raises_only_corrupt_message(ctype: CompressionType, garbage: bytes) -> None:
    code = ErrorCode.CORRUPT_MESSAGE
    try:
        decompress(ctype, garbage, 1 << 16)
    except KafkaError as exc:
        code = exc.code
    assert code == ErrorCode.CORRUPT_MESSAGE
