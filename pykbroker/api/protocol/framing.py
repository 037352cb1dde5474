"""Size-prefixed frames: an int32 length, then that many bytes.

``FrameBuffer`` is sans-I/O, after h11: feed it bytes with ``receive_data`` and take complete
frames with ``next_frame``. A frame announced larger than ``max_frame_bytes`` (Kafka's
``socket.request.max.bytes``) raises ``FrameTooLarge`` before a byte of it is buffered.

Received chunks are kept as they came and joined once per frame, so a 1 MiB produce request
read in many pieces is copied once, not once per piece; ``bytes_wanted`` tells the reader how
much the frame in progress still needs, so it can ask the socket for that much at once.
"""

from __future__ import annotations

from .codec import CodecError

_SIZE_BYTES = 4


class FrameTooLarge(CodecError):
    """A frame's size prefix is negative or over the limit."""


class FrameBuffer:
    """Reassembles frames from arbitrary chunks of a byte stream."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._frame_size = -1  # the size of the frame in progress, once its prefix is in

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the connection."""
        if data:
            self._chunks.append(data)
            self._buffered += len(data)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return self._buffered + (_SIZE_BYTES if self._frame_size >= 0 else 0)

    @property
    def bytes_wanted(self) -> int:
        """How many more bytes would complete the frame in progress (at least 1)."""
        if self._frame_size < 0:
            return max(_SIZE_BYTES - self._buffered, 1)
        return max(self._frame_size - self._buffered, 1)

    def _take(self, count: int) -> bytes:
        """Remove and return the first ``count`` buffered bytes (count <= buffered)."""
        first = self._chunks[0]
        if len(first) >= count:
            head = first[:count]
            if len(first) == count:
                self._chunks.pop(0)
            else:
                self._chunks[0] = first[count:]
        else:
            joined = b"".join(self._chunks)
            head = joined[:count]
            self._chunks = [joined[count:]] if len(joined) > count else []
        self._buffered -= count
        return head

    def _peek_size(self) -> int:
        first = self._chunks[0]
        head = first[:_SIZE_BYTES] if len(first) >= _SIZE_BYTES else b"".join(self._chunks)
        return int.from_bytes(head[:_SIZE_BYTES], "big", signed=True)

    def next_frame(self) -> bytes | None:
        """The next complete frame's payload, or None when more data is needed."""
        if self._frame_size < 0:
            if self._buffered < _SIZE_BYTES:
                return None
            size = self._peek_size()
            if size < 0 or size > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"frame of {size} bytes is over socket.request.max.bytes={self.max_frame_bytes}"
                )
            self._take(_SIZE_BYTES)
            self._frame_size = size
        if self._buffered < self._frame_size:
            return None
        frame = self._take(self._frame_size) if self._frame_size else b""
        self._frame_size = -1
        return frame
