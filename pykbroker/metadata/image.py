"""MetadataImage: an immutable view of the cluster's metadata, and how records change it.

Mirrors Kafka's ``MetadataImage`` + ``MetadataDelta``: ``image.apply(records)`` returns a new
image and never changes the old one, so a request handler that took an image keeps a
consistent view while the controller moves on. Pure: no I/O, no clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from . import schemas
from .records import MetadataRecord

_ZERO_UUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class PartitionRegistration:
    """A partition's replicas, ISR and leadership (Kafka's PartitionRegistration)."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_epoch: int
    partition_epoch: int
    #: 0 RECOVERED, 1 RECOVERING (after an unclean election, until the leader reports back).
    leader_recovery_state: int = 0
    #: A reassignment in progress (KIP-455): the replicas it removes once the ones it adds
    #: have joined the ISR (both are in ``replicas`` meanwhile).
    removing_replicas: tuple[int, ...] = ()
    adding_replicas: tuple[int, ...] = ()

    @property
    def is_reassigning(self) -> bool:
        """Kafka's ``PartitionRegistration.isReassigning``."""
        return bool(self.removing_replicas or self.adding_replicas)

    @property
    def preferred_leader(self) -> int:
        """The first replica (Kafka's ``PartitionRegistration.preferredReplica``)."""
        return self.replicas[0] if self.replicas else -1

    @property
    def has_preferred_leader(self) -> bool:
        return self.leader == self.preferred_leader

    def merge(self, change: Mapping[str, Any]) -> PartitionRegistration:
        """This partition after a PartitionChangeRecord (Kafka's ``PartitionRegistration.merge``):
        a record that names a leader (any value but -2, even the same one) bumps the leader
        epoch; every change bumps the partition epoch."""
        leader, leader_epoch = self.leader, self.leader_epoch
        if change.get("leader", -2) != -2:
            leader, leader_epoch = change["leader"], self.leader_epoch + 1
        replicas = change.get("replicas")
        isr = change.get("isr")
        removing = change.get("removing_replicas")
        adding = change.get("adding_replicas")
        recovery = change.get("leader_recovery_state", -1)
        return replace(
            self,
            replicas=tuple(replicas) if replicas is not None else self.replicas,
            isr=tuple(isr) if isr is not None else self.isr,
            removing_replicas=tuple(removing) if removing is not None else self.removing_replicas,
            adding_replicas=tuple(adding) if adding is not None else self.adding_replicas,
            leader=leader,
            leader_epoch=leader_epoch,
            partition_epoch=self.partition_epoch + 1,
            leader_recovery_state=self.leader_recovery_state if recovery == -1 else recovery,
        )


@dataclass(frozen=True, slots=True)
class TopicImage:
    """One topic: its name, id and partitions."""

    name: str
    topic_id: uuid.UUID
    partitions: Mapping[int, PartitionRegistration]


#: A RegisterBrokerRecord end point: listener name, host, port, security protocol id.
BrokerEndpoint = tuple[str, str, int, int]


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """A registered broker and whether it is fenced."""

    node_id: int
    host: str
    port: int
    rack: str | None
    fenced: bool
    #: The broker epoch (the offset of its RegisterBrokerRecord, as Kafka assigns it).
    epoch: int = -1
    incarnation_id: uuid.UUID = _ZERO_UUID
    #: Every listener it registered, ``(name, host, port, security protocol)`` (``host`` and
    #: ``port`` above are the first one's), so a metadata snapshot can write them back.
    endpoints: tuple[BrokerEndpoint, ...] = ()
    #: In controlled shutdown (KIP-631): neither elected leader nor taken back into an ISR.
    in_controlled_shutdown: bool = False

    @property
    def is_active(self) -> bool:
        """Unfenced and not shutting down (Kafka's ``ClusterControlManager.isActive``)."""
        return not self.fenced and not self.in_controlled_shutdown


TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4


@dataclass(frozen=True, slots=True)
class MetadataImage:
    """The whole metadata state at one offset of the metadata log."""

    offset: int = -1
    topics: Mapping[str, TopicImage] = field(default_factory=lambda: MappingProxyType({}))
    topics_by_id: Mapping[uuid.UUID, TopicImage] = field(
        default_factory=lambda: MappingProxyType({})
    )
    brokers: Mapping[int, BrokerRegistration] = field(default_factory=lambda: MappingProxyType({}))
    configs: Mapping[tuple[int, str], Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    features: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    next_producer_id: int = 0

    def topic_config(self, topic: str) -> Mapping[str, str]:
        return self.configs.get((TOPIC_RESOURCE, topic), MappingProxyType({}))

    def apply(self, records: Iterable[MetadataRecord], offset: int | None = None) -> MetadataImage:
        """A new image with ``records`` applied in order."""
        delta = MetadataDelta(self)
        for rec in records:
            delta.replay(rec)
        return delta.apply(self.offset if offset is None else offset)


class MetadataDelta:
    """Accumulates record changes against a base image (Kafka's MetadataDelta)."""

    def __init__(self, base: MetadataImage) -> None:
        self._topics_by_id: dict[uuid.UUID, TopicImage] = dict(base.topics_by_id)
        self._partitions: dict[uuid.UUID, dict[int, PartitionRegistration]] = {}
        self._brokers = dict(base.brokers)
        self._configs: dict[tuple[int, str], dict[str, str]] = {}
        self._base_configs = base.configs
        self._features = dict(base.features)
        self._next_producer_id = base.next_producer_id

    def _topic_partitions(self, topic_id: uuid.UUID) -> dict[int, PartitionRegistration]:
        parts = self._partitions.get(topic_id)
        if parts is None:
            topic = self._topics_by_id.get(topic_id)
            parts = dict(topic.partitions) if topic else {}
            self._partitions[topic_id] = parts
        return parts

    def _config(self, key: tuple[int, str]) -> dict[str, str]:
        conf = self._configs.get(key)
        if conf is None:
            conf = dict(self._base_configs.get(key, {}))
            self._configs[key] = conf
        return conf

    def replay(self, rec: MetadataRecord) -> None:
        """Apply one record; records of types this image does not track are ignored."""
        data: dict[str, Any] = rec.data
        message = rec.message
        if message is schemas.TOPIC_RECORD:
            topic_id = data["topic_id"]
            self._topics_by_id[topic_id] = TopicImage(data["name"], topic_id, {})
            self._partitions[topic_id] = {}
        elif message is schemas.PARTITION_RECORD:
            self._topic_partitions(data["topic_id"])[data["partition_id"]] = PartitionRegistration(
                replicas=tuple(data["replicas"]),
                isr=tuple(data["isr"]),
                leader=data["leader"],
                leader_epoch=data["leader_epoch"],
                partition_epoch=data["partition_epoch"],
                leader_recovery_state=data.get("leader_recovery_state", 0),
                removing_replicas=tuple(data.get("removing_replicas") or ()),
                adding_replicas=tuple(data.get("adding_replicas") or ()),
            )
        elif message is schemas.PARTITION_CHANGE_RECORD:
            self._replay_partition_change(data)
        elif message is schemas.REMOVE_TOPIC_RECORD:
            topic = self._topics_by_id.pop(data["topic_id"], None)
            self._partitions.pop(data["topic_id"], None)
            if topic is not None:
                self._config((TOPIC_RESOURCE, topic.name)).clear()
        elif message is schemas.CONFIG_RECORD:
            conf = self._config((data["resource_type"], data["resource_name"]))
            if data["value"] is None:
                conf.pop(data["name"], None)
            else:
                conf[data["name"]] = data["value"]
        elif message is schemas.REGISTER_BROKER_RECORD:
            endpoints = data["end_points"]
            host, port = (endpoints[0]["host"], endpoints[0]["port"]) if endpoints else ("", -1)
            self._brokers[data["broker_id"]] = BrokerRegistration(
                data["broker_id"],
                host,
                port,
                data["rack"],
                bool(data["fenced"]),
                data["broker_epoch"],
                data["incarnation_id"],
                tuple((e["name"], e["host"], e["port"], e["security_protocol"]) for e in endpoints),
                bool(data.get("in_controlled_shutdown", False)),
            )
        elif message is schemas.FENCE_BROKER_RECORD:
            self._set_fenced(data["id"], data["epoch"], True)
        elif message is schemas.UNFENCE_BROKER_RECORD:
            self._set_fenced(data["id"], data["epoch"], False)
        elif message is schemas.BROKER_REGISTRATION_CHANGE_RECORD:
            fenced = data.get("fenced", 0)
            if fenced:  # Kafka's BrokerRegistrationFencingChange: 1 fence, -1 unfence, 0 none
                self._set_fenced(data["broker_id"], data["broker_epoch"], fenced > 0)
            # BrokerRegistrationInControlledShutdownChange: 1 IN_CONTROLLED_SHUTDOWN, 0 none.
            if data.get("in_controlled_shutdown", 0) == 1:
                self._set_in_controlled_shutdown(data["broker_id"], data["broker_epoch"])
        elif message is schemas.UNREGISTER_BROKER_RECORD:
            reg = self._brokers.get(data["broker_id"])
            if reg is not None and reg.epoch == data["broker_epoch"]:
                del self._brokers[data["broker_id"]]
        elif message is schemas.PRODUCER_IDS_RECORD:
            self._next_producer_id = max(self._next_producer_id, data["next_producer_id"])
        elif message is schemas.FEATURE_LEVEL_RECORD:
            self._features[data["name"]] = data["feature_level"]

    def _set_fenced(self, broker_id: int, epoch: int, fenced: bool) -> None:
        reg = self._brokers.get(broker_id)
        if reg is not None and reg.epoch == epoch:
            self._brokers[broker_id] = replace(reg, fenced=fenced)

    def _set_in_controlled_shutdown(self, broker_id: int, epoch: int) -> None:
        reg = self._brokers.get(broker_id)
        if reg is not None and reg.epoch == epoch:
            self._brokers[broker_id] = replace(reg, in_controlled_shutdown=True)

    def _replay_partition_change(self, data: dict[str, Any]) -> None:
        parts = self._topic_partitions(data["topic_id"])
        old = parts.get(data["partition_id"])
        if old is not None:
            parts[data["partition_id"]] = old.merge(data)

    def apply(self, offset: int) -> MetadataImage:
        by_id: dict[uuid.UUID, TopicImage] = {}
        for topic_id, topic in self._topics_by_id.items():
            parts = self._partitions.get(topic_id)
            if parts is not None:
                topic = TopicImage(topic.name, topic_id, MappingProxyType(dict(parts)))
            by_id[topic_id] = topic
        configs = dict(self._base_configs)
        for key, conf in self._configs.items():
            if conf:
                configs[key] = MappingProxyType(dict(conf))
            else:
                configs.pop(key, None)
        return MetadataImage(
            offset=offset,
            topics=MappingProxyType({t.name: t for t in by_id.values()}),
            topics_by_id=MappingProxyType(by_id),
            brokers=MappingProxyType(dict(self._brokers)),
            configs=MappingProxyType(configs),
            features=MappingProxyType(dict(self._features)),
            next_producer_id=self._next_producer_id,
        )
