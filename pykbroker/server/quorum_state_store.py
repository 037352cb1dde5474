"""FileQuorumStateStore: the ``quorum-state`` file of a KRaft node.

Mirrors Kafka's ``org.apache.kafka.raft.FileQuorumStateStore``: the election state (epoch,
leader, vote) as QuorumStateData JSON (``ElectionState.to_json`` / ``from_json``) in
``<metadata.log.dir>/__cluster_metadata-0/quorum-state``. The driver writes it before it sends
any message that depends on it (``RaftOutput.persist_election_state``).

Invariant: the file is replaced atomically and durably (``quorum-state.tmp``, fsync, rename,
fsync of the directory), so a reader sees the old or the new state, never a mix; a leftover
temporary file is ignored and removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from pykbroker.raft.quorum_state import ElectionState

from .raft_log import METADATA_PARTITION_DIR, write_file_atomically

__all__ = ["QUORUM_STATE_FILE", "FileQuorumStateStore", "QuorumStateError"]

logger = logging.getLogger(__name__)

QUORUM_STATE_FILE = "quorum-state"
_TMP_SUFFIX = ".tmp"


class QuorumStateError(Exception):
    """The ``quorum-state`` file exists but cannot be read: never start from a guess (a lost
    vote could let this node vote twice in one epoch)."""


class FileQuorumStateStore:
    """Read and write ``quorum-state`` in a partition directory (Kafka's
    ``FileQuorumStateStore``)."""

    def __init__(self, partition_dir: Path) -> None:
        self.path = partition_dir / QUORUM_STATE_FILE

    @classmethod
    def in_log_dir(cls, metadata_log_dir: Path) -> FileQuorumStateStore:
        """The store of ``<metadata_log_dir>/__cluster_metadata-0``."""
        return cls(metadata_log_dir / METADATA_PARTITION_DIR)

    def read(self) -> ElectionState | None:
        """The persisted election state; None if no state was ever written.

        Raises ``QuorumStateError`` if the file is unreadable or malformed."""
        self.path.with_name(self.path.name + _TMP_SUFFIX).unlink(missing_ok=True)
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise QuorumStateError(f"cannot read {self.path}: {exc}") from exc
        try:
            return ElectionState.from_json(text)
        except (ValueError, TypeError, AttributeError) as exc:
            raise QuorumStateError(f"malformed {self.path}: {exc}") from exc

    def write(self, state: ElectionState, voters: Iterable[int] = ()) -> None:
        """Durably replace the file with ``state`` (and the static ``voters``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(self.path, state.to_json(voters).encode(), _TMP_SUFFIX)

    def clear(self) -> None:
        """Delete the file (Kafka's ``clear``), e.g. when the metadata log is reformatted."""
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + _TMP_SUFFIX).unlink(missing_ok=True)
