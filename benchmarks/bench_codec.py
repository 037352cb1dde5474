"""Codec speed: decode and encode time per request, and the protocol package's import time.

    python benchmarks/bench_codec.py [--iterations N]

Prints a table for Produce, Fetch, Metadata and OffsetCommit at their newest versions (the
first call of each builds and caches the codec; that one-off cost is shown separately), and the
time to import ``pykbroker.api.protocol`` in a fresh interpreter (start-up must not pay for
compiling every message). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pykbroker.api.protocol import codec  # noqa: E402
from pykbroker.api.protocol.registry import request_message  # noqa: E402
from pykbroker.log.record_batch import Record, build_batch  # noqa: E402


def samples() -> dict[str, tuple[int, int, dict[str, Any]]]:
    batch = build_batch([Record(b"key-%d" % i, b"v" * 100) for i in range(100)])
    topic_id = uuid.uuid4()
    return {
        "Produce v13 (1 batch, 100 x 100 B)": (
            0,
            13,
            {
                "transactional_id": None,
                "acks": -1,
                "timeout_ms": 30000,
                "topic_data": [
                    {"topic_id": topic_id, "partition_data": [{"index": 0, "records": batch}]}
                ],
            },
        ),
        "Fetch v18 (10 partitions)": (
            1,
            18,
            {
                "max_wait_ms": 500,
                "min_bytes": 1,
                "max_bytes": 52428800,
                "isolation_level": 0,
                "session_id": 0,
                "session_epoch": -1,
                "topics": [
                    {
                        "topic_id": topic_id,
                        "partitions": [
                            {"partition": p, "fetch_offset": 1000, "partition_max_bytes": 1048576}
                            for p in range(10)
                        ],
                    }
                ],
                "rack_id": "",
            },
        ),
        "Metadata v13 (3 topics)": (
            3,
            13,
            {"topics": [{"name": f"topic-{i}", "topic_id": uuid.UUID(int=0)} for i in range(3)]},
        ),
        "OffsetCommit v9 (10 partitions)": (
            8,
            9,
            {
                "group_id": "group",
                "generation_id_or_member_epoch": 5,
                "member_id": "member-1",
                "group_instance_id": None,
                "topics": [
                    {
                        "name": "topic",
                        "partitions": [
                            {
                                "partition_index": p,
                                "committed_offset": 12345,
                                "committed_leader_epoch": 0,
                                "committed_metadata": "",
                            }
                            for p in range(10)
                        ],
                    }
                ],
            },
        ),
    }


def per_call_us(fn: Any, iterations: int) -> float:
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(iterations):
            fn()
        runs.append((time.perf_counter() - began) / iterations * 1e6)
    return statistics.median(runs)


def import_time_ms() -> float:
    runs = []
    for _ in range(5):
        code = (
            "import time; t=time.perf_counter(); import pykbroker.api.protocol.codec, "
            "pykbroker.api.protocol.registry, pykbroker.api.protocol.header; "
            "print((time.perf_counter()-t)*1000)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        )
        runs.append(float(out.stdout.strip()))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    print(f"{'request':<38} {'first use':>10} {'decode':>10} {'encode':>10} {'bytes':>7}")
    for name, (api_key, version, body) in samples().items():
        message = request_message(api_key)
        began = time.perf_counter()
        data = codec.encode(message, version, body)
        first_ms = (time.perf_counter() - began) * 1000
        decode = per_call_us(
            lambda m=message, v=version, d=data: codec.decode(m, v, d), args.iterations
        )
        encode = per_call_us(
            lambda m=message, v=version, b=body: codec.encode(m, v, b), args.iterations
        )
        print(f"{name:<38} {first_ms:>8.2f}ms {decode:>8.1f}us {encode:>8.1f}us {len(data):>7}")
    print(f"\nimport pykbroker.api.protocol (codec, registry, header): {import_time_ms():.1f} ms")


if __name__ == "__main__":
    main()
