"""Metadata snapshots: an image written as records (and as a snapshot file) rebuilds it exactly."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pykbroker.log.record_batch import iter_batch_headers
from pykbroker.metadata import schemas
from pykbroker.metadata.image import BROKER_RESOURCE, TOPIC_RESOURCE, MetadataImage
from pykbroker.metadata.records import MetadataRecord, record
from pykbroker.metadata.snapshot import (
    RECORDS_PER_BATCH,
    SnapshotFormatError,
    SnapshotPolicy,
    image_from_records,
    image_records,
    load_snapshot,
    snapshot_records,
    write_snapshot,
)

TOPIC_IDS = [uuid.UUID(int=i + 1) for i in range(4)]
BROKERS = st.integers(1, 4)
REPLICAS = st.lists(BROKERS, min_size=1, max_size=3, unique=True)


def _register(broker: int, epoch: int, fenced: bool, rack: str | None, listeners: int) -> Any:
    return record(
        schemas.REGISTER_BROKER_RECORD,
        broker_id=broker,
        incarnation_id=uuid.UUID(int=broker * 100 + epoch),
        broker_epoch=epoch,
        end_points=[
            {"name": f"L{i}", "host": f"h{broker}", "port": 9000 + i, "security_protocol": i % 2}
            for i in range(listeners)
        ],
        features=[],
        rack=rack,
        fenced=fenced,
    )


def _partition(topic: int, index: int, replicas: list[int], leader_epoch: int) -> Any:
    return record(
        schemas.PARTITION_RECORD,
        partition_id=index,
        topic_id=TOPIC_IDS[topic],
        replicas=replicas,
        isr=replicas[:2],
        removing_replicas=[],
        adding_replicas=[],
        leader=replicas[0],
        leader_epoch=leader_epoch,
        partition_epoch=leader_epoch + 1,
        directories=[],
    )


RECORDS: st.SearchStrategy[MetadataRecord] = st.one_of(
    st.builds(
        lambda name, level: record(schemas.FEATURE_LEVEL_RECORD, name=name, feature_level=level),
        st.sampled_from(["metadata.version", "kraft.version", "group.version"]),
        st.integers(0, 30),
    ),
    st.builds(
        _register,
        BROKERS,
        st.integers(0, 50),
        st.booleans(),
        st.one_of(st.none(), st.sampled_from(["r1", "r2"])),
        st.integers(0, 2),
    ),
    st.builds(
        lambda broker, epoch, fence: record(
            schemas.FENCE_BROKER_RECORD if fence else schemas.UNFENCE_BROKER_RECORD,
            id=broker,
            epoch=epoch,
        ),
        BROKERS,
        st.integers(0, 50),
        st.booleans(),
    ),
    st.builds(
        lambda topic: record(schemas.TOPIC_RECORD, name=f"t{topic}", topic_id=TOPIC_IDS[topic]),
        st.integers(0, 3),
    ),
    st.builds(_partition, st.integers(0, 3), st.integers(0, 3), REPLICAS, st.integers(0, 5)),
    st.builds(
        lambda topic, index, leader, isr, recovery: record(
            schemas.PARTITION_CHANGE_RECORD,
            partition_id=index,
            topic_id=TOPIC_IDS[topic],
            leader=leader,
            isr=isr,
            leader_recovery_state=recovery,
        ),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(-2, 4),
        st.one_of(st.none(), REPLICAS),
        st.sampled_from([-1, 0, 1]),
    ),
    st.builds(
        lambda topic: record(schemas.REMOVE_TOPIC_RECORD, topic_id=TOPIC_IDS[topic]),
        st.integers(0, 3),
    ),
    st.builds(
        lambda kind, name, key, value: record(
            schemas.CONFIG_RECORD,
            resource_type=kind,
            resource_name=name,
            name=key,
            value=value,
        ),
        st.sampled_from([TOPIC_RESOURCE, BROKER_RESOURCE]),
        st.sampled_from(["t0", "t1", "1", ""]),
        st.sampled_from(["retention.ms", "cleanup.policy"]),
        st.one_of(st.none(), st.sampled_from(["1000", "compact"])),
    ),
    st.builds(
        lambda pid: record(
            schemas.PRODUCER_IDS_RECORD, broker_id=1, broker_epoch=0, next_producer_id=pid
        ),
        st.integers(0, 10_000),
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(RECORDS, max_size=40))
def test_an_image_written_as_records_replays_into_the_same_image(
    history: list[MetadataRecord],
) -> None:
    image = MetadataImage().apply(history, 41)
    rebuilt = image_from_records(image_records(image), 41)
    assert rebuilt == image


@settings(max_examples=50, deadline=None)
@given(st.lists(RECORDS, max_size=40))
def test_a_snapshot_file_loads_the_same_image(history: list[MetadataRecord]) -> None:
    image = MetadataImage().apply(history, 99)
    data = write_snapshot(image, epoch=3, last_contained_log_time_ms=1234)
    assert load_snapshot(data, 100) == image
    headers = [h for _, h in iter_batch_headers(data)]
    assert headers[0].is_control
    assert headers[-1].is_control
    assert all(h.partition_leader_epoch == 3 for h in headers)


def test_a_big_image_spans_several_batches_and_keeps_every_topic() -> None:
    history: list[MetadataRecord] = []
    for t in range(RECORDS_PER_BATCH + 5):
        topic_id = uuid.UUID(int=10_000 + t)
        history.append(record(schemas.TOPIC_RECORD, name=f"topic-{t}", topic_id=topic_id))
    image = MetadataImage().apply(history, 5)
    data = write_snapshot(image, 1, 0)
    assert len(list(iter_batch_headers(data))) == 4  # header, 2 data batches, footer
    assert load_snapshot(data, 6).topics.keys() == image.topics.keys()


def test_bytes_that_are_not_a_snapshot_are_refused() -> None:
    image = MetadataImage().apply(
        [record(schemas.TOPIC_RECORD, name="t", topic_id=TOPIC_IDS[0])], 0
    )
    data = write_snapshot(image, 1, 0)
    first_batch_end = next(iter_batch_headers(data))[1].size_in_bytes
    with pytest.raises(SnapshotFormatError):
        list(snapshot_records(data[first_batch_end:]))  # no header
    last_start = list(iter_batch_headers(data))[-1][0]
    with pytest.raises(SnapshotFormatError):
        list(snapshot_records(data[:last_start]))  # no footer


def test_the_policy_snapshots_after_enough_bytes_or_time_with_something_new() -> None:
    policy = SnapshotPolicy(max_bytes_between_snapshots=1000, max_interval_ms=60_000)
    assert not policy.due(0, 10**9)
    assert not policy.due(999, 59_999)
    assert policy.due(1000, 0)
    assert policy.due(1, 60_000)
    assert not SnapshotPolicy(1000, 0).due(1, 10**9)
