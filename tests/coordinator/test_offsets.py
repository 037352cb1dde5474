"""OffsetCommit / OffsetFetch rules of the pure core (Kafka's OffsetMetadataManager)."""

from __future__ import annotations

from pykbroker.api.protocol.errors import ErrorCode
from pykbroker.coordinator.group.group import EMPTY
from pykbroker.coordinator.group.records import OffsetCommitRecord
from pykbroker.coordinator.group.result import ResponseFuture

from .support import Harness

OK = ErrorCode.NO_ERROR


def fetched(
    h: Harness, group_id: str = "g", topics: list[tuple[str, list[int]]] | None = None
) -> dict[tuple[str, int], tuple[int, str]]:
    return {
        (t["name"], p["partition_index"]): (p["committed_offset"], p["metadata"])
        for t in h.offsets.fetch_offsets(group_id, topics)
        for p in t["partitions"]
    }


def test_simple_commit_creates_an_empty_group_and_is_fetched() -> None:
    h = Harness()
    h.now = 1000
    h.gmm.wall_offset_ms = 1_700_000_000_000
    assert h.commit({("t", 0): 10, ("t", 1): 11}, metadata="hello") == {("t", 0): OK, ("t", 1): OK}
    assert h.group().is_in_state(EMPTY)
    assert fetched(h, topics=[("t", [0, 1, 2]), ("u", [0])]) == {
        ("t", 0): (10, "hello"),
        ("t", 1): (11, "hello"),
        ("t", 2): (-1, ""),
        ("u", 0): (-1, ""),
    }
    [first, _] = h.decoded()
    assert isinstance(first, OffsetCommitRecord)
    assert first.offset is not None
    assert first.offset.commit_timestamp_ms == 1_700_000_001_000
    assert first.offset.leader_epoch == 7


def test_fetch_all_and_unknown_group() -> None:
    h = Harness()
    h.commit({("b", 1): 5, ("a", 0): 1, ("b", 0): 4})
    everything = h.offsets.fetch_offsets("g", None)
    assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in everything] == [
        ("b", [0, 1]),
        ("a", [0]),
    ]
    assert h.offsets.fetch_offsets("other", None) == []
    assert fetched(h, "other", [("a", [0])]) == {("a", 0): (-1, "")}


def test_null_metadata_is_stored_as_empty_and_too_large_metadata_is_refused() -> None:
    h = Harness(offset_metadata_max_bytes=5)
    assert h.commit({("t", 0): 1}, metadata=None) == {("t", 0): OK}
    assert h.commit({("t", 1): 1}, metadata="123456") == {
        ("t", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE
    }
    assert fetched(h, topics=[("t", [0, 1])]) == {("t", 0): (1, ""), ("t", 1): (-1, "")}


def test_generation_checks_for_group_members() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a")
    a = ids["a"]
    assert h.commit({("t", 0): 1}, generation_id=1, member_id=a) == {("t", 0): OK}
    assert h.commit({("t", 0): 2}, generation_id=0, member_id=a) == {
        ("t", 0): ErrorCode.ILLEGAL_GENERATION
    }
    assert h.commit({("t", 0): 2}, generation_id=1, member_id="x") == {
        ("t", 0): ErrorCode.UNKNOWN_MEMBER_ID
    }
    # A simple consumer may not commit into an active group.
    assert h.commit({("t", 0): 2}) == {("t", 0): ErrorCode.UNKNOWN_MEMBER_ID}
    assert h.commit({("t", 0): 2}, generation_id=1, member_id=a, instance_id="i") == {
        ("t", 0): ErrorCode.UNKNOWN_MEMBER_ID
    }
    # Unknown group with a generation: a stale member of a deleted group. Kafka answers
    # GROUP_ID_NOT_FOUND from OffsetCommit v9 on, ILLEGAL_GENERATION before.
    assert h.commit({("t", 0): 2}, group_id="gone", generation_id=3, member_id="m") == {
        ("t", 0): ErrorCode.GROUP_ID_NOT_FOUND
    }
    assert h.commit(
        {("t", 0): 2}, group_id="gone", generation_id=3, member_id="m", api_version=8
    ) == {("t", 0): ErrorCode.ILLEGAL_GENERATION}
    assert fetched(h, topics=[("t", [0])]) == {("t", 0): (1, "")}


def test_commit_during_completing_rebalance_is_refused() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    future = h.join_new_member(client_id="a")
    h.advance(0)
    a = future.result()["member_id"]
    assert h.commit({("t", 0): 1}, generation_id=1, member_id=a) == {
        ("t", 0): ErrorCode.REBALANCE_IN_PROGRESS
    }


def test_commit_keeps_the_member_session_alive() -> None:
    h = Harness(group_initial_rebalance_delay_ms=0)
    ids = h.stable_group("a", session_timeout_ms=10_000)
    for _ in range(5):
        h.advance(6000)
        assert h.commit({("t", 0): 1}, generation_id=1, member_id=ids["a"]) == {("t", 0): OK}
    assert h.group().has_member(ids["a"])


def test_failed_append_is_reported_and_not_applied() -> None:
    h = Harness()
    h.append_error = ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert h.commit({("t", 0): 1}) == {("t", 0): ErrorCode.NOT_COORDINATOR}
    h.append_error = ErrorCode.MESSAGE_TOO_LARGE
    assert h.commit({("t", 0): 1}) == {("t", 0): ErrorCode.INVALID_COMMIT_OFFSET_SIZE}
    assert fetched(h, topics=[("t", [0])]) == {("t", 0): (-1, "")}


def test_offsets_are_visible_only_after_the_append() -> None:
    h = Harness()
    h.hold_writes = True
    h.apply(
        h.offsets.commit_offsets(
            "g",
            -1,
            "",
            None,
            [{"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 3}]}],
            ResponseFuture(),
            0,
        )
    )
    assert fetched(h, topics=[("t", [0])]) == {("t", 0): (-1, "")}
    h.release()
    assert fetched(h, topics=[("t", [0])]) == {("t", 0): (3, "")}


def test_replay_with_tombstones() -> None:
    h = Harness()
    h.commit({("t", 0): 1, ("t", 1): 2})
    fresh = Harness()
    for record in h.decoded():
        fresh.offsets.replay(record)
    fresh.offsets.replay(OffsetCommitRecord("g", "t", 0, None))
    assert fetched(fresh, topics=[("t", [0, 1])]) == {("t", 0): (-1, ""), ("t", 1): (2, "")}
    fresh.offsets.replay(OffsetCommitRecord("g", "t", 1, None))
    assert fresh.offsets.offsets == {}
