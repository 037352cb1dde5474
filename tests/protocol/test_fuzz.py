"""Garbage in, ``CodecError`` out: decoders never raise anything else, and never allocate more
than the input justifies.

Every decoder is covered: requests and responses of every (api_key, version), and every record
or data schema (request/response headers, ConsumerProtocolSubscription/Assignment, KRaft
control and metadata records, group and transaction coordinator records). For each, a fully
populated encoding (``support.rich_example``) is mutated deterministically (seeded by the
case): bit flips, byte inserts/deletes, every truncation, extension with junk, and huge or
negative length/count prefixes written over every position; random byte strings are added too.
Each decode must succeed or raise ``CodecError``, and the peak memory traced while decoding all
of them must stay small. Then Hypothesis searches each decoder with ``st.binary()`` and with
mutations of the valid encoding (bytes overwritten, a cut, junk appended), a few dozen
examples per case so the whole file stays within seconds. The request header decoder gets the
same treatment, plus a Hypothesis search over random frames.
"""

from __future__ import annotations

import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pykbroker.api.protocol import codec, header
from pykbroker.api.protocol.codec import CodecError
from pykbroker.api.protocol.messages import MODULES
from pykbroker.api.protocol.messages.produce import REQUEST as PRODUCE_REQUEST
from pykbroker.api.protocol.messages.sasl_authenticate import REQUEST as SASL_AUTHENTICATE
from pykbroker.api.protocol.registry import request_message
from pykbroker.api.protocol.schema import Message

from .support import api_version_cases, record_version_cases, rich_example, versions

REQUEST_CASES = list(api_version_cases("request"))
RESPONSE_CASES = list(api_version_cases("response"))
RECORD_CASES = list(record_version_cases())
ALL_CASES = [
    pytest.param(m, v, id=f"{kind}:{i}")
    for kind, cases in (
        ("request", REQUEST_CASES),
        ("response", RESPONSE_CASES),
        ("record", RECORD_CASES),
    )
    for i, m, v in cases
]

#: Hypothesis examples per decoder: ~1,400 decoders, so this bounds the file's run time.
FUZZ_EXAMPLES = 20

#: Peak bytes traced while decoding one case's inputs (each input is at most a few KiB).
PEAK_LIMIT = 2 * 1024 * 1024

#: Length and count prefixes that claim far more than any frame holds, or are invalid.
HUGE_PREFIXES = (
    b"\x7f\xff\xff\xff",  # int32 2 GiB - 1
    b"\x80\x00\x00\x00",  # int32 -2 GiB
    b"\xff\xff\xff\xfe",  # int32 -2
    b"\x7f\xff",  # int16 32767
    b"\xff\xfe",  # int16 -2
    b"\xff\xff\xff\xff\x07",  # uvarint 2**31 - 1
    b"\xff\xff\xff\xff\x0f",  # uvarint 2**32 - 1
    b"\xff\xff\xff\xff\x7f",  # uvarint with 35 significant bits
    b"\x80\x80\x80\x80\x80\x01",  # uvarint longer than 5 bytes
)


def mutations(seed: bytes, rng: random.Random) -> Iterator[bytes]:
    """Deterministic mutations of a valid encoding (truncations are tested separately)."""
    n = len(seed)
    for _ in range(40):  # bit flips
        data = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            if data:
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        yield bytes(data)
    for _ in range(15):  # single-byte inserts and deletes
        pos = rng.randrange(n + 1)
        yield seed[:pos] + bytes([rng.randrange(256)]) + seed[pos:]
        if n:
            yield seed[:pos] + seed[pos + 1 :]
    for pos in range(n):  # huge prefixes written over (and inserted at) every position
        prefix = HUGE_PREFIXES[pos % len(HUGE_PREFIXES)]
        yield seed[:pos] + prefix + seed[pos + len(prefix) :]
        yield seed[:pos] + prefix + seed[pos:]
    for _ in range(10):  # the first bytes kept, the rest random
        pos = rng.randrange(n + 1)
        yield seed[:pos] + rng.randbytes(rng.randrange(1, 32))
    for _ in range(15):  # plain random bytes
        yield rng.randbytes(rng.randrange(0, 64))


def decode_or_codec_error(decode: Callable[[bytes], Any], what: str, data: bytes) -> Any:
    """Run ``decode``; return its result or None on ``CodecError``; fail on anything else."""
    try:
        return decode(data)
    except CodecError:
        return None
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc} on input {data.hex()}"
        ) from exc


def run_traced(inputs: list[bytes], decode: Callable[[bytes], Any], what: str) -> None:
    """Decode every input under tracemalloc; the peak must stay under ``PEAK_LIMIT``."""
    tracemalloc.start()
    try:
        for data in inputs:
            decode_or_codec_error(decode, what, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"{what}: decoding garbage peaked at {peak} bytes"


@pytest.mark.parametrize(("message", "version"), ALL_CASES)
def test_decoder_raises_only_codec_error_on_mutated_bytes(message: Message, version: int) -> None:
    seed = codec.encode(message, version, rich_example(message, version))
    expected = codec.decode(message, version, seed)  # also builds and caches the codec
    what = f"{message.name} v{version}"

    def decode(data: bytes) -> Any:
        return codec.decode(message, version, data)

    for cut in range(len(seed)):
        with pytest.raises(CodecError):
            decode(seed[:cut])
    assert decode(seed + b"\x00\xff junk") == expected, "trailing bytes must be ignored"

    rng = random.Random(what)
    run_traced(list(mutations(seed, rng)), decode, what)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """A valid encoding with a few bytes overwritten, cut somewhere, and junk appended."""
    last = max(len(seed) - 1, 0)
    edits = st.lists(st.tuples(st.integers(0, last), st.integers(0, 255)), max_size=4)

    def apply(parts: tuple[list[tuple[int, int]], int, bytes]) -> bytes:
        changes, cut, junk = parts
        data = bytearray(seed)
        for pos, value in changes:
            if data:
                data[pos] = value
        return bytes(data[:cut]) + junk

    return st.tuples(edits, st.integers(0, len(seed)), st.binary(max_size=8)).map(apply)


@pytest.mark.parametrize(("message", "version"), ALL_CASES)
def test_decoder_raises_only_codec_error_on_hypothesis_bytes(
    message: Message, version: int
) -> None:
    seed = codec.encode(message, version, rich_example(message, version))
    what = f"{message.name} v{version}"

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.one_of(st.binary(max_size=len(seed) + 16), mutated(seed)))
    def check(data: bytes) -> None:
        decode_or_codec_error(lambda b: codec.decode(message, version, b), what, data)

    check()


@pytest.mark.parametrize(
    ("api_key", "version"),
    [
        pytest.param(k, v, id=f"{k}-v{v}")
        for k in sorted(MODULES)
        for v in versions(request_message(k))
    ],
)
def test_request_header_decoder_raises_only_codec_error_on_mutated_bytes(
    api_key: int, version: int
) -> None:
    seed = header.encode_request_header(api_key, version, 123, "client-1")
    decoded, offset = header.decode_request_header(seed)
    assert (decoded.request_api_key, decoded.request_api_version) == (api_key, version)
    assert offset == len(seed)

    def decode(data: bytes) -> Any:
        return header.decode_request_header(data)

    for cut in range(len(seed)):
        with pytest.raises(CodecError):
            decode(seed[:cut])

    rng = random.Random(f"header-{api_key}-{version}")
    run_traced(list(mutations(seed, rng)), decode, f"RequestHeader for {api_key} v{version}")


@given(frame=st.binary(max_size=40))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_request_header_decoder_on_random_frames(frame: bytes) -> None:
    decode_or_codec_error(header.decode_request_header, "decode_request_header", frame)


@given(
    frame=st.tuples(
        st.sampled_from(sorted(MODULES)), st.integers(-2, 20), st.binary(max_size=60)
    ).map(lambda t: t[0].to_bytes(2, "big") + t[1].to_bytes(2, "big", signed=True) + t[2])
)
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_header_then_body_decoding_of_random_frames_raises_only_codec_error(frame: bytes) -> None:
    """What the broker does with a frame: header, then the body at the header's version."""

    def decode(data: bytes) -> Any:
        hdr, offset = header.decode_request_header(data)
        message = request_message(hdr.request_api_key)
        return codec.decode_prefix(message, hdr.request_api_version, data, offset)

    decode_or_codec_error(decode, "header + body", frame)


# --- a few bytes claiming gigabytes fail fast -------------------------------------------------


@pytest.mark.parametrize(
    ("message", "version", "data"),
    [
        pytest.param(SASL_AUTHENTICATE, 0, b"\x7f\xff\xff\xff", id="int32-bytes-2GiB"),
        pytest.param(SASL_AUTHENTICATE, 2, b"\xff\xff\xff\xff\x07", id="compact-bytes-2GiB"),
        pytest.param(
            PRODUCE_REQUEST, 3, b"\xff\xff\x00\x01\x00\x00\x03\xe8\x7f\xff\xff\xff",
            id="int32-array-count-2G",
        ),
        pytest.param(
            PRODUCE_REQUEST, 9, b"\x00\x00\x01\x00\x00\x03\xe8\xff\xff\xff\xff\x07",
            id="compact-array-count-2G",
        ),
        pytest.param(
            PRODUCE_REQUEST, 3, b"\x7f\xff\x00\x01", id="int16-string-32767",
        ),
    ],
)  # fmt: skip
def test_tiny_input_claiming_huge_length_fails_fast_without_allocating(
    message: Message, version: int, data: bytes
) -> None:
    codec.struct_for(message, version)  # build the codec outside the measurement
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(CodecError, match="exceeds the bytes left"):
            codec.decode(message, version, data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.05
    assert peak < 64 * 1024


def test_request_header_claiming_long_client_id_fails_fast() -> None:
    frame = b"\x00\x12\x00\x03\x00\x00\x00\x07\x7f\xff"  # ApiVersions v3, client id of 32767
    with pytest.raises(CodecError, match="exceeds the bytes left"):
        header.decode_request_header(frame)


def test_unknown_api_key_in_header_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="unknown API key"):
        header.decode_request_header(b"\x03\xe7\x00\x00\x00\x00\x00\x01\xff\xff")


def test_body_at_undeclared_version_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="has no version 2"):
        codec.decode(PRODUCE_REQUEST, 2, b"")
