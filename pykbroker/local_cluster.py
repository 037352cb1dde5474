"""``pykbroker cluster``: a local N-node KRaft cluster on 127.0.0.1 for development.

Each node is a ``pykbroker serve`` process with Kafka's KRaft settings (``process.roles=
broker,controller``, ``node.id``, ``controller.quorum.voters``, a PLAINTEXT and a CONTROLLER
listener, ``controller.listener.names=CONTROLLER``, its own ``log.dirs``), formatted with one
shared cluster id first. The ``server.properties`` of node N is written to
``<dir>/node-N/server.properties`` (so the nodes can also be started by hand), its data goes to
``<dir>/node-N/data`` and its output to ``<dir>/node-N/output.log``. Ports are free ports picked
at start (or the ones already in the properties files, so a restart keeps the addresses).

Ctrl-C / SIGTERM stops every node with SIGTERM (graceful shutdown) and SIGKILLs any node still
running after ``STOP_GRACE_S``. A node that exits by itself is reported; the others keep running.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

STOP_GRACE_S = 15.0
_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: int
    broker_port: int
    controller_port: int
    folder: Path

    @property
    def properties_file(self) -> Path:
        return self.folder / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _existing_ports(properties: Path) -> tuple[int, int] | None:
    if not properties.exists():
        return None
    from pykbroker.config import parse_listeners, read_properties

    listeners = parse_listeners("listeners", read_properties(properties).get("listeners", ""))
    ports = {listener.name: listener.port for listener in listeners}
    if "PLAINTEXT" in ports and "CONTROLLER" in ports:
        return ports["PLAINTEXT"], ports["CONTROLLER"]
    return None


def plan_cluster(nodes: int, root: Path) -> list[NodeSpec]:
    """Node folders and ports (reusing the ports of an earlier run in ``root``)."""
    specs = []
    for node_id in range(1, nodes + 1):
        folder = root / f"node-{node_id}"
        ports = _existing_ports(folder / "server.properties") or (free_port(), free_port())
        specs.append(NodeSpec(node_id, ports[0], ports[1], folder.resolve()))
    return specs


def server_properties(spec: NodeSpec, specs: list[NodeSpec]) -> str:
    """The node's ``server.properties``: the same settings a Kafka KRaft node would use."""
    voters = ",".join(f"{s.node_id}@127.0.0.1:{s.controller_port}" for s in specs)
    return (
        "process.roles=broker,controller\n"
        f"node.id={spec.node_id}\n"
        f"controller.quorum.voters={voters}\n"
        f"listeners=PLAINTEXT://127.0.0.1:{spec.broker_port},"
        f"CONTROLLER://127.0.0.1:{spec.controller_port}\n"
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{spec.broker_port}\n"
        "controller.listener.names=CONTROLLER\n"
        "inter.broker.listener.name=PLAINTEXT\n"
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
        f"log.dirs={spec.data_dir}\n"
        "group.initial.rebalance.delay.ms=0\n"
    )


def prepare_cluster(nodes: int, root: Path, cluster_id: str | None = None) -> list[NodeSpec]:
    """Write every node's properties and format its data dir with one cluster id."""
    from pykbroker.server.storage import META_PROPERTIES, ensure_formatted, random_kafka_uuid

    specs = plan_cluster(nodes, root)
    existing = [s for s in specs if (s.data_dir / META_PROPERTIES).exists()]
    if cluster_id is None and existing:
        from pykbroker.server.storage import read_meta_properties

        cluster_id = read_meta_properties(existing[0].data_dir).get("cluster.id")
    cluster_id = cluster_id or random_kafka_uuid()
    for spec in specs:
        spec.folder.mkdir(parents=True, exist_ok=True)
        spec.properties_file.write_text(server_properties(spec, specs))
        ensure_formatted((spec.data_dir,), spec.node_id, cluster_id)
    return specs


def start_node(
    spec: NodeSpec, output: IO[bytes], log_level: str = "INFO"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pykbroker",
            "serve",
            str(spec.properties_file),
            "--log-level",
            log_level,
        ],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def stop_nodes(
    processes: dict[int, subprocess.Popen[bytes]], grace_s: float = STOP_GRACE_S
) -> None:
    """SIGTERM every running node, wait up to ``grace_s``, then SIGKILL the rest."""
    for proc in processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=grace_s)


def run_local_cluster(nodes: int, root: Path) -> int:
    """The ``pykbroker cluster`` command: run until Ctrl-C / SIGTERM."""
    if nodes < 1:
        sys.stderr.write("pykbroker cluster: --nodes must be at least 1\n")
        return 2
    specs = prepare_cluster(nodes, root)
    stop_requested: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: dict[int, subprocess.Popen[bytes]] = {}
    outputs: list[IO[bytes]] = []
    try:
        for spec in specs:
            output = open(spec.folder / "output.log", "ab")  # noqa: SIM115 - closed below
            outputs.append(output)
            processes[spec.node_id] = start_node(spec, output)
        bootstrap = ",".join(f"127.0.0.1:{s.broker_port}" for s in specs)
        lines = [f"pykbroker cluster of {nodes} node(s), data in {root.resolve()}"]
        lines.extend(
            f"  node {spec.node_id}: pid {processes[spec.node_id].pid}, "
            f"PLAINTEXT 127.0.0.1:{spec.broker_port}, "
            f"CONTROLLER 127.0.0.1:{spec.controller_port}, data {spec.data_dir}"
            for spec in specs
        )
        lines.append(f"bootstrap.servers={bootstrap}")
        lines.append("Ctrl-C stops the cluster.")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        reported: set[int] = set()
        while not stop_requested:  # until Ctrl-C / SIGTERM; every round sleeps
            for node_id, proc in processes.items():
                if proc.poll() is not None and node_id not in reported:
                    reported.add(node_id)
                    sys.stdout.write(f"node {node_id} exited with code {proc.returncode}\n")
                    sys.stdout.flush()
            if len(reported) == len(processes):
                return 1
            time.sleep(_POLL_S)
        sys.stdout.write("stopping the cluster\n")
        sys.stdout.flush()
        return 0
    finally:
        stop_nodes(processes)
        for stream in outputs:
            stream.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
