"""The bootstrap checkpoint: the KRaft control records ``kafka-storage format`` writes (KIP-853).

Kafka's ``Formatter`` with ``--standalone`` / ``--initial-controllers`` writes the snapshot
``__cluster_metadata-0/00000000000000000000-0000000000.checkpoint`` (``BOOTSTRAP_SNAPSHOT_ID``,
end offset 0 and epoch 0) holding a ``KRaftVersionRecord`` (kraft.version 1) and the initial
``VotersRecord``; with ``--no-initial-controllers`` it writes none and the node learns the voters
from the leader's log. This module builds the control records; the bytes are built by the log's
format: ``memory_snapshot`` for ``MemoryLog`` (tests, simulation), v2 record batches with a
snapshot header and footer in ``pykbroker.server.storage``.

A leader never sends this snapshot to a fetching replica (``replication.py``): it holds no
records, and the leader writes the same control records at the start of its first epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

from .log import ControlRecordType
from .memory_log import MemoryBatch
from .messages import SnapshotId
from .voter_set import KRAFT_VERSION_1, VoterSet, encode_kraft_version

#: Kafka's ``Snapshots.BOOTSTRAP_SNAPSHOT_ID``.
BOOTSTRAP_SNAPSHOT_ID = SnapshotId(0, 0)


def kraft_control_records(
    voters: VoterSet | None, kraft_version: int = KRAFT_VERSION_1
) -> list[tuple[ControlRecordType, bytes]]:
    """``(type, value)`` of the KRaftVersionRecord and the VotersRecord, in that order (none for
    kraft.version 0, which has no VotersRecord)."""
    if kraft_version < KRAFT_VERSION_1 or voters is None:
        return []
    return [
        (ControlRecordType.KRAFT_VERSION, encode_kraft_version(kraft_version)),
        (ControlRecordType.KRAFT_VOTERS, voters.encode()),
    ]


def memory_snapshot(
    control_records: Iterable[tuple[ControlRecordType, bytes]],
    values: Iterable[bytes] = (),
    epoch: int = 0,
) -> bytes:
    """A snapshot in ``MemoryLog``'s batch format: one control batch per record, then one data
    batch of ``values`` (if any). ``read_memory_control_records`` reads it back."""
    parts = [
        MemoryBatch.build(0, epoch, [value], int(control_type)).encoded
        for control_type, value in control_records
    ]
    data = list(values)
    if data:
        parts.append(MemoryBatch.build(0, epoch, data, -1).encoded)
    return b"".join(parts)
