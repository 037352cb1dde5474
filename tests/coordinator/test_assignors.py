"""The server-side assignors: every partition once, to a subscribed member, balanced, sticky."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from pykbroker.coordinator.group.assignors import (
    GroupSpec,
    MemberSpec,
    assign,
    range_assign,
    uniform_assign,
)
from pykbroker.coordinator.group.consumer_group import Assignment

A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))


def spec(
    members: dict[str, tuple[set[uuid.UUID], Assignment]], topics: dict[uuid.UUID, int]
) -> GroupSpec:
    return GroupSpec(
        {m: MemberSpec(frozenset(subs), current) for m, (subs, current) in members.items()}, topics
    )


def counts(result: dict[str, Assignment]) -> dict[str, int]:
    return {m: sum(len(p) for p in a.values()) for m, a in result.items()}


def check_valid(s: GroupSpec, result: dict[str, Assignment]) -> None:
    seen: set[tuple[uuid.UUID, int]] = set()
    for member_id, assignment in result.items():
        for topic, parts in assignment.items():
            assert topic in s.members[member_id].subscribed_topic_ids
            for p in parts:
                assert 0 <= p < s.topics[topic]
                assert (topic, p) not in seen
                seen.add((topic, p))
    subscribed = {t for m in s.members.values() for t in m.subscribed_topic_ids if t in s.topics}
    assert seen == {(t, p) for t in subscribed for p in range(s.topics[t])}


def test_uniform_balances_a_fresh_group() -> None:
    s = spec({m: ({A, B}, {}) for m in ("m1", "m2", "m3")}, {A: 4, B: 3})
    result = uniform_assign(s)
    check_valid(s, result)
    assert sorted(counts(result).values()) == [2, 2, 3]


def test_uniform_is_sticky_when_a_member_joins() -> None:
    current = {A: frozenset(range(6))}
    s = spec({"m1": ({A}, current), "m2": ({A}, {})}, {A: 6})
    result = uniform_assign(s)
    assert result["m1"] == {A: frozenset({0, 1, 2})}
    assert result["m2"] == {A: frozenset({3, 4, 5})}
    # m3 joins: m1 and m2 each give one up, nothing else moves.
    s = spec({"m1": ({A}, result["m1"]), "m2": ({A}, result["m2"]), "m3": ({A}, {})}, {A: 6})
    again = uniform_assign(s)
    assert again["m1"][A] <= result["m1"][A]
    assert again["m2"][A] <= result["m2"][A]
    assert counts(again) == {"m1": 2, "m2": 2, "m3": 2}


def test_uniform_with_different_subscriptions() -> None:
    s = spec({"m1": ({A}, {}), "m2": ({A, B}, {}), "m3": ({B}, {})}, {A: 4, B: 2})
    result = uniform_assign(s)
    check_valid(s, result)
    assert max(counts(result).values()) - min(counts(result).values()) <= 1


def test_range_gives_contiguous_co_partitioned_ranges() -> None:
    s = spec({"a": ({A, B}, {}), "b": ({A, B}, {}), "c": ({A}, {})}, {A: 5, B: 4})
    result = range_assign(s)
    check_valid(s, result)
    assert result["a"] == {A: frozenset({0, 1}), B: frozenset({0, 1})}
    assert result["b"] == {A: frozenset({2, 3}), B: frozenset({2, 3})}
    assert result["c"] == {A: frozenset({4})}


def test_range_keeps_current_partitions_within_quota() -> None:
    s = spec({"a": ({A}, {A: frozenset({2, 3})}), "b": ({A}, {})}, {A: 4})
    assert range_assign(s) == {"a": {A: frozenset({2, 3})}, "b": {A: frozenset({0, 1})}}


def test_partitions_of_missing_topics_or_unsubscribed_members_are_dropped() -> None:
    s = spec({"a": ({A}, {A: frozenset({0, 7}), C: frozenset({0})})}, {A: 2})
    for assignor in ("uniform", "range"):
        assert assign(assignor, s) == {"a": {A: frozenset({0, 1})}}


members_st = st.dictionaries(
    st.sampled_from([f"m{i}" for i in range(6)]),
    st.frozensets(st.sampled_from([A, B, C]), min_size=1),
    min_size=1,
)
topics_st = st.fixed_dictionaries(
    {A: st.integers(0, 9), B: st.integers(0, 5), C: st.integers(1, 3)}
)


@settings(max_examples=150, deadline=None)
@given(members=members_st, topics=topics_st)
def test_assignments_are_valid_and_uniform_balances_homogeneous_groups(
    members: dict[str, frozenset[uuid.UUID]], topics: dict[uuid.UUID, int]
) -> None:
    for assignor in (uniform_assign, range_assign):
        fresh = GroupSpec({m: MemberSpec(s, {}) for m, s in members.items()}, topics)
        first = assignor(fresh)
        check_valid(fresh, first)
        # Run again from the first result (stickiness): still valid, nothing moves.
        again_spec = GroupSpec({m: MemberSpec(s, first[m]) for m, s in members.items()}, topics)
        again = assignor(again_spec)
        check_valid(again_spec, again)
        assert again == first
    if len(set(members.values())) == 1:
        load = counts(
            uniform_assign(GroupSpec({m: MemberSpec(s, {}) for m, s in members.items()}, topics))
        )
        assert max(load.values()) - min(load.values()) <= 1
