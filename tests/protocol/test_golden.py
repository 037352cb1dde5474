"""Golden bytes: what real clients put on the wire, and what they read back.

* ``SIMPLE_CASES``: hand-checked frames (size, header, body), after h11's ``SIMPLE_CASES``,
  annotated field by field. pykbroker must decode each to the given values and encode those
  values back to the same bytes.
* kafka-python 3.x's own protocol encoder (``kafka.protocol``) writes requests of the
  versions its clients send; pykbroker must decode them to the values given to kafka-python,
  and its own encoding of those values must be byte-identical.
* pykbroker-encoded responses are decoded with kafka-python's response classes.
* Kafka's generated code writes a tagged nullable struct with a varint marker; checked on
  bytes laid out as Kafka's ``NullableStructMessageData`` writes them.
* ``golden/*.json``: request frames captured from real clients (confluent-kafka/librdkafka and
  kafka-python, at the newest versions they negotiate) by ``tools/capture_frames.py``, a
  recording proxy in front of pykbroker. Each decodes to the values the capture scenario used
  (client id, topics, group ids, acks, ...) and re-encodes to the same bytes.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pykbroker.api.protocol import codec, header, registry
from pykbroker.api.protocol.framing import FrameBuffer
from pykbroker.api.protocol.schema import F, M, Message

from .support import message_with_defaults

ZERO_UUID = uuid.UUID(int=0)
TOPIC_ID = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")


def split_frame(data: bytes) -> tuple[header.RequestHeader, dict[str, Any]]:
    """A whole request frame, through FrameBuffer, the header decoder and the body decoder."""
    buffer = FrameBuffer(1 << 20)
    buffer.receive_data(data)
    payload = buffer.next_frame()
    assert payload is not None, "incomplete frame"
    assert buffer.buffered == 0
    hdr, offset = header.decode_request_header(payload)
    message = registry.request_message(hdr.request_api_key)
    body, end = codec.decode_prefix(message, hdr.request_api_version, payload, offset)
    assert end == len(payload), "the body did not fill the frame"
    return hdr, body


def encode_request_frame(
    api_key: int, version: int, correlation_id: int, client_id: str | None, body: dict[str, Any]
) -> bytes:
    payload = header.encode_request_header(api_key, version, correlation_id, client_id)
    payload += codec.encode(registry.request_message(api_key), version, body)
    return struct.pack(">i", len(payload)) + payload


# --- hand-checked frames ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    body: dict[str, Any]  # every field on the wire at this version
    hex: str


SIMPLE_CASES = {
    "ApiVersionsRequest-v3": Case(
        18, 3, 1, "rdkafka",
        {"client_software_name": "librdkafka", "client_software_version": "2.4.0"},
        "00000024"  # frame size 36
        "0012 0003 00000001"  # api key 18, version 3, correlation id 1
        "0007 72646b61666b61"  # client id: int16 length 7, even in header v2
        "00"  # header tagged fields: none
        "0b 6c696272646b61666b61"  # compact string, length 10 + 1: librdkafka
        "06 322e342e30"  # compact string, length 5 + 1: 2.4.0
        "00",  # body tagged fields: none
    ),
    "ApiVersionsRequest-v3-null-client-id": Case(
        18, 3, 0x7FFFFFFF, None,
        {"client_software_name": "", "client_software_version": ""},
        "0000000e"  # frame size 14
        "0012 0003 7fffffff"
        "ffff"  # null client id: int16 -1
        "00"
        "01 01 00",  # two empty compact strings (length 0 + 1), no tags
    ),
    "MetadataRequest-v12": Case(
        3, 12, 2, "rdkafka",
        {
            "topics": [{"topic_id": ZERO_UUID, "name": "orders"}],
            "allow_auto_topic_creation": True,
            "include_topic_authorized_operations": False,
        },
        "0000002e"  # frame size 46
        "0003 000c 00000002 0007 72646b61666b61 00"  # header v2
        "02"  # compact array of 1 topic
        "00000000000000000000000000000000"  # topic id: zero UUID (look up by name)
        "07 6f7264657273"  # compact nullable string: orders
        "00"  # topic tagged fields
        "01"  # allow_auto_topic_creation
        "00"  # include_topic_authorized_operations
        "00",  # tagged fields
    ),
    "MetadataRequest-v12-all-topics": Case(
        3, 12, 3, "c",
        {
            "topics": None,
            "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": True,
        },
        "00000010"  # frame size 16
        "0003 000c 00000003 0001 63 00"
        "00"  # null compact array: every topic
        "00 01 00",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", [pytest.param(c, id=n) for n, c in SIMPLE_CASES.items()])
def test_hand_checked_frame_decodes_to_its_values(case: Case) -> None:
    hdr, body = split_frame(bytes.fromhex(case.hex))
    assert (hdr.request_api_key, hdr.request_api_version) == (case.api_key, case.version)
    assert (hdr.correlation_id, hdr.client_id) == (case.correlation_id, case.client_id)
    message = registry.request_message(case.api_key)
    assert body == message_with_defaults(message, case.version, case.body)


@pytest.mark.parametrize("case", [pytest.param(c, id=n) for n, c in SIMPLE_CASES.items()])
def test_hand_checked_frame_is_what_pykbroker_encodes(case: Case) -> None:
    frame = encode_request_frame(
        case.api_key, case.version, case.correlation_id, case.client_id, case.body
    )
    assert frame.hex() == bytes.fromhex(case.hex).hex()


def test_api_versions_response_v3_hand_checked_bytes() -> None:
    """The broker's first answer: response header v0 (no tagged fields) before a v3 body."""
    message = registry.response_message(18)
    body = {
        "error_code": 0,
        "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}],
        "throttle_time_ms": 0,
    }
    data = header.encode_response_header(5, header.response_header_version(18, 3))
    data += codec.encode(message, 3, body)
    assert data.hex() == (
        "00000005"  # correlation id 5, response header v0: no tagged-field byte
        "0000"  # error code
        "02 0012 0000 0004 00"  # compact array of 1: ApiVersions 0-4, no tags
        "00000000"  # throttle time
        "00"  # tagged fields: none (finalized features epoch etc. at their defaults)
    ).replace(" ", "")


# --- kafka-python's encoder -------------------------------------------------------------------

Body = dict[str, Any]
RECORDS = bytes.fromhex("000000000000000000000010ffffffff02") + b"not-a-real-batch"


@pytest.fixture(scope="module")
def kp() -> SimpleNamespace:
    """kafka-python's protocol classes by name; the tests using them skip without it."""
    names: dict[str, Any] = {}
    for module in ("kafka.protocol.consumer", "kafka.protocol.metadata", "kafka.protocol.producer"):
        mod = pytest.importorskip(module, reason="kafka-python is not installed")
        names.update({name: getattr(mod, name) for name in mod.__all__})
    return SimpleNamespace(**names)


def _api_versions(kp: SimpleNamespace, v: int) -> tuple[Any, Body]:
    body = {"client_software_name": "kafka-python", "client_software_version": "3.0.12"}
    return kp.ApiVersionsRequest(**body), body


def _metadata(kp: SimpleNamespace, v: int) -> tuple[Any, Body]:
    topics: list[Body] = [{"name": "orders"}, {"name": "payments"}]
    if v >= 10:
        topics = [dict(t, topic_id=ZERO_UUID) for t in topics]
    body: Body = {"topics": topics}
    if v >= 4:
        body["allow_auto_topic_creation"] = False
    if v >= 8:
        body["include_topic_authorized_operations"] = True
        if v <= 10:
            body["include_cluster_authorized_operations"] = False
    topic_cls = kp.MetadataRequest.MetadataRequestTopic
    request = kp.MetadataRequest(**dict(body, topics=[topic_cls(**t) for t in topics]))
    return request, body


def _produce(kp: SimpleNamespace, v: int) -> tuple[Any, Body]:
    body: Body = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 30000,
        "topic_data": [
            {"name": "orders", "partition_data": [{"index": 0, "records": RECORDS},
                                                  {"index": 3, "records": None}]},
        ],
    }  # fmt: skip
    topic = kp.ProduceRequest.TopicProduceData
    request = kp.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=30000,
        topic_data=[
            topic(name="orders", partition_data=[
                topic.PartitionProduceData(index=0, records=RECORDS),
                topic.PartitionProduceData(index=3, records=None),
            ]),
        ],
    )  # fmt: skip
    return request, body


def _fetch(kp: SimpleNamespace, v: int) -> tuple[Any, Body]:
    partition: Body = {"partition": 2, "fetch_offset": 1234, "partition_max_bytes": 1048576}
    if v >= 5:
        partition["log_start_offset"] = -1
    if v >= 9:
        partition["current_leader_epoch"] = 7
    if v >= 12:
        partition["last_fetched_epoch"] = 6
    body: Body = {
        "replica_id": -1,
        "max_wait_ms": 500,
        "min_bytes": 1,
        "max_bytes": 52428800,
        "isolation_level": 1,
        "topics": [{"topic": "orders", "partitions": [partition]}],
    }
    if v >= 7:
        body |= {"session_id": 0, "session_epoch": -1, "forgotten_topics_data": []}
    if v >= 11:
        body["rack_id"] = "rack-a"
    topic = kp.FetchRequest.FetchTopic
    kp_body = dict(
        body, topics=[topic(topic="orders", partitions=[topic.FetchPartition(**partition)])]
    )
    return kp.FetchRequest(**kp_body), body


def _join_group(kp: SimpleNamespace, v: int) -> tuple[Any, Body]:
    body: Body = {
        "group_id": "group-1",
        "session_timeout_ms": 45000,
        "rebalance_timeout_ms": 300000,
        "member_id": "",
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocols": [
            {"name": "range", "metadata": b"\x00\x03\x00\x00\x00\x01\x00\x06orders"},
            {"name": "roundrobin", "metadata": b""},
        ],
    }
    if v >= 8:
        body["reason"] = "rebalance"
    kp_body = dict(
        body,
        protocols=[kp.JoinGroupRequest.JoinGroupRequestProtocol(**p) for p in body["protocols"]],
    )
    return kp.JoinGroupRequest(**kp_body), body


def _offset_commit(kp: SimpleNamespace, v: int) -> tuple[Any, Body]:
    partition = {
        "partition_index": 1,
        "committed_offset": 99,
        "committed_leader_epoch": 4,
        "committed_metadata": "meta",
    }
    body: Body = {
        "group_id": "group-1",
        "generation_id_or_member_epoch": 3,
        "member_id": "member-1",
        "group_instance_id": "instance-1",
        "topics": [{"name": "orders", "partitions": [partition]}],
    }
    topic = kp.OffsetCommitRequest.OffsetCommitRequestTopic
    kp_body = dict(
        body,
        topics=[topic(name="orders", partitions=[topic.OffsetCommitRequestPartition(**partition)])],
    )
    return kp.OffsetCommitRequest(**kp_body), body


def _find_coordinator(kp: SimpleNamespace, v: int) -> tuple[Any, Body]:
    body = {"key_type": 1, "coordinator_keys": ["txn-1", "txn-2"]}
    return kp.FindCoordinatorRequest(**body), body


KAFKA_PYTHON_REQUESTS: dict[str, tuple[Callable[[SimpleNamespace, int], tuple[Any, Body]], int]] = {
    "ApiVersions-v3": (_api_versions, 3),
    "ApiVersions-v4": (_api_versions, 4),
    "Metadata-v1": (_metadata, 1),
    "Metadata-v9": (_metadata, 9),
    "Metadata-v12": (_metadata, 12),
    "Produce-v3": (_produce, 3),
    "Produce-v9": (_produce, 9),
    "Fetch-v4": (_fetch, 4),
    "Fetch-v12": (_fetch, 12),
    "JoinGroup-v5": (_join_group, 5),
    "JoinGroup-v9": (_join_group, 9),
    "OffsetCommit-v8": (_offset_commit, 8),
    "FindCoordinator-v4": (_find_coordinator, 4),
}


def kafka_python_frame(request: Any, version: int, correlation_id: int) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="kafka-python-3.0.12")
    payload = bytes(request.encode(version=version, header=True))
    return struct.pack(">i", len(payload)) + payload


@pytest.mark.parametrize(
    ("build", "version"),
    [pytest.param(b, v, id=name) for name, (b, v) in KAFKA_PYTHON_REQUESTS.items()],
)
def test_kafka_python_request_decodes_to_the_values_it_was_given(
    kp: SimpleNamespace, build: Callable[[SimpleNamespace, int], tuple[Any, Body]], version: int
) -> None:
    request, body = build(kp, version)
    frame = kafka_python_frame(request, version, correlation_id=4242)

    hdr, decoded = split_frame(frame)

    assert hdr.request_api_key == request.API_KEY
    assert hdr.request_api_version == version
    assert hdr.correlation_id == 4242
    assert hdr.client_id == "kafka-python-3.0.12"
    message = registry.request_message(request.API_KEY)
    assert decoded == message_with_defaults(message, version, body)


@pytest.mark.parametrize(
    ("build", "version"),
    [pytest.param(b, v, id=name) for name, (b, v) in KAFKA_PYTHON_REQUESTS.items()],
)
def test_pykbroker_encodes_kafka_python_requests_byte_for_byte(
    kp: SimpleNamespace, build: Callable[[SimpleNamespace, int], tuple[Any, Body]], version: int
) -> None:
    request, body = build(kp, version)
    frame = kafka_python_frame(request, version, correlation_id=7)
    ours = encode_request_frame(request.API_KEY, version, 7, "kafka-python-3.0.12", body)
    assert ours.hex() == frame.hex()


def test_kafka_python_fetch_v4_fields_absent_in_v4_get_kafka_defaults(kp: SimpleNamespace) -> None:
    request, _ = _fetch(kp, 4)
    _, decoded = split_frame(kafka_python_frame(request, 4, 1))
    assert decoded["session_id"] == 0
    assert decoded["session_epoch"] == -1
    assert decoded["rack_id"] == ""
    partition = decoded["topics"][0]["partitions"][0]
    assert partition["current_leader_epoch"] == -1
    assert partition["log_start_offset"] == -1
    assert partition["last_fetched_epoch"] == -1


def test_kafka_python_metadata_v1_null_topics_means_all_topics(kp: SimpleNamespace) -> None:
    request = kp.MetadataRequest(topics=None)
    _, decoded = split_frame(kafka_python_frame(request, 1, 1))
    assert decoded["topics"] is None
    assert decoded["allow_auto_topic_creation"] is True  # the v0-3 behaviour, as a default


# --- pykbroker's responses, read by kafka-python ----------------------------------------------


def encode_response(api_key: int, version: int, correlation_id: int, body: Body) -> bytes:
    data = header.encode_response_header(
        correlation_id, header.response_header_version(api_key, version)
    )
    return data + codec.encode(registry.response_message(api_key), version, body)


def restrict(ours: Any, theirs: Any) -> Any:
    """``ours`` cut down to the keys kafka-python's ``to_dict`` has (it omits absent fields)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return {k: restrict(ours.get(k), v) for k, v in theirs.items()}
    if isinstance(theirs, list) and isinstance(ours, list) and len(ours) == len(theirs):
        return [restrict(o, t) for o, t in zip(ours, theirs, strict=True)]
    return ours


RESPONSES: dict[str, tuple[str, int, Body]] = {
    "ApiVersions-v3": ("ApiVersionsResponse", 3, {
        "error_code": 0,
        "api_keys": [{"api_key": 0, "min_version": 0, "max_version": 13},
                     {"api_key": 18, "min_version": 0, "max_version": 4}],
        "throttle_time_ms": 0,
        "finalized_features_epoch": 12,
        "finalized_features": [{"name": "metadata.version", "max_version_level": 26,
                                "min_version_level": 26}],
    }),
    "ApiVersions-v0-error": ("ApiVersionsResponse", 0, {
        "error_code": 35,
        "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}],
    }),
    "FindCoordinator-v4": ("FindCoordinatorResponse", 4, {
        "throttle_time_ms": 0,
        "coordinators": [{"key": "group-1", "node_id": 1, "host": "127.0.0.1", "port": 9092,
                          "error_code": 0, "error_message": None}],
    }),
    "JoinGroup-v9": ("JoinGroupResponse", 9, {
        "throttle_time_ms": 0, "error_code": 0, "generation_id": 1,
        "protocol_type": "consumer", "protocol_name": "range",
        "leader": "m-1", "skip_assignment": False, "member_id": "m-1",
        "members": [{"member_id": "m-1", "group_instance_id": None, "metadata": b"\x00\x03"}],
    }),
    "OffsetCommit-v8": ("OffsetCommitResponse", 8, {
        "throttle_time_ms": 0,
        "topics": [{"name": "orders", "partitions": [{"partition_index": 1, "error_code": 0}]}],
    }),
    "Produce-v9": ("ProduceResponse", 9, {
        "responses": [{"name": "orders", "partition_responses": [{
            "index": 0, "error_code": 0, "base_offset": 100, "log_append_time_ms": -1,
            "log_start_offset": 0, "record_errors": [], "error_message": None,
        }]}],
        "throttle_time_ms": 0,
    }),
    "Fetch-v12": ("FetchResponse", 12, {
        "throttle_time_ms": 0, "error_code": 0, "session_id": 0,
        "responses": [{"topic": "orders", "partitions": [{
            "partition_index": 2, "error_code": 0, "high_watermark": 10,
            "last_stable_offset": 10, "log_start_offset": 0,
            "diverging_epoch": {"epoch": 3, "end_offset": 8},
            "current_leader": {"leader_id": 1, "leader_epoch": 3},
            "snapshot_id": {"end_offset": 5, "epoch": 2},
            "aborted_transactions": None, "preferred_read_replica": -1,
            "records": RECORDS,
        }]}],
    }),
}  # fmt: skip


@pytest.mark.parametrize(
    ("class_name", "version", "body"),
    [pytest.param(c, v, b, id=name) for name, (c, v, b) in RESPONSES.items()],
)
def test_kafka_python_reads_pykbroker_responses(
    kp: SimpleNamespace, class_name: str, version: int, body: Body
) -> None:
    cls = getattr(kp, class_name)
    data = encode_response(cls.API_KEY, version, 99, body)

    decoded = cls.decode(data, version=version, header=True)

    assert decoded.header.correlation_id == 99
    theirs = decoded.to_dict(json=False)
    sent = message_with_defaults(registry.response_message(cls.API_KEY), version, body)
    assert restrict(sent, theirs) == theirs


def test_kafka_python_reads_pykbroker_metadata_response_v12(kp: SimpleNamespace) -> None:
    body: Body = {
        "throttle_time_ms": 0,
        "brokers": [{"node_id": 1, "host": "localhost", "port": 9092, "rack": None}],
        "cluster_id": "pykbroker-cluster",
        "controller_id": 1,
        "topics": [{
            "error_code": 0, "name": "orders", "topic_id": TOPIC_ID, "is_internal": False,
            "partitions": [{
                "error_code": 0, "partition_index": 0, "leader_id": 1, "leader_epoch": 0,
                "replica_nodes": [1], "isr_nodes": [1], "offline_replicas": [],
            }],
            "topic_authorized_operations": -2147483648,
        }],
    }  # fmt: skip
    decoded = kp.MetadataResponse.decode(encode_response(3, 12, 8, body), version=12, header=True)

    assert decoded.header.correlation_id == 8
    assert decoded.cluster_id == "pykbroker-cluster"
    assert decoded.controller_id == 1
    broker = decoded.brokers[0]
    assert (broker.node_id, broker.host, broker.port, broker.rack) == (1, "localhost", 9092, None)
    topic = decoded.topics[0]
    assert (topic.name, topic.topic_id, topic.is_internal) == ("orders", TOPIC_ID, False)
    partition = topic.partitions[0]
    assert (partition.partition_index, partition.leader_id, partition.isr_nodes) == (0, 1, [1])


def test_kafka_python_reads_api_versions_error_as_v0_with_header_v0(kp: SimpleNamespace) -> None:
    """An unsupported ApiVersions version is answered with a v0 body; header v0 either way."""
    body = {"error_code": 35, "api_keys": [{"api_key": 18, "min_version": 0, "max_version": 4}]}
    data = encode_response(18, 0, 3, body)
    assert data[:4] == b"\x00\x00\x00\x03"  # no tagged-field byte after the correlation id
    decoded = kp.ApiVersionsResponse.decode(data, version=4, header=True)  # client asked for v4
    assert decoded.error_code == 35
    assert [(k.api_key, k.min_version, k.max_version) for k in decoded.api_keys] == [(18, 0, 4)]


# --- tagged nullable structs, as Kafka's generated code writes them ---------------------------

# Kafka's NullableStructMessage test schema, cut down: struct 3 is tagged and null by default,
# struct 4 is tagged with a non-null default (an all-default struct).
NULLABLE_TAGGED = M(
    "NullableStructMessage", "data", "0-2", "1+",
    F("nullable_struct3", "MyStruct3", "1+", F("my_int", "int32", "1+"),
      nullable="1+", tagged="1+", tag=0),
    F("nullable_struct4", "MyStruct4", "1+", F("my_int", "int32", "1+"),
      nullable="1+", tagged="1+", tag=1, default={"my_int": 0}),
)  # fmt: skip


def test_tagged_nullable_struct_uses_a_varint_presence_marker() -> None:
    # NullableStructMessageData.write: tag, size + 1, writeUnsignedVarint(1), struct ... and
    # for a null struct whose default is not null: tag, 1, writeUnsignedVarint(0).
    data = bytes.fromhex("0200 06 01 00000005 0001 01 00")
    value = {"nullable_struct3": {"my_int": 5}, "nullable_struct4": None}
    assert codec.encode(NULLABLE_TAGGED, 1, value) == data
    assert codec.decode(NULLABLE_TAGGED, 1, data) == value


def test_tagged_nullable_struct_at_its_defaults_is_not_written() -> None:
    value = {"nullable_struct3": None, "nullable_struct4": {"my_int": 0}}
    assert codec.encode(NULLABLE_TAGGED, 1, value) == b"\x00"
    assert codec.decode(NULLABLE_TAGGED, 1, b"\x00") == value


def test_untagged_nullable_struct_keeps_the_int8_marker() -> None:
    message: Message = M(
        "Untagged", "data", "0", "0+",
        F("cursor", "Cursor", "0+", F("partition_index", "int32", "0+"), nullable="0+"),
    )  # fmt: skip
    assert codec.encode(message, 0, {"cursor": None}) == bytes.fromhex("ff 00")
    assert codec.encode(message, 0, {"cursor": {"partition_index": 2}}) == bytes.fromhex(
        "01 00000002 00 00"
    )
    assert codec.decode(message, 0, bytes.fromhex("ff 00")) == {"cursor": None}


# --- frames captured from real clients (tools/capture_frames.py) -------------------------------

GOLDEN = Path(__file__).parent / "golden"
CAPTURED: list[dict[str, Any]] = [
    case for path in sorted(GOLDEN.glob("*.json")) for case in json.loads(path.read_text())
]
#: What tools/capture_frames.py's scenarios used.
CLIENT_IDS = {"confluent-kafka": "golden-rdkafka", "kafka-python": "golden-kafka-python"}
GROUPS = {"confluent-kafka": "golden-group", "kafka-python": "golden-group-kp"}
TOPIC, ADMIN_TOPIC = "golden-topic", "golden-admin-topic"


def _names(items: list[dict[str, Any]], key: str = "name") -> list[str]:
    return [item[key] for item in items]


def _check_produce(body: Body, group: str) -> None:
    from pykbroker.log.record_batch import parse_header

    assert body["acks"] == -1  # acks=all
    assert body["transactional_id"] is None
    (topic,) = body["topic_data"]
    assert topic["name"] == TOPIC
    (partition,) = topic["partition_data"]
    batch = parse_header(partition["records"])
    assert batch.magic == 2
    assert batch.records_count >= 1
    assert batch.producer_id >= 0  # idempotent (the default in both clients)


def _check_join_group(body: Body, group: str) -> None:
    assert body["group_id"] == group
    assert body["member_id"] == ""
    assert body["protocol_type"] == "consumer"
    assert body["protocols"], "no assignors offered"
    from pykbroker.api.protocol.messages.consumer_protocol import (
        CONSUMER_PROTOCOL_SUBSCRIPTION as SUBSCRIPTION,
    )

    metadata = body["protocols"][0]["metadata"]
    version = int.from_bytes(metadata[:2], "big", signed=True)
    version = min(version, SUBSCRIPTION.valid.high)  # newer versions read as the newest known
    subscription, _ = codec.decode_prefix(SUBSCRIPTION, version, metadata, 2)
    assert subscription["topics"] == [TOPIC]


def _check_offset_commit(body: Body, group: str) -> None:
    assert body["group_id"] == group
    assert body["member_id"]
    (topic,) = body["topics"]
    assert topic["name"] == TOPIC
    assert [p["committed_offset"] for p in topic["partitions"]] == [3]


def _check_offset_fetch(body: Body, group: str) -> None:
    groups = body["groups"] if body.get("groups") else [body]
    assert groups[0]["group_id"] == group
    assert _names(groups[0]["topics"]) == [TOPIC]


def _check_fetch(body: Body, group: str) -> None:
    assert body.get("replica_id", -1) == -1  # a consumer, not a follower
    (topic,) = body["topics"]
    if topic["topic_id"] == ZERO_UUID:  # up to v12 by name, from v13 by topic id
        assert topic["topic"] == TOPIC
    else:
        assert topic["topic"] == ""  # absent from v13: the default
    assert [p["partition"] for p in topic["partitions"]] == [0]
    assert body["max_bytes"] > 0


def _check_find_coordinator(body: Body, group: str) -> None:
    assert body["key_type"] == 0
    assert group in (body["key"], *body["coordinator_keys"])


CHECKS: dict[str, Callable[[Body, str], None]] = {
    "Produce": _check_produce,
    "Fetch": _check_fetch,
    "ListOffsets": lambda body, group: _assert_equal(_names(body["topics"]), [TOPIC]),
    "JoinGroup": _check_join_group,
    "SyncGroup": lambda body, group: _assert_equal(body["group_id"], group),
    "Heartbeat": lambda body, group: _assert_equal(body["group_id"], group),
    "LeaveGroup": lambda body, group: _assert_equal(body["group_id"], group),
    "OffsetCommit": _check_offset_commit,
    "OffsetFetch": _check_offset_fetch,
    "FindCoordinator": _check_find_coordinator,
    "DescribeGroups": lambda body, group: _assert_equal(body["groups"], [group]),
    "ConsumerGroupDescribe": lambda body, group: _assert_equal(body["group_ids"], [group]),
    "CreateTopics": lambda body, group: _assert_equal(
        [(t["name"], t["num_partitions"], t["replication_factor"]) for t in body["topics"]],
        [(ADMIN_TOPIC, 2, 1)],
    ),
    "CreatePartitions": lambda body, group: _assert_equal(
        [(t["name"], t["count"]) for t in body["topics"]], [(ADMIN_TOPIC, 3)]
    ),
    "DeleteTopics": lambda body, group: _assert_equal(
        body["topic_names"] or _names(body["topics"]), [ADMIN_TOPIC]
    ),
    "InitProducerId": lambda body, group: _assert_equal(
        (body["transactional_id"], body["producer_id"]), (None, -1)
    ),
    "DescribeProducers": lambda body, group: _assert_equal(_names(body["topics"]), [TOPIC]),
}


def _assert_equal(got: Any, want: Any) -> None:
    assert got == want


def test_captured_fixtures_cover_both_clients_and_the_main_apis() -> None:
    by_client: dict[str, set[str]] = {}
    for case in CAPTURED:
        by_client.setdefault(case["client"], set()).add(case["api"])
    assert set(by_client) == {"confluent-kafka", "kafka-python"}
    for apis in by_client.values():
        assert {
            "ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets", "FindCoordinator",
            "JoinGroup", "SyncGroup", "OffsetCommit", "OffsetFetch", "CreateTopics",
            "DeleteTopics", "InitProducerId",
        } <= apis  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=f"{c['client']}-{c['api']}-v{c['version']}") for c in CAPTURED],
)
def test_captured_client_frame_decodes_to_the_scenario_values_and_reencodes(
    case: dict[str, Any],
) -> None:
    data = bytes.fromhex(case["hex"])
    hdr, body = split_frame(data)
    assert (hdr.request_api_key, hdr.request_api_version) == (case["api_key"], case["version"])
    assert registry.api_name(hdr.request_api_key) == case["api"]
    assert hdr.client_id == CLIENT_IDS[case["client"]]
    if case["api"] == "ApiVersions":
        expected_name = {
            "confluent-kafka": "confluent-kafka-python",
            "kafka-python": "kafka-python",
        }
        assert body["client_software_name"] == expected_name[case["client"]]
        assert body["client_software_version"]
    check = CHECKS.get(case["api"])
    if check is not None:
        check(body, GROUPS[case["client"]])
    again = encode_request_frame(
        hdr.request_api_key, hdr.request_api_version, hdr.correlation_id, hdr.client_id, body
    )
    assert again == data, "pykbroker's encoding differs from the client's bytes"
