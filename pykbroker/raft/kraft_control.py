"""KRaftControlRecordStateMachine: kraft.version and the voter set, as of every log offset.

Mirrors Kafka's ``KRaftControlRecordStateMachine`` over ``VoterSetHistory`` /
``TreeMapLogHistory``: the latest snapshot's KRaftVersionRecord / VotersRecord (at offset
``snapshot end - 1``; Kafka's bootstrap checkpoint ``0-0`` gives offset -1), then every such
control record of the log in offset order. A VotersRecord takes effect as soon as it is in the
log -- appended by the leader or fetched by a follower -- not when committed; truncating the
log reverts the changes above the truncation offset. With no VotersRecord anywhere the voters
are the static ``controller.quorum.voters`` (kraft.version 0).

Invariant: ``next_offset`` is a batch boundary of the log (the offset up to which the log was
read); the history holds entries at offsets below it only, ascending.
"""

from __future__ import annotations

import bisect
import logging
import struct

from .control_records import ControlRecordReader
from .log import ControlRecordType, LogAppendError, ReplicatedLog
from .messages import SnapshotId
from .voter_set import KRAFT_VERSION_0, VoterSet, decode_kraft_version

logger = logging.getLogger(__name__)

#: Bytes read from the log per ``read`` while catching up (the log returns at least a batch).
_READ_BYTES = 1 << 20


class KRaftControlRecordStateMachine:
    """See the module docstring."""

    def __init__(self, static_voters: VoterSet, reader: ControlRecordReader) -> None:
        self.static_voters = static_voters
        self._reader = reader
        self._voter_offsets: list[int] = []
        self._voter_sets: list[VoterSet] = []
        self._version_offsets: list[int] = []
        self._versions: list[int] = []
        self.next_offset = 0

    # --- queries ---------------------------------------------------------------------------

    @property
    def last_voter_set(self) -> VoterSet:
        return self._voter_sets[-1] if self._voter_sets else self.static_voters

    @property
    def last_voter_set_offset(self) -> int | None:
        """Offset of the latest VotersRecord (-1: the bootstrap checkpoint); None: static."""
        return self._voter_offsets[-1] if self._voter_offsets else None

    @property
    def kraft_version(self) -> int:
        return self._versions[-1] if self._versions else KRAFT_VERSION_0

    def voter_set_at(self, offset: int) -> VoterSet:
        """The voters as of the record at ``offset`` (Kafka's ``voterSetAtOffset``)."""
        index = bisect.bisect_right(self._voter_offsets, offset)
        return self._voter_sets[index - 1] if index else self.static_voters

    def kraft_version_at(self, offset: int) -> int:
        index = bisect.bisect_right(self._version_offsets, offset)
        return self._versions[index - 1] if index else KRAFT_VERSION_0

    # --- changes ---------------------------------------------------------------------------

    def load_snapshot(self, snapshot_id: SnapshotId, data: bytes) -> None:
        """Forget everything and start from the snapshot's control records (Kafka's
        ``maybeLoadSnapshot``); the log is read from the snapshot's end offset on."""
        self._voter_offsets.clear()
        self._voter_sets.clear()
        self._version_offsets.clear()
        self._versions.clear()
        offset = snapshot_id.offset - 1
        try:
            for batch in self._reader(data):
                for record in batch.control_records:
                    self._apply(offset, record.control_type, record.value)
        except (ValueError, struct.error, LogAppendError) as exc:
            # Not record batches (an application's own format): no KRaft control records.
            logger.debug("snapshot %s has no readable control records: %s", snapshot_id, exc)
        self.next_offset = snapshot_id.offset

    def truncate_to(self, offset: int) -> None:
        """The log lost every record at ``offset`` and above (Kafka's ``truncateNewEntries``)."""
        cut = bisect.bisect_left(self._voter_offsets, offset)
        del self._voter_offsets[cut:], self._voter_sets[cut:]
        cut = bisect.bisect_left(self._version_offsets, offset)
        del self._version_offsets[cut:], self._versions[cut:]
        self.next_offset = min(self.next_offset, offset)

    def prune_before(self, offset: int) -> None:
        """Drop entries no one can ask about any more, keeping the one in force at ``offset``
        (Kafka's ``truncateOldEntries``)."""
        keep = bisect.bisect_right(self._voter_offsets, offset) - 1
        if keep > 0:
            del self._voter_offsets[:keep], self._voter_sets[:keep]
        keep = bisect.bisect_right(self._version_offsets, offset) - 1
        if keep > 0:
            del self._version_offsets[:keep], self._versions[:keep]

    def update(self, log: ReplicatedLog) -> bool:
        """Read the log from ``next_offset`` to its end; True if the voter set changed."""
        before = self.last_voter_set
        self.next_offset = max(self.next_offset, log.log_start_offset)
        end = log.log_end_offset
        while self.next_offset < end:  # bounded: every read returns at least one batch
            data = log.read(self.next_offset, _READ_BYTES)
            if not data:
                break
            for batch in self._reader(data):
                for record in batch.control_records:
                    self._apply(record.offset, record.control_type, record.value)
                self.next_offset = batch.next_offset
        return self.last_voter_set != before

    def _apply(self, offset: int, control_type: int, value: bytes) -> None:
        if control_type == ControlRecordType.KRAFT_VOTERS:
            voters = VoterSet.decode(value)
            if self._voter_offsets and self._voter_offsets[-1] >= offset:
                raise ValueError(f"VotersRecord at {offset} is not after the last one")
            self._voter_offsets.append(offset)
            self._voter_sets.append(voters)
            logger.debug("voter set at offset %d: %s", offset, voters)
        elif control_type == ControlRecordType.KRAFT_VERSION:
            if self._version_offsets and self._version_offsets[-1] >= offset:
                # A snapshot: every record sits at the same offset; the last one wins.
                self._version_offsets.pop()
                self._versions.pop()
            self._version_offsets.append(offset)
            self._versions.append(decode_kraft_version(value))
