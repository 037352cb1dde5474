"""Client-independent helpers: deadlines, test records, comparisons."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Explicit CreateTime timestamps, deliberately not monotonic (Kafka keeps whatever it is given).
BASE_TS = 1_700_000_000_000


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` s pass (then fail)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except Exception as exc:  # noqa: BLE001 - remembered and reported on timeout
            last_error = exc
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


class Deadline:
    def __init__(self, seconds: float, what: str) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def check(self, detail: str = "") -> None:
        if self.expired():
            raise AssertionError(f"timed out after {self.seconds:.0f}s: {self.what} {detail}")


@dataclass(frozen=True)
class Rec:
    """A record as a test sends it and as it must come back (offset filled in on the way back)."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None
    partition: int = 0
    offset: int | None = None

    def without_offset(self) -> Rec:
        return Rec(self.key, self.value, self.headers, self.timestamp, self.partition)


def make_records(n: int, *, seed: int = 0, partition: int = 0, big_every: int = 0) -> list[Rec]:
    """``n`` varied records: binary keys and values, null keys, empty values, a tombstone,
    0-3 headers (duplicate names, empty values), explicit non-monotonic timestamps."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i % 7 == 3:
            key = None
        elif i % 11 == 5:
            key = b""
        else:
            key = f"key-{i}-".encode() + rnd.randbytes(rnd.randint(0, 8))
        if i % 13 == 6 and key is not None:
            value = None  # tombstone (kafka-python refuses a record with neither key nor value)
        elif i % 9 == 4:
            value = b""
        elif big_every and i % big_every == big_every - 1:
            value = rnd.randbytes(150_000)
        else:
            value = bytes([i % 256]) + rnd.randbytes(rnd.randint(0, 300))
        headers = [(f"h{h}", rnd.randbytes(h * 3)) for h in range(i % 4)]
        if i % 5 == 2:
            headers.append(("h0", b"dup"))
        ts = BASE_TS + i * 1000 - (500 if i % 3 == 0 else 0)
        out.append(Rec(key, value, tuple(headers), ts, partition))
    return out


def assert_same_records(got: Iterable[Rec], sent: list[Rec], *, first_offset: int = 0) -> None:
    """``got`` must be ``sent`` exactly, in order, at contiguous offsets from ``first_offset``."""
    got = list(got)
    assert len(got) == len(sent), f"got {len(got)} records, sent {len(sent)}"
    for i, (g, s) in enumerate(zip(got, sent, strict=True)):
        assert g.offset == first_offset + i, f"record {i}: offset {g.offset} != {first_offset + i}"
        assert g.without_offset() == s.without_offset(), f"record {i} differs:\n got {g}\nsent {s}"
