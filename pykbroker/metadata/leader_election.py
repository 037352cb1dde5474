"""Which partitions change leader or ISR when brokers come and go (Kafka's
``ReplicationControlManager.generateLeaderAndIsrUpdates`` and its callers).

- A broker fenced (its heartbeats stopped), unregistered, or registering a new incarnation
  (a restart: it may have lost unflushed data): every partition whose ISR holds it drops it
  from the ISR -- unless it is the last member, then the ISR is kept (no ELR) -- and a
  partition it led gets a new leader from the remaining ISR (the first unfenced one in replica
  order); NO_LEADER (-1) when there is none, or with unclean leader election enabled for the
  topic, any live replica (ISR reset to it, leader recovery state RECOVERING).
- A broker entering controlled shutdown (KIP-631, Kafka's ``handleBrokerInControlledShutdown``):
  the same ISR and leadership changes as a fencing, while it stays registered and unfenced; a
  partition whose only ISR member it is goes leaderless (-1), its ISR kept.
- A broker unfenced: every leaderless partition gets a leader if one is now eligible (the
  broker itself when it is in the ISR).
- Preferred leader election: leadership moves to the first replica when it is live and in the
  ISR (ElectLeaders type 0 and ``auto.leader.rebalance.enable``).

Only an *active* broker -- registered, unfenced and not in controlled shutdown (Kafka's
``ClusterControlManager.isActive``) -- is ever elected leader.

A new leader gets leader epoch + 1; every change bumps the partition epoch (see
``partition_change``). Kafka writes the partition changes before a FenceBrokerRecord and after
an UnfenceBrokerRecord; the callers keep that order. The registration-as-fencing rule is a
pykbroker choice (Kafka 4.1 without ELR keeps such a broker leader with the same epoch). Pure:
no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from .image import TOPIC_RESOURCE, MetadataImage, PartitionRegistration, TopicImage
from .partition_change import NO_LEADER, Election, PartitionChangeBuilder
from .records import MetadataRecord

UNCLEAN_LEADER_ELECTION_ENABLE = "unclean.leader.election.enable"


def unclean_enabled(image: MetadataImage, topic: str, broker_default: bool) -> bool:
    """The topic's ``unclean.leader.election.enable``, else the broker's."""
    value = image.configs.get((TOPIC_RESOURCE, topic), {}).get(UNCLEAN_LEADER_ELECTION_ENABLE)
    if value is None:
        return broker_default
    return value.strip().lower() == "true"


def is_active(image: MetadataImage, broker_id: int) -> bool:
    """Registered, unfenced and not in controlled shutdown: may lead a partition or join a new
    partition's ISR."""
    reg = image.brokers.get(broker_id)
    return reg is not None and reg.is_active


def _partitions(
    image: MetadataImage, keep: Callable[[PartitionRegistration], bool]
) -> Iterator[tuple[TopicImage, int, PartitionRegistration]]:
    for topic in sorted(image.topics.values(), key=lambda t: t.name):
        for index, partition in sorted(topic.partitions.items()):
            if keep(partition):
                yield topic, index, partition


def generate_leader_and_isr_updates(
    image: MetadataImage,
    partitions: Iterable[tuple[TopicImage, int, PartitionRegistration]],
    *,
    broker_to_remove: int = NO_LEADER,
    broker_to_add: int = NO_LEADER,
    unclean_default: bool = False,
) -> list[MetadataRecord]:
    """PartitionChangeRecords for ``partitions``: ``broker_to_remove`` leaves the ISR and is
    never elected; ``broker_to_add`` counts as live although the image still shows it fenced."""

    def acceptable(replica: int) -> bool:
        return replica != broker_to_remove and (
            replica == broker_to_add or is_active(image, replica)
        )

    records: list[MetadataRecord] = []
    for topic, index, partition in partitions:
        builder = PartitionChangeBuilder(partition, topic.topic_id, index, acceptable)
        if unclean_enabled(image, topic.name, unclean_default):
            builder.set_election(Election.UNCLEAN)
        builder.set_target_isr([r for r in partition.isr if r != broker_to_remove])
        change = builder.build()
        if change is not None:
            records.append(change)
    return records


def broker_fenced_changes(
    image: MetadataImage, broker_id: int, unclean_default: bool = False
) -> list[MetadataRecord]:
    """The changes when ``broker_id`` is fenced, unregistered or registers anew."""
    return generate_leader_and_isr_updates(
        image,
        _partitions(image, lambda p: broker_id in p.isr or p.leader == broker_id),
        broker_to_remove=broker_id,
        unclean_default=unclean_default,
    )


def broker_controlled_shutdown_changes(
    image: MetadataImage, broker_id: int, unclean_default: bool = False
) -> list[MetadataRecord]:
    """The changes when ``broker_id`` enters controlled shutdown: it leaves every ISR (unless the
    last member) and every leadership moves to another active ISR member (-1 if none)."""
    return broker_fenced_changes(image, broker_id, unclean_default)


def has_leaderships(image: MetadataImage, broker_id: int) -> bool:
    """Whether ``broker_id`` leads any partition (Kafka's ``BrokersToIsrs.hasLeaderships``)."""
    return any(True for _ in _partitions(image, lambda p: p.leader == broker_id))


def broker_unfenced_changes(
    image: MetadataImage, broker_id: int, unclean_default: bool = False
) -> list[MetadataRecord]:
    """The changes when ``broker_id`` is unfenced: leaderless partitions get a leader."""
    return generate_leader_and_isr_updates(
        image,
        _partitions(image, lambda p: p.leader == NO_LEADER),
        broker_to_add=broker_id,
        unclean_default=unclean_default,
    )


def preferred_leader_changes(image: MetadataImage, limit: int) -> list[MetadataRecord]:
    """Up to ``limit`` preferred leader elections for partitions not led by their first
    replica (Kafka's ``maybeBalancePartitionLeaders``)."""
    records: list[MetadataRecord] = []
    imbalanced = _partitions(image, lambda p: not p.has_preferred_leader)
    for topic, index, partition in imbalanced:
        if len(records) >= limit:
            break
        change = (
            PartitionChangeBuilder(partition, topic.topic_id, index, lambda r: is_active(image, r))
            .set_election(Election.PREFERRED)
            .build()
        )
        if change is not None:
            records.append(change)
    return records
