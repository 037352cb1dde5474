"""An embedded broker for tests: ``serve`` (trio) and ``serve_in_thread`` (any code).

    async with pykbroker.testing.serve() as broker:          # inside trio / pytest-trio
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

    with pykbroker.testing.serve_in_thread(num_partitions="3") as broker:   # plain pytest
        ...

Both bind 127.0.0.1 on a free port, keep data in a temporary folder (or ``log_dirs``) that is
removed afterwards, and shut the broker down cleanly on exit. Keyword arguments are Kafka
config keys with dots written as underscores.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

from pykbroker.config import BrokerConfig
from pykbroker.server.broker import BrokerServer


def _config(log_dir: Path, overrides: dict[str, Any]) -> BrokerConfig:
    props = {
        "listeners": "PLAINTEXT://127.0.0.1:0",
        "log.dirs": str(log_dir),
        "group.initial.rebalance.delay.ms": "0",
    }
    props.update({key.replace("_", "."): str(value) for key, value in overrides.items()})
    config, _ = BrokerConfig.from_properties(props)
    return config


@asynccontextmanager
async def serve(
    log_dirs: str | Path | None = None, **overrides: Any
) -> AsyncIterator[BrokerServer]:
    """Run a broker in the current trio run for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="pykbroker-") as tmp:
        broker = BrokerServer(_config(Path(log_dirs or tmp), overrides))
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.run)
            try:
                yield broker
            finally:
                broker.request_shutdown()


@contextmanager
def serve_in_thread(
    log_dirs: str | Path | None = None, *, startup_timeout_s: float = 30, **overrides: Any
) -> Iterator[BrokerServer]:
    """Run a broker in a background thread (its own trio run) for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="pykbroker-") as tmp:
        broker = BrokerServer(_config(Path(log_dirs or tmp), overrides))
        started = threading.Event()
        failure: list[BaseException] = []
        token: list[trio.lowlevel.TrioToken] = []

        async def main() -> None:
            token.append(trio.lowlevel.current_trio_token())
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.run)
                started.set()

        def target() -> None:
            try:
                trio.run(main)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller thread
                failure.append(exc)
            finally:
                started.set()

        thread = threading.Thread(target=target, name="pykbroker", daemon=True)
        thread.start()
        if not started.wait(startup_timeout_s) or failure:
            raise RuntimeError("the embedded broker did not start") from (
                failure[0] if failure else None
            )
        try:
            yield broker
        finally:
            if token and thread.is_alive():
                try:
                    trio.from_thread.run_sync(broker.request_shutdown, trio_token=token[0])
                except trio.RunFinishedError:
                    pass
            thread.join(timeout=30)
