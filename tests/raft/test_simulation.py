"""Thousands of seeded fault schedules against the KRaft state machine (see simulation.py).

A failure names its schedule, e.g. ``replay(1302, voters=5, observers=2)``; run that from a
Python shell (``from tests.raft.simulation import replay``) to reproduce it, with
``trace=True`` for the last events.
"""

from __future__ import annotations

import statistics

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pykbroker.raft import QuorumConfig, RaftReplica

from .simulation import SimulatedCluster, SimulationFailure, SimulationStats, replay

CLUSTERS = [(3, 1), (3, 2), (5, 1), (5, 2), (1, 1)]
#: KIP-853 schedules: initial voters + observers that the admin client adds and removes.
DYNAMIC_CLUSTERS = [(3, 2), (1, 2), (5, 1), (3, 1)]
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def summary(stats: SimulationStats) -> str:
    def dist(values: list[int]) -> str:
        if not values:
            return "-"
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)]
        return (
            f"n={len(ordered)} median={statistics.median(ordered):.0f} p99={p99} max={ordered[-1]}"
        )

    return (
        f"{stats.schedules} schedules, {stats.events} events, {stats.simulated_ms} simulated ms; "
        f"faults: {stats.crashes} crashes ({stats.crashes_mid_output} mid-output), "
        f"{stats.partitions} partitions, {stats.messages_dropped} dropped and "
        f"{stats.messages_duplicated} duplicated of {stats.messages_sent} messages, "
        f"{stats.resignations} resignations; {stats.snapshots_created} snapshots created, "
        f"{stats.snapshots_installed} installed; {stats.appends} appends, "
        f"{stats.acknowledged} committed; {stats.leaders_elected} leaders, max epoch "
        f"{stats.max_epoch}; leaderless ms {dist(stats.leaderless_ms)}; election after heal ms "
        f"{dist(stats.heal_election_ms)}; fail-over after killing the leader ms "
        f"{dist(stats.failover_ms)}; voter changes {stats.voter_changes_requested} requested, "
        f"{stats.voter_changes_committed} committed, {stats.voter_changes_refused} refused"
    )


def run_schedules(examples: int, derandomize: bool, dynamic: bool = False) -> SimulationStats:
    stats = SimulationStats()
    clusters = DYNAMIC_CLUSTERS if dynamic else CLUSTERS

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # a seed does not shrink meaningfully
        suppress_health_check=list(HealthCheck),
    )
    @given(seed=SEEDS, cluster=st.sampled_from(clusters))
    def schedule(seed: int, cluster: tuple[int, int]) -> None:
        stats.merge(SimulatedCluster(seed, *cluster, dynamic=dynamic).run())

    schedule()
    print(f"\nraft simulation{' (dynamic quorum)' if dynamic else ''}:", summary(stats))
    return stats


def test_two_thousand_seeded_schedules_keep_raft_safe_and_live() -> None:
    stats = run_schedules(2_000, derandomize=True)
    assert stats.schedules >= 1_900
    assert stats.acknowledged > 0
    assert stats.snapshots_installed > 0
    assert stats.failover_ms


def test_schedules_that_add_and_remove_voters_keep_raft_safe_and_live() -> None:
    """KIP-853: voters added and removed one at a time (the leader too) while crashes,
    partitions, drops and snapshots happen; the voter set at every committed offset agrees."""
    stats = run_schedules(500, derandomize=True, dynamic=True)
    assert stats.schedules >= 450
    assert stats.voter_changes_committed > 50
    assert stats.voter_changes_refused > 0
    assert stats.acknowledged > 0
    assert stats.snapshots_installed > 0


@pytest.mark.slow
@pytest.mark.timeout(7_200)
def test_many_more_random_schedules_keep_raft_safe_and_live() -> None:
    run_schedules(30_000, derandomize=False)


@pytest.mark.slow
@pytest.mark.timeout(7_200)
def test_many_more_random_schedules_with_voter_changes() -> None:
    run_schedules(10_000, derandomize=False, dynamic=True)


@pytest.mark.slow
@pytest.mark.timeout(3_600)
def test_schedules_with_kafkas_default_timeouts_elect_within_bounds() -> None:
    """Election times as a real cluster would see them (1 s election, 2 s fetch timeout)."""
    stats = SimulationStats()
    for seed in range(400):
        voters, observers = CLUSTERS[seed % len(CLUSTERS)]
        stats.merge(SimulatedCluster(seed, voters, observers, config=QuorumConfig()).run())
    print("\nraft simulation, Kafka's default timeouts:", summary(stats))


def test_replay_reproduces_a_schedule_exactly() -> None:
    first = replay(1302, voters=5, observers=2)
    again = replay(1302, voters=5, observers=2)
    assert first == again
    assert first.crashes > 0


def test_the_simulation_catches_a_voter_that_grants_every_vote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The invariants are not vacuous: a planted double vote is found and named."""
    monkeypatch.setattr(RaftReplica, "_can_grant_vote", lambda self, *args: True)

    def run_until_failure() -> None:
        for seed in range(500):
            SimulatedCluster(seed, 5, 1).run()

    with pytest.raises(SimulationFailure, match=r"replay\(\d+, voters=5, observers=1\)"):
        run_until_failure()
