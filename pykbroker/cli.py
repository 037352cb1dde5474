"""The ``pykbroker`` command: ``serve`` mirrors ``kafka-server-start.sh``.

``pykbroker serve [server.properties] [--override key=value ...]`` reads a Kafka properties file
and/or overrides with Kafka's key names, validates everything before touching the disk (a bad
value: a message and exit code 2), warns about keys it does not know, and runs the broker until
SIGINT or SIGTERM, which shut it down gracefully.
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
        "--trace", action="store_true", help="log every request and response as a JSON line"
    )
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return serve(args)


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
    return run_broker(config)


def run_broker(config: object) -> int:
    import trio

    from pykbroker.server.broker import BrokerServer
    from pykbroker.server.storage import StorageError

    broker = BrokerServer(config)  # type: ignore[arg-type]

    async def main_task() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, broker)
            await broker.run()
            nursery.cancel_scope.cancel()

    try:
        trio.run(main_task)
    except StorageError as exc:
        logging.getLogger("pykbroker").error("%s", exc)
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
