"""The ``pykbroker`` command: ``serve`` mirrors ``kafka-server-start.sh``, ``format`` mirrors
``kafka-storage.sh format``, ``cluster`` runs a local development cluster.

``pykbroker serve [server.properties] [--override key=value ...]`` reads a Kafka properties file
and/or overrides with Kafka's key names, validates everything before touching the disk (a bad
value: a message and exit code 2), warns about keys it does not know, and runs the broker until
SIGINT or SIGTERM, which shut it down gracefully.

``pykbroker format [server.properties] --cluster-id ID [--override ...]`` writes
``meta.properties`` with that cluster id (a random one, printed, when omitted) in every log dir,
as ``kafka-storage.sh format`` does; every node of a multi-node quorum must be formatted with the
same id before it starts. A dir formatted with another id is an error (exit 1). KIP-853:
``--standalone`` / ``--initial-controllers id@host:port:directoryId,...`` also write the bootstrap
checkpoint of a dynamic quorum (kraft.version 1 and its first voters), ``--no-initial-controllers``
formats a controller that joins one later (see ``server/storage.py``).

``pykbroker cluster --nodes N [--dir DIR]`` formats and starts N ``pykbroker serve`` processes on
127.0.0.1 (free ports; every node is broker and controller, a voter of the quorum), prints their
ports and data folders, and stops them all (SIGTERM, then SIGKILL after a grace period) on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

EXIT_CONFIG_ERROR = 2


def _error(message: str) -> None:
    """A configuration problem, on stderr (before logging is the right channel)."""
    sys.stderr.write(message + "\n")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pykbroker", description="A Kafka broker in Python that speaks Kafka's protocol."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a broker (like kafka-server-start.sh)")
    serve.add_argument("properties", nargs="?", type=Path, help="a Kafka server.properties file")
    serve.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a Kafka config key (repeatable), e.g. --override num.partitions=3",
    )
    serve.add_argument(
        "--trace",
        action="store_true",
        help="write every request and response as a JSON line on stdout",
    )
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    fmt = commands.add_parser("format", help="format the log dirs (like kafka-storage.sh format)")
    fmt.add_argument("properties", nargs="?", type=Path, help="a Kafka server.properties file")
    fmt.add_argument("--cluster-id", "-t", help="the cluster id (default: a new random one)")
    fmt.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    fmt.add_argument("--log-level", default="WARNING")
    quorum = fmt.add_mutually_exclusive_group()  # KIP-853, as kafka-storage.sh format
    quorum.add_argument(
        "--standalone",
        "-s",
        action="store_true",
        help="bootstrap a dynamic quorum with this controller as its only voter",
    )
    quorum.add_argument(
        "--initial-controllers",
        "-I",
        metavar="ID@HOST:PORT:DIRECTORY_ID,...",
        help="bootstrap a dynamic quorum with these voters",
    )
    quorum.add_argument(
        "--no-initial-controllers",
        "-N",
        action="store_true",
        help="a controller that joins an existing dynamic quorum (as an observer first)",
    )
    cluster = commands.add_parser("cluster", help="run a local N-node cluster on 127.0.0.1")
    cluster.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    cluster.add_argument(
        "--dir", type=Path, default=Path("pykbroker-cluster"), help="data folder of the nodes"
    )
    cluster.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "format":
        return format_storage(args)
    if args.command == "cluster":
        from pykbroker.local_cluster import run_local_cluster

        return run_local_cluster(args.nodes, args.dir)
    return serve(args)


def _config_from_args(args: argparse.Namespace) -> tuple[object, list[str]] | int:
    """(config, unknown keys) from ``properties`` + ``--override``, or an exit code."""
    from pykbroker.config import BrokerConfig, ConfigError, read_properties

    props: dict[str, str] = {}
    try:
        if args.properties is not None:
            props.update(read_properties(args.properties))
    except OSError as exc:
        _error(f"pykbroker: cannot read {args.properties}: {exc}")
        return EXIT_CONFIG_ERROR
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _error(f"pykbroker: --override {item!r} is not KEY=VALUE")
            return EXIT_CONFIG_ERROR
        props[key.strip()] = value
    try:
        return BrokerConfig.from_properties(props)
    except ConfigError as exc:
        _error(f"pykbroker: invalid configuration: {exc}")
        return EXIT_CONFIG_ERROR


def format_storage(args: argparse.Namespace) -> int:
    from pykbroker.config import BrokerConfig
    from pykbroker.server.storage import StorageError, ensure_formatted, random_kafka_uuid

    parsed = _config_from_args(args)
    if isinstance(parsed, int):
        return parsed
    config = parsed[0]
    assert isinstance(config, BrokerConfig)
    cluster_id = args.cluster_id or random_kafka_uuid()
    try:
        found = ensure_formatted(
            config.log_dirs,
            config.node_id,
            cluster_id,
            metadata_directory_id=_initial_directory_id(args, config),
        )
        bootstrap = _format_dynamic_quorum(args, config)
    except StorageError as exc:
        _error(f"pykbroker: {exc}")
        return 1
    dirs = ", ".join(str(d) for d in config.log_dirs)
    sys.stdout.write(f"Formatted {dirs} with cluster.id {found} (node.id {config.node_id})\n")
    if bootstrap:
        sys.stdout.write(f"Wrote the bootstrap checkpoint {bootstrap}\n")
    return 0


def _initial_directory_id(args: argparse.Namespace, config: object) -> str | None:
    """Check the KIP-853 flags before anything is written; return the ``directory.id``
    ``--initial-controllers`` gives this node (Kafka's Formatter uses it for the metadata log
    dir), or None."""
    from pykbroker.config import BrokerConfig
    from pykbroker.server import storage

    assert isinstance(config, BrokerConfig)
    if (args.standalone or args.initial_controllers) and config.controller_quorum_voters:
        raise storage.StorageError(
            "--standalone and --initial-controllers cannot be used with controller.quorum.voters"
        )
    if args.standalone and not any(
        item.name in config.controller_listener_names for item in config.advertised
    ):
        raise storage.StorageError(
            f"--standalone needs a controller listener ({config.controller_listener_names[0]})"
            " in listeners"
        )
    if not args.initial_controllers:
        return None
    voters = storage.parse_initial_controllers(
        args.initial_controllers, config.controller_listener_names[0]
    )
    mine = voters.voters.get(config.node_id)
    if mine is None or mine.key.directory_id is None:
        return None
    return storage.kafka_uuid_string(mine.key.directory_id)


def _format_dynamic_quorum(args: argparse.Namespace, config: object) -> str | None:
    """KIP-853: ``--standalone`` / ``--initial-controllers`` write the bootstrap checkpoint
    (kraft.version 1 and the initial voters) in the metadata log dir, as Kafka's ``Formatter``;
    ``--no-initial-controllers`` writes none. Checked after ``meta.properties`` exists (its
    ``directory.id`` is this voter's directory id)."""
    from pykbroker.clock import wall_clock_ms
    from pykbroker.config import BrokerConfig
    from pykbroker.raft.voter_set import Endpoint, ReplicaKey, VoterNode, VoterSet
    from pykbroker.server import storage
    from pykbroker.server.raft_log import METADATA_PARTITION_DIR

    assert isinstance(config, BrokerConfig)
    if not (args.standalone or args.initial_controllers):
        return None
    if config.controller_quorum_voters:
        raise storage.StorageError(
            "--standalone and --initial-controllers cannot be used with controller.quorum.voters"
        )
    metadata_dir = config.log_dirs[0]
    checkpoint = metadata_dir / METADATA_PARTITION_DIR / storage.BOOTSTRAP_CHECKPOINT
    if checkpoint.exists():
        raise storage.StorageError(f"{checkpoint} exists: {metadata_dir} is already formatted")
    meta = storage.read_meta_properties(metadata_dir)
    directory_id = storage.kafka_uuid(meta["directory.id"])
    listener = config.controller_listener_names[0]
    if args.standalone:
        endpoints = tuple(
            Endpoint(item.name, item.host, item.port)
            for item in config.advertised
            if item.name in config.controller_listener_names
        )
        if not endpoints:
            raise storage.StorageError(
                f"--standalone needs a controller listener ({listener}) in listeners"
            )
        voters = VoterSet.of([VoterNode(ReplicaKey(config.node_id, directory_id), endpoints)])
    else:
        voters = storage.parse_initial_controllers(args.initial_controllers, listener)
        mine = voters.voters.get(config.node_id)
        if mine is not None and mine.key.directory_id != directory_id:
            raise storage.StorageError(
                f"--initial-controllers gives node {config.node_id} directory id "
                f"{storage.kafka_uuid_string(mine.key.directory_id or directory_id)} but "
                f"{metadata_dir} has directory.id {meta['directory.id']}"
            )
    return str(storage.write_bootstrap_checkpoint(metadata_dir, voters, wall_clock_ms()))


def serve(args: argparse.Namespace) -> int:
    from pykbroker.config import BrokerConfig, ConfigError, read_properties

    log = logging.getLogger("pykbroker")
    props: dict[str, str] = {}
    try:
        if args.properties is not None:
            props.update(read_properties(args.properties))
    except OSError as exc:
        _error(f"pykbroker: cannot read {args.properties}: {exc}")
        return EXIT_CONFIG_ERROR
    for item in args.override:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _error(f"pykbroker: --override {item!r} is not KEY=VALUE")
            return EXIT_CONFIG_ERROR
        props[key.strip()] = value
    if args.trace:
        props["pykbroker.trace.requests"] = "true"
    try:
        config, unknown = BrokerConfig.from_properties(props)
    except ConfigError as exc:
        _error(f"pykbroker: invalid configuration: {exc}")
        return EXIT_CONFIG_ERROR
    if unknown:
        log.warning("ignoring unknown config keys: %s", ", ".join(sorted(unknown)))
    if config.pykbroker_trace_requests:  # --trace or pykbroker.trace.requests=true
        from pykbroker.api.dispatch import install_trace_handler

        install_trace_handler()  # bare JSON lines on stdout, whatever --log-level says
    return run_broker(config)


def run_broker(config: object) -> int:
    import trio

    from pykbroker.server.broker import BrokerServer, ListenerError
    from pykbroker.server.storage import StorageError

    broker = BrokerServer(config)  # type: ignore[arg-type]

    async def main_task() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, broker)
            await broker.run()
            nursery.cancel_scope.cancel()

    storage_errors: list[BaseException] = []
    try:
        trio.run(main_task)
    except* (StorageError, ListenerError) as group:  # raised in the nursery: an exception group
        storage_errors.extend(group.exceptions)
    if storage_errors:  # unusable log dirs, a port in use: one line each, nothing written
        for exc in storage_errors:
            _error(f"pykbroker: {exc}")
        return EXIT_CONFIG_ERROR
    logging.getLogger("pykbroker").info("pykbroker stopped")
    return 0


async def _watch_signals(broker: object) -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logging.getLogger("pykbroker").info(
                "received %s, shutting down", signal.Signals(signum).name
            )
            broker.request_shutdown()  # type: ignore[attr-defined]
