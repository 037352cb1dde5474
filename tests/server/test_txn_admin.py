"""Transaction admin APIs over the wire: DescribeTransactions, ListTransactions,
DescribeProducers and WriteTxnMarkers against an in-process broker; transactional id
expiration across a restart."""

from __future__ import annotations

import struct
import uuid
from types import SimpleNamespace
from typing import Any

import trio

from pykbroker.api.context import Endpoint, RequestContext
from pykbroker.api.handlers import describe_producers as describe_producers_handler
from pykbroker.api.handlers import write_txn_markers as write_txn_markers_handler
from pykbroker.api.protocol.api_keys import ApiKey
from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.api.protocol.header import RequestHeader, encode_request_header
from pykbroker.log.producer_state import ProducerStateEntry, ProducerStateManager
from pykbroker.metadata.image import MetadataImage, PartitionRegistration, TopicImage
from pykbroker.testing import serve
from tests.wire import WireClient

from .test_broker_requests import create_topic
from .test_transactions import add_partition, data_values, end_txn, fetch, init_txn, produce
from .test_transactions import txn_batch as data_batch


async def describe_txns(client: WireClient, *ids: str) -> dict[str, dict[str, Any]]:
    response = await client.request(
        ApiKey.DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": list(ids)}
    )
    return {s["transactional_id"]: s for s in response["transaction_states"]}


async def list_txns(client: WireClient, version: int = 2, **filters: Any) -> dict[str, Any]:
    body = {
        "state_filters": [],
        "producer_id_filters": [],
        "duration_filter": -1,
        "transactional_id_pattern": None,
        **filters,
    }
    response: dict[str, Any] = await client.request(ApiKey.LIST_TRANSACTIONS, version, body)
    return response


def listed(response: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (s["transactional_id"], s["transaction_state"]) for s in response["transaction_states"]
    )


async def describe_producers(
    client: WireClient, topics: list[tuple[str, list[int]]]
) -> list[dict[str, Any]]:
    response = await client.request(
        ApiKey.DESCRIBE_PRODUCERS,
        0,
        {"topics": [{"name": n, "partition_indexes": p} for n, p in topics]},
    )
    result: list[dict[str, Any]] = response["topics"]
    return result


def marker(
    pid: int,
    epoch: int,
    commit: bool,
    partitions: list[tuple[str, int]],
    coordinator_epoch: int = 0,
) -> dict[str, Any]:
    by_topic: dict[str, list[int]] = {}
    for topic, index in partitions:
        by_topic.setdefault(topic, []).append(index)
    return {
        "producer_id": pid,
        "producer_epoch": epoch,
        "transaction_result": commit,
        "topics": [{"name": t, "partition_indexes": p} for t, p in by_topic.items()],
        "coordinator_epoch": coordinator_epoch,
    }


async def write_markers(client: WireClient, *markers: dict[str, Any]) -> dict[int, dict[Any, int]]:
    response = await client.request(ApiKey.WRITE_TXN_MARKERS, 1, {"markers": list(markers)})
    return {
        m["producer_id"]: {
            (t["name"], p["partition_index"]): p["error_code"]
            for t in m["topics"]
            for p in t["partitions"]
        }
        for m in response["markers"]
    }


async def test_describe_and_list_transactions_follow_the_coordinator() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "t", partitions=2)
        pid_a, epoch_a = await init_txn(client, "tx-a", timeout_ms=45_000)
        pid_b, _ = await init_txn(client, "tx-b")
        assert await add_partition(client, "tx-a", pid_a, epoch_a, "t") == ErrorCode.NO_ERROR
        await produce(client, "t", data_batch(pid_a, epoch_a, 0, b"x"))

        described = await describe_txns(client, "tx-a", "tx-b", "nope", "")
        a = described["tx-a"]
        assert a["error_code"] == ErrorCode.NO_ERROR
        assert a["transaction_state"] == "Ongoing"
        assert (a["producer_id"], a["producer_epoch"]) == (pid_a, epoch_a)
        assert a["transaction_timeout_ms"] == 45_000
        assert a["transaction_start_time_ms"] > 0
        assert a["topics"] == [{"topic": "t", "partitions": [0]}]
        b = described["tx-b"]
        assert (b["transaction_state"], b["producer_id"], b["topics"]) == ("Empty", pid_b, [])
        assert b["transaction_start_time_ms"] == -1
        assert described["nope"]["error_code"] == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
        assert described["nope"]["transaction_state"] == ""
        assert described[""]["error_code"] == ErrorCode.INVALID_REQUEST

        everything = await list_txns(client, version=0)
        assert everything["error_code"] == ErrorCode.NO_ERROR
        assert listed(everything) == [("tx-a", "Ongoing"), ("tx-b", "Empty")]
        assert {s["producer_id"] for s in everything["transaction_states"]} == {pid_a, pid_b}
        ongoing = await list_txns(client, state_filters=["Ongoing", "Bogus"])
        assert listed(ongoing) == [("tx-a", "Ongoing")]
        assert ongoing["unknown_state_filters"] == ["Bogus"]
        only_unknown = await list_txns(client, state_filters=["ongoing"])  # case-sensitive
        assert (listed(only_unknown), only_unknown["unknown_state_filters"]) == ([], ["ongoing"])
        assert listed(await list_txns(client, producer_id_filters=[pid_b, 999_999])) == [
            ("tx-b", "Empty")
        ]
        assert listed(await list_txns(client, producer_id_filters=[-1, 2**63 - 1])) == []
        # duration: only transactions started more than that long ago; an id that never
        # started one has start time -1, so Kafka lists it for any duration
        assert listed(await list_txns(client, version=1, duration_filter=3_600_000)) == [
            ("tx-b", "Empty")
        ]
        await trio.sleep(0.02)
        assert listed(await list_txns(client, version=1, duration_filter=1)) == [
            ("tx-a", "Ongoing"),
            ("tx-b", "Empty"),
        ]
        assert listed(await list_txns(client, transactional_id_pattern="tx-a")) == [
            ("tx-a", "Ongoing")
        ]
        assert listed(await list_txns(client, transactional_id_pattern="tx")) == []  # whole id
        assert len(listed(await list_txns(client, transactional_id_pattern="tx-[ab]"))) == 2
        assert len(listed(await list_txns(client, transactional_id_pattern=""))) == 2
        bad = await list_txns(client, transactional_id_pattern="tx-(")
        assert bad["error_code"] == ErrorCode.INVALID_REGULAR_EXPRESSION
        assert bad["transaction_states"] == []

        assert await end_txn(client, "tx-a", pid_a, epoch_a, True) == ErrorCode.NO_ERROR
        done = (await describe_txns(client, "tx-a"))["tx-a"]
        assert (done["transaction_state"], done["topics"]) == ("CompleteCommit", [])
        assert listed(await list_txns(client, state_filters=["CompleteCommit"])) == [
            ("tx-a", "CompleteCommit")
        ]
        assert (await describe_txns(client)) == {}
        await client.aclose()


async def test_describe_producers_shows_the_partition_producer_state() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "p", partitions=2)
        pid, epoch = await init_txn(client, "tx-p")
        await add_partition(client, "tx-p", pid, epoch, "p")
        assert (await produce(client, "p", data_batch(pid, epoch, 0, b"a", b"b", b"c")))[
            "error_code"
        ] == 0

        [topic] = await describe_producers(client, [("p", [0, 1])])
        first, second = topic["partitions"]
        assert (first["partition_index"], first["error_code"]) == (0, ErrorCode.NO_ERROR)
        [state] = first["active_producers"]
        assert (state["producer_id"], state["producer_epoch"]) == (pid, epoch)
        assert state["last_sequence"] == 2
        assert state["last_timestamp"] > 0
        assert state["coordinator_epoch"] == -1  # no marker yet
        assert state["current_txn_start_offset"] == 0
        assert (second["error_code"], second["active_producers"]) == (ErrorCode.NO_ERROR, [])

        assert await end_txn(client, "tx-p", pid, epoch, False) == ErrorCode.NO_ERROR
        [topic] = await describe_producers(client, [("p", [0])])
        [state] = topic["partitions"][0]["active_producers"]
        assert state["current_txn_start_offset"] == -1
        assert state["last_sequence"] == 2
        assert state["coordinator_epoch"] == 0

        # bad input: Kafka's error codes, request order kept, nothing crashes
        answered = await describe_producers(
            client,
            [("nope", [0, 1]), ("bad/name", [0]), ("p", [7, -1, 2**31 - 1, 0]), ("p", [])],
        )
        assert [t["name"] for t in answered] == ["nope", "bad/name", "p", "p"]
        nope, bad, out_of_range, empty = answered
        assert [p["error_code"] for p in nope["partitions"]] == [
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        ] * 2
        assert nope["partitions"][0]["error_message"]
        assert bad["partitions"][0]["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        assert [p["error_code"] for p in out_of_range["partitions"]] == [
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode.NO_ERROR,
        ]
        assert empty["partitions"] == []
        assert await describe_producers(client, []) == []
        await client.aclose()


async def test_write_txn_markers_abort_hides_the_records_from_read_committed() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "w", partitions=2)
        # a hanging transaction: data written, the coordinator never ends it
        pid, epoch = await init_txn(client, "tx-w")
        await add_partition(client, "tx-w", pid, epoch, "w")
        await produce(client, "w", data_batch(pid, epoch, 0, b"h1", b"h2"))
        assert (await fetch(client, "w", 1))["last_stable_offset"] == 0

        errors = await write_markers(
            client, marker(pid, epoch, False, [("w", 0), ("w", 0), ("w", 1)])
        )
        assert errors == {pid: {("w", 0): ErrorCode.NO_ERROR, ("w", 1): ErrorCode.NO_ERROR}}
        committed = await fetch(client, "w", 1)
        assert committed["last_stable_offset"] == 3  # h1 h2 ABORT
        assert committed["aborted_transactions"] == [{"producer_id": pid, "first_offset": 0}]
        assert data_values(committed["records"]) == [b"h1", b"h2"]  # skipped by the client
        [topic] = await describe_producers(client, [("w", [0, 1])])
        states = [p["active_producers"] for p in topic["partitions"]]
        assert states[0][0]["current_txn_start_offset"] == -1
        # a marker alone creates the producer's entry, as in Kafka
        assert (states[1][0]["producer_id"], states[1][0]["last_sequence"]) == (pid, -1)

        # a stale producer epoch, a stale coordinator epoch
        assert await write_markers(client, marker(pid, epoch - 1, True, [("w", 0)])) == {
            pid: {("w", 0): ErrorCode.INVALID_PRODUCER_EPOCH}
        }
        assert await write_markers(client, marker(pid, epoch, True, [("w", 0)], -1)) == {
            pid: {("w", 0): ErrorCode.TRANSACTION_COORDINATOR_FENCED}
        }
        # unknown partitions; two markers of one producer id are answered together; a marker
        # with no partitions is not answered
        answered = await write_markers(
            client,
            marker(pid, epoch, True, [("nope", 0), ("w", 9)]),
            marker(pid, epoch, True, [("w", -1)]),
            marker(pid, epoch, True, []),
        )
        assert answered == {
            pid: {
                ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                ("w", 9): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                ("w", -1): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            }
        }
        assert await write_markers(client) == {}
        # absurd ids never crash the broker
        for absurd in (
            marker(2**63 - 1, 32767, True, [("w", 1)]),
            marker(-1, -1, False, [("w", 1)]),
        ):
            result = await write_markers(client, absurd)
            assert set(result) == {absurd["producer_id"]}
        assert (await fetch(client, "w", 1))["error_code"] == ErrorCode.NO_ERROR

        # the coordinator still ends its transaction (the marker is idempotent for readers)
        assert await end_txn(client, "tx-w", pid, epoch, False) == ErrorCode.NO_ERROR
        await client.aclose()


async def test_write_txn_markers_commit_makes_the_records_visible() -> None:
    async with serve() as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "c")
        pid, epoch = await init_txn(client, "tx-c")
        await add_partition(client, "tx-c", pid, epoch, "c")
        await produce(client, "c", data_batch(pid, epoch, 0, b"v"))
        assert await write_markers(client, marker(pid, epoch, True, [("c", 0)], 3)) == {
            pid: {("c", 0): ErrorCode.NO_ERROR}
        }
        committed = await fetch(client, "c", 1)
        assert committed["last_stable_offset"] == 2
        assert not committed["aborted_transactions"]
        assert data_values(committed["records"]) == [b"v"]
        [topic] = await describe_producers(client, [("c", [0])])
        assert topic["partitions"][0]["active_producers"][0]["coordinator_epoch"] == 3
        await client.aclose()


async def test_expired_transactional_ids_are_removed_for_good(tmp_path: Any) -> None:
    expiring = {
        "transactional_id_expiration_ms": 200,
        "transaction_remove_expired_transaction_cleanup_interval_ms": 50,
    }
    async with serve(log_dirs=str(tmp_path), **expiring) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        await create_topic(client, "e")
        old_pid, _ = await init_txn(client, "tx-old")
        pid, epoch = await init_txn(client, "tx-open")
        await add_partition(client, "tx-open", pid, epoch, "e")
        # The broker's own cleanup task removes the unused id (not the ongoing one).
        for _ in range(200):  # up to 10 s
            described = await describe_txns(client, "tx-old")
            if described["tx-old"]["error_code"] == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND:
                break
            await trio.sleep(0.05)
        else:
            raise AssertionError(f"tx-old was not expired: {described}")
        assert listed(await list_txns(client)) == [("tx-open", "Ongoing")]
        await client.aclose()
    async with serve(log_dirs=str(tmp_path)) as broker:
        client = await WireClient.connect(broker.bootstrap_servers)
        assert (await describe_txns(client, "tx-old"))["tx-old"]["error_code"] == (
            ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
        )
        assert listed(await list_txns(client)) == [("tx-open", "Ongoing")]
        new_pid, new_epoch = await init_txn(client, "tx-old")  # a new id: a new producer id
        assert new_pid != old_pid
        assert new_epoch == 0
        await client.aclose()


async def test_malformed_admin_requests_close_the_connection_only() -> None:
    async with serve() as broker:
        for api_key, version, body in (
            (ApiKey.LIST_TRANSACTIONS, 0, b"\x00\x00\x00"),  # null state filters
            (ApiKey.DESCRIBE_PRODUCERS, 0, b"\x00\x00"),  # null topics
            (ApiKey.DESCRIBE_TRANSACTIONS, 0, b"\x02\x00\x00"),  # a null transactional id
            (ApiKey.WRITE_TXN_MARKERS, 1, b"\x02\xff"),  # truncated marker
            (ApiKey.WRITE_TXN_MARKERS, 0, b""),  # removed in Kafka 4.0
            (ApiKey.LIST_TRANSACTIONS, 3, b"\x01\x01\x00"),  # newer than Kafka 4.1
        ):
            client = await WireClient.connect(broker.bootstrap_servers)
            payload = encode_request_header(api_key, version, 1, "test") + body
            await client.send_raw(struct.pack(">i", len(payload)) + payload)
            with trio.fail_after(5):
                assert await client.receive_frame() is None
            await client.aclose()
        client = await WireClient.connect(broker.bootstrap_servers)
        assert (await list_txns(client))["error_code"] == ErrorCode.NO_ERROR
        await client.aclose()


class _ReplicaBroker:
    """A broker that follows partition 0 of "r" and has no replica of partition 1."""

    def __init__(self, follower: Any) -> None:
        registration = PartitionRegistration((2, 1), (2, 1), 2, 5, 0)
        topic = TopicImage("r", uuid.UUID(int=9), {0: registration, 1: registration})
        image = MetadataImage(topics={"r": topic}, topics_by_id={topic.topic_id: topic})
        partitions = {("r", 0): follower}
        self.services: dict[str, Any] = {
            "controller": SimpleNamespace(image=image),
            "replica_manager": SimpleNamespace(
                get_partition=lambda topic, index: partitions.get((topic, index))
            ),
        }
        self.config: Any = None
        self.cluster_id = "cluster"

    def endpoint(self) -> Endpoint:
        return Endpoint(1, "broker.local", 9092)

    def service(self, name: str) -> Any:
        return self.services[name]


async def test_followers_describe_producers_but_refuse_markers(tmp_path: Any) -> None:
    state = ProducerStateManager(tmp_path)
    state.producers[42] = ProducerStateEntry(42, 3, current_txn_first_offset=10)
    broker = _ReplicaBroker(
        SimpleNamespace(is_leader=False, log=SimpleNamespace(producer_state=state))
    )

    def ctx(api_key: int, version: int) -> RequestContext:
        return RequestContext(RequestHeader(api_key, version, 1, "t", 2), broker, "127.0.0.1", "c")

    described = await describe_producers_handler.handle(
        ctx(ApiKey.DESCRIBE_PRODUCERS, 0), {"topics": [{"name": "r", "partition_indexes": [0, 1]}]}
    )
    follower, absent = described["topics"][0]["partitions"]
    assert follower["error_code"] == ErrorCode.NO_ERROR
    assert [
        (p["producer_id"], p["current_txn_start_offset"]) for p in follower["active_producers"]
    ] == [(42, 10)]
    assert absent["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER

    written = await write_txn_markers_handler.handle(
        ctx(ApiKey.WRITE_TXN_MARKERS, 1), {"markers": [marker(42, 3, False, [("r", 0), ("r", 1)])]}
    )
    [result] = written["markers"]
    assert [(p["partition_index"], p["error_code"]) for p in result["topics"][0]["partitions"]] == [
        (0, ErrorCode.NOT_LEADER_OR_FOLLOWER),
        (1, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    assert state.producers[42].current_txn_first_offset == 10  # nothing written
