"""Write pykbroker's message declarations from Kafka's JSON message definitions.

Run from the project root with ``../shared`` beside it:

    python tools/gen_messages.py

It writes one module per API under ``pykbroker/api/protocol/messages/`` and one per record
schema under ``pykbroker/metadata/schemas/``, ``pykbroker/coordinator/group/schemas/`` and
``pykbroker/coordinator/transaction/schemas/``. The output is pykbroker's own declarations in
its ``schema`` vocabulary (no JSON is copied); ``tests/protocol/test_drift.py`` checks them
against the JSON afterwards, so hand edits that drift are caught.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "kafka-protocol"
sys.path.insert(0, str(ROOT))

from pykbroker.api.protocol.schema import snake_case  # noqa: E402

_COMMENT = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*')


def load_json(path: Path) -> dict[str, Any]:
    text = _COMMENT.sub(lambda m: m.group(1) or "", path.read_text())
    return dict(json.loads(text))


def api_sources() -> dict[str, Path]:
    """Message file name -> path; message-4.3/ wins over message/, by file name and by API key.

    (4.3 renamed ListClientMetricsResources(74) to ListConfigResources: the old files must not
    be generated beside the new ones.)
    """
    found: dict[str, Path] = {}
    for folder in ("message", "message-4.3"):
        for path in sorted((SHARED / folder).glob("*.json")):
            found[path.name] = path
    specs = {name: load_json(path) for name, path in found.items()}
    newer = {
        (spec["type"], spec["apiKey"])
        for name, spec in specs.items()
        if found[name].parent.name == "message-4.3" and "apiKey" in spec
    }
    return {
        name: path
        for name, path in found.items()
        if path.parent.name == "message-4.3"
        or (specs[name]["type"], specs[name].get("apiKey")) not in newer
    }


#: Versions Kafka 4.1 advertises that ``shared/kafka-protocol``'s JSON predates: the JSON edits
#: Kafka made for them, applied on load. Each entry names the Kafka change; tests/protocol/
#: test_drift.py applies its own copy of the same edits before comparing. An entry sets
#: validVersions, inserts fields (``insert``: (struct path, after which field, new field)) and
#: narrows field versions (``versions``: (struct path, field, new versions)).
#:
#: * ConsumerGroupDescribe v1 (KAFKA-17750, Kafka 4.0): validVersions 0-1 and a MemberType
#:   field after TargetAssignment (-1 unknown, 0 classic member, 1 consumer member).
#: * Vote v2 (KIP-996 PreVote, KAFKA-17641, Kafka 4.0): apache/kafka 4.1
#:   clients/src/main/resources/common/message/Vote{Request,Response}.json: validVersions 0-2;
#:   the request's PartitionData gains PreVote (bool, v2+) after LastOffset ("Version 2 adds
#:   PreVote field and renames candidate to replica"; the rename changes no bytes, so the
#:   snapshot's Candidate* names are kept). The response's v2 is the same as v1.
#: * KIP-932 share-group APIs 76-79: in Kafka 4.1 "Version 0 was used for early access of
#:   KIP-932 in Apache Kafka 4.0 but removed in Apache Kafka 4.1. Version 1 is the initial
#:   stable version (KIP-932)", so validVersions is "1" (apache/kafka 4.1
#:   clients/src/main/resources/common/message/Share{GroupHeartbeat,GroupDescribe,Fetch,
#:   Acknowledge}{Request,Response}.json; ShareFetchRequest as at commit 08c855f4366 without
#:   its v2 ShareAcquireMode, ShareFetchResponse as at 018777c7cd4). ShareFetchRequest v1 adds
#:   MaxRecords and BatchSize after MaxBytes and drops PartitionMaxBytes (versions "0");
#:   ShareFetchResponse has AcquisitionLockTimeoutMs (int32, 0+) after ErrorMessage.
LATER_VERSIONS: dict[str, dict[str, Any]] = {
    "ConsumerGroupDescribeRequest.json": {"validVersions": "0-1"},
    "ConsumerGroupDescribeResponse.json": {
        "validVersions": "0-1",
        "insert": [
            (
                ("Groups", "Members"),
                "TargetAssignment",
                {
                    "name": "MemberType",
                    "type": "int8",
                    "versions": "1+",
                    "default": "-1",
                    "ignorable": True,
                },
            )
        ],
    },
    "VoteRequest.json": {
        "validVersions": "0-2",
        "insert": [
            (
                ("Topics", "Partitions"),
                "LastOffset",
                {"name": "PreVote", "type": "bool", "versions": "2+"},
            )
        ],
    },
    "VoteResponse.json": {"validVersions": "0-2"},
    "ShareGroupHeartbeatRequest.json": {"validVersions": "1"},
    "ShareGroupHeartbeatResponse.json": {"validVersions": "1"},
    "ShareGroupDescribeRequest.json": {"validVersions": "1"},
    "ShareGroupDescribeResponse.json": {"validVersions": "1"},
    "ShareFetchRequest.json": {
        "validVersions": "1",
        "insert": [
            ((), "MaxBytes", {"name": "MaxRecords", "type": "int32", "versions": "1+"}),
            ((), "MaxRecords", {"name": "BatchSize", "type": "int32", "versions": "1+"}),
        ],
        "versions": [(("Topics", "Partitions"), "PartitionMaxBytes", "0")],
    },
    "ShareFetchResponse.json": {
        "validVersions": "1",
        "insert": [
            (
                (),
                "ErrorMessage",
                {"name": "AcquisitionLockTimeoutMs", "type": "int32", "versions": "0+"},
            ),
        ],
    },
    "ShareAcknowledgeRequest.json": {"validVersions": "1"},
    "ShareAcknowledgeResponse.json": {"validVersions": "1"},
}

_STRING_NULL = {"type": "string", "versions": "0+", "nullableVersions": "0+", "default": "null"}


def _f(name: str, kind: str, *children: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One JSON field at versions 0+ (``extra`` adds e.g. nullableVersions)."""
    field: dict[str, Any] = {"name": name, "type": kind, "versions": "0+", **extra}
    if children:
        field["fields"] = list(children)
    return field


def _api(name: str, kind: str, api_key: int, *fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiKey": api_key,
        "type": kind,
        "name": name,
        "validVersions": "0",
        "flexibleVersions": "0+",
        "fields": list(fields),
    }


def _errors() -> tuple[dict[str, Any], dict[str, Any]]:
    return _f("ErrorCode", "int16"), {"name": "ErrorMessage", **_STRING_NULL}


#: APIs Kafka 4.1 advertises whose JSON files ``shared/kafka-protocol`` lacks (KIP-932 share
#: group offsets admin, keys 90-92, v0 in 4.1), written out here field for field from
#: apache/kafka clients/src/main/resources/common/message/: DescribeShareGroupOffsets
#: Request/Response.json at commit 09f382cf33d, AlterShareGroupOffsetsRequest.json at
#: 78bd2bb5362, AlterShareGroupOffsetsResponse.json at 31f85dd07b1, DeleteShareGroupOffsets
#: Request.json at 27a9a4a3eae and DeleteShareGroupOffsetsResponse.json at 1caa1ca5699
#: ("about" texts left out). tests/protocol/test_drift.py holds its own copy.
LATER_FILES: dict[str, dict[str, Any]] = {
    "DescribeShareGroupOffsetsRequest.json": _api(
        "DescribeShareGroupOffsetsRequest",
        "request",
        90,
        _f(
            "Groups",
            "[]DescribeShareGroupOffsetsRequestGroup",
            _f("GroupId", "string"),
            _f(
                "Topics",
                "[]DescribeShareGroupOffsetsRequestTopic",
                _f("TopicName", "string"),
                _f("Partitions", "[]int32"),
                nullableVersions="0+",
            ),
        ),
    ),
    "DescribeShareGroupOffsetsResponse.json": _api(
        "DescribeShareGroupOffsetsResponse",
        "response",
        90,
        _f("ThrottleTimeMs", "int32"),
        _f(
            "Groups",
            "[]DescribeShareGroupOffsetsResponseGroup",
            _f("GroupId", "string"),
            _f(
                "Topics",
                "[]DescribeShareGroupOffsetsResponseTopic",
                _f("TopicName", "string"),
                _f("TopicId", "uuid"),
                _f(
                    "Partitions",
                    "[]DescribeShareGroupOffsetsResponsePartition",
                    _f("PartitionIndex", "int32"),
                    _f("StartOffset", "int64"),
                    _f("LeaderEpoch", "int32"),
                    *_errors(),
                ),
            ),
            *_errors(),
        ),
    ),
    "AlterShareGroupOffsetsRequest.json": _api(
        "AlterShareGroupOffsetsRequest",
        "request",
        91,
        _f("GroupId", "string"),
        _f(
            "Topics",
            "[]AlterShareGroupOffsetsRequestTopic",
            _f("TopicName", "string"),
            _f(
                "Partitions",
                "[]AlterShareGroupOffsetsRequestPartition",
                _f("PartitionIndex", "int32"),
                _f("StartOffset", "int64"),
            ),
        ),
    ),
    "AlterShareGroupOffsetsResponse.json": _api(
        "AlterShareGroupOffsetsResponse",
        "response",
        91,
        _f("ThrottleTimeMs", "int32"),
        _f(
            "Responses",
            "[]AlterShareGroupOffsetsResponseTopic",
            _f("TopicName", "string"),
            _f("TopicId", "uuid"),
            _f(
                "Partitions",
                "[]AlterShareGroupOffsetsResponsePartition",
                _f("PartitionIndex", "int32"),
                *_errors(),
            ),
        ),
    ),
    "DeleteShareGroupOffsetsRequest.json": _api(
        "DeleteShareGroupOffsetsRequest",
        "request",
        92,
        _f("GroupId", "string"),
        _f("Topics", "[]DeleteShareGroupOffsetsRequestTopic", _f("TopicName", "string")),
    ),
    "DeleteShareGroupOffsetsResponse.json": _api(
        "DeleteShareGroupOffsetsResponse",
        "response",
        92,
        _f("ThrottleTimeMs", "int32"),
        *_errors(),
        _f(
            "Responses",
            "[]DeleteShareGroupOffsetsResponseTopic",
            _f("TopicName", "string"),
            _f("TopicId", "uuid"),
            _f(
                "Partitions",
                "[]DeleteShareGroupOffsetsResponsePartition",
                _f("PartitionIndex", "int32"),
                *_errors(),
            ),
        ),
    ),
}


def _struct_fields(spec: dict[str, Any], path: tuple[str, ...]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = spec["fields"]
    for step in path:
        fields = next(f for f in fields if f["name"] == step)["fields"]
    return fields


def apply_later_versions(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the LATER_VERSIONS edits for the JSON file ``name`` (if any)."""
    edit = LATER_VERSIONS.get(name)
    if edit is None or spec["validVersions"] == edit["validVersions"]:
        return spec
    spec["validVersions"] = edit["validVersions"]
    for path, after, new_field in edit.get("insert", ()):
        fields = _struct_fields(spec, path)
        index = next(i for i, f in enumerate(fields) if f["name"] == after)
        fields.insert(index + 1, dict(new_field))
    for path, field_name, versions in edit.get("versions", ()):
        field = next(f for f in _struct_fields(spec, path) if f["name"] == field_name)
        field["versions"] = versions
    return spec


def load_api_json(sources: dict[str, Path], name: str) -> dict[str, Any]:
    """An API JSON file as Kafka 4.1 has it: LATER_FILES, or the shared file plus edits."""
    if name in LATER_FILES:
        return copy.deepcopy(LATER_FILES[name])
    return apply_later_versions(name, load_json(sources[name]))


def _default_literal(field: dict[str, Any]) -> str | None:
    if "default" not in field:
        return None
    raw = str(field["default"])
    kind = field["type"]
    if raw == "null":
        return "None"
    if kind == "bool":
        return "True" if raw == "true" else "False"
    if kind in ("int8", "int16", "uint16", "int32", "uint32", "int64"):
        return str(int(raw, 0))
    if kind == "float64":
        return repr(float(raw))
    if kind == "string":
        return repr(raw)
    return None


def render_field(
    field: dict[str, Any], common: dict[str, list[dict[str, Any]]], indent: int
) -> str:
    pad = " " * indent
    versions = field.get("versions", field.get("taggedVersions"))
    args = [repr(snake_case(field["name"])), repr(field["type"]), repr(versions)]
    kwargs: list[str] = []
    for key, name in (
        ("nullableVersions", "nullable"),
        ("taggedVersions", "tagged"),
        ("flexibleVersions", "flexible"),
    ):
        if key in field:
            kwargs.append(f"{name}={field[key]!r}")
    if "tag" in field:
        kwargs.append(f"tag={int(field['tag'])}")
    default = _default_literal(field)
    if default is not None:
        kwargs.append(f"default={default}")
    children = field.get("fields")
    element = field["type"].removeprefix("[]")
    if children is None and element in common:
        children = common[element]
    if not children:
        return f"{pad}F({', '.join(args + kwargs)}),"
    lines = [f"{pad}F({', '.join(args)},"]
    lines += [render_field(child, common, indent + 4) for child in children]
    if kwargs:
        lines.append(f"{pad}    {', '.join(kwargs)},")
    lines.append(f"{pad}),")
    return "\n".join(lines)


def render_message(const: str, spec: dict[str, Any]) -> str:
    common = {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}
    head = [repr(spec["name"]), repr(spec["type"]), repr(spec["validVersions"])]
    head.append(repr(spec.get("flexibleVersions", "none")))
    lines = [f"{const} = M(", f"    {', '.join(head)},"]
    lines += [render_field(f, common, 4) for f in spec.get("fields", [])]
    if "apiKey" in spec:
        lines.append(f"    api_key={int(spec['apiKey'])},")
    lines.append(")")
    return "\n".join(lines)


HEADER = '''"""{doc}

Generated by tools/gen_messages.py from Kafka's
{source};
checked against it by tests/protocol/test_drift.py.
"""

from pykbroker.api.protocol.schema import F, M

'''


def write_module(path: Path, doc: str, source: str, parts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = HEADER.format(doc=doc, source=source) + "\n\n".join(parts) + "\n"
    body = body.replace("import F, M\n\n\n", "import F, M\n\n")
    path.write_text(body)


def generate_apis() -> dict[int, str]:
    sources = api_sources()
    out_dir = ROOT / "pykbroker" / "api" / "protocol" / "messages"
    modules: dict[int, str] = {}
    names = sorted(set(sources) | set(LATER_FILES))
    for name in names:
        if not name.endswith("Request.json"):
            continue
        api = name.removesuffix("Request.json")
        if api in ("", "Request"):
            continue
        request = load_api_json(sources, name)
        response = load_api_json(sources, f"{api}Response.json")
        if request["validVersions"] == "none" or "apiKey" not in request:
            continue
        module = snake_case(api)
        if name in LATER_FILES:
            source = f"4.1 {api}Request.json and {api}Response.json"  # LATER_FILES
        else:
            folder = "message-4.3" if sources[name].parent.name == "message-4.3" else "message"
            source = f"{folder}/{api}Request.json and {api}Response.json"
        write_module(
            out_dir / f"{module}.py",
            f"{api} (API key {request['apiKey']}): request and response declarations.",
            source,
            [render_message("REQUEST", request), render_message("RESPONSE", response)],
        )
        modules[int(request["apiKey"])] = module
    header_parts = [
        render_message("REQUEST_HEADER", load_json(sources["RequestHeader.json"])),
        render_message("RESPONSE_HEADER", load_json(sources["ResponseHeader.json"])),
    ]
    write_module(
        out_dir / "headers.py",
        "RequestHeader and ResponseHeader declarations.",
        "RequestHeader.json and ResponseHeader.json",
        header_parts,
    )
    data_parts = [
        render_message(snake_case(n).upper(), load_json(sources[f"{n}.json"]))
        for n in ("ConsumerProtocolSubscription", "ConsumerProtocolAssignment")
    ]
    write_module(
        out_dir / "consumer_protocol.py",
        "The classic consumer protocol's subscription and assignment (JoinGroup/SyncGroup bytes).",
        "ConsumerProtocolSubscription.json and ConsumerProtocolAssignment.json",
        data_parts,
    )
    raft_parts = [
        render_message(snake_case(n).upper(), load_json(sources[f"{n}.json"]))
        for n in (
            "LeaderChangeMessage",
            "SnapshotHeaderRecord",
            "SnapshotFooterRecord",
            "KRaftVersionRecord",
            "VotersRecord",
        )
    ]
    raft_parts.append(
        render_message("QUORUM_STATE_DATA", load_json(SHARED / "raft" / "QuorumStateData.json"))
    )
    write_module(
        ROOT / "pykbroker" / "raft" / "schemas.py",
        "KRaft control records and the quorum-state file.",
        "message/*Record.json, LeaderChangeMessage.json and raft/QuorumStateData.json",
        raft_parts,
    )
    return modules


def generate_records(folder: str, target: Path, doc: str) -> None:
    parts = []
    for path in sorted((SHARED / folder).glob("*.json")):
        spec = load_json(path)
        parts.append(render_message(snake_case(spec["name"]).upper(), spec))
    write_module(target, doc, f"{folder}/*.json", parts)


def main() -> None:
    modules = generate_apis()
    table = ",\n".join(f"    {key}: {name!r}" for key, name in sorted(modules.items()))
    index = ROOT / "pykbroker" / "api" / "protocol" / "messages" / "__init__.py"
    index.write_text(
        '"""Message declarations, one module per API; MODULES maps API key -> module name.\n\n'
        "Generated by tools/gen_messages.py. Modules are imported on first use so start-up\n"
        'stays fast.\n"""\n\n'
        "MODULES: dict[int, str] = {\n" + table + ",\n}\n"
    )
    generate_records(
        "metadata",
        ROOT / "pykbroker" / "metadata" / "schemas.py",
        "KRaft metadata record declarations (the records of __cluster_metadata).",
    )
    generate_records(
        "group-coordinator",
        ROOT / "pykbroker" / "coordinator" / "group" / "schemas.py",
        "Group coordinator record declarations (keys and values of __consumer_offsets).",
    )
    generate_records(
        "transaction-coordinator",
        ROOT / "pykbroker" / "coordinator" / "transaction" / "schemas.py",
        "Transaction coordinator record declarations (keys and values of __transaction_state).",
    )


def format_output() -> None:
    """Run ruff format over the generated files, so regenerating changes nothing by itself."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    if ruff is None:
        return
    targets = [
        "pykbroker/api/protocol/messages",
        "pykbroker/metadata/schemas.py",
        "pykbroker/coordinator/group/schemas.py",
        "pykbroker/coordinator/transaction/schemas.py",
        "pykbroker/raft/schemas.py",
    ]
    subprocess.run([ruff, "format", "-q", *targets], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
    format_output()
