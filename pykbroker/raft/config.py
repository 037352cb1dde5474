"""QuorumConfig: the ``controller.quorum.*`` settings the KRaft state machine reads.

Mirrors Kafka's ``QuorumConfig``. Attribute names are Kafka's property names with dots turned
into underscores; defaults are Kafka's. Invariant checked at construction: the fetch long-poll
(``fetch_max_wait_ms``) is shorter than the request timeout, so a parked Fetch is answered before
the follower gives up on it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QuorumConfig:
    """Timeouts (ms) and sizes of the Raft quorum."""

    #: ``controller.quorum.election.timeout.ms``: base of the randomized election timeout; the
    #: real timeout is drawn from ``[timeout, 2 * timeout)`` with the injected random source.
    controller_quorum_election_timeout_ms: int = 1000
    #: ``controller.quorum.fetch.timeout.ms``: a follower that has not fetched successfully from
    #: the leader for this long starts an election; a leader resigns when a majority of voters
    #: has not fetched for 1.5 times this long (check quorum).
    controller_quorum_fetch_timeout_ms: int = 2000
    #: ``controller.quorum.election.backoff.max.ms``: cap of the backoff after a lost election.
    controller_quorum_election_backoff_max_ms: int = 1000
    #: ``controller.quorum.request.timeout.ms``: an outbound request with no response after this
    #: long is considered lost.
    controller_quorum_request_timeout_ms: int = 2000
    #: ``controller.quorum.retry.backoff.ms``: wait before retrying a failed request.
    controller_quorum_retry_backoff_ms: int = 20
    #: How long the leader parks a Fetch that has nothing to return (KafkaRaftClient's
    #: ``fetchMaxWaitMs``, 500 ms).
    fetch_max_wait_ms: int = 500
    #: Maximum bytes of records returned by one Fetch (Kafka: 8 MiB for the metadata log).
    fetch_max_bytes: int = 8 * 1024 * 1024
    #: Maximum bytes of snapshot returned by one FetchSnapshot.
    fetch_snapshot_max_bytes: int = 8 * 1024 * 1024
    #: KIP-996: run a pre-vote (Prospective state) before bumping the epoch. Off gives the
    #: KIP-595 behaviour (straight to Candidate), kept for tests and for old peers.
    pre_vote_enabled: bool = True

    def __post_init__(self) -> None:
        if self.controller_quorum_election_timeout_ms <= 0:
            raise ValueError("controller.quorum.election.timeout.ms must be positive")
        if self.controller_quorum_fetch_timeout_ms <= 0:
            raise ValueError("controller.quorum.fetch.timeout.ms must be positive")
        if self.fetch_max_wait_ms >= self.controller_quorum_request_timeout_ms:
            raise ValueError("fetch_max_wait_ms must be below controller.quorum.request.timeout.ms")

    @property
    def check_quorum_timeout_ms(self) -> int:
        """Kafka's LeaderState check-quorum timer: 1.5 x ``controller.quorum.fetch.timeout.ms``."""
        return self.controller_quorum_fetch_timeout_ms * 3 // 2
