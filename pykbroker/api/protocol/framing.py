"""Size-prefixed frames: an int32 length, then that many bytes.

``FrameBuffer`` is sans-I/O, after h11: feed it bytes with ``receive_data`` and take complete
frames with ``next_frame``. A frame announced larger than ``max_frame_bytes`` (Kafka's
``socket.request.max.bytes``) raises ``FrameTooLarge`` before a byte of it is buffered.
"""

from __future__ import annotations

from .codec import CodecError


class FrameTooLarge(CodecError):
    """A frame's size prefix is negative or over the limit."""


class FrameBuffer:
    """Reassembles frames from arbitrary chunks of a byte stream."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._start = 0

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the connection."""
        if self._start and self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buffer) - self._start

    def next_frame(self) -> bytes | None:
        """The next complete frame's payload, or None when more data is needed."""
        available = len(self._buffer) - self._start
        if available < 4:
            return None
        start = self._start
        size = int.from_bytes(self._buffer[start : start + 4], "big", signed=True)
        if size < 0 or size > self.max_frame_bytes:
            raise FrameTooLarge(
                f"frame of {size} bytes is over socket.request.max.bytes={self.max_frame_bytes}"
            )
        if available < 4 + size:
            return None
        frame = bytes(self._buffer[start + 4 : start + 4 + size])
        self._start = start + 4 + size
        if self._start > 65536 and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0
        return frame
