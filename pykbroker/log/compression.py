"""Record batch compression codecs, after Kafka's ``CompressionType`` and ``Compression``.

Mirrors ``org.apache.kafka.common.record.CompressionType``: the three low bits of a v2
batch's ``attributes`` name the codec of the records section.

Invariant: ``decompress`` never returns (nor allocates much beyond) more than
``max_size`` bytes, and every malformed input raises ``KafkaError(CORRUPT_MESSAGE)``,
never a codec library's own exception. Pure: no file I/O, no clock.

Framing, as Java Kafka and librdkafka write it:

- gzip: a standard gzip stream (several members are accepted, as ``GZIPInputStream``).
- snappy: Xerial block framing (``b"\\x82SNAPPY\\x00"``, version and compat int32, then
  ``[int32 length, raw snappy block]*``); a raw snappy block is accepted too.
- lz4: LZ4 frame format with independent blocks (Kafka rejects linked blocks).
- zstd: zstandard frames, with or without the content size in the frame header.
"""

from __future__ import annotations

import struct
import zlib
from enum import IntEnum
from typing import cast

import cramjam
import lz4.frame
import zstandard

from pykbroker.api.protocol.errors import ErrorCode, KafkaError

__all__ = ["CompressionType", "compress", "decompress"]


class CompressionType(IntEnum):
    """Kafka's codec ids (``attributes & 0x07`` of a v2 batch)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK_SIZE = 32 * 1024  # xerial's default, as Java Kafka writes
_INT32 = struct.Struct(">i")

_GZIP_LEVEL = 6  # java.util.zip.Deflater default, what Kafka's producer uses
_ZSTD_LEVEL = 3  # zstd default, Kafka's compression.zstd.level default
_CHUNK = 64 * 1024

_zstd_compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
_zstd_decompressor = zstandard.ZstdDecompressor()


def compress(ctype: CompressionType | int, data: bytes | bytearray | memoryview) -> bytes:
    """Compress ``data`` with Kafka's framing for ``ctype``."""
    ctype = CompressionType(ctype)
    if ctype is CompressionType.NONE:
        return bytes(data)
    if ctype is CompressionType.GZIP:
        co = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return co.compress(data) + co.flush()
    if ctype is CompressionType.SNAPPY:
        return _xerial_snappy_compress(memoryview(data))
    if ctype is CompressionType.LZ4:
        return cast(
            bytes,
            lz4.frame.compress(
                data,
                block_size=lz4.frame.BLOCKSIZE_MAX64KB,
                block_linked=False,
                content_checksum=False,
                store_size=False,
            ),
        )
    return _zstd_compressor.compress(data)


def decompress(
    ctype: CompressionType | int, data: bytes | bytearray | memoryview, max_size: int
) -> bytes:
    """Decompress ``data``; more than ``max_size`` output bytes is CORRUPT_MESSAGE."""
    try:
        ctype = CompressionType(ctype)
    except ValueError:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"unknown compression type {ctype}") from None
    if ctype is CompressionType.NONE:
        out = bytes(data)
    elif ctype is CompressionType.GZIP:
        out = _gzip_decompress(data, max_size)
    elif ctype is CompressionType.SNAPPY:
        out = _snappy_decompress(memoryview(data), max_size)
    elif ctype is CompressionType.LZ4:
        out = _lz4_decompress(data, max_size)
    else:
        out = _zstd_decompress(data, max_size)
    if len(out) > max_size:
        raise _too_large(ctype, max_size)
    return out


def _too_large(ctype: CompressionType, max_size: int) -> KafkaError:
    return KafkaError(
        ErrorCode.CORRUPT_MESSAGE, f"{ctype.name} records decompress to more than {max_size} bytes"
    )


def _corrupt(ctype: CompressionType, exc: Exception | str) -> KafkaError:
    return KafkaError(ErrorCode.CORRUPT_MESSAGE, f"invalid {ctype.name} data: {exc}")


def _gzip_decompress(data: bytes | bytearray | memoryview, max_size: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    remaining: bytes | bytearray | memoryview = data
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = d.decompress(remaining, max_size - total + 1)
            total += len(chunk)
            parts.append(chunk)
            if total > max_size:
                raise _too_large(CompressionType.GZIP, max_size)
            if not d.eof:
                if d.unconsumed_tail:  # output bound reached with input left
                    raise _too_large(CompressionType.GZIP, max_size)
                raise _corrupt(CompressionType.GZIP, "truncated stream")
            remaining = d.unused_data
            if not remaining.strip(b"\x00"):  # trailing padding, as GZIPInputStream
                break
    except zlib.error as exc:
        raise _corrupt(CompressionType.GZIP, exc) from None
    return b"".join(parts)


def _xerial_snappy_compress(data: memoryview) -> bytes:
    out = [_XERIAL_HEADER]
    for i in range(0, len(data), _XERIAL_BLOCK_SIZE):
        block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK_SIZE]))
        out.append(_INT32.pack(len(block)))
        out.append(block)
    return b"".join(out)


def _snappy_block(block: memoryview, budget: int, max_size: int) -> bytes:
    try:
        n = cramjam.snappy.decompress_raw_len(block)
        if n > budget:
            raise _too_large(CompressionType.SNAPPY, max_size)
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise _corrupt(CompressionType.SNAPPY, exc) from None


def _snappy_decompress(data: memoryview, max_size: int) -> bytes:
    if bytes(data[:8]) != XERIAL_MAGIC:
        return _snappy_block(data, max_size, max_size)
    if len(data) < 16:
        raise _corrupt(CompressionType.SNAPPY, "truncated xerial header")
    parts: list[bytes] = []
    total = 0
    position = 16
    end = len(data)
    while position < end:
        if data[position : position + 8] == XERIAL_MAGIC:  # concatenated streams
            position += 16
            continue
        if position + 4 > end:
            raise _corrupt(CompressionType.SNAPPY, "truncated xerial block length")
        (length,) = _INT32.unpack_from(data, position)
        position += 4
        if length < 0 or position + length > end:
            raise _corrupt(CompressionType.SNAPPY, "xerial block beyond the end of the data")
        block = _snappy_block(data[position : position + length], max_size - total, max_size)
        total += len(block)
        parts.append(block)
        position += length
    return b"".join(parts)


def _lz4_decompress(data: bytes | bytearray | memoryview, max_size: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    remaining: bytes | bytearray | memoryview = data
    try:
        while True:
            d = lz4.frame.LZ4FrameDecompressor()
            chunk = d.decompress(remaining, max_length=max_size - total + 1)
            total += len(chunk)
            parts.append(chunk)
            if total > max_size:
                raise _too_large(CompressionType.LZ4, max_size)
            if not d.eof:
                raise _corrupt(CompressionType.LZ4, "truncated frame")
            remaining = d.unused_data
            if not remaining:
                break
    except RuntimeError as exc:  # lz4.frame reports bad frames as RuntimeError
        raise _corrupt(CompressionType.LZ4, exc) from None
    return b"".join(parts)


def _zstd_decompress(data: bytes | bytearray | memoryview, max_size: int) -> bytes:
    # Pass 1 only counts, through a streaming reader, so the bound holds before any big
    # allocation (frames written by streaming compressors carry no content size).
    # Pass 2 decodes frame by frame and notices truncated frames, which the reader
    # silently accepts.
    if not data:
        raise _corrupt(CompressionType.ZSTD, "no frame")
    total = 0
    try:
        with _zstd_decompressor.stream_reader(data, read_across_frames=True) as reader:
            while chunk := reader.read(min(_CHUNK, max_size - total + 1)):
                total += len(chunk)
                if total > max_size:
                    raise _too_large(CompressionType.ZSTD, max_size)
        parts: list[bytes] = []
        remaining: bytes | bytearray | memoryview = data
        while remaining:
            d = _zstd_decompressor.decompressobj()
            parts.append(d.decompress(remaining))
            if not d.eof:
                raise _corrupt(CompressionType.ZSTD, "truncated frame")
            remaining = d.unused_data
    except zstandard.ZstdError as exc:
        raise _corrupt(CompressionType.ZSTD, exc) from None
    return b"".join(parts)
