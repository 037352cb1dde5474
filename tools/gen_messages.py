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
#: test_drift.py applies its own copy of the same edits before comparing.
#: ConsumerGroupDescribe v1 (KAFKA-17750, Kafka 4.0): validVersions 0-1 and a MemberType field
#: after TargetAssignment (-1 unknown, 0 classic member, 1 consumer member).
LATER_VERSIONS: dict[str, dict[str, Any]] = {
    "ConsumerGroupDescribeRequest.json": {"validVersions": "0-1"},
    "ConsumerGroupDescribeResponse.json": {
        "validVersions": "0-1",
        "insert": (
            ("Groups", "Members"),
            "TargetAssignment",
            {"name": "MemberType", "type": "int8", "versions": "1+", "default": "-1",
             "ignorable": True},
        ),
    },
}


def apply_later_versions(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the LATER_VERSIONS edits for the JSON file ``name`` (if any)."""
    edit = LATER_VERSIONS.get(name)
    if edit is None or spec["validVersions"] == edit["validVersions"]:
        return spec
    spec["validVersions"] = edit["validVersions"]
    if "insert" in edit:
        path, after, new_field = edit["insert"]
        fields = spec["fields"]
        for step in path:
            fields = next(f for f in fields if f["name"] == step)["fields"]
        index = next(i for i, f in enumerate(fields) if f["name"] == after)
        fields.insert(index + 1, dict(new_field))
    return spec


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
    for name, path in sorted(sources.items()):
        if not name.endswith("Request.json"):
            continue
        api = name.removesuffix("Request.json")
        if api in ("", "Request"):
            continue
        request = apply_later_versions(name, load_json(path))
        response = apply_later_versions(
            f"{api}Response.json", load_json(sources[f"{api}Response.json"])
        )
        if request["validVersions"] == "none" or "apiKey" not in request:
            continue
        module = snake_case(api)
        folder = "message-4.3" if path.parent.name == "message-4.3" else "message"
        write_module(
            out_dir / f"{module}.py",
            f"{api} (API key {request['apiKey']}): request and response declarations.",
            f"{folder}/{api}Request.json and {api}Response.json",
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
        for n in ("LeaderChangeMessage", "SnapshotHeaderRecord", "SnapshotFooterRecord",
                  "KRaftVersionRecord", "VotersRecord")
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
