"""Formatting log directories: ``meta.properties`` with the cluster id (``kafka-storage format``).

On first start every log directory gets a ``meta.properties`` in Kafka's KRaft format (version 1,
cluster.id, node.id, directory.id). Later starts check that all directories agree and that the
node id matches the configuration, as Kafka does, so a broker never mixes two clusters' data.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
import uuid
from pathlib import Path

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
) -> str:
    """Create or check ``meta.properties`` in every log dir; return the cluster id.

    With ``require_formatted`` (a node of a multi-node quorum) an unformatted directory is an
    error, as in Kafka: every node must be formatted with the same cluster id first. Every dir
    is checked (``check_log_dirs``) before anything is written."""
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
                    "directory.id": random_kafka_uuid(),
                    "version": "1",
                    "cluster.id": chosen,
                },
            )
        except OSError as exc:
            raise StorageError(f"cannot format log dir {log_dir}: {exc}") from exc
    return chosen
