"""BrokerConfig: the broker's settings, read from Kafka-named keys (``server.properties``).

Attributes are Kafka property names with dots turned into underscores (``log.segment.bytes`` ->
``log_segment_bytes``). ``BrokerConfig.from_properties`` validates every value before the broker
touches the disk; a bad value raises ``ConfigError`` naming the key, and keys pykbroker does not
know are returned so the caller can warn about them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_LISTENER = re.compile(r"^(?P<name>[A-Za-z0-9_]+)://(?P<host>\[[^\]]*\]|[^:]*):(?P<port>\d+)$")


class ConfigError(ValueError):
    """An invalid configuration value."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One entry of ``listeners`` / ``advertised.listeners``: NAME://host:port."""

    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


def parse_listeners(key: str, text: str) -> tuple[Listener, ...]:
    listeners = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _LISTENER.match(item)
        if match is None:
            raise ConfigError(f"{key}: {item!r} is not of the form NAME://host:port")
        port = int(match["port"])
        if port > 65535:
            raise ConfigError(f"{key}: port {port} out of range")
        listeners.append(Listener(match["name"].upper(), match["host"].strip("[]"), port))
    if not listeners:
        raise ConfigError(f"{key}: no listener given")
    return tuple(listeners)


@dataclass(frozen=True, slots=True)
class QuorumVoter:
    """One entry of ``controller.quorum.voters``: id@host:port."""

    node_id: int
    host: str
    port: int


def _voters(key: str, text: str) -> tuple[QuorumVoter, ...]:
    voters = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = re.match(r"^(\d+)@(\[[^\]]*\]|[^:]+):(\d+)$", item)
        if match is None:
            raise ConfigError(f"{key}: {item!r} is not of the form id@host:port")
        voters.append(QuorumVoter(int(match[1]), match[2].strip("[]"), int(match[3])))
    if len({v.node_id for v in voters}) != len(voters):
        raise ConfigError(f"{key}: a voter id appears twice")
    return tuple(voters)


def _host_port(item: str) -> tuple[str, int] | None:
    match = re.match(r"^(\[[^\]]*\]|[^:@,]+):(\d+)$", item)
    if match is None or not 0 < int(match[2]) < 65536:
        return None
    return match[1].strip("[]"), int(match[2])


def _bootstrap_servers(key: str, text: str) -> tuple[str, ...]:
    """``controller.quorum.bootstrap.servers``: host:port,... (KIP-853)."""
    servers = tuple(s.strip() for s in text.split(",") if s.strip())
    for item in servers:
        if _host_port(item) is None:
            raise ConfigError(f"{key}: {item!r} is not of the form host:port")
    return servers


def _names(key: str, text: str) -> tuple[str, ...]:
    names = tuple(n.strip().upper() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError(f"{key}: no listener name given")
    return names


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _protocol_map(key: str, text: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, protocol = item.partition(":")
        if not sep or protocol.strip().upper() not in _PROTOCOLS:
            raise ConfigError(f"{key}: {item!r} is not NAME:PROTOCOL with one of {_PROTOCOLS}")
        if protocol.strip().upper() != "PLAINTEXT":
            raise ConfigError(f"{key}: {protocol.strip()} is not supported yet (PLAINTEXT only)")
        mapping[name.strip().upper()] = protocol.strip().upper()
    return mapping


def _int(low: int, high: int = 2**63 - 1) -> Callable[[str, str], int]:
    def parse(key: str, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{key}: {value} is outside [{low}, {high}]")
        return value

    return parse


def _float(low: float, high: float) -> Callable[[str, str], float]:
    def parse(key: str, text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ConfigError(f"{key}: {text!r} is not a number") from None
        if not low <= value <= high:
            raise ConfigError(f"{key}: {value} is outside [{low}, {high}]")
        return value

    return parse


def _bool(key: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{key}: {text!r} is not true or false")
    return value == "true"


def _roles(key: str, text: str) -> tuple[str, ...]:
    roles = tuple(r.strip() for r in text.split(",") if r.strip())
    if not roles or any(r not in ("broker", "controller") for r in roles):
        raise ConfigError(f"{key}: {text!r} must be broker, controller or broker,controller")
    return roles


def _dirs(key: str, text: str) -> tuple[Path, ...]:
    dirs = tuple(Path(d.strip()) for d in text.split(",") if d.strip())
    if not dirs:
        raise ConfigError(f"{key}: no directory given")
    return dirs


def _str(key: str, text: str) -> str:
    return text.strip()


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(key: str, text: str) -> str:
        value = text.strip()
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        return value

    return parse


_MS_DAY = 86_400_000


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """A broker's configuration; defaults are Kafka's (or a single-node development setup)."""

    node_id: int = 1
    #: ``broker.rack``: replicas of a partition are placed on as many racks as possible.
    broker_rack: str | None = None
    process_roles: tuple[str, ...] = ("broker", "controller")
    listeners: tuple[Listener, ...] = (Listener("PLAINTEXT", "127.0.0.1", 9092),)
    advertised_listeners: tuple[Listener, ...] | None = None
    log_dirs: tuple[Path, ...] = (Path("pykbroker-data"),)
    num_partitions: int = 1
    default_replication_factor: int = 1
    auto_create_topics_enable: bool = True
    delete_topic_enable: bool = True
    log_segment_bytes: int = 1_073_741_824
    log_roll_ms: int = 7 * _MS_DAY
    log_index_size_max_bytes: int = 10_485_760
    log_index_interval_bytes: int = 4096
    log_retention_ms: int = 7 * _MS_DAY
    log_retention_bytes: int = -1
    log_cleanup_policy: str = "delete"
    log_message_timestamp_type: str = "CreateTime"
    log_message_timestamp_before_max_ms: int = 2**63 - 1
    log_message_timestamp_after_max_ms: int = 3_600_000
    compression_type: str = "producer"
    log_retention_check_interval_ms: int = 300_000
    log_flush_interval_messages: int = 2**63 - 1
    log_flush_interval_ms: int = 2**63 - 1
    log_flush_scheduler_interval_ms: int = 2**63 - 1
    log_flush_offset_checkpoint_interval_ms: int = 60_000
    log_flush_start_offset_checkpoint_interval_ms: int = 60_000
    log_cleaner_enable: bool = True
    producer_id_expiration_ms: int = 86_400_000
    log_cleaner_backoff_ms: int = 15_000
    log_cleaner_dedupe_buffer_size: int = 134_217_728
    log_cleaner_min_cleanable_ratio: float = 0.5
    log_cleaner_min_compaction_lag_ms: int = 0
    log_cleaner_max_compaction_lag_ms: int = 2**63 - 1
    log_cleaner_delete_retention_ms: int = 86_400_000
    socket_request_max_bytes: int = 104_857_600
    message_max_bytes: int = 1_048_588
    replica_fetch_max_bytes: int = 1_048_576
    replica_fetch_response_max_bytes: int = 10_485_760
    replica_fetch_wait_max_ms: int = 500
    replica_fetch_backoff_ms: int = 1000
    replica_lag_time_max_ms: int = 30_000
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_max_size: int = 2**31 - 1
    offsets_topic_num_partitions: int = 50
    #: Kafka's default is 3; pykbroker's is 1 so a single node works out of the box (the
    #: sample server.properties Kafka ships sets 1 too). Creating the internal topic fails
    #: (COORDINATOR_NOT_AVAILABLE) while fewer brokers are unfenced, as in Kafka.
    offsets_topic_replication_factor: int = 1
    transaction_state_log_replication_factor: int = 1
    min_insync_replicas: int = 1
    unclean_leader_election_enable: bool = False
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    offset_metadata_max_bytes: int = 4096
    transaction_state_log_num_partitions: int = 50
    transaction_max_timeout_ms: int = 900_000
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    transactional_id_expiration_ms: int = 604_800_000
    transaction_remove_expired_transaction_cleanup_interval_ms: int = 3_600_000
    controller_quorum_voters: tuple[QuorumVoter, ...] = ()
    controller_quorum_bootstrap_servers: tuple[str, ...] = ()
    controller_listener_names: tuple[str, ...] = ("CONTROLLER",)
    inter_broker_listener_name: str = "PLAINTEXT"
    listener_security_protocol_map: Mapping[str, str] = field(default_factory=dict)
    controller_quorum_election_timeout_ms: int = 1000
    controller_quorum_fetch_timeout_ms: int = 2000
    controller_quorum_election_backoff_max_ms: int = 1000
    controller_quorum_request_timeout_ms: int = 2000
    metadata_log_max_record_bytes_between_snapshots: int = 20_971_520
    metadata_log_max_snapshot_interval_ms: int = 3_600_000
    metadata_max_retention_bytes: int = 104_857_600
    metadata_max_retention_ms: int = 604_800_000
    broker_heartbeat_interval_ms: int = 2000
    broker_session_timeout_ms: int = 9000
    connections_max_idle_ms: int = 600_000
    max_connections: int = 2**31 - 1
    max_connections_per_ip: int = 2**31 - 1
    controlled_shutdown_timeout_ms: int = 5000
    pykbroker_trace_requests: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def advertised(self) -> tuple[Listener, ...]:
        """``advertised.listeners`` or, when unset, ``listeners``."""
        return self.advertised_listeners or self.listeners

    def with_overrides(self, **changes: Any) -> BrokerConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> tuple[BrokerConfig, list[str]]:
        """Build from Kafka property names; return the config and the unknown keys."""
        values: dict[str, Any] = {}
        unknown: list[str] = []
        for key, text in props.items():
            parser = _PARSERS.get(key)
            if key in _TIME_KEY_NAMES:
                continue  # resolved by precedence below, whatever the key order
            if parser is None:
                if key not in _ACCEPTED:
                    unknown.append(key)
                continue
            values[key.replace(".", "_")] = parser(key, text)
        values.update(_time_settings(props))
        if "log.dir" in props and "log.dirs" not in props:
            values["log_dirs"] = _dirs("log.dir", props["log.dir"])
        values["extra"] = {k: v for k, v in props.items() if k not in _PARSERS}
        config = cls(**values)
        config._check()
        _check_group_settings(props)
        return config, unknown

    @property
    def is_multi_node(self) -> bool:
        """True when a quorum of other nodes is configured (a KRaft cluster): static voters
        besides this node, or ``controller.quorum.bootstrap.servers`` (a dynamic quorum)."""
        if self.controller_quorum_bootstrap_servers and not self.controller_quorum_voters:
            return True
        return bool(self.controller_quorum_voters) and any(
            v.node_id != self.node_id for v in self.controller_quorum_voters
        )

    @property
    def quorum_bootstrap_addresses(self) -> tuple[tuple[str, int], ...]:
        """``controller.quorum.bootstrap.servers`` as (host, port) pairs; unused when
        ``controller.quorum.voters`` is set (static voters win, as in Kafka's
        ``QuorumConfig``)."""
        if self.controller_quorum_voters:
            return ()
        pairs = (_host_port(s) for s in self.controller_quorum_bootstrap_servers)
        return tuple(p for p in pairs if p is not None)

    def _check(self) -> None:
        controller_names = set(self.controller_listener_names)
        if "broker" in self.process_roles and not any(
            listener.name not in controller_names for listener in self.listeners
        ):
            raise ConfigError("listeners: a broker needs a listener that is not a controller one")
        if (
            "controller" not in self.process_roles
            and not self.controller_quorum_voters
            and not self.controller_quorum_bootstrap_servers
        ):
            # Kafka's KafkaConfig.validateQuorumVotersAndQuorumBootstrapServerForKRaft (pykbroker
            # lets a node with the controller role be a one-voter quorum of itself instead).
            raise ConfigError(
                "If using process.roles, either controller.quorum.bootstrap.servers must contain "
                "the set of bootstrap controllers or controller.quorum.voters must contain a "
                "parseable set of controllers."
            )
        if (
            self.controller_quorum_bootstrap_servers
            and not self.controller_quorum_voters
            and "controller" in self.process_roles
            and not any(listener.name in controller_names for listener in self.listeners)
        ):
            raise ConfigError(
                "listeners: a controller in a quorum needs a listener named in "
                "controller.listener.names"
            )
        if self.controller_quorum_voters and "controller" in self.process_roles:
            if self.node_id not in {v.node_id for v in self.controller_quorum_voters}:
                raise ConfigError(
                    f"controller.quorum.voters: node.id={self.node_id} has the controller role "
                    "but is not a voter"
                )
            if not any(listener.name in controller_names for listener in self.listeners):
                raise ConfigError(
                    "listeners: a controller in a quorum needs a listener named in "
                    "controller.listener.names"
                )
        for listener in self.listeners:
            protocol = self.listener_security_protocol_map.get(listener.name, "PLAINTEXT")
            if protocol != "PLAINTEXT":
                raise ConfigError(f"listeners: {listener.name} uses {protocol}, not supported yet")
        if self.message_max_bytes > self.socket_request_max_bytes:
            raise ConfigError("message.max.bytes must not exceed socket.request.max.bytes")


def _retention_ms(key: str, text: str) -> int:
    """Any integer; a negative one means unlimited, -1 (Kafka's ``logRetentionTimeMillis``)."""
    value = _int(-(2**63))(key, text)
    return -1 if value < 0 else value


#: field -> its keys, highest precedence first, with their unit in ms and parser (Kafka's
#: ``logRetentionTimeMillis``: ms beats minutes beats hours; ``logRollTimeMillis``: ms beats
#: hours). BrokerConfig has no ``log.roll.jitter.*`` setting (no segment jitter is applied).
_TIME_KEYS: dict[str, tuple[tuple[str, int, Callable[[str, str], int]], ...]] = {
    "log_retention_ms": (
        ("log.retention.ms", 1, _retention_ms),
        ("log.retention.minutes", 60_000, _retention_ms),
        ("log.retention.hours", 3_600_000, _retention_ms),
    ),
    "log_roll_ms": (
        ("log.roll.ms", 1, _int(1)),
        ("log.roll.hours", 3_600_000, _int(1)),
    ),
}
_TIME_KEY_NAMES = frozenset(key for keys in _TIME_KEYS.values() for key, _, _ in keys)


def _time_settings(props: Mapping[str, str]) -> dict[str, int]:
    """The retention and roll times from the most precise key present, any key order
    (every key present is still checked, as Kafka parses them all)."""
    values: dict[str, int] = {}
    for name, keys in _TIME_KEYS.items():
        for key, unit, parse in reversed(keys):  # the most precise key is applied last
            if key in props:
                value = parse(key, props[key])
                values[name] = value if value < 0 else min(value * unit, 2**63 - 1)
    return values


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "node.id": _int(0, 2**31 - 1),
    "broker.rack": lambda key, text: text.strip() or None,
    "process.roles": _roles,
    "listeners": parse_listeners,
    "advertised.listeners": parse_listeners,
    "log.dirs": _dirs,
    "num.partitions": _int(1, 100_000),
    "default.replication.factor": _int(1, 32767),
    "auto.create.topics.enable": _bool,
    "delete.topic.enable": _bool,
    "log.segment.bytes": _int(14, 2**31 - 1),
    "log.roll.ms": _int(1),
    "log.index.size.max.bytes": _int(4, 2**31 - 1),
    "log.index.interval.bytes": _int(0, 2**31 - 1),
    "log.retention.ms": _retention_ms,
    "log.retention.bytes": _int(-1),
    "log.cleanup.policy": _choice("delete", "compact", "compact,delete", "delete,compact"),
    "log.message.timestamp.type": _choice("CreateTime", "LogAppendTime"),
    "log.message.timestamp.before.max.ms": _int(0),
    "log.message.timestamp.after.max.ms": _int(0),
    "compression.type": _choice("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"),
    "log.retention.check.interval.ms": _int(1),
    "log.flush.interval.messages": _int(1),
    "log.flush.interval.ms": _int(0),
    "log.flush.scheduler.interval.ms": _int(1),
    "log.flush.offset.checkpoint.interval.ms": _int(1),
    "log.flush.start.offset.checkpoint.interval.ms": _int(1),
    "log.cleaner.enable": _bool,
    "producer.id.expiration.ms": _int(1),
    "log.cleaner.backoff.ms": _int(1),
    "log.cleaner.dedupe.buffer.size": _int(1),
    "log.cleaner.min.cleanable.ratio": _float(0.0, 1.0),
    "log.cleaner.min.compaction.lag.ms": _int(0),
    "log.cleaner.max.compaction.lag.ms": _int(1),
    "log.cleaner.delete.retention.ms": _int(0),
    "socket.request.max.bytes": _int(1, 2**31 - 1),
    "message.max.bytes": _int(0, 2**31 - 1),
    "replica.fetch.max.bytes": _int(0, 2**31 - 1),
    "replica.fetch.response.max.bytes": _int(0, 2**31 - 1),
    "replica.fetch.wait.max.ms": _int(0, 2**31 - 1),
    "replica.fetch.backoff.ms": _int(0, 2**31 - 1),
    "replica.lag.time.max.ms": _int(1),
    "group.initial.rebalance.delay.ms": _int(0, 2**31 - 1),
    "group.min.session.timeout.ms": _int(0, 2**31 - 1),
    "group.max.session.timeout.ms": _int(0, 2**31 - 1),
    "group.max.size": _int(1, 2**31 - 1),
    "offsets.topic.num.partitions": _int(1, 100_000),
    "transaction.state.log.num.partitions": _int(1, 100_000),
    "transaction.max.timeout.ms": _int(1),
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": _int(1),
    "transactional.id.expiration.ms": _int(1, 2**31 - 1),
    "transaction.remove.expired.transaction.cleanup.interval.ms": _int(1, 2**31 - 1),
    "offsets.topic.replication.factor": _int(1, 32767),
    "transaction.state.log.replication.factor": _int(1, 32767),
    "min.insync.replicas": _int(1, 2**31 - 1),
    "unclean.leader.election.enable": _bool,
    "auto.leader.rebalance.enable": _bool,
    "leader.imbalance.check.interval.seconds": _int(1),
    "offset.metadata.max.bytes": _int(0, 2**31 - 1),
    "connections.max.idle.ms": _int(-1),
    "controller.quorum.voters": _voters,
    "controller.quorum.bootstrap.servers": _bootstrap_servers,
    "controller.listener.names": _names,
    "inter.broker.listener.name": lambda key, text: text.strip().upper(),
    "listener.security.protocol.map": _protocol_map,
    "controller.quorum.election.timeout.ms": _int(1),
    "controller.quorum.fetch.timeout.ms": _int(1),
    "controller.quorum.election.backoff.max.ms": _int(1),
    "controller.quorum.request.timeout.ms": _int(1),
    "metadata.log.max.record.bytes.between.snapshots": _int(1),
    "metadata.log.max.snapshot.interval.ms": _int(0),
    "metadata.max.retention.bytes": _int(-1),
    "metadata.max.retention.ms": _int(-1),
    "broker.heartbeat.interval.ms": _int(1),
    "broker.session.timeout.ms": _int(1),
    "max.connections": _int(1, 2**31 - 1),
    "max.connections.per.ip": _int(1, 2**31 - 1),
    "controlled.shutdown.timeout.ms": _int(0),
    "pykbroker.trace.requests": _bool,
}

#: Kafka keys that are accepted without a warning although this version does not act on them.
_ACCEPTED = frozenset(
    {
        "log.dir",
        "log.retention.hours",
        "log.retention.minutes",
        "log.roll.hours",
        "num.network.threads",
        "num.io.threads",
        "num.recovery.threads.per.data.dir",
        "socket.send.buffer.bytes",
        "socket.receive.buffer.bytes",
        "transaction.state.log.min.isr",
        "log.cleaner.threads",
        "offsets.retention.minutes",
        "offsets.retention.check.interval.ms",
        "group.consumer.session.timeout.ms",
        "group.consumer.heartbeat.interval.ms",
        "group.consumer.max.size",
        "group.consumer.assignors",
        "log.cleaner.io.max.bytes.per.second",
        "log.cleaner.io.buffer.size",
        "log.segment.delete.delay.ms",
        "leader.imbalance.per.broker.percentage",
    }
)


def _check_group_settings(props: Mapping[str, str]) -> None:
    """The group coordinator's own keys (offsets.retention.*, group.consumer.*) are parsed by
    it; check them here so a bad value stops the broker before anything is written."""
    from pykbroker.coordinator.group.config import (
        GroupCoordinatorConfig,
        settings_from_properties,
    )

    try:
        GroupCoordinatorConfig(**settings_from_properties(props))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def read_properties(path: Path) -> dict[str, str]:
    """Parse a Java ``.properties`` file (``key=value`` / ``key: value``, ``#``/``!`` comments,
    backslash line continuations)."""
    props: dict[str, str] = {}
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        match = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if match is None:
            props[line] = ""
            continue
        props[match[1]] = match[2]
    if pending:
        props.setdefault(pending, "")
    return props
