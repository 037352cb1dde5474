"""pykbroker's message declarations match Kafka's JSON message definitions, field by field.

Every JSON file in ``shared/kafka-protocol/{message-4.3,message}/`` (4.3 wins where both have a
file), ``metadata/``, ``group-coordinator/``, ``transaction-coordinator/`` and ``raft/`` must have
a declaration, and the declaration must agree with it on: name, type, validVersions,
flexibleVersions, apiKey, and recursively for every field: snake_case name, type, versions
(taggedVersions when versions is missing), nullableVersions, taggedVersions, tag, field-level
flexibleVersions, default, nested fields (commonStructs resolved by type name) and order.

The JSON is parsed here, independently of ``tools/gen_messages.py``; a hand edit of a
generated module, a generator bug or a new JSON file all show up as a failure that names the
file and the field path.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pykbroker.api.protocol.schema import _MISSING, PRIMITIVES, Field, Message, Versions, snake_case

from .support import KAFKA_PROTOCOL, api_messages, record_messages

if not KAFKA_PROTOCOL.is_dir():
    pytest.skip(
        f"Kafka's JSON message definitions are not at {KAFKA_PROTOCOL}", allow_module_level=True
    )

_COMMENT = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*')

#: folder -> the modules whose declarations that folder's JSON files are compared with.
FOLDER_MODULES: dict[str, tuple[str, ...]] = {
    "message": (
        "pykbroker.api.protocol.messages.headers",
        "pykbroker.api.protocol.messages.consumer_protocol",
        "pykbroker.raft.schemas",
    ),
    "metadata": ("pykbroker.metadata.schemas",),
    "group-coordinator": ("pykbroker.coordinator.group.schemas",),
    "transaction-coordinator": ("pykbroker.coordinator.transaction.schemas",),
    "raft": ("pykbroker.raft.schemas",),
}

#: JSON files with no declaration yet, and why. Each is a strict xfail: declaring it makes the
#: test pass, which fails the run until the entry is removed here.
NOT_DECLARED: dict[str, str] = {
    "message/DefaultPrincipalData.json": (
        "tools/gen_messages.py does not emit DefaultPrincipalData (the KafkaPrincipal that "
        "Envelope(58) forwards); needed only if pykbroker ever serves Envelope"
    ),
}


#: Versions Kafka 4.1 advertises that the shared JSON predates, as the Kafka change that added
#: them edited the JSON (written here independently of tools/gen_messages.py's LATER_VERSIONS).
#: KAFKA-17750 (Kafka 4.0, commit fe88232b07c): ConsumerGroupDescribe validVersions "0-1";
#: the response's Member gains MemberType (int8, v1+, default -1) after TargetAssignment.
_MEMBER_TYPE = {"name": "MemberType", "type": "int8", "versions": "1+", "default": "-1"}


def _fields_of(spec: dict[str, Any], *path: str) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = spec["fields"]
    for step in path:
        fields = next(f for f in fields if f["name"] == step)["fields"]
    return fields


def _insert_after(fields: list[dict[str, Any]], after: str, new: dict[str, Any]) -> None:
    index = next(i for i, f in enumerate(fields) if f["name"] == after)
    fields.insert(index + 1, dict(new))


def _add_member_type(spec: dict[str, Any]) -> None:
    _insert_after(_fields_of(spec, "Groups", "Members"), "TargetAssignment", _MEMBER_TYPE)


def _add_pre_vote(spec: dict[str, Any]) -> None:
    """KIP-996 / KAFKA-17641 (Kafka 4.0): VoteRequest v2's PartitionData gains PreVote."""
    pre_vote = {"name": "PreVote", "type": "bool", "versions": "2+"}
    _insert_after(_fields_of(spec, "Topics", "Partitions"), "LastOffset", pre_vote)


def _share_fetch_request_v1(spec: dict[str, Any]) -> None:
    """Kafka 4.1 ShareFetchRequest v1: MaxRecords, BatchSize; PartitionMaxBytes v0 only."""
    _insert_after(
        spec["fields"], "MaxBytes", {"name": "MaxRecords", "type": "int32", "versions": "1+"}
    )
    _insert_after(
        spec["fields"], "MaxRecords", {"name": "BatchSize", "type": "int32", "versions": "1+"}
    )
    partition = _fields_of(spec, "Topics", "Partitions")
    next(f for f in partition if f["name"] == "PartitionMaxBytes")["versions"] = "0"


def _share_fetch_response_v1(spec: dict[str, Any]) -> None:
    """Kafka 4.1 ShareFetchResponse: AcquisitionLockTimeoutMs after the top-level error."""
    lock = {"name": "AcquisitionLockTimeoutMs", "type": "int32", "versions": "0+"}
    _insert_after(spec["fields"], "ErrorMessage", lock)


#: Kafka 4.1's KIP-932 APIs 76-79 are v1 only ("Version 0 was used for early access of KIP-932
#: in Apache Kafka 4.0 but removed in Apache Kafka 4.1"); Vote is 0-2 from Kafka 4.0.
LATER_THAN_SHARED: dict[str, tuple[str, Any]] = {
    "message/ConsumerGroupDescribeRequest.json": ("0-1", None),
    "message/ConsumerGroupDescribeResponse.json": ("0-1", _add_member_type),
    "message/VoteRequest.json": ("0-2", _add_pre_vote),
    "message/VoteResponse.json": ("0-2", None),
    "message/ShareGroupHeartbeatRequest.json": ("1", None),
    "message/ShareGroupHeartbeatResponse.json": ("1", None),
    "message/ShareGroupDescribeRequest.json": ("1", None),
    "message/ShareGroupDescribeResponse.json": ("1", None),
    "message/ShareFetchRequest.json": ("1", _share_fetch_request_v1),
    "message/ShareFetchResponse.json": ("1", _share_fetch_response_v1),
    "message/ShareAcknowledgeRequest.json": ("1", None),
    "message/ShareAcknowledgeResponse.json": ("1", None),
}


def with_later_versions(rel: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` as Kafka 4.1's JSON has it, for the files in LATER_THAN_SHARED."""
    if rel in LATER_THAN_SHARED and spec["validVersions"] != LATER_THAN_SHARED[rel][0]:
        valid, edit = LATER_THAN_SHARED[rel]
        spec["validVersions"] = valid
        if edit is not None:
            edit(spec)
    return spec


def _json_field(name: str, kind: str, *children: dict[str, Any], nullable: bool = False) -> Any:
    field: dict[str, Any] = {"name": name, "type": kind, "versions": "0+"}
    if nullable:
        field.update(nullableVersions="0+")
    if children:
        field["fields"] = list(children)
    return field


_ERROR_CODE = {"name": "ErrorCode", "type": "int16", "versions": "0+"}
_ERROR_MESSAGE = {
    "name": "ErrorMessage", "type": "string", "versions": "0+", "nullableVersions": "0+",
    "default": "null",
}  # fmt: skip
_J = _json_field

#: Kafka 4.1 JSON files that shared/kafka-protocol lacks (KIP-932 share-group offsets admin,
#: keys 90-92, v0), copied independently of tools/gen_messages.py's LATER_FILES from apache/kafka
#: clients/src/main/resources/common/message/ (DescribeShareGroupOffsets{Request,Response} at
#: 09f382cf33d, AlterShareGroupOffsetsRequest at 78bd2bb5362, AlterShareGroupOffsetsResponse at
#: 31f85dd07b1, DeleteShareGroupOffsetsRequest at 27a9a4a3eae, ...Response at 1caa1ca5699).
KAFKA_4_1_ONLY: dict[str, dict[str, Any]] = {
    "4.1/DescribeShareGroupOffsetsRequest.json": {
        "apiKey": 90, "type": "request", "name": "DescribeShareGroupOffsetsRequest",
        "validVersions": "0", "flexibleVersions": "0+",
        "fields": [
            _J("Groups", "[]DescribeShareGroupOffsetsRequestGroup",
               _J("GroupId", "string"),
               _J("Topics", "[]DescribeShareGroupOffsetsRequestTopic",
                  _J("TopicName", "string"), _J("Partitions", "[]int32"), nullable=True)),
        ],
    },
    "4.1/DescribeShareGroupOffsetsResponse.json": {
        "apiKey": 90, "type": "response", "name": "DescribeShareGroupOffsetsResponse",
        "validVersions": "0", "flexibleVersions": "0+",
        "fields": [
            _J("ThrottleTimeMs", "int32"),
            _J("Groups", "[]DescribeShareGroupOffsetsResponseGroup",
               _J("GroupId", "string"),
               _J("Topics", "[]DescribeShareGroupOffsetsResponseTopic",
                  _J("TopicName", "string"), _J("TopicId", "uuid"),
                  _J("Partitions", "[]DescribeShareGroupOffsetsResponsePartition",
                     _J("PartitionIndex", "int32"), _J("StartOffset", "int64"),
                     _J("LeaderEpoch", "int32"), _ERROR_CODE, _ERROR_MESSAGE)),
               _ERROR_CODE, _ERROR_MESSAGE),
        ],
    },
    "4.1/AlterShareGroupOffsetsRequest.json": {
        "apiKey": 91, "type": "request", "name": "AlterShareGroupOffsetsRequest",
        "validVersions": "0", "flexibleVersions": "0+",
        "fields": [
            _J("GroupId", "string"),
            _J("Topics", "[]AlterShareGroupOffsetsRequestTopic",
               _J("TopicName", "string"),
               _J("Partitions", "[]AlterShareGroupOffsetsRequestPartition",
                  _J("PartitionIndex", "int32"), _J("StartOffset", "int64"))),
        ],
    },
    "4.1/AlterShareGroupOffsetsResponse.json": {
        "apiKey": 91, "type": "response", "name": "AlterShareGroupOffsetsResponse",
        "validVersions": "0", "flexibleVersions": "0+",
        "fields": [
            _J("ThrottleTimeMs", "int32"),
            _J("Responses", "[]AlterShareGroupOffsetsResponseTopic",
               _J("TopicName", "string"), _J("TopicId", "uuid"),
               _J("Partitions", "[]AlterShareGroupOffsetsResponsePartition",
                  _J("PartitionIndex", "int32"), _ERROR_CODE, _ERROR_MESSAGE)),
        ],
    },
    "4.1/DeleteShareGroupOffsetsRequest.json": {
        "apiKey": 92, "type": "request", "name": "DeleteShareGroupOffsetsRequest",
        "validVersions": "0", "flexibleVersions": "0+",
        "fields": [
            _J("GroupId", "string"),
            _J("Topics", "[]DeleteShareGroupOffsetsRequestTopic", _J("TopicName", "string")),
        ],
    },
    "4.1/DeleteShareGroupOffsetsResponse.json": {
        "apiKey": 92, "type": "response", "name": "DeleteShareGroupOffsetsResponse",
        "validVersions": "0", "flexibleVersions": "0+",
        "fields": [
            _J("ThrottleTimeMs", "int32"), _ERROR_CODE, _ERROR_MESSAGE,
            _J("Responses", "[]DeleteShareGroupOffsetsResponseTopic",
               _J("TopicName", "string"), _J("TopicId", "uuid"),
               _J("Partitions", "[]DeleteShareGroupOffsetsResponsePartition",
                  _J("PartitionIndex", "int32"), _ERROR_CODE, _ERROR_MESSAGE)),
        ],
    },
}  # fmt: skip


def load_spec(rel: str) -> dict[str, Any]:
    """The Kafka 4.1 JSON of ``rel``: a shared file (with LATER_THAN_SHARED) or KAFKA_4_1_ONLY."""
    if rel in KAFKA_4_1_ONLY:
        return json.loads(json.dumps(KAFKA_4_1_ONLY[rel]))
    return with_later_versions(rel, load_kafka_json(SOURCES[rel]))


def load_kafka_json(path: Path) -> dict[str, Any]:
    """A Kafka JSON file with its ``//`` comments (outside string literals) stripped."""
    text = _COMMENT.sub(lambda m: m.group(1) or "", path.read_text(encoding="utf-8"))
    return dict(json.loads(text))


def _api_identity(spec: dict[str, Any]) -> tuple[str, int]:
    """(type, apiKey) for requests and responses; a never-matching value for other files."""
    if spec["type"] in ("request", "response"):
        return spec["type"], int(spec["apiKey"])
    return spec["name"], -1


def json_sources() -> dict[str, Path]:
    """'folder/File.json' -> path for every file under test; message-4.3/ replaces message/."""
    sources: dict[str, Path] = {}
    newer_names: set[str] = set()
    newer_apis: set[tuple[str, int]] = set()
    for path in sorted((KAFKA_PROTOCOL / "message-4.3").glob("*.json")):
        sources[f"message-4.3/{path.name}"] = path
        newer_names.add(path.name)
        newer_apis.add(_api_identity(load_kafka_json(path)))
    for path in sorted((KAFKA_PROTOCOL / "message").glob("*.json")):
        # 4.3 wins by file name and by API key (ListClientMetricsResources(74) was renamed
        # ListConfigResources in 4.3).
        if path.name not in newer_names and _api_identity(load_kafka_json(path)) not in newer_apis:
            sources[f"message/{path.name}"] = path
    for folder in ("metadata", "group-coordinator", "transaction-coordinator", "raft"):
        for path in sorted((KAFKA_PROTOCOL / folder).glob("*.json")):
            sources[f"{folder}/{path.name}"] = path
    return sources


SOURCES = json_sources()


def _messages_in(module_name: str) -> Iterator[Message]:
    module = importlib.import_module(module_name)
    yield from (v for v in vars(module).values() if isinstance(v, Message))


def find_declaration(rel: str, spec: dict[str, Any]) -> Message | None:
    """pykbroker's declaration of one JSON file, or None when there is none."""
    folder = rel.split("/", 1)[0]
    if spec["type"] in ("request", "response"):
        for api_key, kind, message in api_messages():
            if api_key == spec.get("apiKey") and kind == spec["type"]:
                return message
        return None
    modules = FOLDER_MODULES["message" if folder.startswith("message") else folder]
    found = [m for name in modules for m in _messages_in(name) if m.name == spec["name"]]
    assert len(found) <= 1, f"{rel}: {len(found)} declarations named {spec['name']}"
    return found[0] if found else None


# --- what the JSON says, in pykbroker's vocabulary -------------------------------------------

_INTS = ("int8", "int16", "uint16", "int32", "uint32", "int64")


def parse_default(field: dict[str, Any]) -> Any:
    """A JSON ``default`` as the generator reads it: literals of primitive types, and null.

    Defaults of other types (uuid, bytes, arrays, structs) other than null are not declared;
    the type's own default applies. JSON ``null``/``true``/``false`` literals are read like
    the strings ``"null"``/``"true"``/``"false"``.
    """
    if "default" not in field:
        return _MISSING
    value = field["default"]
    raw = json.dumps(value) if not isinstance(value, str) else value
    kind = field["type"]
    if raw == "null":
        return None
    if kind == "bool":
        return raw == "true"
    if kind in _INTS:
        return int(raw, 0)
    if kind == "float64":
        return float(raw)
    if kind == "string":
        return raw
    return _MISSING


def _versions(field: dict[str, Any], key: str) -> Versions:
    return Versions.parse(field.get(key, "none"))


def _field_versions(field: dict[str, Any]) -> Versions:
    return Versions.parse(field.get("versions", field.get("taggedVersions", "none")))


def _bounded(versions: Versions, valid: Versions) -> range:
    high = valid.high if versions.high < 0 else min(versions.high, valid.high)
    return range(max(versions.low, valid.low), high + 1)


def compare_field(
    path: str,
    decl: Field,
    spec: dict[str, Any],
    common: dict[str, list[dict[str, Any]]],
    valid: Versions,
) -> Iterator[str]:
    """Every difference between one declared field and its JSON, as readable lines."""
    expected: dict[str, Any] = {
        "name": snake_case(spec["name"]),
        "type": spec["type"],
        "versions": _field_versions(spec),
        "nullable": _versions(spec, "nullableVersions"),
        "tagged": _versions(spec, "taggedVersions"),
        "tag": int(spec["tag"]) if "tag" in spec else None,  # sometimes a string: "tag": "0"
        "flexible": (
            Versions.parse(spec["flexibleVersions"]) if "flexibleVersions" in spec else None
        ),
    }
    for attr, want in expected.items():
        got = getattr(decl, attr)
        if got != want:
            yield f"{path}: {attr} is {_show(got)}, the JSON says {_show(want)}"

    want_default = parse_default(spec)
    if decl.default is not want_default and decl.default != want_default:
        # Equal in effect when every version the field exists in gets the same value.
        as_json = dataclasses.replace(decl, default=want_default)
        for version in _bounded(decl.versions, valid):
            got_value, want_value = decl.default_value(version), as_json.default_value(version)
            if got_value != want_value or type(got_value) is not type(want_value):
                yield (
                    f"{path}: default at v{version} is {_show(got_value)}, "
                    f"the JSON says {_show(want_value)} (declared {_show(decl.default)})"
                )
                break

    element = spec["type"].removeprefix("[]")
    children = spec.get("fields")
    if children is None and element not in PRIMITIVES:
        children = common.get(element)
        if children is None:
            yield f"{path}: struct type {element} is neither inline nor in commonStructs"
            return
    yield from compare_fields(path, decl.fields, children or [], common, valid)


def compare_fields(
    path: str,
    decls: tuple[Field, ...],
    specs: list[dict[str, Any]],
    common: dict[str, list[dict[str, Any]]],
    valid: Versions,
) -> Iterator[str]:
    want_names = [snake_case(s["name"]) for s in specs]
    got_names = [d.name for d in decls]
    if want_names != got_names:
        yield f"{path}: fields are {got_names}, the JSON's (in order) are {want_names}"
        return
    for decl, spec in zip(decls, specs, strict=True):
        yield from compare_field(f"{path}.{decl.name}", decl, spec, common, valid)


def compare_message(decl: Message, spec: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    expected: dict[str, Any] = {
        "name": spec["name"],
        "type": spec["type"],
        "valid": Versions.parse(spec["validVersions"]),
        "flexible": Versions.parse(spec.get("flexibleVersions", "none")),
        "api_key": spec.get("apiKey"),
    }
    for attr, want in expected.items():
        got = getattr(decl, attr)
        if got != want:
            problems.append(f"{spec['name']}: {attr} is {_show(got)}, the JSON says {_show(want)}")
    common = {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}
    problems += compare_fields(
        spec["name"], decl.fields, spec.get("fields", []), common, expected["valid"]
    )
    return problems


def _show(value: Any) -> str:
    if value is _MISSING:
        return "<no default>"
    if isinstance(value, Versions):
        return f"'{value}'"
    return repr(value)


# --- the tests --------------------------------------------------------------------------------


def _params() -> list[Any]:
    params = []
    for rel in [*SOURCES, *KAFKA_4_1_ONLY]:
        marks = []
        if rel in NOT_DECLARED:
            marks.append(pytest.mark.xfail(reason=NOT_DECLARED[rel], strict=True))
        params.append(pytest.param(rel, id=rel, marks=marks))
    return params


@pytest.mark.parametrize("rel", _params())
def test_declaration_matches_kafka_json(rel: str) -> None:
    spec = load_spec(rel)
    decl = find_declaration(rel, spec)
    assert decl is not None, f"{rel}: no pykbroker declaration of {spec['name']}"
    problems = compare_message(decl, spec)
    assert not problems, f"{rel} drifted from its declaration:\n  " + "\n  ".join(problems)


def test_every_declaration_comes_from_a_kafka_json_file() -> None:
    declared = {m.name for _, _, m in api_messages()} | {m.name for *_, m in record_messages()}
    in_json = {load_kafka_json(path)["name"] for path in SOURCES.values()}
    in_json |= {spec["name"] for spec in KAFKA_4_1_ONLY.values()}
    assert declared - in_json == set(), "declarations without a JSON source (stale?)"


def test_not_declared_list_names_existing_files() -> None:
    assert set(NOT_DECLARED) <= set(SOURCES)


def test_message_43_files_win_over_the_older_snapshot() -> None:
    assert "message-4.3/ProduceRequest.json" in SOURCES
    assert "message/ProduceRequest.json" not in SOURCES
    assert "message/ListClientMetricsResourcesRequest.json" not in SOURCES  # same key as 4.3's
    produce = next(m for k, kind, m in api_messages() if k == 0 and kind == "request")
    assert str(produce.valid) == "3-13"


@pytest.mark.parametrize(
    ("json_name", "name"),
    [
        ("GroupInstanceId", "group_instance_id"),
        ("ThrottleTimeMs", "throttle_time_ms"),
        ("KRaftVersionRecord", "k_raft_version_record"),
        ("IsrNodes", "isr_nodes"),
        ("ZkMigrationReady", "zk_migration_ready"),
        ("TopicID", "topic_id"),
        ("Name", "name"),
    ],
)
def test_snake_case_turns_kafka_names_into_field_names(json_name: str, name: str) -> None:
    assert snake_case(json_name) == name


def test_comment_stripping_keeps_slashes_inside_strings() -> None:
    path_text = '{"about": "see http://kafka.apache.org // not a comment"} // a comment'
    text = _COMMENT.sub(lambda m: m.group(1) or "", path_text)
    assert json.loads(text) == {"about": "see http://kafka.apache.org // not a comment"}


def test_every_generated_message_module_is_reachable_from_modules() -> None:
    from pykbroker.api.protocol import messages

    folder = Path(messages.__file__).parent
    on_disk = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    reachable = set(messages.MODULES.values()) | {"headers", "consumer_protocol"}
    assert on_disk == reachable


def test_drift_report_names_the_message_field_and_attribute() -> None:
    """The comparator itself: a declaration that differs from its JSON is reported."""
    from pykbroker.api.protocol.schema import F, M

    spec = {
        "name": "DemoRequest",
        "type": "request",
        "apiKey": 99,
        "validVersions": "0-2",
        "flexibleVersions": "2+",
        "commonStructs": [
            {
                "name": "Item",
                "versions": "0+",
                "fields": [
                    {"name": "ItemId", "type": "int32", "versions": "0+"},
                ],
            },
        ],
        "fields": [
            {"name": "GroupId", "type": "string", "versions": "0+", "default": "g"},
            {"name": "TimeoutMs", "type": "int32", "versions": "1+", "default": "-1"},
            {"name": "Items", "type": "[]Item", "versions": "0+"},
            {"name": "Extra", "type": "bool", "taggedVersions": "2+", "tag": "0"},
        ],
    }
    good = M(
        "DemoRequest", "request", "0-2", "2+",
        F("group_id", "string", "0+", default="g"),
        F("timeout_ms", "int32", "1+", default=-1),
        F("items", "[]Item", "0+", F("item_id", "int32", "0+")),
        F("extra", "bool", "2+", tagged="2+", tag=0),
        api_key=99,
    )  # fmt: skip
    assert compare_message(good, spec) == []

    bad = M(
        "DemoRequest", "request", "0-3", "2+",
        F("group_id", "string", "0+", nullable="0+"),
        F("timeout_ms", "int32", "1+", default=-2),
        F("items", "[]Item", "0+", F("item_id", "int64", "0+")),
        F("extra", "bool", "2+", tagged="2+", tag=1),
        api_key=99,
    )  # fmt: skip
    problems = "\n".join(compare_message(bad, spec))
    assert "DemoRequest: valid is '0-3', the JSON says '0-2'" in problems
    assert "DemoRequest.group_id: nullable is '0+', the JSON says 'none'" in problems
    assert "DemoRequest.group_id: default at v0 is None, the JSON says 'g'" in problems
    assert "DemoRequest.timeout_ms: default at v1 is -2, the JSON says -1" in problems
    assert "DemoRequest.items.item_id: type is 'int64', the JSON says 'int32'" in problems
    assert "DemoRequest.extra: tag is 1, the JSON says 0" in problems

    reordered = M(
        "DemoRequest", "request", "0-2", "2+",
        F("timeout_ms", "int32", "1+", default=-1),
        F("group_id", "string", "0+", default="g"),
        api_key=99,
    )  # fmt: skip
    assert compare_message(reordered, spec) == [
        "DemoRequest: fields are ['timeout_ms', 'group_id'], "
        "the JSON's (in order) are ['group_id', 'timeout_ms', 'items', 'extra']"
    ]
