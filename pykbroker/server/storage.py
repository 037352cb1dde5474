"""Formatting log directories: ``meta.properties`` with the cluster id (``kafka-storage format``).

On first start every log directory gets a ``meta.properties`` in Kafka's KRaft format (version 1,
cluster.id, node.id, directory.id). Later starts check that all directories agree and that the
node id matches the configuration, as Kafka does, so a broker never mixes two clusters' data.

KIP-853 (``kafka-storage format --standalone`` / ``--initial-controllers``): the metadata log
dir (the first log dir) also gets the bootstrap checkpoint
``__cluster_metadata-0/00000000000000000000-0000000000.checkpoint`` -- a snapshot holding a
SnapshotHeaderRecord, KRaftVersionRecord (kraft.version 1) and the initial VotersRecord, then a
SnapshotFooterRecord, as Kafka's ``Formatter`` writes it -- and, with ``--initial-controllers``,
the ``directory.id`` the flag gives for this node.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
import uuid
from pathlib import Path

from pykbroker.api.protocol import codec
from pykbroker.log.record_batch import Record, build_batch
from pykbroker.raft.bootstrap import BOOTSTRAP_SNAPSHOT_ID, kraft_control_records
from pykbroker.raft.log import ControlRecordType, control_record_key
from pykbroker.raft.schemas import SNAPSHOT_FOOTER_RECORD, SNAPSHOT_HEADER_RECORD
from pykbroker.raft.voter_set import Endpoint, ReplicaKey, VoterNode, VoterSet

from .raft_log import (
    METADATA_PARTITION_DIR,
    PARTIAL_SUFFIX,
    snapshot_file_name,
    write_file_atomically,
)

META_PROPERTIES = "meta.properties"


class StorageError(RuntimeError):
    """Log directories that do not belong to this node or cluster, or that are unusable."""


def random_kafka_uuid() -> str:
    """A Kafka ``Uuid.randomUuid().toString()``: 22 characters of URL-safe base64."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")


def _read(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        props[key.strip()] = value.strip()
    return props


def _write(path: Path, props: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    body = "#\n#" + time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()) + "\n"
    body += "".join(f"{key}={value}\n" for key, value in props.items())
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_meta_properties(log_dir: Path) -> dict[str, str]:
    """The ``meta.properties`` of ``log_dir`` ({} when it is not formatted)."""
    meta = log_dir / META_PROPERTIES
    return _read(meta) if meta.exists() else {}


def _probe_writable(directory: Path) -> None:
    """Create and remove a scratch entry in ``directory`` (root ignores permission bits, so
    only a real attempt tells); an OSError when it cannot be written."""
    os.rmdir(tempfile.mkdtemp(prefix=".pykbroker-probe-", dir=directory))


def check_log_dirs(log_dirs: tuple[Path, ...]) -> None:
    """Check that every log dir is a writable directory or can be created, writing nothing
    (probes are removed), so a bad dir fails start-up before any dir is formatted."""
    for log_dir in log_dirs:
        existing = log_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            what = "is not a directory" if existing == log_dir else f"{existing} is a file"
            raise StorageError(f"log dir {log_dir} is unusable: {what}")
        try:
            _probe_writable(existing)
        except OSError as exc:
            verb = "not writable" if existing == log_dir else "cannot be created"
            raise StorageError(
                f"log dir {log_dir} is unusable: {verb} ({exc.strerror or exc})"
            ) from exc


def ensure_formatted(
    log_dirs: tuple[Path, ...],
    node_id: int,
    cluster_id: str | None = None,
    *,
    require_formatted: bool = False,
    metadata_directory_id: str | None = None,
) -> str:
    """Create or check ``meta.properties`` in every log dir; return the cluster id.

    With ``require_formatted`` (a node of a multi-node quorum) an unformatted directory is an
    error, as in Kafka: every node must be formatted with the same cluster id first. Every dir
    is checked (``check_log_dirs``) before anything is written. ``metadata_directory_id`` is the
    ``directory.id`` given to a newly formatted metadata log dir (the first one; random when
    None), as ``--initial-controllers`` names it."""
    check_log_dirs(log_dirs)
    found: dict[Path, dict[str, str]] = {}
    for log_dir in log_dirs:
        meta = log_dir / META_PROPERTIES
        if meta.exists():
            found[log_dir] = _read(meta)
    if require_formatted and not found:
        raise StorageError(
            f"no {META_PROPERTIES} in {', '.join(map(str, log_dirs))}: format the log dirs of "
            "every node with the same cluster id first (pykbroker format --cluster-id ID)"
        )
    cluster_ids = {props.get("cluster.id") for props in found.values()}
    if len(cluster_ids) > 1:
        raise StorageError(
            f"log dirs belong to different clusters: {sorted(map(str, cluster_ids))}"
        )
    for log_dir, props in found.items():
        if props.get("node.id") != str(node_id):
            raise StorageError(
                f"{log_dir / META_PROPERTIES} has node.id={props.get('node.id')} but "
                f"the configuration says node.id={node_id}"
            )
    existing = next(iter(cluster_ids), None) if found else None
    if cluster_id and existing and cluster_id != existing:
        raise StorageError(f"log dirs belong to cluster {existing}, not {cluster_id}")
    chosen = existing or cluster_id or random_kafka_uuid()
    for log_dir in log_dirs:
        if log_dir in found:
            continue
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            _write(
                log_dir / META_PROPERTIES,
                {
                    "node.id": str(node_id),
                    "directory.id": (
                        metadata_directory_id
                        if metadata_directory_id and log_dir == log_dirs[0]
                        else random_kafka_uuid()
                    ),
                    "version": "1",
                    "cluster.id": chosen,
                },
            )
        except OSError as exc:
            raise StorageError(f"cannot format log dir {log_dir}: {exc}") from exc
    return chosen


# --- KIP-853: the bootstrap checkpoint -------------------------------------------------------

#: Kafka's ``Snapshots.BOOTSTRAP_SNAPSHOT_ID`` file in ``__cluster_metadata-0``.
BOOTSTRAP_CHECKPOINT = "00000000000000000000-0000000000.checkpoint"


def kafka_uuid(text: str) -> uuid.UUID:
    """Parse a Kafka ``Uuid`` string (22 characters of URL-safe base64)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise StorageError(f"{text!r} is not a Kafka Uuid") from exc
    if len(raw) != 16:
        raise StorageError(f"{text!r} is not a Kafka Uuid")
    return uuid.UUID(bytes=raw)


def kafka_uuid_string(value: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(value.bytes).decode("ascii").rstrip("=")


def parse_initial_controllers(text: str, listener_name: str) -> VoterSet:
    """``--initial-controllers id@host:port:directoryId,...`` as a VoterSet (Kafka's
    ``DynamicVoters.parse``); each voter's endpoint is named ``listener_name``."""
    nodes: list[VoterNode] = []
    for item in (part.strip() for part in text.split(",")):
        node_id, at, rest = item.partition("@")
        host_port, colon, directory = rest.rpartition(":")
        host, colon2, port = host_port.rpartition(":")
        if not (at and colon and colon2 and node_id.isdigit() and port.isdigit() and host):
            raise StorageError(f"--initial-controllers: {item!r} is not id@host:port:directoryId")
        node = VoterNode(
            ReplicaKey(int(node_id), kafka_uuid(directory)),
            (Endpoint(listener_name, host.strip("[]"), int(port)),),
        )
        if any(n.key.id == node.key.id for n in nodes):
            raise StorageError(f"--initial-controllers: node {node_id} given twice")
        nodes.append(node)
    if not nodes:
        raise StorageError("--initial-controllers: no controller given")
    return VoterSet.of(nodes)


def bootstrap_checkpoint_bytes(voters: VoterSet, now_ms: int) -> bytes:
    """The bootstrap checkpoint as Kafka's ``RecordsSnapshotWriter`` writes it: one control
    batch (SnapshotHeaderRecord, KRaftVersionRecord, VotersRecord), one with the footer."""
    header = codec.encode(
        SNAPSHOT_HEADER_RECORD, 0, {"version": 0, "last_contained_log_timestamp": now_ms}
    )
    footer = codec.encode(SNAPSHOT_FOOTER_RECORD, 0, {"version": 0})
    control = [(ControlRecordType.SNAPSHOT_HEADER, header), *kraft_control_records(voters)]
    first = build_batch(
        [Record(key=control_record_key(t), value=v, timestamp=now_ms) for t, v in control],
        base_offset=0,
        partition_leader_epoch=0,
        is_control=True,
    )
    footer_key = control_record_key(ControlRecordType.SNAPSHOT_FOOTER)
    last = build_batch(
        [Record(key=footer_key, value=footer, timestamp=now_ms)],
        base_offset=len(control),
        partition_leader_epoch=0,
        is_control=True,
    )
    return first + last


def write_bootstrap_checkpoint(metadata_log_dir: Path, voters: VoterSet, now_ms: int) -> Path:
    """Write ``__cluster_metadata-0/00000000000000000000-0000000000.checkpoint`` (durably, via
    ``raft_log``'s snapshot file naming and atomic write); return its path."""
    partition_dir = metadata_log_dir / METADATA_PARTITION_DIR
    try:
        partition_dir.mkdir(parents=True, exist_ok=True)
        path = partition_dir / snapshot_file_name(BOOTSTRAP_SNAPSHOT_ID)
        write_file_atomically(path, bootstrap_checkpoint_bytes(voters, now_ms), PARTIAL_SUFFIX)
    except OSError as exc:
        raise StorageError(
            f"cannot write the bootstrap checkpoint in {partition_dir}: {exc}"
        ) from exc
    return path
