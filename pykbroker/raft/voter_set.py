"""VoterSet: the voters of the KRaft quorum (KIP-853), as a ``VotersRecord`` holds them.

Mirrors Kafka's ``org.apache.kafka.raft.VoterSet`` / ``ReplicaKey`` / ``Endpoints``: a voter is
identified by ``ReplicaKey(id, directory_id)`` (the directory id is the ``directory.id`` of the
node's ``meta.properties``; ``None`` for voters from the static ``controller.quorum.voters``,
kraft.version 0), carries its listener endpoints and the kraft.version range it supports.
Changes are one voter at a time and return a new set (or None when the change is not possible),
as Kafka's ``addVoter`` / ``removeVoter`` / ``updateVoter``.

Invariant: a VoterSet is immutable; ``encode``/``decode`` round-trip through Kafka's
``VotersRecord`` (version 0) and ``KRaftVersionRecord`` bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pykbroker.api.protocol import codec

from .schemas import K_RAFT_VERSION_RECORD, VOTERS_RECORD

#: Kafka's ``Uuid.ZERO_UUID``: "no directory id" on the wire.
NO_DIRECTORY_ID = uuid.UUID(int=0)
#: kraft.version 0: static voters (controller.quorum.voters), no reconfiguration.
KRAFT_VERSION_0 = 0
#: kraft.version 1: voters in VotersRecord control records, reconfigurable (KIP-853).
KRAFT_VERSION_1 = 1
#: The kraft.version range this implementation supports.
SUPPORTED_KRAFT_VERSIONS = (KRAFT_VERSION_0, KRAFT_VERSION_1)


@dataclass(frozen=True, slots=True, order=True)
class ReplicaKey:
    """Kafka's ``ReplicaKey``: a node id and the directory id of its metadata log dir."""

    id: int
    directory_id: uuid.UUID | None = None

    def matches(self, other: ReplicaKey) -> bool:
        """Same id, and the same directory id when both know one."""
        if self.id != other.id:
            return False
        mine, theirs = self.directory_id, other.directory_id
        return mine is None or theirs is None or mine == theirs

    def __str__(self) -> str:
        return f"ReplicaKey(id={self.id}, directory_id={self.directory_id})"


def wire_directory_id(directory_id: uuid.UUID | None) -> uuid.UUID:
    return NO_DIRECTORY_ID if directory_id is None else directory_id


def from_wire_directory_id(directory_id: uuid.UUID | None) -> uuid.UUID | None:
    return None if directory_id is None or directory_id == NO_DIRECTORY_ID else directory_id


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One listener of a voter (``VotersRecord.Voter.Endpoints``)."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class VoterNode:
    """Kafka's ``VoterSet.VoterNode``: key, listeners, supported kraft.version range."""

    key: ReplicaKey
    endpoints: tuple[Endpoint, ...] = ()
    min_supported_version: int = KRAFT_VERSION_0
    max_supported_version: int = KRAFT_VERSION_1

    def supports(self, kraft_version: int) -> bool:
        return self.min_supported_version <= kraft_version <= self.max_supported_version


@dataclass(frozen=True, slots=True)
class VoterSet:
    """The voters by id (see the module docstring)."""

    voters: Mapping[int, VoterNode] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: Iterable[VoterNode]) -> VoterSet:
        return cls({n.key.id: n for n in sorted(nodes, key=lambda n: n.key.id)})

    @classmethod
    def from_ids(cls, voter_ids: Iterable[int]) -> VoterSet:
        """The static voters of ``controller.quorum.voters`` (kraft.version 0)."""
        return cls.of(VoterNode(ReplicaKey(v)) for v in voter_ids)

    # --- queries -------------------------------------------------------------------------

    @property
    def voter_ids(self) -> frozenset[int]:
        return frozenset(self.voters)

    @property
    def voter_keys(self) -> tuple[ReplicaKey, ...]:
        return tuple(self.voters[v].key for v in sorted(self.voters))

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    def is_voter(self, key: ReplicaKey) -> bool:
        node = self.voters.get(key.id)
        return node is not None and node.key.matches(key)

    def is_only_voter(self, key: ReplicaKey) -> bool:
        return len(self.voters) == 1 and self.is_voter(key)

    def endpoints(self, voter_id: int) -> tuple[Endpoint, ...]:
        node = self.voters.get(voter_id)
        return () if node is None else node.endpoints

    def __len__(self) -> int:
        return len(self.voters)

    # --- one change at a time (Kafka's addVoter / removeVoter / updateVoter) ------------------

    def add_voter(self, node: VoterNode) -> VoterSet | None:
        """None if the id already votes."""
        if node.key.id in self.voters:
            return None
        return VoterSet.of([*self.voters.values(), node])

    def remove_voter(self, key: ReplicaKey) -> VoterSet | None:
        """None if ``key`` is not a voter (id and directory id) or it is the last one."""
        node = self.voters.get(key.id)
        if node is None or node.key != key or len(self.voters) == 1:
            return None
        return VoterSet.of(n for i, n in self.voters.items() if i != key.id)

    def update_voter(self, node: VoterNode) -> VoterSet | None:
        """None if no voter has ``node``'s id and directory id."""
        old = self.voters.get(node.key.id)
        if old is None or old.key != node.key:
            return None
        return VoterSet.of([*(n for i, n in self.voters.items() if i != node.key.id), node])

    # --- VotersRecord --------------------------------------------------------------------

    def to_voters_record(self) -> dict[str, Any]:
        return {
            "version": 0,
            "voters": [
                {
                    "voter_id": n.key.id,
                    "voter_directory_id": wire_directory_id(n.key.directory_id),
                    "endpoints": [
                        {"name": e.name, "host": e.host, "port": e.port} for e in n.endpoints
                    ],
                    "k_raft_version_feature": {
                        "min_supported_version": n.min_supported_version,
                        "max_supported_version": n.max_supported_version,
                    },
                }
                for n in (self.voters[v] for v in sorted(self.voters))
            ],
        }

    @classmethod
    def from_voters_record(cls, data: Mapping[str, Any]) -> VoterSet:
        nodes = []
        for voter in data["voters"]:
            feature = voter["k_raft_version_feature"]
            nodes.append(
                VoterNode(
                    ReplicaKey(
                        voter["voter_id"], from_wire_directory_id(voter["voter_directory_id"])
                    ),
                    tuple(Endpoint(e["name"], e["host"], e["port"]) for e in voter["endpoints"]),
                    feature["min_supported_version"],
                    feature["max_supported_version"],
                )
            )
        return cls.of(nodes)

    def encode(self) -> bytes:
        """The value of a ``KRAFT_VOTERS`` control record."""
        return codec.encode(VOTERS_RECORD, 0, self.to_voters_record())

    @classmethod
    def decode(cls, value: bytes) -> VoterSet:
        return cls.from_voters_record(codec.decode(VOTERS_RECORD, 0, value))

    def __str__(self) -> str:
        return "VoterSet(" + ", ".join(str(k) for k in self.voter_keys) + ")"


def encode_kraft_version(kraft_version: int) -> bytes:
    """The value of a ``KRAFT_VERSION`` control record (KRaftVersionRecord v0)."""
    return codec.encode(K_RAFT_VERSION_RECORD, 0, {"version": 0, "k_raft_version": kraft_version})


def decode_kraft_version(value: bytes) -> int:
    return int(codec.decode(K_RAFT_VERSION_RECORD, 0, value)["k_raft_version"])
