"""Hostile input over real sockets while a well-behaved producer runs (issue 3).

Thousands of random, mutated, truncated and oversize frames go to a broker process from several
connections at once. Afterwards the broker still answers, every record the producer had
acknowledged reads back in order, and the broker's resident memory has not run away.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.log.record_batch import Record, build_batch
from tests.server.test_broker_requests import fetch_body, produce_body, records_of
from tests.wire import WireClient, encode_request

from .conftest import BrokerProcess

pytestmark = pytest.mark.compat

ATTACKERS = 8
FRAMES_PER_ATTACKER = 1000
PRODUCED_BATCHES = 300
TOPIC = "stress"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _valid_frames() -> list[bytes]:
    batch = build_batch([Record(b"k", b"v" * 100)])
    return [
        encode_request(ApiKey.PRODUCE, 9, produce_body(TOPIC, batch), 1),
        encode_request(ApiKey.METADATA, 12, {"topics": None}, 2),
        encode_request(ApiKey.FETCH, 12, fetch_body(TOPIC, 0), 3),
        encode_request(
            ApiKey.JOIN_GROUP,
            7,
            {
                "group_id": "g",
                "session_timeout_ms": 6000,
                "rebalance_timeout_ms": 6000,
                "member_id": "",
                "protocol_type": "consumer",
                "protocols": [],
            },
            4,
        ),
        encode_request(
            ApiKey.API_VERSIONS, 3, {"client_software_name": "x", "client_software_version": "1"}, 5
        ),
    ]


def _hostile_frame(rng: random.Random, valid: list[bytes]) -> bytes:
    kind = rng.randrange(6)
    base = bytearray(rng.choice(valid))
    if kind == 0:  # random body of a plausible size
        body = rng.randbytes(rng.randrange(0, 300))
        return struct.pack(">i", len(body)) + body
    if kind == 1:  # bit flips in a valid request (size prefix kept)
        for _ in range(rng.randrange(1, 8)):
            position = rng.randrange(4, len(base))
            base[position] ^= 1 << rng.randrange(8)
        return bytes(base)
    if kind == 2:  # truncated: claims more than it sends
        return bytes(base[: rng.randrange(4, len(base))])
    if kind == 3:  # oversize size prefix
        return struct.pack(">i", rng.choice([2**31 - 1, 200_000_000, -5])) + rng.randbytes(16)
    if kind == 4:  # huge array / string counts inside a valid header
        position = rng.randrange(14, max(15, len(base) - 4))
        base[position : position + 4] = b"\x7f\xff\xff\xff"
        return bytes(base)
    # an unknown API key or version
    base[4:8] = struct.pack(">hh", rng.choice([999, -1, 0, 1]), rng.choice([-1, 99, 0]))
    return bytes(base)


async def _attack(bootstrap: str, seed: int, valid: list[bytes]) -> int:
    return await _attack_loop(bootstrap, random.Random(seed), valid, None)


async def _attack_loop(
    bootstrap: str, rng: random.Random, valid: list[bytes], client: WireClient | None
) -> int:
    sent = 0
    while sent < FRAMES_PER_ATTACKER:
        if client is None or rng.random() < 0.1:
            if client is not None:
                await client.aclose()
                client = None
            client = await WireClient.connect(bootstrap)
        try:
            await client.send_raw(_hostile_frame(rng, valid))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await client.aclose()
            client = None
        except BaseException:
            await client.aclose()
            raise
        sent += 1
        if sent % 20 == 0:
            await trio.lowlevel.checkpoint()
    if client is not None:
        await client.aclose()
    return sent


async def _produce(bootstrap: str, acked: dict[int, bytes]) -> None:
    client = await WireClient.connect(bootstrap)
    try:
        for index in range(PRODUCED_BATCHES):
            value = b"record-%06d" % index
            response = await client.request(
                ApiKey.PRODUCE, 9, produce_body(TOPIC, build_batch([Record(None, value)]), acks=1)
            )
            part = response["responses"][0]["partition_responses"][0]
            assert part["error_code"] == ErrorCode.NO_ERROR
            acked[part["base_offset"]] = value
    finally:
        await client.aclose()


def test_hostile_frames_do_not_hurt_the_broker_or_a_producer(broker: BrokerProcess) -> None:
    bootstrap = broker.bootstrap_servers
    acked: dict[int, bytes] = {}

    async def main() -> None:
        setup = await WireClient.connect(bootstrap)
        created = await setup.request(
            ApiKey.CREATE_TOPICS,
            7,
            {
                "topics": [
                    {
                        "name": TOPIC,
                        "num_partitions": 1,
                        "replication_factor": 1,
                        "assignments": [],
                        "configs": [],
                    }
                ],
                "timeout_ms": 5000,
            },
        )
        assert created["topics"][0]["error_code"] == ErrorCode.NO_ERROR
        rss_before = _rss_kib(broker.pid)
        valid = _valid_frames()
        with trio.fail_after(240):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_produce, bootstrap, acked)
                for seed in range(ATTACKERS):
                    nursery.start_soon(_attack, bootstrap, seed, valid)
        assert len(acked) == PRODUCED_BATCHES
        got: dict[int, bytes | None] = {}
        offset = 0
        end = max(acked) + 1
        while offset < end:
            fetched = await setup.request(ApiKey.FETCH, 12, fetch_body(TOPIC, offset))
            part = fetched["responses"][0]["partitions"][0]
            assert part["error_code"] == ErrorCode.NO_ERROR
            records = [r for r in records_of(part["records"]) if r.offset >= offset]
            assert records, "no progress reading back"
            got.update((r.offset, r.value) for r in records)
            offset = records[-1].offset + 1
        # Mutated produce frames may have added records of their own (a flipped bit outside the
        # batch still makes a valid request); every acknowledged record is at its offset.
        assert {o: got.get(o) for o in acked} == acked
        assert sorted(acked) == sorted(acked, key=lambda o: acked[o])
        rss_after = _rss_kib(broker.pid)
        assert rss_after - rss_before < 150 * 1024, (rss_before, rss_after)
        await setup.aclose()

    trio.run(main)
    assert broker.running
